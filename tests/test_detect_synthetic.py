"""The detector's built-in street scenes (tasks/synthetic_plates.draw_street_scene): 0-4 plates of 10-200 px,
night pictures, the same pictures for the same seed, and the default generator's pictures unchanged."""
import numpy as np

from tinycnn.tasks.plates_data import read_plates
from tinycnn.tasks.synthetic_plates import draw_street_scene, generate_plates, plate_box


def test_street_scenes_hold_zero_to_four_plates_of_10_to_200_px():
    counts, widths = [], []
    for index in range(40):
        photo, corners = draw_street_scene(np.random.default_rng([1, index]), (320, 240))
        assert photo.size == (320, 240)
        counts.append(len(corners))
        widths += [plate_box(c, (320, 240))[2] - plate_box(c, (320, 240))[0] for c in corners]
    assert set(counts) == {0, 1, 2, 3, 4}
    # the bounding box of a plate in perspective is a little wider than the plate
    assert 9 <= min(widths) < 20 and 60 < max(widths) <= 215


def test_night_scenes_are_darker():
    day = [np.asarray(draw_street_scene(np.random.default_rng([2, i]), (160, 120), night_fraction=0.0)[0]).mean()
           for i in range(6)]
    night = [np.asarray(draw_street_scene(np.random.default_rng([2, i]), (160, 120), night_fraction=1.0)[0]).mean()
             for i in range(6)]
    assert np.mean(night) < 0.6 * np.mean(day)


def test_street_set_is_reproducible_and_has_several_plates_per_picture(tmp_path):
    first = generate_plates(tmp_path / "a", 6, 1, 1, size=(160, 120), seed=4, scene="street")
    second = generate_plates(tmp_path / "b", 6, 1, 1, size=(160, 120), seed=4, scene="street")
    for name in ("train_00000.jpg", "train_00005.jpg"):
        assert (first / "train" / name).read_bytes() == (second / "train" / name).read_bytes()
    records = read_plates(first, ["train"])["train"]
    assert all(1 <= len(r.boxes) <= 4 for r in records) and max(len(r.boxes) for r in records) >= 2


def test_the_default_set_keeps_its_name_and_readme(tmp_path):
    """Existing callers (scene "cars") keep their cache folder name and README; the street set gets its own."""
    from tinycnn.tasks.synthetic_plates import ensure_builtin_plates
    cars = ensure_builtin_plates(tmp_path, 2, 1, 1, size=(64, 48), progress=False)
    street = ensure_builtin_plates(tmp_path, 2, 1, 1, size=(64, 48), progress=False, scene="street")
    assert cars.name == "plates-v1-64x48-2-1-1-p15-seed0" and street.name == cars.name + "-street"
    assert "scene" not in (cars / "README.md").read_text() and "street" in (street / "README.md").read_text()

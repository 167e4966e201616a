"""The synthetic plate generator: deterministic files, boxes on the plates, masks that match them, readable by
tasks.plates_data, and a cache that is filled once and atomically."""
import warnings

import numpy as np
import pytest
from PIL import Image

from tinycnn.tasks import synthetic_plates
from tinycnn.tasks.box_ops import fill_mask_from_boxes, mask_to_box
from tinycnn.tasks.plates_data import load_sample, read_plates
from tinycnn.tasks.synthetic_plates import (
    _paste_plate, _plate_corners, draw_scene, ensure_builtin_plates, generate_plates, polygons_mask,
)

SMALL = (160, 120)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A small data set, a third of it with two plates."""
    return generate_plates(tmp_path_factory.mktemp("synthetic"), 6, 3, 3, size=SMALL, seed=5,
                           two_plate_fraction=0.35)


def all_files(root):
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file()}


def test_layout_and_annotations_read_back_without_warnings(generated):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = read_plates(generated)
    assert {split: len(records) for split, records in splits.items()} == {"train": 6, "val": 3, "test": 3}
    for records in splits.values():
        for record in records:
            assert record.size == SMALL and record.mask_path is not None
            assert record.path.suffix == ".jpg" and record.mask_path.parent.parent.name == "masks"
    assert max(len(r.boxes) for records in splits.values() for r in records) == 2  # "several plates" occurs


def test_boxes_lie_inside_and_match_the_masks(generated):
    for records in read_plates(generated).values():
        for record in records:
            image, boxes, mask = load_sample(record)
            assert image.shape == (SMALL[1], SMALL[0], 3)
            assert boxes.min() >= 0 and boxes[:, 2].max() <= SMALL[0] and boxes[:, 3].max() <= SMALL[1]
            heights, widths = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
            assert heights.min() >= 5 and (widths / heights).min() >= 1.2
            covered = np.zeros_like(mask)
            for box in boxes:  # the plate's own mask pixels: those near its box
                near = fill_mask_from_boxes([box + np.array([-2, -2, 2, 2])], *mask.shape) & mask
                np.testing.assert_allclose(mask_to_box(near), box, atol=1.0)
                covered |= near
            np.testing.assert_array_equal(covered, mask)  # no mask pixel away from every box


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    first = generate_plates(tmp_path / "one", 3, 1, 1, size=SMALL, seed=11)
    second = generate_plates(tmp_path / "two", 3, 1, 1, size=SMALL, seed=11)
    other = generate_plates(tmp_path / "three", 3, 1, 1, size=SMALL, seed=12)
    assert all_files(first) == all_files(second)
    assert len(all_files(first)) == 5 + 5 + 3 + 1  # images, masks, CSVs, README
    assert (first / "train" / "train_00000.jpg").read_bytes() != (other / "train" / "train_00000.jpg").read_bytes()


def test_a_split_does_not_change_when_another_grows(tmp_path):
    few = generate_plates(tmp_path / "few", 1, 1, 0, size=SMALL, seed=3)
    more = generate_plates(tmp_path / "more", 4, 1, 0, size=SMALL, seed=3)
    assert (few / "val" / "val_00000.jpg").read_bytes() == (more / "val" / "val_00000.jpg").read_bytes()


def test_generate_refuses_a_folder_that_holds_a_data_set(generated):
    with pytest.raises(FileExistsError, match="train"):
        generate_plates(generated, 1, 0, 0, size=SMALL)


def test_polygon_mask_equals_box_mask_for_an_axis_aligned_plate():
    corners = np.array([[3.2, 2.0], [11.7, 2.0], [11.7, 6.6], [3.2, 6.6]])
    np.testing.assert_array_equal(polygons_mask([corners], 10, 15),
                                  fill_mask_from_boxes([[3.2, 2.0, 11.7, 6.6]], 10, 15))


def test_the_warped_plate_covers_exactly_its_mask():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        corners = _plate_corners(rng, (80, 60), width=rng.uniform(20, 90), height=rng.uniform(8, 25))
        scene = Image.new("RGB", SMALL)
        _paste_plate(scene, Image.new("RGBA", (300, 64), (255, 255, 255, 255)), corners)
        painted = np.asarray(scene)[:, :, 0] > 127
        mask = polygons_mask([corners], SMALL[1], SMALL[0]).astype(bool)
        assert mask.sum() > 100
        assert (painted ^ mask).sum() <= 0.02 * mask.sum()


def test_plate_sizes_span_small_to_large():
    heights = []
    for index in range(24):
        _, corners = draw_scene(np.random.default_rng([0, index]), (320, 240), two_plate_fraction=0)
        heights += [np.ptp(plate[:, 1]) for plate in corners]
    assert min(heights) < 14 and max(heights) > 24


def test_ensure_builtin_plates_generates_once_into_the_cache(tmp_path, monkeypatch):
    options = dict(n_train=2, n_val=1, n_test=1, size=SMALL, seed=4, progress=False)
    path = ensure_builtin_plates(cache_root=tmp_path, **options)
    assert path.parent == tmp_path and path.name.startswith("plates-v") and "seed4" in path.name
    assert len(read_plates(path)["train"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folder left behind

    def must_not_run(*args, **kwargs):
        raise AssertionError("generated again")
    monkeypatch.setattr(synthetic_plates, "generate_plates", must_not_run)
    assert ensure_builtin_plates(cache_root=tmp_path, **options) == path


def test_ensure_builtin_plates_losing_a_race_keeps_the_winners_folder(tmp_path, monkeypatch):
    real_generate = synthetic_plates.generate_plates
    name = f"plates-v{synthetic_plates.GENERATOR_VERSION}-160x120-1-0-0-p15-seed0"

    def racing_generate(out_dir, *args, **kwargs):
        real_generate(out_dir, *args, **kwargs)
        winner = tmp_path / name  # another process finishes first
        winner.mkdir()
        (winner / "from-the-winner").write_text("")
        return out_dir
    monkeypatch.setattr(synthetic_plates, "generate_plates", racing_generate)
    path = ensure_builtin_plates(cache_root=tmp_path, n_train=1, n_val=0, n_test=0, size=SMALL, progress=False)
    assert path.name == name and (path / "from-the-winner").exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]

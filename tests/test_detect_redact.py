"""redact with every mode, --mode replace included: only pixels inside the (grown) plate region change, and
every plate a detector finds is redacted. Also the pieces of tasks/plate_replace.py."""
import numpy as np
import pytest
from PIL import Image

from tinycnn import train as train_cli
from tinycnn.tasks import plates_detect
from tinycnn.tasks import redact as redact_cli
from tinycnn.tasks.plate_replace import min_area_rectangle, order_corners, otsu_threshold, plate_look
from tinycnn.tasks.plates_data import load_sample, read_plates
from tinycnn.tasks.synthetic_plates import generate_plates, polygons_mask

MARGIN = 2


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    # two_plate_fraction 1: every picture shows two cars, two plates
    return generate_plates(tmp_path_factory.mktemp("plates"), 4, 2, 3, size=(160, 120), seed=7,
                           two_plate_fraction=1.0)


def two_plate_photo(plates):
    record = next(r for r in read_plates(plates, ["test"])["test"] if len(r.boxes) == 2)
    _, boxes, mask = load_sample(record)
    return record, redact_cli.photo_pixels(record.path), boxes, mask > 0


def near(mask, margin):
    """Pixels within `margin` (square) of the mask's bounding rectangles: the region no mode may pass."""
    return redact_cli.region_of(redact_cli.redaction_rectangles(mask, margin), *mask.shape)


@pytest.mark.parametrize("mode", ["pixelate", "blur", "fill", "replace"])
def test_every_mode_changes_only_the_grown_plate_region(plates, mode):
    _, pixels, _, mask = two_plate_photo(plates)
    if mode == "replace":
        out, region = redact_cli.replace_all(pixels, mask, "ABC 1234", MARGIN)
    else:
        rectangles = redact_cli.redaction_rectangles(mask, MARGIN)
        out, region = redact_cli.redact(pixels, rectangles, mode), redact_cli.region_of(rectangles, *mask.shape)
    changed = np.any(out != pixels, axis=2)
    assert not changed[~region].any()
    # the region itself stays within a pixel of the plates grown by the margin
    assert not (region & ~near(mask, MARGIN + 1)).any()
    for label in (1, 2):  # both plates changed
        labels, _ = redact_cli.connected_components(mask)
        assert changed[labels == label].mean() > 0.3


def test_replace_draws_the_new_text_in_the_plates_colours():
    pixels = np.full((60, 90, 3), 90, np.uint8)
    corners = np.array([[10, 20], [70, 14], [72, 32], [12, 38]], float)
    plate = polygons_mask([corners], 60, 90) > 0
    pixels[plate] = (235, 225, 60)                 # a yellow plate
    pixels[24:30, 25:55][plate[24:30, 25:55]] = (20, 20, 30)   # dark letters
    out, region = redact_cli.replace_all(pixels, plate, "XY 99", margin=1)
    inside = out[plate & ~redact_cli.grow(~plate, 2)]
    # mostly the plate's yellow, some dark ink, and the letters are new (the old dark block is gone)
    yellow = np.all(np.abs(inside.astype(int) - (235, 225, 60)) < 40, axis=1).mean()
    dark = (inside.mean(axis=1) < 80).mean()
    assert yellow > 0.5 and 0.03 < dark < 0.45
    assert not np.array_equal(out[24:30, 25:55], pixels[24:30, 25:55])
    assert not np.any(out[~region] != pixels[~region])


def test_min_area_rectangle_of_a_rotated_plate_and_a_box():
    box = np.zeros((40, 60), bool)
    box[10:20, 5:45] = True
    np.testing.assert_allclose(min_area_rectangle(box), [[5, 10], [45, 10], [45, 20], [5, 20]])
    corners = np.array([[10, 20], [50, 12], [52, 22], [12, 30]], float)   # a rectangle turned by ~11°
    found = min_area_rectangle(polygons_mask([corners], 50, 70) > 0)
    assert np.abs(found - corners).max() < 1.5
    np.testing.assert_array_equal(order_corners(found[[2, 0, 3, 1]]), found)


def test_plate_look_and_otsu():
    assert 30 <= otsu_threshold(np.r_[np.full(50, 30), np.full(50, 200)]) < 200  # "dark" is <= t
    pixels = np.r_[np.tile([[250, 250, 240]], (80, 1)), np.tile([[10, 10, 10]], (20, 1))]
    background, ink, share = plate_look(pixels)
    assert background == (250, 250, 240) and ink == (10, 10, 10) and share == pytest.approx(0.2)
    # white letters on a dark plate: the larger class is still the background
    background, ink, _ = plate_look(np.r_[np.tile([[20, 30, 90]], (70, 1)), np.tile([[240, 240, 240]], (30, 1))])
    assert background == (20, 30, 90) and ink == (240, 240, 240)


@pytest.fixture(scope="module")
def detector(plates, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "detect"
    assert train_cli.main(["plates-box", "--data", str(plates), "--epochs", "1", "--batch-size", "4", "--width",
                           "0.35", "--neck", "16", "--img-size", "32", "--out", str(folder), "--quiet", "--pretrain", "0"]) == 0
    return folder / "best.tcnn"


@pytest.mark.parametrize("mode", ["fill", "replace"])
def test_redact_hides_every_detected_plate(plates, detector, tmp_path, monkeypatch, mode):
    record, pixels, boxes, _ = two_plate_photo(plates)
    # a stand-in for a trained detector: it finds the two true plates
    monkeypatch.setattr(plates_detect, "photo_detections",
                        lambda photo, output, threshold: (boxes, np.array([0.9, 0.8], np.float32)))
    extra = ["--text", "ABC 1234"] if mode == "replace" else []
    assert redact_cli.main([str(detector), str(record.path), "--mode", mode, "--out", str(tmp_path)] + extra) == 0
    out = np.asarray(Image.open(tmp_path / (record.path.stem + ".png")))
    changed = np.any(out != pixels, axis=2)
    plate_mask = plates_detect.fill_mask_from_boxes(boxes, *pixels.shape[:2]) > 0
    assert not (changed & ~near(plate_mask, MARGIN + 1)).any()
    for box in boxes.astype(int):
        assert changed[box[1] + 1:box[3] - 1, box[0] + 1:box[2] - 1].mean() > 0.3


def test_replace_needs_text_and_text_needs_replace(detector, plates, tmp_path):
    image = str(next((plates / "test").iterdir()))
    with pytest.raises(SystemExit):
        redact_cli.main([str(detector), image, "--mode", "replace", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        redact_cli.main([str(detector), image, "--mode", "fill", "--text", "AB", "--out", str(tmp_path)])

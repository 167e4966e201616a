"""plates-box and plates-seg end to end (train, evaluate, predict, redact) on a tiny synthetic set, and
the pieces they are built from: the MobileNetV2 block, --init, the losses, the mapping back to photo pixels,
the redaction modes.

The data are drawn by tasks/synthetic_plates into a temporary folder: 10 training, 4 validation and 4 test
pictures of 96x72 pixels, letterboxed to 32 px; 1-2 epochs. The numbers these tiny runs reach are not
checked (they learn next to nothing): the files, shapes, keys and pixels are.
"""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import tinycnn
from tinycnn import evaluate as evaluate_cli
from tinycnn import predict as predict_cli
from tinycnn import train as train_cli
from tinycnn.tasks import plates_box, plates_pipeline, plates_seg
from tinycnn.tasks import redact as redact_cli
from tinycnn.tasks.box_ops import box_iou, boxes_to_letterbox, fill_mask_from_boxes, mask_iou
from tinycnn.tasks.plates_data import AnnotationError, load_image, read_plates
from tinycnn.tasks.plates_models import InvertedResidual, PlateBoxRegressor, PlateSegmenter, scaled_channels
from tinycnn.tasks.synthetic_plates import generate_plates

SIZE = 32  # the letterbox side of every test run
BOX_KEYS = {"mean_iou", "share_iou_ge_0.5", "share_iou_ge_0.75", "mean_centre_error_px", "n_images"}
SEG_KEYS = {"dice", "iou", "pixel_accuracy", "box_mean_iou", "box_share_iou_ge_0.5", "n_images"}


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    return generate_plates(tmp_path_factory.mktemp("plates"), 10, 4, 4, size=(96, 72), seed=3)


@pytest.fixture(scope="module")
def box_run(plates, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "box"
    assert train_cli.main(["plates-box", "--head", "global", "--data", str(plates), "--epochs", "2",
                           "--batch-size", "4", "--img-size", str(SIZE), "--out", str(folder), "--quiet"]) == 0
    return folder


@pytest.fixture(scope="module")
def seg_run(plates, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "seg"
    assert train_cli.main(["plates-seg", "--data", str(plates), "--epochs", "1", "--batch-size", "4",
                           "--img-size", str(SIZE), "--crop", "16", "--dice", "--upsample", "bilinear",
                           "--out", str(folder), "--quiet"]) == 0
    return folder


def history(folder):
    lines = (folder / "history.csv").read_text().splitlines()
    return lines[0].split(","), lines[1:]


# ------------------------------------------------------------------------------------------ train

def test_box_run_folder_has_models_history_and_curves(box_run):
    assert {p.name for p in box_run.iterdir()} >= {"last.tcnn", "best.tcnn", "history.csv", "curves.png"}
    header, rows = history(box_run)
    assert {"loss", "val_loss", "iou", "val_iou"} <= set(header) and len(rows) == 2
    metadata = tinycnn.load_model(box_run / "last.tcnn", compile=False).metadata
    assert metadata["task"] == "plates-box" and metadata["img_size"] == SIZE and metadata["epochs_done"] == 2


def test_seg_run_folder_has_models_history_and_curves(seg_run):
    assert {p.name for p in seg_run.iterdir()} >= {"last.tcnn", "best.tcnn", "history.csv", "curves.png"}
    header, rows = history(seg_run)
    assert {"loss", "val_loss", "dice", "val_dice"} <= set(header) and len(rows) == 1
    model = tinycnn.load_model(seg_run / "best.tcnn", compile=False)
    assert model.metadata["upsample"] == "bilinear" and model.metadata["crop"] == 16
    assert model.metadata["plate_weight"] > 1  # plates are a small share of the pixels


def test_resume_goes_on_from_last_checkpoint(box_run, tmp_path):
    folder = tmp_path / "resumed"
    shutil.copytree(box_run, folder)
    assert train_cli.main(["plates-box", "--resume", str(folder), "--epochs", "3", "--quiet"]) == 0
    _, rows = history(folder)
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]


def test_training_without_data_uses_the_builtin_plates(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(plates_pipeline, "BUILTIN_SIZE", (64, 48))
    monkeypatch.setattr(plates_pipeline, "BUILTIN_VAL", 2)
    monkeypatch.setattr(plates_pipeline, "BUILTIN_TEST", 3)
    folder = tmp_path / "run"
    assert train_cli.main(["plates-seg", "--synthetic", "4", "--epochs", "1", "--img-size", "16", "--depth", "2",
                           "--out", str(folder), "--quiet"]) == 0
    assert "4 training and 2 validation photos" in capsys.readouterr().out
    assert evaluate_cli.main([str(folder / "best.tcnn"), "--json"]) == 0  # finds the same built-in set
    assert json.loads(capsys.readouterr().out)["n_images"] == 3


def test_bad_annotation_row_is_named_and_can_be_skipped(plates, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(plates, data)
    csv_path = data / "annotations" / "train_annotations.csv"
    with open(csv_path, "a") as file:
        file.write("train_00000.jpg,50,10,20,30\n")  # xmin > xmax
    with pytest.raises(AnnotationError, match=r"train_annotations.csv:\d+"):
        train_cli.main(["plates-box", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "r")])
    with pytest.warns(UserWarning):
        splits = plates_pipeline.read_training_splits({"data": str(data)}, skip_bad_rows=True)
    assert len(splits["train"]) == 9  # the image with the bad row is left out


# ------------------------------------------------------------------------------------------ evaluate

def test_box_evaluate_json_has_the_metrics(box_run, plates, capsys):
    assert evaluate_cli.main([str(box_run / "best.tcnn"), "--data", str(plates), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert BOX_KEYS <= set(metrics) and metrics["n_images"] == 4 and metrics["split"] == "test"
    assert 0 <= metrics["mean_iou"] <= 1 and metrics["mean_centre_error_px"] >= 0


def test_seg_evaluate_json_has_the_metrics(seg_run, plates, capsys):
    assert evaluate_cli.main([str(seg_run / "best.tcnn"), "--data", str(plates), "--split", "val", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert SEG_KEYS <= set(metrics) and metrics["n_images"] == 4 and metrics["split"] == "val"
    assert 0 <= metrics["dice"] <= 1 and 0 <= metrics["pixel_accuracy"] <= 1


# ------------------------------------------------------------------------------------------ predict

def test_box_predict_writes_pngs_and_survives_a_broken_image(box_run, plates, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    good = [plates / "test" / "test_00000.jpg", plates / "test" / "test_00001.jpg"]
    out = tmp_path / "shown"
    annotations = plates / "annotations" / "test_annotations.csv"
    status = predict_cli.main([str(box_run / "best.tcnn"), str(good[0]), str(broken), str(good[1]),
                               "--out", str(out), "--annotations", str(annotations)])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.count("\n") == 1 and "broken.jpg" in captured.err
    assert captured.out.count("plate box") == 2 and "IoU" in captured.out
    pictures = sorted(p.name for p in out.iterdir())
    assert pictures == ["test_00000.png", "test_00001.png"]
    drawn = np.asarray(Image.open(out / "test_00000.png"))
    assert drawn.shape == (72, 96, 3)
    assert np.any(np.all(drawn == (0, 220, 0), axis=2))  # the ground-truth box, in green


def test_seg_predict_prints_pixel_count_and_writes_overlay(seg_run, plates, tmp_path, capsys):
    image = plates / "test" / "test_00002.jpg"
    assert predict_cli.main([str(seg_run / "best.tcnn"), str(image), "--out", str(tmp_path)]) == 0
    assert "plate pixels" in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "test_00002.png")).shape == (72, 96, 3)


# ------------------------------------------------------------------------------------------ redact

@pytest.mark.parametrize("mode", ["pixelate", "blur", "fill"])
def test_redact_changes_only_the_plate_region(box_run, plates, tmp_path, mode):
    image = plates / "test" / "test_00003.jpg"
    model_path = box_run / "best.tcnn"
    from tinycnn import redact as entry_point  # python -m tinycnn.redact: loads tasks/redact.py by name
    assert entry_point.main([str(model_path), str(image), "--mode", mode, "--out", str(tmp_path)]) == 0
    redacted = np.asarray(Image.open(tmp_path / "test_00003.png"))
    original = redact_cli.photo_pixels(image)
    model = tinycnn.load_model(model_path, compile=False)
    photo = plates_pipeline.letterbox_photo(load_image(image), SIZE)
    output = model.predict(plates_pipeline.to_model_input([photo.canvas]))[0]
    rectangles = redact_cli.redaction_rectangles(plates_box.plate_mask(photo, output), margin=2)
    region = redact_cli.region_of(rectangles, 72, 96)
    assert region.any()
    np.testing.assert_array_equal(redacted[~region], original[~region])
    assert not np.array_equal(redacted[region], original[region])


def plate_in_photo(plates):
    """A test photo's pixels and its true plate rectangle (x0, y0, x1, y1) as whole pixels."""
    record = read_plates(plates, ["test"])["test"][0]
    pixels = redact_cli.photo_pixels(record.path)
    x0, y0, x1, y1 = record.boxes[0]
    return pixels, np.array([[int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))]])


def detail(patch):
    """How much fine detail (letters) a patch holds: the mean absolute difference of neighbouring pixels."""
    patch = patch.astype(np.float64)
    return np.abs(np.diff(patch, axis=0)).mean() + np.abs(np.diff(patch, axis=1)).mean()


@pytest.mark.parametrize("mode", ["pixelate", "blur", "fill"])
def test_redaction_modes_destroy_the_plate_detail(plates, mode):
    pixels, rectangles = plate_in_photo(plates)
    (x0, y0, x1, y1), = rectangles
    out = redact_cli.redact(pixels, rectangles, mode)
    outside = redact_cli.region_of(rectangles, *pixels.shape[:2]) == 0
    np.testing.assert_array_equal(out[outside], pixels[outside])
    before, after = pixels[y0:y1, x0:x1], out[y0:y1, x0:x1]
    assert detail(after) < 0.35 * detail(before)
    if mode == "fill":
        assert len(np.unique(after.reshape(-1, 3), axis=0)) == 1
    if mode == "pixelate":
        assert len(np.unique(after.reshape(-1, 3), axis=0)) <= 2 * np.ceil((x1 - x0) / max(4, np.ceil((y1 - y0) / 2)))


def test_redaction_rectangles_grow_and_cover_each_region():
    mask = np.zeros((20, 30), bool)
    mask[5:8, 4:9] = True
    mask[6, 6] = False  # a hole (a letter) is covered too
    mask[15, 25:28] = True
    rectangles = redact_cli.redaction_rectangles(mask, margin=1)
    assert sorted(map(tuple, rectangles.tolist())) == [(3, 4, 10, 9), (24, 14, 29, 17)]


# ------------------------------------------------------------------------------------------ models

def test_inverted_residual_shapes_and_residual_rule():
    x = np.random.default_rng(0).normal(size=(2, 16, 8, 8)).astype(np.float32)
    cases = [((16, 16, 1, 6), (2, 16, 8, 8), True), ((16, 24, 1, 6), (2, 24, 8, 8), False),
             ((16, 16, 2, 6), (2, 16, 4, 4), False), ((16, 8, 1, 1), (2, 8, 8, 8), False)]
    for (cin, cout, strides, expansion), shape, residual in cases:
        block = InvertedResidual(cin, cout, strides, expansion)
        assert block.residual == residual
        assert (block.expand is None) == (expansion == 1)
        block.eval()
        with tinycnn.no_grad():
            assert block(tinycnn.Tensor(x)).shape == shape
        block.project.bn.gamma.data[...] = 0  # the projection now outputs exactly 0 (beta is 0)
        with tinycnn.no_grad():
            y = block(tinycnn.Tensor(x)).numpy()
        np.testing.assert_array_equal(y, x if residual else np.zeros(shape, np.float32))


def test_width_multiplier_scales_channels():
    assert [scaled_channels(c, 0.5) for c in (32, 16, 24, 128)] == [16, 8, 16, 64]
    assert scaled_channels(24, 1.0) == 24 and scaled_channels(24, 0.35) == 8
    model = PlateBoxRegressor(width=0.5)
    out = model.predict(np.zeros((2, 3, SIZE, SIZE), np.float32))
    assert out.shape == (2, 4) and np.all((out > 0) & (out < 1))
    assert model.state_dict()["stem.conv.kernel"].shape == (16, 3, 3, 3)


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_segmenter_gives_per_pixel_probabilities(upsample):
    model = PlateSegmenter(filters=4, depth=2, upsample=upsample)
    out = model.predict(np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32))
    assert out.shape == (2, 2, 16, 16)
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="divisible by 4"):
        model.predict(np.zeros((1, 3, 18, 18), np.float32))


def test_init_copies_weights_where_names_and_shapes_match(box_run):
    source = tinycnn.load_model(box_run / "best.tcnn", compile=False).state_dict()
    sample = np.zeros((1, 3, SIZE, SIZE), np.float32)
    same = PlateBoxRegressor()
    copied, skipped = plates_pipeline.copy_matching_weights(same, box_run, sample)
    assert skipped == [] and len(copied) == len(source)
    for name, value in same.state_dict().items():
        np.testing.assert_array_equal(value, source[name], err_msg=name)
    narrower = PlateBoxRegressor(width=0.5)
    copied, skipped = plates_pipeline.copy_matching_weights(narrower, box_run, sample)
    assert "box.kernel" in copied and "stem.conv.kernel" in skipped  # the head keeps 256 channels
    np.testing.assert_array_equal(narrower.state_dict()["box.kernel"], source["box.kernel"])
    with pytest.raises(ValueError, match="none of best.tcnn"):
        plates_pipeline.copy_matching_weights(PlateSegmenter(4, 2), box_run, sample)


# ------------------------------------------------------------------------------------------ losses, mapping

def test_iou_loss_is_zero_on_target_and_has_gradients_everywhere():
    loss = plates_box.DistanceIoULoss()
    target = np.array([[0.2, 0.2, 0.4, 0.3]], np.float32)
    assert float(loss(tinycnn.Tensor(target), target).item()) == pytest.approx(0, abs=1e-5)
    swapped = target[:, [2, 3, 0, 1]]  # the same rectangle, corners given the other way round
    assert float(loss(tinycnn.Tensor(swapped), target).item()) == pytest.approx(0.15, abs=1e-5)  # only L1 left
    for start in ([[0.6, 0.6, 0.8, 0.7]], [[0.5, 0.5, 0.5, 0.5]]):  # disjoint; zero area (a fresh network)
        pred = tinycnn.Tensor(np.array(start, np.float32), requires_grad=True)
        value = loss(pred, target)
        assert float(value.item()) > 1  # no overlap: 1 − IoU alone is 1
        value.backward()
        assert np.all(np.isfinite(pred.grad)) and np.all(pred.grad != 0)


def test_dice_loss_vanishes_for_a_perfect_prediction():
    y = np.zeros((1, 8, 8), np.int64)
    y[0, 2:4, 1:6] = 1
    logits = np.where(y[:, None] == np.arange(2)[None, :, None, None], 20.0, -20.0).astype(np.float32)
    probabilities = tinycnn.functional.softmax(tinycnn.Tensor(logits), dim=1)
    probabilities._logits = ("softmax", tinycnn.Tensor(logits))
    assert float(plates_seg.WeightedCrossEntropyDice([1.0, 5.0])(probabilities, y).item()) < 1e-3


def test_masks_and_boxes_map_back_to_the_photo(plates):
    record = read_plates(plates, ["test"])["test"][1]
    photo = plates_pipeline.letterbox_photo(load_image(record.path), SIZE * 4)
    box = boxes_to_letterbox(record.boxes[:1], photo.scale, photo.pad, size=SIZE * 4)
    assert box_iou(photo.boxes_to_photo(box[:, [2, 3, 0, 1]])[0], record.boxes[0]) > 0.99  # corners swapped
    canvas_mask = fill_mask_from_boxes(box * SIZE * 4, SIZE * 4, SIZE * 4).astype(np.float32)
    output = np.stack([1 - canvas_mask, canvas_mask])
    truth = fill_mask_from_boxes(record.boxes, record.height, record.width)
    assert float(mask_iou(plates_seg.plate_mask(photo, output), truth)) > 0.7

"""plates-box --head center (the default) end to end on a tiny synthetic set: train, --init, evaluate --json
with the PR curve, predict with every box and its score; several CSV rows / VOC objects per image as targets.

The data: tasks/synthetic_plates, 10 training, 4 validation and 4 test pictures of 96x72 px, letterboxed to
32 px, 1-2 epochs (the numbers such runs reach are not checked: the files, keys and wiring are)."""
import json

import numpy as np
import pytest
from PIL import Image

import tinycnn
from tinycnn import evaluate as evaluate_cli
from tinycnn import predict as predict_cli
from tinycnn import train as train_cli
from tinycnn.saving import read_metadata
from tinycnn.tasks import plates_detect, plates_pipeline
from tinycnn.tasks.plates_data import read_plates
from tinycnn.tasks.synthetic_plates import generate_plates

SIZE = 32
DETECT_KEYS = {"ap_50", "ap_50_95", "recall_50", "mean_best_iou", "precision", "recall", "f1", "n_images",
               "n_plates", "threshold", "split", "pr_curve"}


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    return generate_plates(tmp_path_factory.mktemp("plates"), 10, 4, 4, size=(96, 72), seed=3)


@pytest.fixture(scope="module")
def detect_run(plates, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "detect"
    assert train_cli.main(["plates-box", "--data", str(plates), "--epochs", "2", "--batch-size", "4", "--width",
                           "0.35", "--neck", "16", "--img-size", str(SIZE), "--out", str(folder), "--quiet", "--pretrain", "0"]) == 0
    return folder


def test_the_default_head_is_the_detector(detect_run):
    metadata = read_metadata(detect_run / "best.tcnn")
    assert metadata["head"] == "center" and metadata["task"] == "plates-box" and metadata["img_size"] == SIZE
    # no --score-threshold: the lowest threshold within one plate of the best F1 on val, kept in best.tcnn
    assert isinstance(metadata["score_threshold"], float) and 0 < metadata["score_threshold"] <= 1
    assert read_metadata(detect_run / "last.tcnn")["score_threshold"] is None
    for name in ("best.tcnn", "last.tcnn", "history.csv", "curves.png", "pr_curve-val.png"):
        assert (detect_run / name).is_file(), name


def test_init_fine_tunes_from_a_run(detect_run, plates, tmp_path, capsys):
    assert train_cli.main(["plates-box", "--data", str(plates), "--epochs", "1", "--batch-size", "4", "--width",
                           "0.35", "--neck", "16", "--img-size", str(SIZE), "--init", str(detect_run),
                           "--out", str(tmp_path / "tuned"), "--quiet", "--no-augment"]) == 0
    assert "kept 0 fresh" in capsys.readouterr().out  # the same network: every tensor copied


def test_evaluate_json_has_the_detection_metrics_and_draws_the_pr_curve(detect_run, plates, capsys):
    (detect_run / "pr_curve.png").unlink(missing_ok=True)
    assert evaluate_cli.main([str(detect_run / "best.tcnn"), "--data", str(plates), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert DETECT_KEYS <= set(metrics) and "curve" not in metrics
    assert metrics["n_images"] == 4 and metrics["n_plates"] == sum(
        len(r.boxes) for r in read_plates(plates, ["test"])["test"])
    assert 0 <= metrics["ap_50"] <= 1 and 0 <= metrics["mean_best_iou"] <= 1
    assert Image.open(detect_run / "pr_curve.png").size == (480, 400)


def test_evaluate_and_predict_with_tta(detect_run, plates, capsys):
    """--tta: the detector averages the outputs of each photo and its mirror image."""
    assert evaluate_cli.main([str(detect_run / "best.tcnn"), "--data", str(plates), "--json", "--tta"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert DETECT_KEYS <= set(metrics) and metrics["n_images"] == 4
    image = plates / "test" / "test_00000.jpg"
    assert predict_cli.main([str(detect_run / "best.tcnn"), str(image), "--tta"]) == 0
    assert "plate(s)" in capsys.readouterr().out


def test_predict_prints_every_box_with_its_score(detect_run, plates, tmp_path, capsys, monkeypatch):
    # a stand-in decoder that finds two plates, so the printing and drawing of several boxes is exercised
    monkeypatch.setattr(plates_detect, "decode", lambda output, threshold: (
        np.array([[2, 3, 12, 7], [16, 20, 30, 25]], np.float32), np.array([0.9, 0.45], np.float32)))
    image = plates / "test" / "test_00000.jpg"
    assert predict_cli.main([str(detect_run / "best.tcnn"), str(image), "--out", str(tmp_path)]) == 0
    line = capsys.readouterr().out
    assert "2 plate(s)" in line and "0.90 at" in line and "0.45 at" in line
    drawn = np.asarray(Image.open(tmp_path / "test_00000.png"))
    assert (np.all(drawn == [255, 0, 0], axis=2)).sum() > 20  # red boxes


def test_several_plates_per_image_are_all_targets(tmp_path):
    """Two CSV rows for one file and two VOC objects for one file: the detector gets both boxes, the
    regressor (--head global) the larger one."""
    root = generate_plates(tmp_path / "two", 3, 1, 1, size=(96, 72), seed=5)
    csv_path = root / "annotations" / "train_annotations.csv"
    with open(csv_path, "a") as file:
        file.write("train_00000.jpg,1,1,9,5\n")
    records = read_plates(root, ["train"])["train"]
    first = next(r for r in records if r.path.name == "train_00000.jpg")
    data = plates_pipeline.letterbox_records(records, SIZE)
    targets = plates_detect.canvas_boxes(data)
    index = records.index(first)
    assert len(plates_detect.valid_boxes(targets[index])) == len(first.boxes) >= 2
    largest = data.boxes[index]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in plates_detect.valid_boxes(targets[index])]
    assert (largest[2] - largest[0]) * (largest[3] - largest[1]) == pytest.approx(max(areas), rel=1e-5)

    voc = tmp_path / "voc"
    (voc / "annotations" / "train").mkdir(parents=True)
    (voc / "train").mkdir()
    Image.new("RGB", (64, 48), (120, 120, 120)).save(voc / "train" / "a.jpg")
    (voc / "annotations" / "train" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename>"
        "<object><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>9</ymax></bndbox></object>"
        "<object><bndbox><xmin>30</xmin><ymin>30</ymin><xmax>60</xmax><ymax>40</ymax></bndbox></object>"
        "</annotation>")
    records = read_plates(voc, ["train"])["train"]
    targets = plates_detect.canvas_boxes(plates_pipeline.letterbox_records(records, SIZE))
    assert len(plates_detect.valid_boxes(targets[0])) == 2


def test_img_size_must_divide_by_16(plates, tmp_path):
    with pytest.raises(SystemExit, match="divide by 16"):
        train_cli.main(["plates-box", "--data", str(plates), "--img-size", "40", "--out", str(tmp_path / "r")])


def test_the_recipe_is_kept_in_the_model_file_and_drives_the_optimizer(detect_run):
    """The run's model file keeps the recipe (stem, expansion, schedule, scale); its optimizer is AdamW whose
    rate ramps from 0 over the warm-up, peaks at lr, then falls by a cosine to 0 at the last step."""
    metadata = read_metadata(detect_run / "best.tcnn")
    recipe = plates_detect.RECIPE
    assert (metadata["stem"], metadata["expansion"], metadata["scale"]) == (
        recipe["stem"], recipe["expansion"], list(recipe["scale"]))
    schedule = metadata["schedule"]
    assert schedule["epochs"] == 2 and schedule["warmup_epochs"] == 1 and schedule["steps_per_epoch"] == 3  # 10 / 4
    optimizer = plates_detect.optimizer_of(metadata)
    assert type(optimizer).__name__ == "AdamW"
    rate = optimizer.config["learning_rate"]
    assert rate(0) == 0.0 and rate(3) == pytest.approx(metadata["lr"]) and rate(6) == pytest.approx(0.0)
    assert 0 < rate(4) < metadata["lr"]


def test_a_first_detector_file_without_the_recipe_builds_the_first_network():
    """Model files written before the recipe keep only width and neck: they build stem 32, expansion 6 and go on
    with Adam at a constant rate."""
    first = plates_detect.PlateCenterNet(**{"width": 1.0, "neck": 16})
    assert first.get_config() == {"width": 1.0, "neck": 16, "stem": 32, "expansion": 6, "head": "light"}
    assert first.stem.conv.filters == 32 and first.stage4[1].expand.conv.filters == 16 * 6
    recipe = plates_detect.PlateCenterNet(1.0, 16, plates_detect.RECIPE["stem"], plates_detect.RECIPE["expansion"])
    assert recipe.stem.conv.filters == 16 and recipe.stage4[1].expand.conv.filters == 16 * 4
    assert type(plates_detect.optimizer_of({"lr": 1e-3})).__name__ == "Adam"


def test_head_styles_build_save_and_load(tmp_path):
    """Each head style gives the same output shape, keeps its style in the model file and predicts the same after
    loading; an unknown style is a one-line error naming it."""
    x = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    for style in ("light", "separable", "conv"):
        tinycnn.manual_seed(0)
        model = plates_detect.PlateCenterNet(0.35, 16, 16, 4, head=style)
        assert model.get_config()["head"] == style
        assert (style == "separable") == hasattr(model.box, "hidden")
        before = model.predict(x)
        assert before.shape == (2, 5, 8, 8)
        model.save(tmp_path / f"{style}.tcnn")
        loaded = tinycnn.load_model(tmp_path / f"{style}.tcnn", compile=False)
        np.testing.assert_allclose(loaded.predict(x), before, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="head style 'wide'"):
        plates_detect.PlateCenterNet(0.35, 16, head="wide")
    assert plates_detect.RECIPE["head_layers"] in plates_detect.Head.STYLES

"""python -m tinycnn.report on a tiny run of each task: the HTML parses, holds each section, every picture it
inlines or names decodes, and the confusion matrix picture shows evaluate's counts.

The tiny runs are the task tests' own fixtures (tests/test_catdog_task.py, tests/test_plates_tasks.py).
"""
import base64
import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_catdog_task import _builtin, tiny_run  # noqa: F401 - fixtures
from test_plates_tasks import box_run, plates, seg_run  # noqa: F401 - fixtures

import tinycnn
from tinycnn import evaluate, report, train, visualize
from tinycnn.cli import run_cli
from tinycnn.tasks import common

COMMON_SECTIONS = {"overview", "curves", "filters", "feature-maps", "summary", "recipe"}


class ReportParser(HTMLParser):
    """The section ids, the inlined pictures (data URIs) and the picture files an HTML report names."""

    def __init__(self):
        super().__init__()
        self.sections, self.inlined, self.files = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs["src"][:40]
            self.inlined.append(base64.b64decode(attrs["src"].split(",", 1)[1]))
            self.files.append(attrs["data-file"])
        elif tag == "a" and attrs.get("href", "").endswith(".png"):
            self.files.append(attrs["href"])


def parse_report(run):
    parser = ReportParser()
    parser.feed((Path(run) / "report.html").read_text(encoding="utf-8"))
    parser.close()
    return parser


def check_pictures(run, parsed):
    """Every inlined picture decodes; every named file exists, decodes and is the inlined picture."""
    assert parsed.inlined and parsed.files[0::2] == parsed.files[1::2]   # each <a href> and its <img data-file>
    assert len(parsed.files) == 2 * len(parsed.inlined)
    for data, name in zip(parsed.inlined, parsed.files[0::2]):
        Image.open(io.BytesIO(data)).verify()
        path = Path(run) / name
        assert path.is_file(), name
        assert path.read_bytes() == data, name
        with Image.open(path) as picture:
            assert picture.width > 10 and picture.height > 10


def test_catdog_report_has_every_section_and_picture(tiny_run, capsys):  # noqa: F811
    assert report.main([str(tiny_run)]) == 0
    assert "report.html" in capsys.readouterr().out
    parsed = parse_report(tiny_run)
    assert set(parsed.sections) >= COMMON_SECTIONS | {"classification", "wrong", "boundary"}
    check_pictures(tiny_run, parsed)
    text = (tiny_run / "report.html").read_text()
    assert "precision" in text and "recall" in text and "validation split" in text


def test_confusion_picture_counts_match_evaluate(tiny_run, capsys):  # noqa: F811
    data = str(_builtin(tiny_run))
    assert evaluate.main([str(tiny_run / "best.tcnn"), "--data", data, "--json"]) == 0
    expected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["confusion_matrix"]
    assert report.main([str(tiny_run), "--data", data]) == 0
    picture = Image.open(tiny_run / "report" / "confusion.png")
    drawn = json.loads(picture.text["tinycnn:confusion"])
    assert drawn["counts"] == expected and np.sum(expected) == 48
    pixels = np.asarray(picture.convert("RGB"))
    for (i, row), cells in zip(enumerate(expected), np.array_split(drawn["cells"], len(expected))):
        for count, (x0, y0, _, _) in zip(row, cells):
            shade = visualize.share_colour(count / max(sum(row), 1))   # the corner of the cell: no text there
            assert np.abs(pixels[y0 + 3, x0 + 3].astype(int) - shade).max() <= 1, (i, count)


@pytest.mark.parametrize("fixture", ["box_run", "seg_run"])
def test_plate_report_has_every_section_and_picture(fixture, request, plates):  # noqa: F811
    run = request.getfixturevalue(fixture)
    assert report.main([str(run), "--data", str(plates)]) == 0
    parsed = parse_report(run)
    assert set(parsed.sections) >= COMMON_SECTIONS | {"photos", "precision-recall"}
    check_pictures(run, parsed)
    text = (run / "report.html").read_text()
    assert "worst IoU first" in text and "4 photos of the val split" in text
    if fixture == "box_run":
        assert "no score" in text   # it says why there is no usual precision-recall curve


def test_minimal_report_needs_no_data(box_run, tmp_path):  # noqa: F811
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("best.tcnn", "history.csv"):
        (run / name).write_bytes((box_run / name).read_bytes())
    report.write_report(run, minimal=True)
    parsed = parse_report(run)
    assert set(parsed.sections) == {"overview", "curves", "filters", "summary", "recipe"}
    check_pictures(run, parsed)


def test_a_folder_without_a_model_is_a_one_line_error(tmp_path, capsys):
    assert run_cli("report", report.main, [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "best.tcnn" in err and str(tmp_path) in err


def test_precision_recall_by_hand():
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    positive = np.array([True, False, True, False])
    precision, recall, thresholds = report.precision_recall(scores, positive, bins=10)
    at = {round(t, 1): (p, r) for p, r, t in zip(precision, recall, thresholds)}
    assert at[0.5] == (0.5, 0.5)          # 0.9 and 0.8 pass: one of two positives found
    assert at[0.2] == (2 / 3, 1.0)
    assert at[0.0] == (0.5, 1.0)
    assert report.average_precision(np.array([1.0, 0.5]), np.array([1.0, 0.5])) == pytest.approx(0.75)


def test_three_class_report_has_no_binary_curve(tmp_path):
    rng = np.random.default_rng(0)
    for k, name in enumerate(("ant", "bee", "cow")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 80, (16, 16, 3)) + 80 * k
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    run = tmp_path / "run"
    assert train.main(["catdog", "--data", str(tmp_path / "data"), "--epochs", "1", "--img-size", "16",
                       "--val-split", "0.3", "--quiet", "--out", str(run)]) == 0
    assert report.main([str(run), "--data", str(tmp_path / "data")]) == 0
    parsed = parse_report(run)
    assert {"classification", "wrong", "boundary"} <= set(parsed.sections)
    check_pictures(run, parsed)
    counts = json.loads(Image.open(run / "report" / "confusion.png").text["tinycnn:confusion"])["counts"]
    assert np.array(counts).shape == (3, 3) and np.sum(counts) == 30
    assert not (run / "report" / "precision_recall.png").exists()


def test_without_matplotlib_the_report_still_has_its_curves(box_run, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(visualize, "_fallback_warned", False)
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("best.tcnn", "history.csv"):
        (run / name).write_bytes((box_run / name).read_bytes())
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        report.write_report(run, minimal=True)
    with Image.open(run / "report" / "curves.png") as curves:
        assert curves.size == (2 * 450, 360)   # the Pillow picture: loss and iou


def test_training_writes_curves_and_a_minimal_report(tiny_run):  # noqa: F811
    parsed = parse_report(tiny_run)   # the fixture's training wrote it (a later test may have replaced it)
    assert {"curves", "summary", "recipe"} <= set(parsed.sections)
    with Image.open(tiny_run / "curves.png") as curves:
        assert curves.width > 300


def test_a_report_failure_does_not_lose_the_run(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "write_report", broken)
    model = tinycnn.Sequential([tinycnn.layers.Conv2D(2, 3, input_shape=(8, 8, 1)), tinycnn.layers.Flatten(),
                                tinycnn.layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", metrics=["accuracy"])
    model.metadata = {}   # a task's run sets it (task, preprocessing)
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype(np.float32)
    fit = dict(x=x, y=np.arange(8) % 2, batch_size=4, epochs=1, verbose=0, validation_data=(x, np.arange(8) % 2))
    with pytest.warns(UserWarning, match="disk full"):
        rows = common.train_in_folder(model, str(tmp_path), fit, monitor="val_accuracy", main_metric="accuracy")
    assert len(rows) == 1 and (tmp_path / "best.tcnn").is_file() and (tmp_path / "history.csv").is_file()

"""The cat/dog task end to end on a tiny built-in set: train, resume, Ctrl-C, evaluate (--json), predict."""
import csv
import json

import numpy as np
import pytest

import tinycnn
from tinycnn import evaluate, predict, train
from tinycnn.tasks import catdog, common


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One training run of 1 epoch on 24 built-in images per class at 32x32, shared by the tests."""
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(cache))
    out = tmp_path_factory.mktemp("run")
    assert train.main(["catdog", "--epochs", "1", "--builtin-size", "24", "--img-size", "32", "--quiet",
                       "--out", str(out)]) == 0
    yield out
    mp.undo()


def test_train_writes_the_run_folder(tiny_run):
    for name in ("best.tcnn", "last.tcnn", "history.csv", "curves.png"):
        assert (tiny_run / name).exists(), name
    rows = list(csv.DictReader(open(tiny_run / "history.csv")))
    assert len(rows) == 1 and {"loss", "accuracy", "val_loss", "val_accuracy", "images_per_sec"} <= set(rows[0])
    meta = tinycnn.saving.read_metadata(tiny_run / "last.tcnn")
    assert meta["task"] == "catdog" and meta["class_names"] == ["cat", "dog"] and meta["img_size"] == 32


def test_resume_continues_to_the_requested_epochs(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.tcnn", "history.csv"):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    assert train.main(["catdog", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert tinycnn.saving.read_metadata(run / "last.tcnn")["epochs_done"] == 2


def test_ctrl_c_saves_a_checkpoint_that_resumes(tiny_run, tmp_path):
    model = tinycnn.load_model(tiny_run / "last.tcnn")

    class Interrupt(tinycnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            raise KeyboardInterrupt

    channels = model.build_input_shape[0]
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, channels)).astype(np.float32)
    fit = dict(x=x, y=np.arange(8) % 2, batch_size=4, epochs=5, verbose=0, callbacks=[Interrupt()],
               validation_data=(x, np.arange(8) % 2))
    with pytest.raises(SystemExit) as stop:
        common.train_in_folder(model, str(tmp_path), fit, monitor="val_accuracy", main_metric="accuracy")
    assert stop.value.code == 130
    saved = tinycnn.load_model(tmp_path / "last.tcnn")
    assert saved.metadata["epochs_done"] == 2  # the interrupted epoch finished; resume goes on after it


def test_evaluate_json_parses_with_the_metrics(tiny_run, capsys):
    assert evaluate.main([str(tiny_run / "best.tcnn"), "--data", str(_builtin(tiny_run)), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= report["accuracy"] <= 1.0
    assert set(report["per_class"]) == {"cat", "dog"}
    assert np.array(report["confusion_matrix"]).sum() == report["images"] == 48


def test_predict_prints_one_line_per_image_and_survives_a_bad_one(tiny_run, tmp_path, capsys):
    good = sorted((_builtin(tiny_run) / "dog").iterdir())[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    assert predict.main([str(tiny_run / "best.tcnn"), str(good), str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(str(good)) for line in lines)
    assert lines[0].split(": ")[1].split(" ")[0] in ("cat", "dog")
    assert str(bad) in captured.err and captured.err.count("\n") == 1


def test_classification_report_by_hand():
    report = catdog.classification_report(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), ["cat", "dog"])
    assert report["confusion_matrix"] == [[1, 1], [1, 2]]
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["per_class"]["dog"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["cat"]["recall"] == pytest.approx(1 / 2)


def _builtin(run):
    return __import__("pathlib").Path(tinycnn.saving.read_metadata(run / "last.tcnn")["data"])


def test_no_cache_streams_every_epoch_and_writes_no_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert train.main(["catdog", "--model", "seed", "--epochs", "2", "--builtin-size", "12", "--img-size", "16",
                       "--no-cache", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "run" / "history.csv")))) == 2
    assert not (tmp_path / "cache" / "tinycnn" / "datasets").exists()


def test_val_split_outside_zero_one_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["catdog", "--val-split", "0", "--epochs", "1"])
    assert stop.value.code == 2 and "--val-split" in capsys.readouterr().err

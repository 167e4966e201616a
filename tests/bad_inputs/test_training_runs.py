"""Training runs and the user's mistakes (issue 17): arguments checked where they are parsed, no run folder left
by a run that failed before its first epoch, another run never replaced, and a diverging run stopped with one
line (exit 1) naming the epoch and batch, its best checkpoint kept."""
import os

import numpy as np
import pytest

import tinycnn
from tinycnn import layers, train
from tinycnn.callbacks import LearningRateScheduler
from tinycnn.cli import EXIT_BUG, EXIT_MISTAKE, fresh_folder, run_cli
from tinycnn.trainer import TrainingError

from tinycnn.tasks.common import train_in_folder

TINY = ["--model", "seed", "--builtin-size", "12", "--img-size", "16", "--epochs", "1", "--quiet"]


def _train(argv):
    """`python -m tinycnn.train ARGV`'s exit status, in this process."""
    try:
        return run_cli("train", train.main, [str(a) for a in argv])
    except SystemExit as stop:  # argparse's errors leave through SystemExit(2)
        return stop.code


def _one_error_line(stderr):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("tinycnn train") and ": error: " in lines[0], stderr
    return lines[0]


@pytest.mark.parametrize("task, flag, value", [
    ("catdog", "--epochs", "0"), ("catdog", "--epochs", "-1"), ("catdog", "--batch-size", "-4"),
    ("catdog", "--img-size", "0"), ("catdog", "--val-split", "0"), ("catdog", "--device", "gpu"),
    ("plates-box", "--img-size", "0"), ("plates-seg", "--epochs", "0"), ("plates-box", "--batch-size", "0"),
])
def test_bad_training_arguments_are_one_line(tmp_path, capsys, task, flag, value):
    out = tmp_path / "run"
    assert _train([task, flag, value, "--out", str(out)]) == EXIT_MISTAKE
    assert flag in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_run_failing_before_its_first_epoch_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "photos" / "cat").mkdir(parents=True)  # a class folder without a photo
    out = tmp_path / "run"
    status = _train(["catdog", "--data", str(tmp_path / "photos"), "--out", str(out)] + TINY)
    assert status == EXIT_MISTAKE
    _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_out_holding_a_run_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.tcnn").write_bytes(b"an earlier run")
    assert _train(["catdog", "--out", str(out)] + TINY) == EXIT_MISTAKE
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--overwrite" in line and "--resume" in line
    assert (out / "last.tcnn").read_bytes() == b"an earlier run"
    assert _train(["catdog", "--out", str(out), "--overwrite"] + TINY) == 0
    assert tinycnn.load_model(out / "last.tcnn").metadata["epochs_done"] == 1


def test_the_default_run_folder_is_never_an_existing_one(tmp_path):
    base = tmp_path / "runs" / "catdog-20260101-120000"
    assert fresh_folder(str(base)) == str(base)
    base.mkdir(parents=True)
    assert fresh_folder(str(base)) == f"{base}-2"
    os.mkdir(f"{base}-2")
    assert fresh_folder(str(base)) == f"{base}-3"


def test_lr_1e6_stops_with_one_line_naming_epoch_and_batch(tmp_path, capsys):
    out = tmp_path / "run"
    status = _train(["catdog", "--out", str(out), "--lr", "1e6"] + TINY[:-3] +
                     ["--epochs", "3", "--quiet"])
    assert status == EXIT_BUG
    line = _one_error_line(capsys.readouterr().err)
    assert "epoch 1" in line and "batch" in line and "diverged" in line, line
    assert not (out / "best.tcnn").exists() and not (out / "last.tcnn").exists()  # no epoch worth keeping


def _toy(lr_schedule):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.float32)
    tinycnn.manual_seed(0)
    model = tinycnn.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)),
                                layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="sgd", metrics=["accuracy"])
    model.metadata = {"task": "toy"}
    fit = dict(x=x[:24], y=y[:24], batch_size=8, epochs=4, verbose=0, validation_data=(x[24:], y[24:]),
               callbacks=[LearningRateScheduler(lr_schedule)])
    return model, fit


def test_divergence_after_a_good_epoch_keeps_best_and_last(tmp_path):
    folder = str(tmp_path / "run")
    model, fit = _toy(lambda epoch, lr: 0.01 if epoch == 0 else 1e6)
    with pytest.raises(TrainingError, match=r"at epoch 2, batch \d+"):
        train_in_folder(model, folder, fit, monitor="val_loss", main_metric="accuracy")
    best, last = (tinycnn.load_model(os.path.join(folder, name)) for name in ("best.tcnn", "last.tcnn"))
    assert best.metadata["epochs_done"] == last.metadata["epochs_done"] == 1
    assert all(np.isfinite(w).all() for w in best.get_weights())


def test_a_loss_that_moves_normally_is_not_divergence(tmp_path):
    model, fit = _toy(lambda epoch, lr: 0.05)
    rows = train_in_folder(model, str(tmp_path / "run"), fit, monitor="val_loss", main_metric="accuracy")
    assert len(rows) == 4


def test_the_console_script_goes_through_run_cli(monkeypatch, capsys):
    import tomllib
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "pyproject.toml"), "rb") as f:
        script = tomllib.load(f)["project"]["scripts"]["tinycnn-train"]
    module, function = script.split(":")
    assert (module, function) == ("tinycnn.train", "console")
    monkeypatch.setattr("sys.argv", ["tinycnn-train", "catdog", "--epochs", "-1"])
    with pytest.raises(SystemExit) as stop:
        train.console()
    assert stop.value.code == EXIT_MISTAKE and "--epochs" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("task", ["plates-box", "plates-seg"])
def test_resuming_another_tasks_run_is_one_line_naming_both(catdog_model_file, tmp_path, capsys, task):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.tcnn").write_bytes(catdog_model_file.read_bytes())
    assert _train([task, "--resume", run, "--quiet"]) == EXIT_MISTAKE
    line = _one_error_line(capsys.readouterr().err)
    assert "'catdog'" in line and f"'{task}'" in line and "python -m tinycnn.train catdog --resume" in line


def test_resume_prefers_the_interrupted_checkpoint(catdog_model_file, tmp_path):
    from tinycnn.cli import resume_checkpoint
    run = tmp_path / "run"
    run.mkdir()
    (run / "interrupted.tcnn").write_bytes(catdog_model_file.read_bytes())  # Ctrl-C in the first epoch
    assert resume_checkpoint(str(run), "catdog") == str(run / "interrupted.tcnn")
    (run / "last.tcnn").write_bytes(catdog_model_file.read_bytes())
    assert resume_checkpoint(str(run), "catdog") == str(run / "interrupted.tcnn")


def test_out_naming_a_file_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert _train(["catdog", "--out", out] + TINY) == EXIT_MISTAKE
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)
    assert out.read_text() == "mine"

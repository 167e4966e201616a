"""plates-box --ema: the detector validates and keeps a moving average of its weights (tinycnn/ema.py), with
batch-norm statistics of their own; the pre-training run keeps the training weights; wrong uses get one line.

Tiny settings (6 photos, 32 px, width 0.35): the wiring is checked, not what such runs reach."""
import argparse

import numpy as np
import pytest

from tinycnn import load_model
from tinycnn import train as train_cli
from tinycnn.cli import UserInputError
from tinycnn.saving import read_metadata
from tinycnn.tasks import detect_pretrain, plates_detect
from tinycnn.tasks.synthetic_plates import generate_plates

TINY = ["--epochs", "2", "--batch-size", "4", "--width", "0.35", "--neck", "16", "--img-size", "32", "--quiet",
        "--mix-synthetic", "0", "--lr", "0.05"]


@pytest.fixture
def plates(tmp_path):
    return generate_plates(tmp_path / "plates", 6, 2, 2, size=(96, 72), seed=4)


def train(plates, out, *extra):
    return train_cli.main(["plates-box", "--data", str(plates), "--out", str(out), *TINY, *extra])


def parameters(path):
    model = load_model(str(path), compile=False)
    return {name: np.array(value.numpy()) for name, value in model.named_parameters()}


def test_the_saved_weights_are_the_moving_average(plates, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(detect_pretrain, "FOLDER", str(tmp_path / "pretrained"))
    assert train(plates, tmp_path / "plain", "--pretrain", "4", "--pretrain-epochs", "1") == 0
    start = parameters(next((tmp_path / "pretrained").iterdir()) / "best.tcnn")
    assert read_metadata(next((tmp_path / "pretrained").iterdir()) / "best.tcnn").get("ema") is None
    capsys.readouterr()
    # a momentum this close to 1 keeps the average at the starting (pre-trained) weights for a few steps
    assert train(plates, tmp_path / "ema", "--pretrain", "4", "--pretrain-epochs", "1", "--ema", "0.999999") == 0
    assert "moving average of the weights (momentum 0.999999)" in capsys.readouterr().out
    assert read_metadata(tmp_path / "ema" / "best.tcnn")["ema"] == 0.999999
    averaged, trained = parameters(tmp_path / "ema" / "last.tcnn"), parameters(tmp_path / "plain" / "last.tcnn")
    assert averaged.keys() == start.keys() == trained.keys()
    moved = max(float(np.abs(trained[name] - start[name]).max()) for name in start)
    kept = max(float(np.abs(averaged[name] - start[name]).max()) for name in start)
    assert moved > 1e-3 and kept < 1e-4 * moved


def test_ema_alone_takes_the_recipes_momentum():
    parser = argparse.ArgumentParser()
    from tinycnn.tasks import plates_box
    plates_box.add_train_arguments(parser)
    assert plates_detect.ema_momentum(parser.parse_args(["--ema"])) == plates_detect.EMA_MOMENTUM
    assert plates_detect.ema_momentum(parser.parse_args(["--ema", "0.9"])) == 0.9
    assert plates_detect.ema_momentum(parser.parse_args(["--no-ema"])) is None
    assert plates_detect.ema_momentum(parser.parse_args([])) is None


@pytest.mark.parametrize("value", ["1.5", "-0.2", "1"])
def test_a_momentum_outside_0_1_is_a_one_line_error(plates, tmp_path, value):
    with pytest.raises(UserInputError, match=f"--ema {value}: the momentum must be in"):
        train(plates, tmp_path / "bad", "--pretrain", "0", "--ema", value)


def test_the_regressor_refuses_ema(plates, tmp_path):
    with pytest.raises(UserInputError, match="--ema is for the detector"):
        train(plates, tmp_path / "r", "--head", "global", "--ema")

"""plates-box --pretrain: the detector pre-trains on built-in street scenes once, then fine-tunes on --data from
those weights; a later run reuses the finished pre-training, an unfinished one goes on; wrong uses get one line.

Tiny settings (6 scenes, 1 epoch, 32 px, width 0.35): the wiring is checked, not what such runs reach."""
import argparse

import pytest

from tinycnn import train as train_cli
from tinycnn.cli import UserInputError
from tinycnn.saving import read_metadata
from tinycnn.tasks import detect_pretrain
from tinycnn.tasks.synthetic_plates import generate_plates

TINY = ["--epochs", "1", "--batch-size", "4", "--width", "0.35", "--neck", "16", "--img-size", "32", "--quiet",
        "--mix-synthetic", "3"]  # 3 of the pre-training's scenes in every fine-tuning epoch (the default: 128)


@pytest.fixture
def plates(tmp_path):
    return generate_plates(tmp_path / "plates", 6, 2, 2, size=(96, 72), seed=4)


@pytest.fixture
def pretrained_root(tmp_path, monkeypatch):
    root = tmp_path / "pretrained"
    monkeypatch.setattr(detect_pretrain, "FOLDER", str(root))
    return root


def fine_tune(plates, out, *extra):
    return train_cli.main(["plates-box", "--data", str(plates), "--out", str(out), *TINY, *extra])


def test_pretrains_once_then_fine_tunes_from_it(plates, pretrained_root, tmp_path, capsys):
    assert fine_tune(plates, tmp_path / "a", "--pretrain", "6", "--pretrain-epochs", "1") == 0
    out = capsys.readouterr().out
    folders = list(pretrained_root.iterdir())
    assert len(folders) == 1 and (folders[0] / detect_pretrain.DONE).is_file()
    assert "pre-training on 6 built-in street scenes" in out and "kept 0 fresh" in out  # every tensor copied
    metadata = read_metadata(tmp_path / "a" / "best.tcnn")
    assert metadata["init"] == str(folders[0]) and metadata["pretrain"] == {"scenes": 6, "epochs": 1}
    assert metadata["mix_synthetic"] == 3 and "with 3 street scenes" in out
    assert read_metadata(folders[0] / "best.tcnn")["source"]["builtin"]["scene"] == "street"

    stamp = (folders[0] / "best.tcnn").stat().st_mtime_ns
    assert fine_tune(plates, tmp_path / "b", "--pretrain", "6", "--pretrain-epochs", "1") == 0
    assert "reusing" in capsys.readouterr().out
    assert (folders[0] / "best.tcnn").stat().st_mtime_ns == stamp  # not trained again
    assert fine_tune(plates, tmp_path / "c", "--pretrain", "6", "--pretrain-epochs", "1", "--seed", "1") == 0
    assert len(list(pretrained_root.iterdir())) == 2  # another seed: another pre-training run


def test_an_unfinished_pretraining_goes_on_from_its_checkpoint(plates, pretrained_root, tmp_path, capsys):
    assert fine_tune(plates, tmp_path / "a", "--pretrain", "6", "--pretrain-epochs", "1") == 0
    folder = next(pretrained_root.iterdir())
    (folder / detect_pretrain.DONE).unlink()  # as if stopped after its last checkpoint
    capsys.readouterr()
    assert fine_tune(plates, tmp_path / "b", "--pretrain", "6", "--pretrain-epochs", "2") == 0
    assert "going on from its last checkpoint" not in capsys.readouterr().out  # 2 epochs: another run's folder
    (folder / detect_pretrain.DONE).unlink(missing_ok=True)
    assert fine_tune(plates, tmp_path / "c", "--pretrain", "6", "--pretrain-epochs", "1") == 0
    assert "going on from its last checkpoint" in capsys.readouterr().out
    assert (folder / detect_pretrain.DONE).is_file()


def _args(**given):
    base = dict(pretrain=None, pretrain_epochs=15, data="photos", init=None, resume=None, mix_synthetic=None)
    return argparse.Namespace(**{**base, **given})


def test_the_default_pretrains_only_for_a_fresh_run_on_a_data_folder():
    assert detect_pretrain.requested(_args()) == {"scenes": detect_pretrain.DEFAULT_SCENES, "epochs": 15}
    assert detect_pretrain.requested(_args(data=None)) is None        # the built-in scenes already
    assert detect_pretrain.requested(_args(init="runs/x")) is None    # the user's own start
    assert detect_pretrain.requested(_args(pretrain=0)) is None


@pytest.mark.parametrize("given, message", [
    (dict(pretrain=-1), "--pretrain -1"), (dict(pretrain=5, data=None), "needs --data"),
    (dict(pretrain=5, init="runs/x"), "give one of them"), (dict(pretrain_epochs=0), "--pretrain-epochs 0")])
def test_wrong_uses_are_one_line_errors(given, message):
    with pytest.raises(UserInputError, match=message):
        detect_pretrain.requested(_args(**given))


def test_the_regressor_refuses_pretrain(plates, tmp_path):
    with pytest.raises(UserInputError, match="--pretrain is for the detector"):
        fine_tune(plates, tmp_path / "r", "--head", "global", "--pretrain", "6")


def test_mix_synthetic_adds_street_scenes_to_every_epoch(plates, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(detect_pretrain, "DEFAULT_SCENES", 6)  # a small built-in street set
    assert fine_tune(plates, tmp_path / "m", "--pretrain", "0", "--mix-synthetic", "4") == 0
    assert "with 4 street scenes" in capsys.readouterr().out
    assert read_metadata(tmp_path / "m" / "best.tcnn")["mix_synthetic"] == 4
    records = detect_pretrain.street_records(4)
    assert len(records) == 4 and all(len(record.boxes) >= 1 for record in records)
    with pytest.raises(UserInputError, match="--mix-synthetic is for the detector"):
        fine_tune(plates, tmp_path / "g", "--head", "global", "--mix-synthetic", "4")


def test_the_default_mixes_street_scenes_in_only_when_pre_training():
    plan = {"scenes": 1000, "epochs": 15}
    assert detect_pretrain.mixed(_args(), plan) == detect_pretrain.DEFAULT_MIX
    assert detect_pretrain.mixed(_args(), None) == 0                       # from scratch or --init: the photos
    assert detect_pretrain.mixed(_args(mix_synthetic=0), plan) == 0
    assert detect_pretrain.mixed(_args(mix_synthetic=5, init="runs/x"), None) == 5


@pytest.mark.parametrize("given, message", [(dict(mix_synthetic=-2), "--mix-synthetic -2"),
                                            (dict(mix_synthetic=3, data=None), "--mix-synthetic needs --data")])
def test_wrong_mix_synthetic_is_a_one_line_error(given, message):
    with pytest.raises(UserInputError, match=message):
        detect_pretrain.mixed(_args(**given), None)


def test_the_detector_on_photos_trains_its_recipes_80_epochs_by_default():
    from tinycnn.tasks import plates_box
    assert plates_box.default_epochs("center", "photos") == plates_box.DETECT_EPOCHS == 80
    assert plates_box.default_epochs("center", None) == plates_box.default_epochs("global", "photos") == 30
    assert plates_box.default_epochs("center", "photos", planned=12) == 12   # --resume: the run's own plan

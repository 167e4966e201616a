"""Outputs never replace inputs: --out at an input's folder or at an input file is refused (one line, status 2,
the input untouched) unless --overwrite."""
import os

import pytest

from tinycnn import predict
from tinycnn.checks import UserInputError
from tinycnn.cli import EXIT_MISTAKE, fresh_folder, refuse_overwriting_inputs, refuse_overwriting_run, run_cli


@pytest.mark.parametrize("out", ["folder", "folder/.", "file", "link"])
def test_predict_refuses_to_write_over_its_inputs(catdog_model_file, photo, capsys, out):
    before = photo.read_bytes()
    target = {"folder": photo.parent, "folder/.": photo.parent / ".", "file": photo,
              "link": photo.parent.parent / "link"}[out]
    if out == "link":
        os.symlink(photo.parent, target)
    status = run_cli("predict", predict.main, [str(catdog_model_file), str(photo), "--out", str(target)])
    err = capsys.readouterr().err
    assert status == EXIT_MISTAKE and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "--overwrite" in err and str(photo) in err
    assert photo.read_bytes() == before


def test_overwrite_lets_it_through(catdog_model_file, photo, capsys):
    assert run_cli("predict", predict.main, [str(catdog_model_file), str(photo), "--out", str(photo.parent),
                                             "--overwrite"]) == 0
    assert capsys.readouterr().out.startswith(f"{photo}: ")


def test_refuse_overwriting_inputs(tmp_path):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"x")
    refuse_overwriting_inputs([image], [tmp_path / "out", tmp_path / "in" / "b.png"])  # neither replaces a.png
    with pytest.raises(UserInputError, match="would overwrite the input"):
        refuse_overwriting_inputs([image], [tmp_path / "in" / ".." / "in" / "a.png"])
    with pytest.raises(UserInputError, match="is the folder of the input"):
        refuse_overwriting_inputs([image], [tmp_path / "in"], flag="--out")
    refuse_overwriting_inputs([image], [image], overwrite=True)


def test_another_runs_folder_is_refused_and_default_names_stay_fresh(tmp_path):
    run = tmp_path / "run"
    refuse_overwriting_run(run)                   # nothing there yet
    run.mkdir()
    refuse_overwriting_run(run)                   # an empty folder holds no run
    (run / "history.csv").write_text("epoch\n")
    with pytest.raises(UserInputError, match=r"holds a run already \(history\.csv\).*--resume"):
        refuse_overwriting_run(run)
    refuse_overwriting_run(run, overwrite=True)
    assert fresh_folder(str(tmp_path / "new")) == str(tmp_path / "new")
    assert fresh_folder(str(run)) == str(run) + "-2"


def test_saved_caches_follow_the_umask(tmp_path):
    from PIL import Image

    from tinycnn.data.folder import load_image_folder
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("L", (4, 4), 50).save(tmp_path / "data" / name / "x.png")
    previous = os.umask(0o022)
    try:
        load_image_folder(tmp_path / "data", img_size=4, cache_dir=tmp_path / "cache")
    finally:
        os.umask(previous)
    modes = {path.suffix: oct(path.stat().st_mode & 0o777) for path in (tmp_path / "cache").iterdir()}
    assert modes == {".npy": "0o644", ".json": "0o644"}


def test_redact_refuses_to_write_among_its_inputs(catdog_model_file, photo, capsys):
    from tinycnn import redact
    before = photo.read_bytes()
    status = run_cli("redact", redact.main, [str(catdog_model_file), str(photo), "--out", str(photo.parent)])
    err = capsys.readouterr().err
    assert status == EXIT_MISTAKE and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("tinycnn redact: error: --out") and "--overwrite" in err and str(photo) in err
    assert photo.read_bytes() == before
    with pytest.raises(SystemExit) as stop:  # with --overwrite it gets as far as the model: not a plates model
        run_cli("redact", redact.main, [str(catdog_model_file), str(photo), "--out", str(photo.parent),
                                        "--overwrite"])
    assert stop.value.code == EXIT_MISTAKE and "plates-seg or plates-box" in capsys.readouterr().err

"""Outputs never replace inputs: --out at an input's folder or at an input file is refused (one line, status 2,
the input untouched) unless --overwrite."""
import os

import pytest

from tinycnn import predict
from tinycnn.checks import UserInputError
from tinycnn.cli import EXIT_MISTAKE, refuse_overwriting_inputs, run_cli


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

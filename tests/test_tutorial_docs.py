"""docs/tutorial.md runs: every ```python block, in order, in one namespace, on small built-in data (the pictures
of tasks/synthetic_catdog.py and tasks/synthetic_plates.py, drawn small), with the doc's small-data switch
TINYCNN_TUTORIAL_SMALL=1 (tiny images, one epoch) and its data folders set through the environment."""
import os
import re

import numpy as np
import pytest

from tasks.synthetic_catdog import generate_catdog
from tasks.synthetic_plates import generate_plates

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "tutorial.md")


def python_blocks(path=DOC):
    with open(path, encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)


def test_the_blocks_are_found_and_each_compiles():
    blocks = python_blocks()
    assert len(blocks) >= 10
    for number, block in enumerate(blocks):
        compile(block, f"tutorial block {number}", "exec")


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    generate_catdog(tmp_path / "catdog", n_per_class=10, size=32)
    generate_plates(tmp_path / "plates", n_train=6, n_val=3, n_test=0, size=(64, 48))
    monkeypatch.setenv("TINYCNN_TUTORIAL_CATDOG", str(tmp_path / "catdog"))
    monkeypatch.setenv("TINYCNN_TUTORIAL_PLATES", str(tmp_path / "plates"))
    monkeypatch.setenv("TINYCNN_TUTORIAL_SMALL", "1")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_every_python_block_of_the_tutorial_runs(small_data, capsys):
    namespace = {"__name__": "__tutorial__"}
    for number, block in enumerate(python_blocks()):
        exec(compile(block, f"docs/tutorial.md block {number}", "exec"), namespace)
    # part 1: the classifier trained, saved, loaded and predicted one picture
    assert namespace["X"].shape == (20, 24, 24, 1) and len(namespace["history"].history["val_loss"]) == 1
    assert 0.0 <= float(namespace["prediction"][0][0]) <= 1.0
    # part 2: the checkpoint the callbacks wrote loads, and the box was drawn
    assert (small_data / "best_model.h5").is_file() and (small_data / "plate_box.png").is_file()
    assert namespace["model"].count_params() == 2_257_984 + 1280 * 4 + 4
    # part 3: the functional FCN's masks and Dice
    assert namespace["Y_train"].shape == (6, 32, 32, 2) and namespace["predicted"].shape == (3, 32, 32)
    assert 0.0 <= namespace["dice"] <= 1.0
    out = capsys.readouterr().out
    assert "Dice on the validation pictures" in out and "Dice with the plate pixels weighted" in out
    assert "Total params" in out

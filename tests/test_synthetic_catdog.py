"""tasks/synthetic_catdog.py: deterministic files, the cached built-in copy, and that it is not trivially separable."""
import os

import numpy as np
import pytest
from PIL import Image

from tinycnn.tasks import synthetic_catdog as sc


def files_of(root):
    """{relative path: bytes} of every file under root."""
    found = {}
    for here, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(here, name), "rb") as f:
                found[os.path.relpath(os.path.join(here, name), root)] = f.read()
    return found


def test_layout_format_and_size(tmp_path):
    sc.generate_catdog(tmp_path, n_per_class=3, size=64, seed=0)
    assert sorted(os.listdir(tmp_path)) == ["cat", "dog"]
    assert sorted(os.listdir(tmp_path / "dog")) == ["dog.00000.jpg", "dog.00001.jpg", "dog.00002.jpg"]
    with Image.open(tmp_path / "cat" / "cat.00001.jpg") as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (64, 64))


def test_same_seed_gives_byte_identical_files_and_another_seed_other_files(tmp_path):
    first = files_of(sc.generate_catdog(tmp_path / "a", n_per_class=3, size=64, seed=7))
    again = files_of(sc.generate_catdog(tmp_path / "b", n_per_class=3, size=64, seed=7))
    other = files_of(sc.generate_catdog(tmp_path / "c", n_per_class=3, size=64, seed=8))
    assert first == again
    assert all(first[name] != other[name] for name in first)


def test_more_images_only_add_to_fewer(tmp_path):
    few = files_of(sc.generate_catdog(tmp_path / "few", n_per_class=2, size=48, seed=1))
    more = files_of(sc.generate_catdog(tmp_path / "more", n_per_class=3, size=48, seed=1))
    assert all(more[name] == data for name, data in few.items()) and len(more) == 6


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        sc.draw_pet(np.random.default_rng(0), "fox")
    with pytest.raises(ValueError, match="n_per_class"):
        sc.generate_catdog(tmp_path, n_per_class=0)
    with pytest.raises(ValueError, match="size"):
        sc.generate_catdog(tmp_path, n_per_class=1, size=16)


def test_ensure_builtin_generates_once_atomically(tmp_path, monkeypatch):
    path = sc.ensure_builtin_catdog(cache_root=tmp_path, n_per_class=2, seed=3, size=48)
    assert path == str(tmp_path / f"catdog-v{sc.GENERATOR_VERSION}-3-2-48px")
    assert os.listdir(tmp_path) == [os.path.basename(path)]               # no temporary folder left
    assert len(os.listdir(os.path.join(path, "cat"))) == len(os.listdir(os.path.join(path, "dog"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("drew the dataset again")
    monkeypatch.setattr(sc, "generate_catdog", refuse)
    assert sc.ensure_builtin_catdog(cache_root=tmp_path, n_per_class=2, seed=3, size=48) == path


def test_ensure_builtin_redraws_an_incomplete_folder(tmp_path):
    path = sc.ensure_builtin_catdog(cache_root=tmp_path, n_per_class=2, seed=0, size=48)
    before = files_of(path)
    os.remove(os.path.join(path, "dog", "dog.00001.jpg"))
    with pytest.warns(UserWarning, match="incomplete"):
        assert sc.ensure_builtin_catdog(cache_root=tmp_path, n_per_class=2, seed=0, size=48) == path
    assert files_of(path) == before


def test_best_threshold_accuracy():
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert sc.best_threshold_accuracy(np.array([1, 2, 3, 4, 5, 6.0]), labels) == 1.0
    assert sc.best_threshold_accuracy(np.array([6, 5, 4, 3, 2, 1.0]), labels) == 1.0     # either direction
    assert sc.best_threshold_accuracy(np.array([1, 2, 4, 3, 5, 6.0]), labels) == pytest.approx(5 / 6)
    assert sc.best_threshold_accuracy(np.array([1, 5, 3, 4, 2, 6.0]), labels) == pytest.approx(4 / 6)
    assert sc.best_threshold_accuracy(np.zeros(6), labels) == 0.5                   # ties cannot be split


def test_logistic_regression_learns_a_linear_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20))
    y = (x[:, 3] - x[:, 7] > 0).astype(np.int64)
    assert sc.logistic_regression_accuracy(x[:300], y[:300], x[300:], y[300:]) >= 0.9


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = sc.generate_catdog(tmp_path_factory.mktemp("catdog"), n_per_class=200, size=128, seed=0)
    return sc.difficulty_report(root, size=128)


def test_no_single_global_statistic_separates_the_classes(report):
    statistics = {name: accuracy for name, accuracy in report.items() if not name.startswith("logistic")}
    assert set(statistics) == {"mean intensity", "std intensity", "mean R", "mean G", "mean B",
                               "std R", "std G", "std B"}
    assert max(statistics.values()) < 0.65, statistics


def test_pixels_carry_some_but_not_all_of_the_answer(report):
    assert 0.6 <= report["logistic regression, 32x32 gray"] <= 0.9, report

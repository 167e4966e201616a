"""The main command's defaults (`python -m tinycnn.train catdog` on the built-in images, issue 20): the default
preset at the built-in image size and epochs, the preset's own on a folder (--data), flags above both; and a
built-in set whose stratified split is whole batches."""
import argparse

from tinycnn.tasks import catdog


def _settings(*argv):
    parser = argparse.ArgumentParser()
    catdog.add_train_arguments(parser)
    return catdog._settings(parser.parse_args(list(argv)))


def test_builtin_data_gets_the_builtin_size_and_epochs():
    builtin = catdog.BUILTIN_PRESETS["strong"]
    settings = _settings()
    assert settings["preset"] == "strong" and settings["data"] is None
    assert (settings["img_size"], settings["epochs"]) == (builtin["img_size"], builtin["epochs"])
    assert (builtin["img_size"], builtin["epochs"]) != (catdog.PRESETS["strong"]["img_size"],
                                                        catdog.PRESETS["strong"]["epochs"])


def test_a_folder_keeps_the_presets_and_flags_win(tmp_path):
    on_folder = _settings("--data", str(tmp_path))
    assert (on_folder["img_size"], on_folder["epochs"]) == (96, 15)
    assert on_folder["grayscale"] is False and on_folder["augment"] is True
    flagged = _settings("--img-size", "80", "--epochs", "3")
    assert (flagged["img_size"], flagged["epochs"]) == (80, 3)
    assert _settings("--model", "seed")["img_size"] == 100  # the tutorial's net keeps its 100×100


def test_builtin_split_is_whole_batches():
    per_class = catdog.BUILTIN_TRAIN["n_per_class"]
    val_per_class = round(per_class * 0.1)  # the default --val-split, per class (stratified)
    batch = catdog.PRESETS["strong"]["batch_size"]
    assert (2 * val_per_class) % batch == 0 and (2 * (per_class - val_per_class)) % batch == 0

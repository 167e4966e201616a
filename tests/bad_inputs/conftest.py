"""Fixtures of the bad-input tests; the helpers are in bad_input_helpers.py."""
import numpy as np
import pytest


@pytest.fixture(scope="session")
def small_model_file(tmp_path_factory):
    """A trained-and-saved Sequential (conv, flatten, dense) with its optimizer state: the base of attacks."""
    import tinycnn
    from tinycnn import layers
    model = tinycnn.Sequential([layers.Conv2D(2, 3, activation="relu", input_shape=(6, 6, 1)), layers.Flatten(),
                                layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(0, 1, (4, 6, 6, 1)).astype(np.float32), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("model") / "small.tcnn"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def catdog_model_file(tmp_path_factory):
    """An untrained cat/dog classifier saved with the metadata tinycnn.train writes (8x8 grey inputs)."""
    import tinycnn
    from tinycnn import layers
    model = tinycnn.Sequential([layers.Conv2D(2, 3, activation="relu", input_shape=(8, 8, 1)), layers.Flatten(),
                                layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.metadata = {"task": "catdog", "img_size": 8, "grayscale": True, "resize": "stretch",
                      "class_names": ["cat", "dog"]}
    path = tmp_path_factory.mktemp("catdog") / "best.tcnn"
    model.save(path)
    return path


@pytest.fixture
def photo(tmp_path):
    """One small photo in a folder of its own: photos/cat.png."""
    from PIL import Image
    path = tmp_path / "photos" / "cat.png"
    path.parent.mkdir()
    Image.new("RGB", (12, 10), (120, 80, 40)).save(path)
    return path

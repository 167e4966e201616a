"""Model level: the tutorial's net learns, save/load round-trips, resume continues exactly, errors are clear."""
import os

import numpy as np
import pytest

import tinycnn
from tinycnn import layers
from tinycnn.callbacks import EarlyStopping, ModelCheckpoint


def tutorial_net(size=20, filters=8, dense=16):
    """The tutorial's cat/dog architecture, scaled down for tests (the same layer sequence)."""
    return tinycnn.Sequential([
        layers.Conv2D(filters, 3, activation="relu", input_shape=(size, size, 1)),
        layers.MaxPooling2D(2),
        layers.Conv2D(filters, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(dense, activation="relu"),
        layers.Dense(1, activation="sigmoid"),
    ])


def bars_dataset(n=96, size=20, seed=0):
    """A separable problem: a vertical bar (label 1) or a horizontal bar (label 0) at a random place."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.3, (n, size, size, 1)).astype(np.float32)
    y = np.arange(n) % 2
    for i in range(n):
        a, b = rng.integers(2, size - 8, 2)
        if y[i]:
            x[i, a:a + 8, b:b + 2, 0] = 1.0
        else:
            x[i, a:a + 2, b:b + 8, 0] = 1.0
    return x, y.astype(np.int64)


def compiled(model, lr=3e-3):
    model.compile(loss="binary_crossentropy", optimizer=tinycnn.optimizers.Adam(learning_rate=lr),
                  metrics=["accuracy"])
    return model


def test_tutorial_net_learns_a_separable_problem():
    tinycnn.manual_seed(0)
    x, y = bars_dataset()
    model = compiled(tutorial_net())
    first = model.evaluate(x, y, return_dict=True)
    history = model.fit(x, y, batch_size=16, epochs=12, verbose=0)
    last = model.evaluate(x, y, return_dict=True)
    assert last["loss"] < first["loss"] / 5, (first, history.history["loss"])
    assert last["accuracy"] >= 0.97


def test_summary_reports_keras_shapes_and_parameter_counts():
    model = tutorial_net(size=100, filters=64, dense=64)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "(None, 98, 98, 64)" in text and "(None, 1)" in text
    # Keras' counts for the tutorial's net: 640 + 36,928 + (23·23·64)·64 + 64 + 65 = 2,204,481
    assert model.count_params() == 2_204_481
    assert "2,204,481" in text and "(None, 23, 23, 64)" in text


def test_save_load_predict_round_trip(tmp_path):
    tinycnn.manual_seed(1)
    x, y = bars_dataset(32)
    model = compiled(tutorial_net())
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.tcnn"
    model.save(path)
    loaded = tinycnn.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    x, y = bars_dataset(32)
    tinycnn.manual_seed(2)
    straight = compiled(tutorial_net())
    straight.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)

    tinycnn.manual_seed(2)
    first = compiled(tutorial_net())
    first.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    first.save(tmp_path / "ckpt.tcnn")
    resumed = tinycnn.load_model(tmp_path / "ckpt.tcnn")
    resumed.fit(x, y, batch_size=8, epochs=2, initial_epoch=1, verbose=0, shuffle=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_same_seed_same_weights():
    weights = []
    for _ in range(2):
        tinycnn.manual_seed(7)
        model = tutorial_net()
        model._ensure_built()
        weights.append(model.state_dict())
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])


def test_checkpoint_best_only_and_early_stopping(tmp_path):
    tinycnn.manual_seed(3)
    x, y = bars_dataset(48)
    model = compiled(tutorial_net(), lr=0.0)  # nothing improves: early stopping must end the run
    best = tmp_path / "best.tcnn"
    stopper = EarlyStopping(monitor="val_loss", patience=2)
    history = model.fit(x, y, batch_size=16, epochs=20, verbose=0, validation_split=0.25,
                        callbacks=[ModelCheckpoint(best, save_best_only=True), stopper])
    assert len(history.history["loss"]) == 3  # the first epoch sets the best, then patience 2
    assert best.exists()


def test_nan_loss_stops_training_and_keeps_checkpoint(tmp_path):
    tinycnn.manual_seed(4)
    x, y = bars_dataset(32)
    model = compiled(tutorial_net())
    path = tmp_path / "last.tcnn"
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[ModelCheckpoint(path)])
    before = path.read_bytes()
    model.optimizer.lr = 1e30  # the weights blow up at once
    with pytest.raises(tinycnn.TrainingError, match=r"epoch 1, batch \d+"):
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[ModelCheckpoint(path)])
    assert path.read_bytes() == before
    tinycnn.load_model(path)


@pytest.mark.parametrize("bad, error, match", [
    (np.full((4, 20, 20, 1), "a"), TypeError, "numbers"),     # uint8 is cast, as Keras: tests/test_fit_iterables.py
    (np.zeros((0, 20, 20, 1), np.float32), ValueError, "empty"),
    (np.full((4, 20, 20, 1), np.nan, np.float32), ValueError, "NaN"),
])
def test_bad_inputs_get_clear_errors(bad, error, match):
    model = compiled(tutorial_net())
    with pytest.raises(error, match=match):
        model.fit(bad, np.zeros(len(bad)), verbose=0)


def test_shape_mismatch_names_the_layer_and_shapes():
    model = tutorial_net()
    with pytest.raises(ValueError, match=r"layer 'conv2d_\d+'.*\(2, 3, 20, 20\)"):
        model.predict(np.zeros((2, 20, 20, 3), np.float32))


def test_dense_without_flatten_says_so():
    model = tinycnn.Sequential([layers.Conv2D(4, 3, input_shape=(8, 8, 1)), layers.Dense(2)])
    with pytest.raises(ValueError, match="Flatten"):
        model.predict(np.zeros((1, 8, 8, 1), np.float32))


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04truncated zip"])
def test_corrupt_model_files_get_clear_errors(tmp_path, content):
    path = tmp_path / "bad.tcnn"
    path.write_bytes(content)
    with pytest.raises(tinycnn.ModelFileError, match="not a tinycnn model file"):
        tinycnn.load_model(path)


def test_truncated_model_file(tmp_path):
    model = tutorial_net()
    model._ensure_built()
    path = tmp_path / "m.tcnn"
    model.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(tinycnn.ModelFileError):
        tinycnn.load_model(path)


def test_foreign_npz_is_rejected(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.zeros(3))
    with pytest.raises(tinycnn.ModelFileError, match="not a tinycnn model file"):
        tinycnn.load_model(path)


def test_crash_during_save_keeps_previous_file(tmp_path, monkeypatch):
    model = tutorial_net()
    model._ensure_built()
    path = tmp_path / "m.tcnn"
    model.save(path)
    before = path.read_bytes()

    def exploding_savez(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(OSError):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.tcnn"]  # no temporary file left behind


class TinyFCN(tinycnn.Model):
    """A subclassed Model with a skip connection, saved and loaded by its config."""

    def __init__(self, classes=2):
        super().__init__()
        self.classes = classes
        self.down = layers.Conv2D(4, 3, padding="same", activation="relu")
        self.up = layers.Conv2D(4, 3, padding="same", activation="relu")
        self.head = layers.Conv2D(classes, 1)

    def forward(self, x):
        a = self.down(x)
        b = self.up(tinycnn.functional.max_pool2d(a, 2))
        b = tinycnn.functional.interpolate(b, scale_factor=2)
        return self.head(tinycnn.cat([a, b], axis=1))

    def get_config(self):
        return {"classes": self.classes}


def test_module_with_skip_connection_fits_and_round_trips(tmp_path):
    tinycnn.manual_seed(5)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)  # per-pixel classes (N, H, W)
    model = TinyFCN()
    model.compile(loss=tinycnn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  optimizer=tinycnn.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=4, epochs=30, verbose=0)
    assert history.history["loss"][-1] < 0.75 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8
    model.save(tmp_path / "fcn.tcnn")
    loaded = tinycnn.load_model(tmp_path / "fcn.tcnn")
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)


def test_model_with_a_custom_loss_and_metric_saves_and_loads(tmp_path):
    class HalfMSE(tinycnn.losses.Loss):
        def __call__(self, pred, y, sample_weight=None):
            return tinycnn.losses.MeanSquaredError()(pred, y) * 0.5

    def mean_prediction(y_true, y_pred):
        return float(y_pred.mean())

    tinycnn.manual_seed(6)
    x, y = bars_dataset(16)
    model = tutorial_net()
    model.compile(loss=HalfMSE(), optimizer="adam", metrics=["accuracy", mean_prediction])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.tcnn")
    loaded = tinycnn.load_model(tmp_path / "m.tcnn")  # the user's loss is not in the file: not compiled
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert getattr(loaded, "loss", None) is None

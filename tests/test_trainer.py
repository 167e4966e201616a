"""One model, one trainer (tinycnn/trainer.py, tinycnn/model.py): the three model kinds train through the same
overridable steps; a bare Module is a layer; several inputs and outputs; every model kind saves and loads
(user layers registered once too); Sequential.add/pop, summary and repr; Keras' ReLU and Flatten order."""
import io
import json
import zipfile

import numpy as np
import pytest

import tinycnn
from gradcheck import check_gradients
from tinycnn import layers
from tinycnn.saving import register_serializable


def _blobs(n=32, seed=0):
    """Two classes of 6x6x1 images: bright on the left or on the right half."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0, 0.3, (n, 6, 6, 1)).astype(np.float32)
    x[y == 0, :, :3] += 0.7
    x[y == 1, :, 3:] += 0.7
    return x, y.astype(np.float32)


class KerasStyleNet(tinycnn.Model):
    """A subclassed model, Keras' way: layers in __init__, call() (NCHW arrays, as a subclassed model takes)."""

    def __init__(self, units=4):
        super().__init__()
        self.units = units
        self.conv = layers.Conv2D(units, 3, activation="relu")
        self.flat = layers.Flatten()
        self.out = layers.Dense(1, activation="sigmoid")

    def call(self, x):
        return self.out(self.flat(self.conv(x)))

    def get_config(self):
        return {"units": self.units}


def _sequential():
    return tinycnn.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(6, 6, 1)), layers.Flatten(),
                               layers.Dense(1, activation="sigmoid")])


def _functional():
    inputs = tinycnn.Input((6, 6, 1))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    return tinycnn.Model(inputs, layers.Dense(1, activation="sigmoid")(layers.Flatten()(x)))


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_every_model_kind_trains_saves_and_loads(kind, tmp_path):
    tinycnn.manual_seed(1)
    x, y = _blobs()
    model = {"sequential": _sequential, "functional": _functional, "subclassed": KerasStyleNet}[kind]()
    if kind == "subclassed":
        x = x.transpose(0, 3, 1, 2)
    assert isinstance(model, tinycnn.Model)
    model.compile(loss="binary_crossentropy", optimizer=tinycnn.optimizers.Adam(0.05), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=8, epochs=8, verbose=0)
    assert history.history["accuracy"][-1] == 1.0
    assert model.history is history
    model.save(tmp_path / "m.tcnn")
    loaded = tinycnn.models.load_model(tmp_path / "m.tcnn")
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)
    assert kind in repr(loaded).lower() or type(loaded).__name__ in repr(loaded)
    lines = []
    loaded.summary(print_fn=lines.append)
    assert f"Total params: {model.count_params():,}" in "\n".join(lines)


def test_a_bare_module_is_a_layer_and_says_how_to_train():
    class Block(tinycnn.Module):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def forward(self, x):
            return self.dense(x)

    block = Block()
    assert block(tinycnn.Tensor(np.ones((1, 3), np.float32))).shape == (1, 2)
    for method in ("fit", "compile", "predict"):
        with pytest.raises(AttributeError, match="subclass tinycnn.Model"):
            getattr(block, method)
    assert not hasattr(block, "fit")


def test_a_train_step_of_ones_own_is_what_fit_runs():
    class CountingNet(tinycnn.Model):
        input_format = "channels_last"

        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(1)
            self.steps = self.tests = self.predictions = 0

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):  # Keras 3's shape: forward, loss, backward, optimizer step, logs
            x, y, _ = data
            self.steps += 1
            self.optimizer.zero_grad()
            loss = self.compute_loss(x, y, self(x))
            loss.backward()
            self.optimizer.step()
            return {"loss": float(loss.item()), "steps": self.steps}

        def test_step(self, data):
            self.tests += 1
            return super().test_step(data)

        def predict_step(self, data):
            self.predictions += 1
            return super().predict_step(data) * 0.0 + 7.0

    tinycnn.manual_seed(2)
    x = np.random.default_rng(0).standard_normal((12, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    model = CountingNet()
    model.compile(loss="mse", optimizer=tinycnn.optimizers.Adam(0.1))
    history = model.fit(x, y, batch_size=4, epochs=5, verbose=0, validation_data=(x, y))
    assert model.steps == 15 and history.history["steps"] == [3, 6, 9, 12, 15]
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.tests == 5 * 3  # validation: test_step per batch
    assert np.all(model.predict(x, batch_size=6) == 7.0) and model.predictions == 2


def test_get_and_set_weights_copy_a_model():
    tinycnn.manual_seed(3)
    x, _ = _blobs(4)
    first, second = _sequential(), _sequential()
    first.predict(x), second.predict(x)
    weights = first.get_weights()
    assert [w.shape for w in weights] == [(4, 1, 3, 3), (4,), (1, 64), (1,)]
    assert not np.allclose(first.predict(x), second.predict(x))
    second.set_weights(weights)
    np.testing.assert_array_equal(first.predict(x), second.predict(x))  # the inference form saw the new weights
    with pytest.raises(ValueError, match="expected 4 arrays, got 3"):
        second.set_weights(weights[:3])
    with pytest.raises(ValueError, match="array 2 has shape"):
        second.set_weights(weights[:2] + [weights[2].T, weights[3]])


# ---------------------------------------------------------------------- several inputs and outputs

def _two_in_two_out():
    image, extra = tinycnn.Input((4, 4, 1), name="image"), tinycnn.Input((3,), name="extra")
    x = layers.Flatten()(layers.Conv2D(4, 3, padding="same", activation="relu")(image))
    x = layers.concatenate([x, extra])
    return tinycnn.Model([image, extra], [layers.Dense(1, activation="sigmoid", name="cls")(x),
                                          layers.Dense(2, name="reg")(x)])


def _two_in_two_out_data(n=32):
    rng = np.random.default_rng(4)
    image, extra = rng.random((n, 4, 4, 1)).astype(np.float32), rng.random((n, 3)).astype(np.float32)
    cls = (image.mean(axis=(1, 2, 3)) > 0.5).astype(np.float32)[:, None]
    reg = np.stack([extra.sum(axis=1), extra[:, 0]], axis=1).astype(np.float32)
    return image, extra, cls, reg


def test_several_inputs_and_outputs_fit_with_per_output_losses(tmp_path):
    tinycnn.manual_seed(4)
    image, extra, cls, reg = _two_in_two_out_data()
    model = _two_in_two_out()
    model.compile(loss={"cls": "binary_crossentropy", "reg": "mse"}, loss_weights={"reg": 0.5},
                  optimizer=tinycnn.optimizers.Adam(0.02), metrics=["mae"])
    history = model.fit([image, extra], {"cls": cls, "reg": reg}, batch_size=8, epochs=30, verbose=0,
                        validation_split=0.25)
    assert {"loss", "cls_mae", "reg_mae", "val_loss", "val_reg_mae"} <= set(history.history)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    out_cls, out_reg = model.predict({"image": image, "extra": extra})
    assert out_cls.shape == (32, 1) and out_reg.shape == (32, 2)
    # the loss is the weighted sum of the outputs' losses
    bce = -np.mean(cls * np.log(out_cls) + (1 - cls) * np.log(1 - out_cls))
    mse = np.mean((out_reg - reg) ** 2)
    loss = model.evaluate([image, extra], [cls, reg], batch_size=32, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, bce + 0.5 * mse, rtol=1e-4)
    model.save(tmp_path / "two.tcnn")
    again = tinycnn.load_model(tmp_path / "two.tcnn", compile=False)
    np.testing.assert_allclose(again.predict([image, extra])[1], out_reg, rtol=1e-6)


def test_two_inputs_of_one_shape_are_two_inputs_not_a_stack():
    a, b = tinycnn.Input((3,), name="a"), tinycnn.Input((3,), name="b")
    model = tinycnn.Model([a, b], layers.subtract([a, b]))
    x1, x2 = np.ones((5, 3), np.float32), np.full((5, 3), 3.0, np.float32)
    np.testing.assert_array_equal(model.predict([x1, x2]), np.full((5, 3), -2.0))


def test_several_inputs_given_wrongly_get_one_line():
    model = _two_in_two_out()
    model.compile(loss=["binary_crossentropy", "mse"])
    image, extra, cls, reg = _two_in_two_out_data(8)
    with pytest.raises(ValueError, match=r"2 inputs \['image', 'extra'\]"):
        model.predict(image)
    with pytest.raises(ValueError, match=r"missing \['extra'\]"):
        model.predict({"image": image})
    with pytest.raises(ValueError, match="different numbers of samples"):
        model.predict([image, extra[:4]])
    with pytest.raises(ValueError, match="for output 'reg'"):
        model.fit([image, extra], [cls, reg[:3]], verbose=0)


# ---------------------------------------------------------------------- saving: Modules and user layers

class Scaled(tinycnn.Module):
    """A user Module with weights and a config, inside a Sequential."""

    def __init__(self, units=3):
        super().__init__()
        self.units = units
        self.dense = layers.Dense(units)

    def forward(self, x):
        return self.dense(x) * 2.0

    def get_config(self):
        return {"units": self.units}


def test_a_sequential_holding_modules_loads(tmp_path):
    tinycnn.manual_seed(5)
    model = tinycnn.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)), Scaled(2)])
    x = np.random.default_rng(5).standard_normal((6, 3)).astype(np.float32)
    model.compile(loss="mse")
    model.fit(x, np.zeros((6, 2), np.float32), epochs=1, verbose=0)
    model.save(tmp_path / "s.tcnn")
    loaded = tinycnn.load_model(tmp_path / "s.tcnn")
    assert isinstance(loaded.layers[1], Scaled)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)


def test_a_registered_layer_loads_under_its_package_name(tmp_path):
    def define():
        @register_serializable(package="test_trainer_pkg")
        class Doubling(layers.Layer):
            def forward(self, x):
                return x * 2.0
        return Doubling

    doubling = define()  # a class made in a function: its own name does not find it, the registered one does
    model = tinycnn.Sequential([layers.Dense(2, input_shape=(3,)), doubling()])
    x = np.ones((2, 3), np.float32)
    model.save(tmp_path / "r.tcnn")
    with zipfile.ZipFile(tmp_path / "r.tcnn") as archive:
        header = json.loads(np.load(io.BytesIO(archive.read("__tinycnn__.npy"))).tobytes())
    assert header["config"]["layers"][1]["module"] == "test_trainer_pkg"
    loaded = tinycnn.load_model(tmp_path / "r.tcnn")
    assert type(loaded.layers[1]) is doubling
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)


def test_sequential_add_pop_and_repr():
    model = tinycnn.Sequential(name="stack")
    model.add(layers.Dense(4, input_shape=(3,), name="first"))
    model.add(layers.Dense(2, name="second"))
    assert model.predict(np.ones((1, 3), np.float32)).shape == (1, 2)
    assert model.pop().name == "second"
    assert [layer.name for layer in model.layers] == ["first"] and list(model._modules) == ["layers.0"]
    assert model.predict(np.ones((1, 3), np.float32)).shape == (1, 4)
    text = repr(model)
    assert text.startswith("Sequential(name='stack',\n") and "(layers.0): Dense(name='first', units=4" in text
    model.pop()
    with pytest.raises(IndexError, match="no layer"):
        model.pop()


def test_the_plate_regressors_channels_last_pieces_are_refused_by_a_sequential():
    from tasks.plates_models import PlateBoxRegressor
    net = PlateBoxRegressor(width=0.35, head_channels=0)
    with pytest.raises(ValueError, match=r"layer 'conv2d_\d+' \(inside 'ConvBNReLU6'\) has a channels-last"):
        tinycnn.Sequential([net.stem] + net.features + [net.pool, net.box])
    tinycnn.Sequential([net])  # the whole model arranges its own layouts: accepted


# ---------------------------------------------------------------------- ReLU and Flatten as Keras

def _keras_relu(x, max_value, negative_slope, threshold):
    y = np.where(x >= threshold, x, negative_slope * (x - threshold))
    return y if max_value is None else np.minimum(y, max_value)


@pytest.mark.parametrize("max_value, negative_slope, threshold",
                         [(None, 0.0, 0.0), (6.0, 0.0, 0.0), (4.5, 0.1, 1.0), (None, 0.2, 0.0), (3.0, 0.0, -1.0),
                          (None, 0.0, 2.0), (0.5, 0.3, 0.0)])
def test_relu_takes_keras_arguments(max_value, negative_slope, threshold):
    x = np.linspace(-4, 8, 49).reshape(7, 7) + 0.013  # no point sits on a kink
    layer = layers.ReLU(max_value, negative_slope, threshold)
    np.testing.assert_allclose(layer(tinycnn.Tensor(x.astype(np.float32))).numpy(),
                               _keras_relu(x, max_value, negative_slope, threshold), rtol=1e-6, atol=1e-6)
    check_gradients(lambda t: layer(t), [x])
    again = layers.ReLU(**{k: v for k, v in layer.get_config().items() if k != "name"})
    assert (again.max_value, again.negative_slope, again.threshold) == (layer.max_value, negative_slope, threshold)


def test_relu_refuses_negative_arguments():
    with pytest.raises(ValueError, match="max_value must be ≥ 0"):
        layers.ReLU(max_value=-1)
    with pytest.raises(ValueError, match="negative_slope must be ≥ 0"):
        layers.ReLU(negative_slope=-0.1)


def test_flatten_reads_keras_order_and_old_files_keep_theirs(tmp_path):
    tinycnn.manual_seed(6)
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 2)).astype(np.float32)  # (N, H, W, C)
    model = tinycnn.Sequential([layers.Flatten(input_shape=(3, 4, 2)), layers.Dense(5, use_bias=False)])
    kernel = model.get_weights()[0]  # (units, features)
    np.testing.assert_allclose(model.predict(x), x.reshape(2, -1) @ kernel.T, rtol=1e-5)  # Keras: (H, W, C)
    check_gradients(lambda t: layers.Flatten()(t), [np.ascontiguousarray(x.transpose(0, 3, 1, 2))])
    # a file saved before keras_order existed: its Flatten config has no such key, and keeps (C, H, W)
    model.save(tmp_path / "new.tcnn")
    _rewrite_header(tmp_path / "new.tcnn", tmp_path / "old.tcnn",
                    lambda header: header["config"]["layers"][0]["config"].pop("keras_order"))
    old = tinycnn.load_model(tmp_path / "old.tcnn")
    assert old.layers[0].keras_order is False
    np.testing.assert_allclose(old.predict(x), x.transpose(0, 3, 1, 2).reshape(2, -1) @ kernel.T, rtol=1e-5)


def _rewrite_header(source, target, edit):
    """Copy a model file, its JSON header changed by edit(header): a file as an older tinycnn wrote it."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = json.loads(np.load(io.BytesIO(members["__tinycnn__.npy"])).tobytes())
    edit(header)
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(header).encode(), np.uint8))
    members["__tinycnn__.npy"] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_a_functional_model_file_from_before_the_trainer_split_loads(tmp_path):
    tinycnn.manual_seed(7)
    model = _functional()
    x, _ = _blobs(4)
    model.save(tmp_path / "f.tcnn")
    _rewrite_header(tmp_path / "f.tcnn", tmp_path / "old.tcnn",
                    lambda header: header.update({"class": "Model", "module": "tinycnn.functional_model"}))
    loaded = tinycnn.load_model(tmp_path / "old.tcnn")
    assert type(loaded).__name__ == "Functional" and isinstance(loaded, tinycnn.Model)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)


def test_fit_sample_weight_of_zero_leaves_samples_out():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-1.0], [0.5]], np.float32)
    y[20:] += 50.0  # the second half is wrong
    weights = np.r_[np.ones(20), np.zeros(20)]
    errors = []
    for sample_weight in (None, weights):
        tinycnn.manual_seed(8)
        model = tinycnn.Sequential([layers.Dense(1, input_shape=(3,))])
        model.compile(loss="mse", optimizer=tinycnn.optimizers.Adam(0.1))
        model.fit(x, y, batch_size=8, epochs=40, verbose=0, sample_weight=sample_weight)
        errors.append(float(np.abs(model.predict(x[:20]) - y[:20]).mean()))
    assert errors[1] < 0.1 < 10.0 < errors[0]
    with pytest.raises(ValueError, match="40 inputs but 3 sample weights"):
        model.fit(x, y, verbose=0, sample_weight=[1, 2, 3])


@pytest.mark.parametrize("loss, per_element", [
    (tinycnn.losses.MeanSquaredError(), lambda p, y: (p - y) ** 2),
    (tinycnn.losses.MeanAbsoluteError(), lambda p, y: np.abs(p - y)),
    (tinycnn.losses.Huber(), lambda p, y: np.where(np.abs(p - y) < 1, 0.5 * (p - y) ** 2, np.abs(p - y) - 0.5)),
])
def test_losses_weigh_samples_as_keras(loss, per_element):
    rng = np.random.default_rng(9)
    pred, y, weights = rng.standard_normal((4, 3)) * 2, rng.standard_normal((4, 3)), np.array([0.5, 2.0, 0.0, 1.0])
    value = float(loss(tinycnn.Tensor(pred), y, sample_weight=weights).item())
    np.testing.assert_allclose(value, np.mean(weights * per_element(pred, y).mean(axis=1)), rtol=1e-6)
    check_gradients(lambda p: loss(p, y, sample_weight=weights), [pred])


def test_categorical_crossentropy_weighs_samples():
    rng = np.random.default_rng(10)
    logits, y = rng.standard_normal((3, 4)), np.eye(4)[[0, 3, 1]]
    weights = np.array([1.0, 0.0, 3.0])
    loss = tinycnn.losses.CategoricalCrossentropy(from_logits=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = np.mean(weights * -(y * log_p).sum(axis=1))
    np.testing.assert_allclose(float(loss(tinycnn.Tensor(logits), y, sample_weight=weights).item()), expected, rtol=1e-6)


def test_several_inputs_and_outputs_from_an_iterable_of_batches():
    tinycnn.manual_seed(4)
    image, extra, cls, reg = _two_in_two_out_data()
    batches = [({"image": image[i:i + 8], "extra": extra[i:i + 8]}, [cls[i:i + 8], reg[i:i + 8]])
               for i in range(0, 32, 8)]
    model = _two_in_two_out()
    model.compile(loss=["binary_crossentropy", "mse"], optimizer=tinycnn.optimizers.Adam(0.02))
    history = model.fit(batches, epochs=20, verbose=0, validation_data=batches[:1])
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    on_arrays = model.evaluate([image, extra], [cls, reg], batch_size=8, return_dict=True)["loss"]
    assert model.evaluate(batches, return_dict=True)["loss"] == pytest.approx(on_arrays, rel=1e-5)
    outputs = model.predict(([image[i:i + 8], extra[i:i + 8]],) for i in range(0, 32, 8))
    np.testing.assert_allclose(outputs[1], model.predict([image, extra])[1], rtol=1e-5)

"""The functional API: tinycnn.Input, layers called on symbolic tensors, tinycnn.Model(inputs, outputs).

The end-to-end case is the issue's: an FCN written the Keras way (Conv2D, MaxPooling2D, Conv2DTranspose with
strides 2 and 'same' padding, concatenated skips, a softmax over two classes) trains on small synthetic masks
with categorical_crossentropy and metrics=["accuracy"], then saves and loads with the same predictions."""
import json

import numpy as np
import pytest

import tinycnn
from tinycnn import Input, Model, Tensor, layers


def keras_fcn(size=16, softmax_layer=False):
    inputs = Input((size, size, 3))
    c1 = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    p1 = layers.MaxPooling2D()(c1)
    c2 = layers.Conv2D(16, 3, padding="same", activation="relu")(p1)
    p2 = layers.MaxPooling2D()(c2)
    b = layers.Conv2D(16, 3, padding="same", activation="relu")(p2)
    u2 = layers.Conv2DTranspose(16, 3, strides=2, padding="same")(b)
    u2 = layers.concatenate([u2, c2])
    u2 = layers.Conv2D(16, 3, padding="same", activation="relu")(u2)
    u1 = layers.Conv2DTranspose(8, 3, strides=2, padding="same")(u2)
    u1 = layers.concatenate([u1, c1])
    if softmax_layer:
        outputs = layers.Softmax()(layers.Conv2D(2, 1)(u1))
    else:
        outputs = layers.Conv2D(2, 1, activation="softmax")(u1)
    return Model(inputs, outputs)


def synthetic_masks(n, size=16, seed=0):
    """Images with a bright rectangle (the 'plate') on noise; one-hot (N, H, W, 2) masks of it."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size, 3)).astype(np.float32) * 0.3
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        top, left = rng.integers(0, size // 2, 2)
        h, w = rng.integers(3, size // 2, 2)
        images[i, top:top + h, left:left + w] += 0.7
        masks[i, top:top + h, left:left + w] = 1
    return images, np.eye(2, dtype=np.float32)[masks]


@pytest.mark.parametrize("softmax_layer", [False, True])
def test_keras_fcn_trains_saves_and_loads(tmp_path, softmax_layer):
    tinycnn.manual_seed(0)
    model = keras_fcn(softmax_layer=softmax_layer)
    assert model.output.shape == (None, 16, 16, 2)
    x, masks = synthetic_masks(24)
    model.compile(loss="categorical_crossentropy", optimizer=tinycnn.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = model.fit(x, masks, batch_size=8, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]
    loss, accuracy = model.evaluate(x, masks)
    assert accuracy > 0.85  # the plate is the minority: all-background scores about 0.7
    predictions = model.predict(x)
    assert predictions.shape == (24, 16, 16, 2)
    np.testing.assert_allclose(predictions.sum(axis=-1), 1.0, rtol=1e-5)
    model.save(tmp_path / "fcn.tcnn")
    for load in (tinycnn.load_model, tinycnn.models.load_model):
        loaded = load(tmp_path / "fcn.tcnn")
        assert isinstance(loaded, Model)
        np.testing.assert_allclose(loaded.predict(x), predictions, rtol=1e-5, atol=1e-6)
        assert loaded.evaluate(x, masks)[1] == pytest.approx(accuracy)


def test_several_inputs_and_outputs():
    image, extra = Input((8, 8, 3), name="image"), Input((5,), name="extra")
    features = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(image))
    joined = layers.concatenate([features, layers.Dense(4)(extra)])
    score = layers.Dense(1, activation="sigmoid", name="score")(joined)
    heat = layers.Conv2D(1, 1, name="heat")(image)
    model = Model([image, extra], [score, heat])
    assert [t.shape for t in model.outputs] == [(None, 1), (None, 8, 8, 1)]
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 8, 8)).astype(np.float32)  # NCHW inside
    b = rng.random((2, 5)).astype(np.float32)
    s, h = model([Tensor(a), Tensor(b)])
    assert s.shape == (2, 1) and h.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="takes 2 input"):
        model(Tensor(a))


def test_shared_layer_counts_once_and_learns_from_both_calls():
    left, right = Input((6,)), Input((6,))
    shared = layers.Dense(3, name="shared")
    out = layers.add([shared(left), shared(right)])
    model = Model([left, right], out)
    assert model.count_params() == 6 * 3 + 3
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text and "shared[0][0]" in text and "shared[1][0]" in text
    a, b = (Tensor(np.random.default_rng(i).random((4, 6))) for i in (1, 2))
    model(a, b).sum().backward()
    # d/dW Σ (W a + W b) = Σ over samples of (a + b), for every output unit
    expected = np.tile((a.numpy() + b.numpy()).sum(axis=0), (3, 1))
    np.testing.assert_allclose(shared.kernel.grad, expected, rtol=1e-5)


def test_nested_model_and_sequential_as_layers_round_trip(tmp_path):
    tinycnn.manual_seed(3)
    inner_in = Input((8, 8, 2))
    inner = Model(inner_in, layers.Conv2D(4, 3, padding="same", activation="relu")(inner_in), name="inner")
    head = tinycnn.Sequential([layers.Flatten(), layers.Dense(3)], name="head")
    outer_in = Input((8, 8, 2))
    features = inner(outer_in)
    out = head(layers.MaxPooling2D()(features))
    model = Model(outer_in, out, name="outer")
    assert model.output.shape == (None, 3)
    assert {"inner.conv2d" in k or k.startswith("inner.") for k in model.state_dict()} == {True, False}
    x = np.random.default_rng(0).random((3, 8, 8, 2)).astype(np.float32)
    expected = model.predict(x)
    json.dumps(model.get_config())  # the architecture is plain JSON
    model.save(tmp_path / "nested.tcnn")
    loaded = tinycnn.load_model(tmp_path / "nested.tcnn")
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-5, atol=1e-6)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]


def test_channels_last_layers_inside_a_functional_model_match_channels_first():
    tinycnn.manual_seed(4)
    inputs = Input((6, 6, 3))
    first = layers.Conv2D(4, 3, padding="same")
    bn_first = layers.BatchNormalization()
    nchw = Model(inputs, bn_first(first(inputs)))
    last = layers.Conv2D(4, 3, padding="same", data_format="channels_last")
    bn_last = layers.BatchNormalization(axis=-1)
    nhwc = Model(inputs, bn_last(last(inputs)))
    last.kernel.data[:] = first.kernel.data
    x = np.random.default_rng(0).random((2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(nhwc.predict(x), nchw.predict(x), rtol=1e-4, atol=1e-5)


def test_flatten_reshape_give_keras_order_through_a_model():
    inputs = Input((2, 3, 4))
    model = Model(inputs, [layers.Reshape((24,))(inputs), layers.Permute((3, 1, 2))(inputs)])
    x = np.arange(2 * 24, dtype=np.float32).reshape(2, 2, 3, 4)
    flat, permuted = model(Tensor(x.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_array_equal(flat.numpy(), x.reshape(2, 24))
    np.testing.assert_array_equal(permuted.numpy().transpose(0, 2, 3, 1), x.transpose(0, 3, 1, 2))


def test_graph_errors_are_clear():
    a, b = Input((4,)), Input((4,))
    out = layers.add([a, b])
    with pytest.raises(ValueError, match="graph disconnected"):
        Model(a, out)
    with pytest.raises(TypeError, match="symbolic tensors"):
        Model(a, np.zeros(3))
    x = Input((4,))
    y = layers.Dense(2, name="twin")(x)
    with pytest.raises(ValueError, match="named 'twin'"):
        Model(x, layers.Dense(2, name="twin")(y))
    model = Model(x, y)
    with pytest.raises(ValueError, match=r"expects samples of shape \(4,\)"):
        model.predict(np.zeros((2, 5), np.float32))
    assert model.get_layer("twin") is model.layers[1]
    with pytest.raises(ValueError, match="no layer named"):
        model.get_layer("nope")


def test_summary_shows_keras_shapes_and_counts():
    lines = []
    keras_fcn().summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "(None, 16, 16, 3)" in text and "(None, 8, 8, 16)" in text
    assert "concatenate" in text and "Total params" in text and "Non-trainable params: 0" in text


def test_channels_last_chain_stays_channels_last():
    """Convs, batch norms, ReLUs and Adds of a channels-last chain all run NHWC: no transpose between them."""
    from tinycnn.functional_model import _plan_layouts
    inputs = Input((6, 6, 4))
    x = layers.Conv2D(4, 1, data_format="channels_last")(inputs)
    y = layers.ReLU(6.0)(layers.BatchNormalization(axis=-1)(x))
    y = layers.add([x, y])
    out = layers.Softmax()(layers.ZeroPadding2D(1, data_format="channels_last")(y))  # softmax: back to NCHW
    model = Model(inputs, out)
    runs_in, _ = _plan_layouts(model.inputs, model._nodes)
    layouts = [runs_in[id(node)] for node in model._nodes if node.inputs is not None]
    assert layouts == ["channels_last"] * 5 + ["channels_first"]
    x = np.random.default_rng(0).random((2, 6, 6, 4)).astype(np.float32)
    twin_in = Input((6, 6, 4))
    conv = layers.Conv2D(4, 1)
    a = conv(twin_in)
    b = layers.add([a, layers.ReLU(6.0)(layers.BatchNormalization()(a))])
    twin = Model(twin_in, layers.Softmax()(layers.ZeroPadding2D(1)(b)))
    conv.kernel.data[:] = model.layers[1].kernel.data
    np.testing.assert_allclose(model.predict(x), twin.predict(x), rtol=1e-5, atol=1e-6)

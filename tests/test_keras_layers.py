"""The Keras layers added for the functional API: output shapes against Keras' shape rules (tables worked by
hand), values against NumPy in Keras' channels-last order, finite-difference gradients in float64, and the
errors a wrong input gets (at build time, naming the layer and the shapes)."""
import itertools

import numpy as np
import pytest

import tinycnn
from gradcheck import check_gradients
from tinycnn import Input, Tensor, layers


def keras_shape_of(layer_factory, *input_shapes):
    """The Keras shape (batch None) a layer gives on symbolic inputs of these per-sample shapes."""
    inputs = [Input(s) for s in input_shapes]
    out = layer_factory()(inputs if len(inputs) > 1 else inputs[0])
    return out.shape


# ---------------------------------------------------------------------- shapes, by hand from Keras' rules

SHAPE_TABLE = [
    # layer                                                  input shape(s)              Keras' output shape
    (lambda: layers.Reshape((4, 4, 2)),                      [(32,)],                    (None, 4, 4, 2)),
    (lambda: layers.Reshape((-1,)),                          [(4, 4, 2)],                (None, 32)),
    (lambda: layers.Reshape((8, -1)),                        [(4, 4, 2)],                (None, 8, 4)),
    (lambda: layers.Permute((2, 1, 3)),                      [(4, 6, 3)],                (None, 6, 4, 3)),
    (lambda: layers.Permute((3, 1, 2)),                      [(4, 6, 3)],                (None, 3, 4, 6)),
    (lambda: layers.Permute((2, 1)),                         [(5, 3)],                   (None, 3, 5)),
    (lambda: layers.ZeroPadding2D(1),                        [(5, 6, 3)],                (None, 7, 8, 3)),
    (lambda: layers.ZeroPadding2D((2, 1)),                   [(5, 6, 3)],                (None, 9, 8, 3)),
    (lambda: layers.ZeroPadding2D(((1, 2), (3, 4))),         [(5, 6, 3)],                (None, 8, 13, 3)),
    (lambda: layers.Cropping2D(1),                           [(5, 6, 3)],                (None, 3, 4, 3)),
    (lambda: layers.Cropping2D(((1, 2), (0, 1))),            [(5, 6, 3)],                (None, 2, 5, 3)),
    (lambda: layers.Concatenate(),                           [(4, 4, 3), (4, 4, 5)],     (None, 4, 4, 8)),
    (lambda: layers.Concatenate(axis=1),                     [(4, 4, 3), (2, 4, 3)],     (None, 6, 4, 3)),
    (lambda: layers.Concatenate(axis=2),                     [(4, 3, 3), (4, 5, 3)],     (None, 4, 8, 3)),
    (lambda: layers.Concatenate(),                           [(7,), (2,)],               (None, 9)),
    (lambda: layers.Add(),                                   [(4, 4, 3), (4, 4, 3)],     (None, 4, 4, 3)),
    (lambda: layers.Multiply(),                              [(6,), (6,)],               (None, 6)),
    (lambda: layers.Average(),                               [(2, 2, 1)] * 3,            (None, 2, 2, 1)),
    (lambda: layers.Subtract(),                              [(3,), (3,)],               (None, 3)),
    (lambda: layers.Maximum(),                               [(3,), (3,)],               (None, 3)),
    (lambda: layers.Softmax(),                               [(4, 4, 3)],                (None, 4, 4, 3)),
    (lambda: layers.LeakyReLU(),                             [(4, 4, 3)],                (None, 4, 4, 3)),
    (lambda: layers.Rescaling(1 / 255),                      [(4, 4, 3)],                (None, 4, 4, 3)),
    (lambda: layers.RandomFlip("horizontal"),                [(4, 4, 3)],                (None, 4, 4, 3)),
    (lambda: layers.SeparableConv2D(8, 3),                   [(10, 10, 3)],              (None, 8, 8, 8)),
    (lambda: layers.SeparableConv2D(8, 3, strides=2, padding="same"), [(10, 10, 3)],     (None, 5, 5, 8)),
    (lambda: layers.SeparableConv2D(4, (1, 3), depth_multiplier=2), [(6, 6, 2)],         (None, 6, 4, 4)),
]


@pytest.mark.parametrize("factory, inputs, expected", SHAPE_TABLE)
def test_output_shapes_follow_keras(factory, inputs, expected):
    assert keras_shape_of(factory, *inputs) == expected


# Conv2DTranspose on a 5×5 input, lengths worked by hand from Keras' deconv_output_length:
#   output_padding None: 'valid' 5·s + max(k − s, 0); 'same' 5·s
#   output_padding p:    (5 − 1)·s + k − 2·pad + p, pad = 0 ('valid') or k // 2 ('same')
CONV_TRANSPOSE_TABLE = [
    # kernel stride padding output_padding  length
    (3, 2, "same", None, 10), (3, 2, "valid", None, 11), (2, 2, "same", None, 10), (2, 2, "valid", None, 10),
    (1, 2, "same", None, 10), (1, 2, "valid", None, 10), (4, 2, "same", None, 10), (4, 2, "valid", None, 12),
    (3, 1, "same", None, 5), (3, 1, "valid", None, 7), (5, 3, "same", None, 15), (5, 3, "valid", None, 17),
    (1, 3, "valid", None, 15), (2, 3, "same", None, 15),
    (3, 2, "same", 1, 10), (3, 2, "same", 0, 9), (3, 2, "valid", 1, 12), (3, 2, "valid", 0, 11),
    (4, 2, "same", 1, 9), (4, 2, "same", 0, 8), (2, 3, "valid", 2, 16), (2, 3, "same", 2, 14),
    (1, 3, "same", 1, 14), (5, 1, "same", 0, 5), (5, 3, "same", 2, 15),
]


@pytest.mark.parametrize("kernel, stride, padding, output_padding, length", CONV_TRANSPOSE_TABLE)
def test_conv_transpose_shapes_follow_keras(kernel, stride, padding, output_padding, length):
    layer = lambda: layers.Conv2DTranspose(3, kernel, strides=stride, padding=padding,  # noqa: E731
                                           output_padding=output_padding)
    assert keras_shape_of(layer, (5, 5, 2)) == (None, length, length, 3)


def keras_conv_transpose_length(size, k, s, padding, output_padding):
    """Keras' deconv_output_length, written out (the table above is its values worked by hand)."""
    if output_padding is None:
        return size * s + max(k - s, 0) if padding == "valid" else size * s
    return (size - 1) * s + k - 2 * (k // 2 if padding == "same" else 0) + output_padding


def full_transpose(x, w, s):
    """The full transposed convolution in NumPy: (N, C, H, W), (C, F, k, k) -> (N, F, (H−1)s + k, ...)."""
    n, _, h, wd = x.shape
    k = w.shape[2]
    out = np.zeros((n, w.shape[1], (h - 1) * s + k, (wd - 1) * s + k))
    for i, j in itertools.product(range(h), range(wd)):
        out[:, :, i * s:i * s + k, j * s:j * s + k] += np.einsum("nc,cfab->nfab", x[:, :, i, j], w)
    return out


def test_conv_transpose_every_keras_combination_matches_numpy():
    """Every kernel 1–4, stride 1–3, padding, output_padding < stride on 3×3 and 4×4 inputs: Keras' length,
    and the values of the full transposed conv from TensorFlow's start (max(full − length, 0) // 2 for
    'same'), zeros past its end, plus the bias."""
    rng = np.random.default_rng(0)
    for k, s, padding, size in itertools.product(range(1, 5), range(1, 4), ["valid", "same"], [3, 4]):
        for output_padding in [None] + list(range(s)):
            length = keras_conv_transpose_length(size, k, s, padding, output_padding)
            if length < 1:
                continue
            layer = layers.Conv2DTranspose(2, k, strides=s, padding=padding, output_padding=output_padding)
            x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
            layer(Tensor(x))
            layer.bias.data[:] = [0.5, -1.0]
            full = full_transpose(x.astype(np.float64), layer.kernel.numpy().astype(np.float64), s)
            start = max(full.shape[2] - length, 0) // 2 if padding == "same" else 0
            expected = np.zeros((2, 2, length, length))
            kept = min(length, full.shape[2] - start)
            expected[:, :, :kept, :kept] = full[:, :, start:start + kept, start:start + kept]
            expected += np.array([0.5, -1.0]).reshape(1, 2, 1, 1)
            got = layer(Tensor(x)).numpy()
            assert got.shape == expected.shape, (k, s, padding, output_padding, size)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4,
                                       err_msg=str((k, s, padding, output_padding, size)))


def test_conv_transpose_tutorial_call_and_bad_output_padding():
    x = Input((8, 8, 4))
    assert layers.Conv2DTranspose(16, 3, strides=2, padding="same")(x).shape == (None, 16, 16, 16)
    with pytest.raises(ValueError, match="output_padding"):
        layers.Conv2DTranspose(4, 3, strides=2, output_padding=2)


# ---------------------------------------------------------------------- values in Keras' order

def run(layer, *arrays_nhwc):
    """Apply a layer the way a functional model does: NHWC arrays in, NCHW inside, NHWC out."""
    tensors = [Tensor(a.transpose(0, 3, 1, 2).copy() if a.ndim == 4 else a) for a in arrays_nhwc]
    out = layer(tensors if len(tensors) > 1 else tensors[0]).numpy()
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


def test_reshape_and_permute_walk_keras_order():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # (N, H, W, C)
    np.testing.assert_array_equal(run(layers.Reshape((60,)), x), x.reshape(2, 60))
    np.testing.assert_array_equal(run(layers.Reshape((5, 4, 3)), x), x.reshape(2, 5, 4, 3))
    np.testing.assert_array_equal(run(layers.Permute((2, 1, 3)), x), x.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(run(layers.Permute((3, 1, 2)), x), x.transpose(0, 3, 1, 2))
    flat = np.arange(24, dtype=np.float32).reshape(2, 12)
    np.testing.assert_array_equal(run(layers.Reshape((2, 3, 2)), flat), flat.reshape(2, 2, 3, 2))


def test_concatenate_softmax_padding_cropping_values():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 3, 2)).astype(np.float32), rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(layers.Concatenate(), a, b), np.concatenate([a, b], axis=-1))
    c = rng.standard_normal((2, 5, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(run(layers.Concatenate(axis=1), a, c), np.concatenate([a, c], axis=1))
    e = np.exp(b - b.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(run(layers.Softmax(), b), e / e.sum(axis=-1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(run(layers.Softmax(axis=1), b), np.exp(b) / np.exp(b).sum(axis=1, keepdims=True),
                               rtol=1e-5)
    np.testing.assert_array_equal(run(layers.ZeroPadding2D(((1, 0), (2, 1))), a),
                                  np.pad(a, ((0, 0), (1, 0), (2, 1), (0, 0))))
    np.testing.assert_array_equal(run(layers.Cropping2D(((1, 0), (0, 2))), c), c[:, 1:, :1])
    np.testing.assert_allclose(run(layers.Average(), a, a * 3), a * 2, rtol=1e-6)
    np.testing.assert_array_equal(run(layers.Maximum(), a, -a), np.abs(a))
    np.testing.assert_array_equal(run(layers.Minimum(), a, -a), -np.abs(a))
    np.testing.assert_allclose(run(layers.LeakyReLU(0.2), a), np.where(a > 0, a, 0.2 * a), rtol=1e-6)
    np.testing.assert_allclose(run(layers.Rescaling(0.5, offset=-1), a), a * 0.5 - 1, rtol=1e-6)


def test_random_flip_flips_only_in_training():
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 3, 2)
    flip = layers.RandomFlip("horizontal", seed=3)
    flip.eval()
    np.testing.assert_array_equal(run(flip, x), x)
    flip.train()
    seen = {run(flip, x).tobytes() for _ in range(20)}
    assert seen == {x.tobytes(), x[:, :, ::-1].copy().tobytes()}  # some flipped, some not, nothing else
    both = layers.RandomFlip(seed=0)
    outs = {run(both, x).tobytes() for _ in range(40)}
    assert len(outs) == 4  # as is, left-right, top-bottom, both


def test_separable_conv_is_depthwise_then_pointwise():
    rng = np.random.default_rng(2)
    layer = layers.SeparableConv2D(3, 3, depth_multiplier=2, padding="same")
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    y = layer(Tensor(x)).numpy()
    depthwise = tinycnn.functional.conv2d(Tensor(x), layer.depthwise_kernel, None, 1, 1, 1, 2).numpy()
    expected = np.einsum("fc,nchw->nfhw", layer.pointwise_kernel.numpy()[:, :, 0, 0], depthwise)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    assert layer.count_params() == 2 * 2 * 9 + 4 * 3 + 3  # Keras: C·m·k·k + C·m·filters + filters


# ---------------------------------------------------------------------- gradients (float64, finite differences)

def with_weights(layer, names):
    """fn(x, *weights) running `layer` with the given tensors in place of its weights."""
    def fn(x, *weights):
        for name, w in zip(names, weights):
            object.__setattr__(layer, name, w)
        return layer(x)
    return fn


def test_gradients_of_shape_and_activation_layers():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 5))
    for layer in [layers.Reshape((10, 6)), layers.Permute((3, 1, 2)), layers.ZeroPadding2D(((1, 0), (0, 2))),
                  layers.Cropping2D(((1, 1), (2, 0))), layers.Softmax(), layers.Softmax(axis=2),
                  layers.LeakyReLU(0.1), layers.Rescaling(2.0, 1.0)]:
        check_gradients(lambda t: layer(t), [x])
    flip = layers.RandomFlip(seed=0)
    flip.train()

    def flipped(t):
        flip._rng = np.random.default_rng(5)  # the same flips on every call
        return flip(t)
    check_gradients(flipped, [x])


def test_gradients_of_merge_layers():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2))
    for layer in [layers.Add(), layers.Subtract(), layers.Multiply(), layers.Average(), layers.Maximum(),
                  layers.Minimum()]:
        check_gradients(lambda s, t: layer([s, t]), [a, b])
    c = rng.standard_normal((2, 1, 2, 2))
    check_gradients(lambda s, t: layers.Concatenate()([s, t]), [a, c])


def test_gradients_of_separable_and_transposed_convs():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 4, 4))
    sep = layers.SeparableConv2D(2, 3, strides=2, padding="same", depth_multiplier=2)
    sep(Tensor(x.astype(np.float32)))
    names = ["depthwise_kernel", "pointwise_kernel", "bias"]
    check_gradients(with_weights(sep, names), [x] + [rng.standard_normal(getattr(sep, n).shape) for n in names])
    for padding, output_padding in [("same", None), ("valid", 1), ("same", 0)]:
        up = layers.Conv2DTranspose(2, 3, strides=2, padding=padding, output_padding=output_padding)
        up(Tensor(x.astype(np.float32)))
        check_gradients(with_weights(up, ["kernel", "bias"]),
                        [x, rng.standard_normal(up.kernel.shape), rng.standard_normal(up.bias.shape)])


# ---------------------------------------------------------------------- errors at build time

def test_wrong_layout_fails_at_build_naming_layer_and_shapes():
    with pytest.raises(ValueError, match=r"layer 'bad_conv' \(Conv2D\).*\(None, 32\).*4-D"):
        layers.Conv2D(4, 3, name="bad_conv")(Input((32,)))
    with pytest.raises(ValueError, match=r"layer 'head' \(Dense\).*\(None, 8, 8, 3\).*Flatten"):
        layers.Dense(2, name="head")(Input((8, 8, 3)))
    with pytest.raises(ValueError, match=r"'join'.*\(None, 4, 4, 3\), \(None, 5, 4, 3\)"):
        layers.Concatenate(name="join")([Input((4, 4, 3)), Input((5, 4, 3))])
    with pytest.raises(ValueError, match="one shape"):
        layers.Add()([Input((4, 4, 3)), Input((4, 4, 2))])
    with pytest.raises(ValueError, match="cannot take the shape"):
        layers.Reshape((5, 5))(Input((4, 4)))
    with pytest.raises(ValueError, match="rank"):
        layers.Permute((2, 1))(Input((4, 4, 3)))
    with pytest.raises(ValueError, match="leaves nothing"):
        layers.Cropping2D(3)(Input((6, 6, 1)))
    with pytest.raises(ValueError, match="list of at least 2"):
        layers.Add()(Tensor(np.zeros((1, 3), np.float32)))


def test_new_layers_in_a_sequential_train_save_and_load(tmp_path):
    tinycnn.manual_seed(0)
    model = tinycnn.Sequential([
        layers.Rescaling(1 / 255, input_shape=(8, 8, 3)), layers.RandomFlip("horizontal"), layers.ZeroPadding2D(1),
        layers.Conv2D(4, 3), layers.LeakyReLU(), layers.Cropping2D(1), layers.SeparableConv2D(4, 3, padding="same"),
        layers.Reshape((6 * 6 * 4,)), layers.Dense(3), layers.Softmax()])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    x = (np.random.default_rng(0).random((6, 8, 8, 3)) * 255).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    history = model.fit(x, y, batch_size=3, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    model.save(tmp_path / "seq.tcnn")
    np.testing.assert_allclose(tinycnn.load_model(tmp_path / "seq.tcnn").predict(x), model.predict(x), rtol=1e-5)
    with pytest.raises(ValueError, match="channels-last"):
        tinycnn.Sequential([layers.BatchNormalization(axis=-1)])


def test_channels_last_padding_and_cropping():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 5, 3))  # (N, H, W, C)
    pad = layers.ZeroPadding2D(((1, 2), (0, 3)), data_format="channels_last")
    np.testing.assert_array_equal(pad(Tensor(x)).numpy(), np.pad(x, ((0, 0), (1, 2), (0, 3), (0, 0))))
    crop = layers.Cropping2D(((1, 0), (2, 1)), data_format="channels_last")
    np.testing.assert_array_equal(crop(Tensor(x)).numpy(), x[:, 1:, 2:4])
    check_gradients(lambda t: pad(t), [x])
    check_gradients(lambda t: crop(t), [x])
    inputs = Input((4, 5, 3))
    assert layers.ZeroPadding2D(1, data_format="channels_last")(inputs).shape == (None, 6, 7, 3)

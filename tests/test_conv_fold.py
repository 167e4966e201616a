"""Uneven conv padding, the fused conv + bias + ReLU6 op, and a batch norm folded into the conv at inference:
gradients against finite differences (float64), kernels against the NumPy reference, folded models against
the same models run layer by layer."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
import tinycnn.functional as F
from gradcheck import check_gradients
from test_conv import TOL, conv_cases, randn
from tinycnn import fuse, layers
from tinycnn.device import kernels_for
from tinycnn.kernels import compose
from tinycnn.kernels.cpu import conv as cpu
from tinycnn.kernels.reference import conv as ref
from tinycnn.ops.batchnorm import fold_into_conv
from tinycnn.ops.conv import Conv2d, Conv2dBiasReLU6, conv2d_activation

DTYPES = [np.float32, np.float64]


@st.composite
def uneven_cases(draw):
    """A conv2d problem (conv_cases' shapes, strides, dilations, groups) with four independent paddings."""
    case = draw(conv_cases(string_padding=False))
    top, bottom, left, right = (draw(st.integers(0, 2)) for _ in range(4))
    (KH, KW), (dh, dw) = case["w_shape"][2:], case["dilation"]
    N, C, H, W = case["x_shape"]
    H = max(H, dh * (KH - 1) + 1 - top - bottom)  # the kernel must fit in the padded input
    W = max(W, dw * (KW - 1) + 1 - left - right)
    return dict(case, x_shape=(N, C, H, W), padding=(top, bottom, left, right))


def _padded(x, padding):
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=25)
@given(case=uneven_cases(), seed=st.integers(0, 2**16))
def test_uneven_padding_kernels_match_reference(dtype, case, seed):
    """The kernels given (top, bottom, left, right) = the reference conv of the explicitly padded input."""
    rng = np.random.default_rng(seed)
    x, w, b = (randn(rng, *case["x_shape"]), randn(rng, *case["w_shape"]), randn(rng, case["w_shape"][0]))
    stride, padding, dilation, groups = case["stride"], case["padding"], case["dilation"], case["groups"]
    xp = _padded(x, padding)
    expected = ref.conv2d_forward(xp, w, b, stride, (0, 0), dilation, groups)
    y = cpu.conv2d_forward(x.astype(dtype), w.astype(dtype), b.astype(dtype), stride, padding, dilation, groups)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **TOL[dtype])

    dy = randn(rng, *y.shape)
    dxp, dw, db = ref.conv2d_backward(dy, xp, w, stride, (0, 0), dilation, groups, True, True, True)
    top, _, left, _ = padding
    H, W = x.shape[2:]
    got = cpu.conv2d_backward(dy.astype(dtype), x.astype(dtype), w.astype(dtype), stride, padding, dilation, groups,
                              True, True, True)
    for label, g, e in zip(("dx", "dw", "db"), got, (dxp[:, :, top:top + H, left:left + W], dw, db)):
        assert g.dtype == dtype and g.shape == e.shape, label
        np.testing.assert_allclose(g, e, err_msg=label, **TOL[dtype])


@settings(deadline=None, max_examples=20)
@given(case=uneven_cases(), seed=st.integers(0, 2**16))
def test_uneven_padding_gradients(case, seed):
    rng = np.random.default_rng(seed)
    x, w, b = randn(rng, *case["x_shape"]), randn(rng, *case["w_shape"]), randn(rng, case["w_shape"][0])
    top, bottom, left, right = case["padding"]

    def fn(x, w, b):
        return F.conv2d(x, w, b, case["stride"], ((top, bottom), (left, right)), case["dilation"], case["groups"])
    check_gradients(fn, [x, w, b])


def test_keras_same_at_stride_2_needs_no_pad_op():
    """DepthwiseConv2D(3, strides=2, padding="same") on an even input pads only the bottom and right: one conv
    op, whose values are those of the explicitly padded conv."""
    tinycnn.manual_seed(1)
    layer = layers.DepthwiseConv2D(3, strides=2, padding="same")
    x = tinycnn.Tensor(randn(np.random.default_rng(1), 2, 3, 8, 6).astype(np.float32))
    y = layer(x)
    assert isinstance(y._ctx, Conv2d) and y._ctx.geometry[1] == (0, 1, 0, 1) and y.shape == (2, 3, 4, 3)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), layer.kernel, layer.bias, 2, 0, 1, 3)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)


def _without(monkeypatch, capability):
    """Make the CPU's kernels look like a backend that lacks `capability` of its conv family
    (kernels/contract.py): the kernel set's `conv` is rebuilt with the composed defaults (kernels/compose.py)."""
    k, kept = kernels_for("cpu"), kernels_for("cpu").capabilities["conv"] - {capability}
    monkeypatch.setattr(k, "capabilities", dict(k.capabilities, conv=kept))
    monkeypatch.setattr(k, "conv", compose.with_defaults(k, "conv", cpu, kept))


def test_uneven_padding_is_padded_first_where_the_kernels_take_only_symmetric(monkeypatch):
    rng = np.random.default_rng(2)
    x, w = tinycnn.Tensor(randn(rng, 1, 2, 5, 6), requires_grad=True), tinycnn.Tensor(randn(rng, 3, 2, 3, 2))
    direct = F.conv2d(x, w, padding=((0, 2), (1, 0)), stride=(2, 1))
    _without(monkeypatch, "asymmetric_padding")
    padded = F.conv2d(x, w, padding=((0, 2), (1, 0)), stride=(2, 1))
    assert padded._ctx.geometry[1] == (0, 0)
    np.testing.assert_allclose(padded.numpy(), direct.numpy(), rtol=1e-12, atol=1e-12)


def test_uneven_padding_is_checked():
    x, w = tinycnn.Tensor(np.zeros((1, 1, 2, 2))), tinycnn.Tensor(np.zeros((1, 1, 5, 1)))
    with pytest.raises(ValueError, match="larger than the padded input 4×2"):
        F.conv2d(x, w, padding=((1, 1), (0, 0)))
    with pytest.raises(ValueError, match="padding"):
        F.conv2d(x, w, padding=((1, -1), (0, 0)))


# ---------------------------------------------------------------------- conv + bias + ReLU6

RELU6_CASES = {  # one per algorithm; the weights are scaled so that outputs fall below 0, inside and above 6
    "direct, depthwise, stride 2, uneven": dict(x_shape=(2, 3, 6, 7), w_shape=(3, 1, 3, 3), stride=(2, 2),
                                                padding=(0, 1, 0, 1), groups=3),
    "matmul (1x1)": dict(x_shape=(2, 4, 3, 3), w_shape=(5, 4, 1, 1)),
    "im2col, uneven": dict(x_shape=(1, 3, 6, 5), w_shape=(4, 3, 3, 3), stride=(2, 2), padding=(0, 1, 1, 0)),
    "winograd": dict(x_shape=(1, 16, 5, 6), w_shape=(16, 16, 3, 3), padding=(1, 1)),
}


def _relu6_case(name, dtype=np.float64, seed=3):
    case = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    case.update(RELU6_CASES[name])
    rng = np.random.default_rng(seed)
    fan_in = np.prod(case["w_shape"][1:])
    x, b = randn(rng, *case["x_shape"]), randn(rng, case["w_shape"][0])
    w = randn(rng, *case["w_shape"]) * 8 / np.sqrt(fan_in)
    return case, x.astype(dtype), w.astype(dtype), b.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(RELU6_CASES))
def test_conv_relu6_kernel_matches_reference(name, dtype):
    case, x, w, b = _relu6_case(name, dtype)
    geometry = case["stride"], case["padding"], case["dilation"], case["groups"]
    z = ref.conv2d_forward(_padded(x.astype(np.float64), case["padding"]) if len(case["padding"]) == 4
                           else x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), case["stride"],
                           (0, 0) if len(case["padding"]) == 4 else case["padding"], case["dilation"], case["groups"])
    assert (z < 0).any() and ((z > 0) & (z < 6)).any() and (z > 6).any()
    for activation, expected in ((None, z), ("relu", np.maximum(z, 0)), ("relu6", np.clip(z, 0, 6))):
        y = cpu.conv2d_bias_act_forward(x, w, b, *geometry, activation)
        assert y.dtype == dtype and y.shape == z.shape
        np.testing.assert_allclose(y, expected, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * 10,
                                   err_msg=str(activation))


@pytest.mark.parametrize("name", sorted(RELU6_CASES))
def test_conv_relu6_gradients(name):
    case, x, w, b = _relu6_case(name)
    padding = case["padding"]
    top, bottom, left, right = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])

    def fn(x, w, b):
        return conv2d_activation(x, w, b, case["stride"], ((top, bottom), (left, right)), case["dilation"],
                                 case["groups"], "relu6")
    assert isinstance(fn(*(tinycnn.Tensor(a, requires_grad=True) for a in (x, w, b)))._ctx, Conv2dBiasReLU6)
    check_gradients(fn, [x, w, b])


def test_conv_relu6_falls_back_when_the_device_has_no_fused_kernel(monkeypatch):
    case, x, w, b = _relu6_case("matmul (1x1)")
    x, w, b = (tinycnn.Tensor(a, requires_grad=True) for a in (x, w, b))
    fused = conv2d_activation(x, w, b, activation="relu6")
    _without(monkeypatch, "fused_activation")
    two_ops = conv2d_activation(x, w, b, activation="relu6")
    assert kernels_for("cpu").conv.conv2d_bias_act_forward.func.__module__ == "tinycnn.kernels.compose"
    np.testing.assert_allclose(two_ops.numpy(), fused.numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="activation"):
        conv2d_activation(x, w, b, activation="tanh")


# ---------------------------------------------------------------------- batch norm folded into the conv

def _trained_batch_norm(bn, channels, rng):
    """Give a built batch norm statistics and parameters far from their initial values."""
    bn.gamma.data[...] = rng.uniform(0.5, 2.0, channels)
    bn.beta.data[...] = rng.standard_normal(channels)
    bn.moving_mean.data[...] = rng.standard_normal(channels)
    bn.moving_variance.data[...] = rng.uniform(0.2, 3.0, channels)
    for tensor in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance):
        tensor.bump_version()  # written in place: the inference pass folds them again


def _count_folds(monkeypatch):
    """A list that grows by one each time the inference pass folds a batch norm into a conv."""
    calls = []
    monkeypatch.setattr(fuse, "fold_into_conv", lambda *a: calls.append(a) or fold_into_conv(*a))
    return calls


@pytest.mark.parametrize("conv, after", [
    (lambda: layers.Conv2D(5, 3, padding="same", use_bias=True), None),
    (lambda: layers.Conv2D(6, 1, use_bias=False), layers.ReLU),
    (lambda: layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False), lambda: layers.ReLU(6.0)),
])
def test_sequential_folds_batch_norm_at_inference(conv, after, monkeypatch):
    rng = np.random.default_rng(4)
    stack = [conv(), layers.BatchNormalization()] + ([after()] if after else []) + [layers.Flatten()]
    model = tinycnn.Sequential(stack)
    x = randn(rng, 3, 8, 7, 4).astype(np.float32)  # channels-last, as Sequential takes it
    model.predict(x)  # builds the layers
    _trained_batch_norm(stack[1], stack[1].gamma.shape[0], rng)
    model.eval()
    expected = model(tinycnn.Tensor(x.transpose(0, 3, 1, 2).copy())).numpy()  # layer by layer

    calls = _count_folds(monkeypatch)
    form = fuse.inference_form(model)
    assert [type(step) for step in form._steps] == [fuse.FoldedConv, layers.Flatten]
    with tinycnn.no_grad():
        folded = form(tinycnn.Tensor(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(folded, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict(x), expected.reshape(len(x), -1), rtol=1e-4, atol=1e-5)
    assert len(calls) == 1  # folded once: predict found the form in the cache


def _with_trained_batch_norms(model, x, rng):
    """Build `model` on x, then give every batch norm in it statistics and parameters far from their start."""
    model(x)
    for _, module in model.named_modules():
        if isinstance(module, layers.BatchNormalization):
            _trained_batch_norm(module, module.gamma.shape[0], rng)


def test_no_fold_while_training():
    """Training runs the layers (batch norm + ReLU fused, its backward included); only the inference form
    folds, and only a conv without an activation of its own into a built batch norm on its channels."""
    model = tinycnn.Sequential([layers.Conv2D(2, 1, input_shape=(3, 3, 2)), layers.BatchNormalization(),
                                layers.ReLU()])
    assert [type(step) for step in model._steps] == [layers.Conv2D, fuse.BatchNormActivation]
    assert [type(step) for step in fuse.inference_form(model)._steps] == [layers.Conv2D, fuse.BatchNormActivation]
    model.predict(np.zeros((1, 3, 3, 2), np.float32))  # builds the layers: now the batch norm folds
    assert [type(step) for step in fuse.inference_form(model)._steps] == [fuse.FoldedConv]
    assert not fuse._folds(layers.Conv2D(2, 1), layers.BatchNormalization())  # not built
    conv, bn = model.layers[:2]
    assert not fuse._folds(layers.Conv2D(2, 1, activation="relu"), bn)
    assert not fuse._folds(conv, layers.BatchNormalization(axis=-1))


@pytest.mark.parametrize("name, folds", [
    ("regressor", 1 + 2 + 2 * 3 + 1),  # the stem; a block without expansion (2 convs), two with (3); the head
    ("segmenter", 5 * 2),              # two convs in each of the five blocks: 2 down, the bottom, 2 up
])
def test_plate_models_predict_the_same_folded(name, folds, monkeypatch):
    """The plate models' conv + batch norm (+ ReLU6 / ReLU) pairs, folded by the inference pass, against the
    same layers run one by one (gradients on)."""
    from tasks.plates_models import PlateBoxRegressor, PlateSegmenter
    tinycnn.manual_seed(5)
    rng = np.random.default_rng(5)
    model = PlateBoxRegressor(width=0.5, blocks=((1, 16, 1, 1), (6, 24, 2, 2))) if name == "regressor" \
        else PlateSegmenter(filters=4, depth=2)
    x = tinycnn.Tensor(randn(rng, 2, 3, 16, 16).astype(np.float32))
    _with_trained_batch_norms(model, x, rng)
    model.eval()
    expected = model(x).numpy()
    calls = _count_folds(monkeypatch)
    with tinycnn.no_grad():
        folded = fuse.inference_form(model)(x).numpy()
    assert len(calls) == folds
    np.testing.assert_allclose(folded, expected, rtol=1e-4, atol=1e-5)


@settings(deadline=None, max_examples=15)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_fold_into_conv_values_and_gradients(shape, with_bias, seed):
    """fold_into_conv's two ops: w' = w·s, b' = (b − mean)·s + β, s = γ/√(var + ε), against NumPy, and
    their gradients (w, b, γ, β, mean, var) against finite differences."""
    from tinycnn.ops.batchnorm import fold_into_conv
    rng = np.random.default_rng(seed)
    filters = shape[0]
    w, b = randn(rng, *shape), randn(rng, filters)
    gamma, beta, mean, var = (rng.uniform(0.5, 2, filters), randn(rng, filters), randn(rng, filters),
                              rng.uniform(0.2, 3, filters))
    eps = 1e-3
    tensors = [tinycnn.Tensor(a) for a in (w, b, gamma, beta, mean, var)]
    if not with_bias:
        tensors[1] = None
    folded_w, folded_b = fold_into_conv(*tensors, eps)
    s = gamma / np.sqrt(var + eps)
    np.testing.assert_allclose(folded_w.numpy(), w * s.reshape(-1, 1, 1, 1), rtol=1e-12)
    np.testing.assert_allclose(folded_b.numpy(), ((b if with_bias else 0) - mean) * s + beta, rtol=1e-12, atol=1e-12)

    def weight(w, gamma, var):
        return fold_into_conv(w, None, gamma, gamma * 0, gamma * 0, var, eps)[0]
    check_gradients(weight, [w, gamma, var])

    def bias(*args):
        b, rest = (args[0], args[1:]) if with_bias else (None, args)
        return fold_into_conv(tinycnn.Tensor(w), b, *rest, eps)[1]
    check_gradients(bias, ([b] if with_bias else []) + [gamma, beta, mean, var])

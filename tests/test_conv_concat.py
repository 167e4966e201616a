"""conv2d of a channel concatenation, read part by part (F.conv2d([a, b], w), Conv2D on a list, the U-Net's
decoder): the CPU kernels against conv2d of the concatenation built by NumPy (every algorithm: Winograd reads
the parts, the others get the concatenation), gradients against finite differences (float64), the composed
default of kernels/compose.py (backends without "concatenated_input"), the layer, the errors, and the U-Net
against its concatenating form."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
import tinycnn.functional as F
from gradcheck import check_gradients
from tinycnn import layers
from tinycnn.kernels.cpu import conv as cpu
from tinycnn.kernels.cpu.conv import algorithms
from tinycnn.ops.conv import Conv2dConcat

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


def randn(rng, *shape):
    return rng.standard_normal(shape)


@st.composite
def concat_cases(draw):
    """Parts of 1–3 channels each (2–3 parts), a kernel and geometry that reach every algorithm: 3×3 'same'
    (Winograd from 3 channels, few_channels below), 1×1 (matmul), stride 2 and uneven padding (im2col)."""
    channels = draw(st.lists(st.integers(1, 3), min_size=2, max_size=3))
    kernel = draw(st.sampled_from([3, 3, 1, 2]))
    stride = draw(st.sampled_from([1, 1, 2]))
    padding = draw(st.sampled_from([(1, 1), (0, 0), (0, 1, 0, 1), (2, 1)] if kernel == 3 else [(0, 0)]))
    size = (draw(st.integers(kernel + 2, 9)), draw(st.integers(kernel + 2, 9)))
    return dict(channels=channels, n=draw(st.integers(1, 3)), size=size, filters=draw(st.integers(1, 5)),
                kernel=kernel, geometry=((stride, stride), padding, (1, 1), 1), bias=draw(st.booleans()))


def _arrays(case, rng, dtype):
    parts = [randn(rng, case["n"], c, *case["size"]).astype(dtype) for c in case["channels"]]
    w = randn(rng, case["filters"], sum(case["channels"]), case["kernel"], case["kernel"]).astype(dtype)
    b = randn(rng, case["filters"]).astype(dtype) if case["bias"] else None
    return parts, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=30)
@given(case=concat_cases(), seed=st.integers(0, 2**16), needs=st.tuples(st.booleans(), st.booleans()))
def test_kernels_match_conv_of_the_concatenation(dtype, case, seed, needs):
    rng = np.random.default_rng(seed)
    parts, w, b = _arrays(case, rng, dtype)
    x = np.concatenate(parts, axis=1)
    geometry = case["geometry"]
    y = cpu.conv2d_concat_forward(tuple(parts), w, b, *geometry)
    expected = cpu.conv2d_forward(x, w, b, *geometry)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **TOL[dtype])

    dy = randn(rng, *y.shape).astype(dtype)
    need_dxs = (needs[0],) + (needs[1],) * (len(parts) - 1)
    dxs, dw, db = cpu.conv2d_concat_backward(dy, tuple(parts), w, *geometry, need_dxs, True, case["bias"])
    dx, dw_whole, db_whole = cpu.conv2d_backward(dy, x, w, *geometry, True, True, case["bias"])
    np.testing.assert_allclose(dw, dw_whole, **TOL[dtype])
    if case["bias"]:
        np.testing.assert_allclose(db, db_whole, **TOL[dtype])
    if not any(need_dxs):
        assert dxs is None
        return
    first = 0
    for part, got, need in zip(parts, dxs, need_dxs):
        if need:
            assert got.dtype == dtype and got.shape == part.shape and got.flags.c_contiguous
            np.testing.assert_allclose(got, dx[:, first:first + part.shape[1]], **TOL[dtype])
        else:
            assert got is None
        first += part.shape[1]


def test_winograd_reads_the_parts_and_the_others_get_the_concatenation(monkeypatch):
    """Winograd (reads_parts) is given the list itself; im2col (stride 2) a concatenated array."""
    seen = []
    table = tuple(a._replace(forward=_spy(a.forward, seen, a.name)) for a in algorithms.ALGORITHMS)
    monkeypatch.setattr(algorithms, "ALGORITHMS", table)
    rng = np.random.default_rng(1)
    parts = (randn(rng, 1, 3, 8, 8), randn(rng, 1, 2, 8, 8))
    cpu.conv2d_concat_forward(parts, randn(rng, 4, 5, 3, 3), None, (1, 1), (1, 1), (1, 1), 1)
    cpu.conv2d_concat_forward(parts, randn(rng, 4, 5, 3, 3), None, (2, 2), (1, 1), (1, 1), 1)
    assert seen == [("winograd", list), ("im2col", np.ndarray)]


def _spy(forward, seen, name):
    def spied(x, *args):
        seen.append((name, type(x)))
        return forward(x, *args)
    return spied


@settings(deadline=None, max_examples=12)
@given(case=concat_cases(), seed=st.integers(0, 2**16))
def test_conv2d_of_a_list_gradients(case, seed):
    """F.conv2d([a, b, ...], w, b): every part's, the weight's and the bias's gradient against central finite
    differences, in float64."""
    rng = np.random.default_rng(seed)
    parts, w, b = _arrays(case, rng, np.float64)
    stride, padding, dilation, _ = case["geometry"]
    padding = padding if len(padding) == 2 else ((padding[0], padding[1]), (padding[2], padding[3]))
    count = len(parts)

    def fn(*arrays):
        bias = arrays[count + 1] if len(arrays) > count + 1 else None
        return F.conv2d(list(arrays[:count]), arrays[count], bias, stride=stride, padding=padding)
    check_gradients(fn, parts + [w] + ([b] if b is not None else []))


def test_conv2d_of_a_list_is_one_op_and_matches_cat():
    rng = np.random.default_rng(2)
    a, b = (tinycnn.Tensor(randn(rng, 2, c, 7, 6).astype(np.float32), requires_grad=True) for c in (4, 3))
    w = tinycnn.Tensor(randn(rng, 5, 7, 3, 3).astype(np.float32), requires_grad=True)
    y = F.conv2d([a, b], w, padding="same")
    assert isinstance(y._ctx, Conv2dConcat)
    y.sum().backward()
    grads = [t.grad.copy() for t in (a, b, w)]
    for t in (a, b, w):
        t.grad = None
    expected = F.conv2d(tinycnn.cat([a, b], axis=1), w, padding="same")
    expected.sum().backward()
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    for got, t in zip(grads, (a, b, w)):
        np.testing.assert_allclose(got, t.grad, rtol=1e-4, atol=1e-4)


def test_composed_default_builds_the_concatenation(monkeypatch):
    """A backend without "concatenated_input" (the CUDA kernels) gets kernels/compose.py's: conv2d of the
    built concatenation, dx split into the parts; the same values as the CPU's own."""
    from tinycnn.device import kernels_for
    from tinycnn.kernels import compose
    k = kernels_for("cpu")
    kept = set(k.capabilities["conv"]) - {"concatenated_input"}
    plain = compose.with_defaults(k, "conv", cpu, kept)
    assert plain.conv2d_concat_forward.func is compose.conv2d_concat_forward
    rng = np.random.default_rng(3)
    parts, w, bias = (randn(rng, 2, 3, 6, 7), randn(rng, 2, 4, 6, 7)), randn(rng, 5, 7, 3, 3), randn(rng, 5)
    geometry = (1, 1), (1, 1), (1, 1), 1
    np.testing.assert_allclose(plain.conv2d_concat_forward(parts, w, bias, *geometry),
                               cpu.conv2d_concat_forward(parts, w, bias, *geometry), rtol=1e-10, atol=1e-10)
    dy = randn(rng, 2, 5, 6, 7)
    got = plain.conv2d_concat_backward(dy, parts, w, *geometry, (False, True), True, True)
    want = cpu.conv2d_concat_backward(dy, parts, w, *geometry, (False, True), True, True)
    assert got[0][0] is None and want[0][0] is None
    np.testing.assert_allclose(got[0][1], want[0][1], rtol=1e-10, atol=1e-10)
    for g, e in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)
    assert plain.conv2d_concat_backward(dy, parts, w, *geometry, (False, False), True, False)[0] is None


def test_conv2d_layer_on_a_list():
    """Conv2D called on [a, b] builds for their concatenated channels and gives the layer's output on the
    concatenation (its activation too)."""
    rng = np.random.default_rng(4)
    a, b = (tinycnn.Tensor(randn(rng, 2, c, 8, 8).astype(np.float32)) for c in (3, 5))
    layer = layers.Conv2D(4, 3, padding="same", activation="relu")
    y = layer([a, b])
    assert layer.kernel.shape == (4, 8, 3, 3) and y.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(y.numpy(), layer(tinycnn.cat([a, b], axis=1)).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda a, w: F.conv2d([a, tinycnn.Tensor(np.zeros((2, 2, 5, 8), np.float32))], w),
     "same N, H, W"),
    (lambda a, w: F.conv2d([a, a.numpy()], w), "non-empty list of Tensors"),
    (lambda a, w: F.conv2d([a, a], tinycnn.Tensor(np.zeros((4, 5, 3, 3), np.float32))), "input has 6 channels"),
    (lambda a, w: layers.Conv2D(4, 3, data_format="channels_last")([a, a]), "channels_first"),
])
def test_list_input_errors(call, message):
    a, w = tinycnn.Tensor(np.zeros((2, 3, 8, 8), np.float32)), tinycnn.Tensor(np.zeros((4, 6, 3, 3), np.float32))
    with pytest.raises((ValueError, TypeError), match=message):
        call(a, w)


def test_unet_decoder_reads_the_parts_and_matches_its_concatenating_form():
    """PlateSegmenter's decoder blocks take [upsampled, skip]: its output, gradients and predict equal those of
    the same network written with tinycnn.cat."""
    from tinycnn.tasks.plates_models import PlateSegmenter
    tinycnn.manual_seed(0)
    model = PlateSegmenter(8, depth=2)
    x = tinycnn.Tensor(randn(np.random.default_rng(5), 2, 3, 32, 32).astype(np.float32))

    def concatenating(x):
        skips = []
        for block in model.down:
            x = block(x)
            skips.append(x)
            x = model.pool(x)
        x = model.bottom(x)
        for up, block, skip in zip(model.ups, model.up_blocks, reversed(skips)):
            x = block(tinycnn.cat([up(x), skip], axis=1))
        return model.classify(x)

    results = []
    for forward in (model, concatenating):
        model.zero_grad()
        y = forward(x)
        (y * y).sum().backward()
        ops = _op_names(y)
        results.append((y.numpy().copy(), [p.grad.copy() for p in model.parameters()], ops))
    (y, grads, ops), (y_cat, grads_cat, ops_cat) = results
    assert "Conv2dConcat" in ops and "Concatenate" not in ops and "Concatenate" in ops_cat
    np.testing.assert_allclose(y, y_cat, rtol=1e-5, atol=1e-6)
    for g, e in zip(grads, grads_cat):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(e).max())))
    model.eval()
    with tinycnn.no_grad():
        np.testing.assert_allclose(model.predict(x.numpy(), verbose=0), concatenating(x).numpy(), rtol=1e-4,
                                   atol=1e-5)


def _op_names(y):
    names, stack, seen = set(), [y], set()
    while stack:
        t = stack.pop()
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        names.add(type(t._ctx).__name__)
        stack.extend(t._ctx.inputs)
    return names


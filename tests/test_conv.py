"""conv2d, conv_transpose2d and pad: gradients against finite differences (float64), the CPU kernels against
the NumPy reference (float32 and float64), the reference against hand-computed values, and the errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
import tinycnn.functional as F
from gradcheck import check_gradients
from strategies import conv_cases, conv_transpose_cases  # noqa: F401 (conv_cases: also imported from here)
from tinycnn.kernels.cpu import conv as cpu
from tinycnn.kernels.cpu.activation import FUSED_CODES
from tinycnn.kernels.reference import conv as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


def randn(rng, *shape):
    return rng.standard_normal(shape)


def gradcheck(fn, arrays):
    check_gradients(fn, arrays)  # on one Numba thread (see gradcheck.one_thread); kernel tests use all


# ---------------------------------------------------------------------- random problems

def _arrays(case, rng, out_channels):
    arrays = [randn(rng, *case["x_shape"]), randn(rng, *case["w_shape"])]
    return arrays + [randn(rng, out_channels)] if case["bias"] else arrays


def _conv_fn(case):
    def fn(x, w, b=None):
        return F.conv2d(x, w, b, stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                        groups=case["groups"])
    return fn


def _conv_transpose_fn(case):
    def fn(x, w, b=None):
        return F.conv_transpose2d(x, w, b, stride=case["stride"], padding=case["padding"],
                                  output_padding=case["output_padding"], groups=case["groups"],
                                  dilation=case["dilation"])
    return fn


def _geometry(case):
    return case["stride"], case["padding"], case["dilation"], case["groups"]


def _transpose_geometry(case):
    return case["stride"], case["padding"], case["output_padding"], case["dilation"], case["groups"]


# ---------------------------------------------------------------------- gradients (float64, finite differences)

@settings(deadline=None, max_examples=25)
@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_conv2d_gradients(case, seed):
    arrays = _arrays(case, np.random.default_rng(seed), case["w_shape"][0])
    gradcheck(_conv_fn(case), arrays)


# Named problems, so that every algorithm and every awkward geometry is always among the checked ones.
NAMED_CONV_CASES = {
    "1x1 (matmul)": dict(x_shape=(2, 3, 4, 3), w_shape=(4, 3, 1, 1), stride=(1, 1), padding=(0, 0)),
    "1x1 strided (im2col)": dict(x_shape=(1, 3, 5, 4), w_shape=(2, 3, 1, 1), stride=(2, 3), padding=(0, 0)),
    "1x1 padded (im2col)": dict(x_shape=(1, 2, 3, 3), w_shape=(2, 2, 1, 1), stride=(1, 1), padding=(1, 0)),
    "one input channel (few_channels)": dict(x_shape=(2, 1, 6, 5), w_shape=(5, 1, 3, 3), stride=(1, 1), padding=(1, 1)),
    "one input channel, strided (direct)": dict(x_shape=(2, 1, 7, 6), w_shape=(3, 1, 3, 3), stride=(2, 1),
                                                padding=(1, 1)),
    "depthwise strided (direct)": dict(x_shape=(1, 3, 7, 6), w_shape=(3, 1, 3, 3), stride=(2, 2), padding=(1, 1),
                                       groups=3),
    "depthwise multiplier 2 (direct)": dict(x_shape=(2, 2, 5, 5), w_shape=(4, 1, 2, 3), padding=(1, 0),
                                            dilation=(2, 1), groups=2),
    "grey and alpha first layer (few_channels)": dict(x_shape=(2, 2, 6, 5), w_shape=(4, 2, 3, 3), padding=(1, 2)),
    "RGB first layer (winograd)": dict(x_shape=(2, 3, 6, 5), w_shape=(4, 3, 3, 3), padding=(1, 2)),
    "stride > kernel (im2col)": dict(x_shape=(1, 2, 8, 7), w_shape=(3, 2, 2, 2), stride=(3, 3), padding=(0, 1)),
    "H + 2p - k not divisible by stride": dict(x_shape=(1, 3, 6, 7), w_shape=(2, 3, 3, 2), stride=(2, 3),
                                               padding=(1, 2)),
    "groups 2, dilated (im2col)": dict(x_shape=(1, 4, 6, 6), w_shape=(6, 2, 3, 2), dilation=(2, 2), groups=2,
                                       padding=(2, 1)),
    "same, even kernel": dict(x_shape=(1, 2, 4, 5), w_shape=(3, 2, 2, 4), padding="same"),
    "same, dilated": dict(x_shape=(1, 2, 5, 4), w_shape=(2, 2, 3, 2), padding="same", dilation=(2, 3)),
}
EXPECTED_ALGORITHM = {"1x1 (matmul)": "matmul", "one input channel (few_channels)": "few_channels",
                      "depthwise strided (direct)": "direct", "one input channel, strided (direct)": "direct",
                      "depthwise multiplier 2 (direct)": "direct",
                      "grey and alpha first layer (few_channels)": "few_channels",
                      "RGB first layer (winograd)": "winograd",
                      "stride > kernel (im2col)": "im2col", "groups 2, dilated (im2col)": "im2col",
                      "1x1 strided (im2col)": "im2col", "1x1 padded (im2col)": "im2col"}


def _named(name):
    case = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, bias=True)
    case.update(NAMED_CONV_CASES[name])
    return case


@pytest.mark.parametrize("name", sorted(NAMED_CONV_CASES))
def test_conv2d_gradients_named_cases(name):
    case = _named(name)
    arrays = _arrays(case, np.random.default_rng(1), case["w_shape"][0])
    gradcheck(_conv_fn(case), arrays)


@pytest.mark.parametrize("name", sorted(EXPECTED_ALGORITHM))
def test_named_cases_exercise_each_algorithm(name):
    case = _named(name)
    x = np.zeros(case["x_shape"])
    w = np.zeros(case["w_shape"])
    y_shape = cpu.conv2d_forward(x, w, None, *_geometry(case)).shape
    assert cpu.choose(x.shape, w.shape, y_shape, case["stride"], case["padding"], case["groups"],
                      case["dilation"]).name == EXPECTED_ALGORITHM[name]


# Problems for every row of cpu.ALGORITHMS: the named cases above, and the shapes Winograd takes.
ALGORITHM_CASES = dict(NAMED_CONV_CASES, **{
    "3x3, 16 channels": dict(x_shape=(2, 16, 5, 6), w_shape=(16, 16, 3, 3), padding=(1, 1)),
    "3x3, 17 filters, padded 2": dict(x_shape=(1, 16, 4, 5), w_shape=(17, 16, 3, 3), padding=(2, 1)),
})


def _algorithm_problems(algorithm):
    """The cases of ALGORITHM_CASES (int padding) that `algorithm` applies to, with their output shapes."""
    for name in sorted(ALGORITHM_CASES):
        case = _named(name) if name in NAMED_CONV_CASES else dict(_named("1x1 (matmul)"), **ALGORITHM_CASES[name])
        if isinstance(case["padding"], str):
            continue
        y_shape = ref.conv2d_forward(np.zeros(case["x_shape"]), np.zeros(case["w_shape"]), None,
                                     *_geometry(case)).shape
        if algorithm.applies(case["x_shape"], case["w_shape"], y_shape, case["stride"], case["padding"],
                             case["groups"], case["dilation"]):
            yield name, case, y_shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("algorithm", cpu.ALGORITHMS, ids=lambda a: a.name)
def test_each_algorithm_matches_reference(algorithm, relu, dtype):
    """Each algorithm's own forward and backward (called directly, not through the dispatch) on every case it
    applies to, against the reference: y = act(conv + b), and the gradients of dz = dy · [y > 0] with a ReLU."""
    problems = list(_algorithm_problems(algorithm))
    assert problems, f"no case for {algorithm.name}"
    act = FUSED_CODES["relu" if relu else None]
    for name, case, y_shape in problems:
        rng = np.random.default_rng(len(name))
        x, w, b = randn(rng, *case["x_shape"]), randn(rng, *case["w_shape"]) / 4, randn(rng, y_shape[1])
        geometry = case["stride"], case["padding"], case["dilation"], case["groups"]
        z = ref.conv2d_forward(x, w, b, *geometry)
        expected = np.maximum(z, 0) if relu else z
        y = algorithm.forward(x.astype(dtype), w.astype(dtype), b.astype(dtype), act, case["stride"],
                              case["padding"], case["dilation"], case["groups"], np.empty(y_shape, dtype))
        assert y.dtype == dtype
        np.testing.assert_allclose(y, expected, err_msg=name, **TOL[dtype])
        dy = randn(rng, *y_shape)
        got = algorithm.backward(dy.astype(dtype), y if relu else None, x.astype(dtype), x.shape, w.astype(dtype),
                                 w.shape, case["stride"], case["padding"], case["dilation"], case["groups"],
                                 True, True, True)
        want = ref.conv2d_backward(dy * (z > 0) if relu else dy, x, w, *geometry, True, True, True)
        for label, g, e in zip(("dx", "dw", "db"), got, want):
            assert g.dtype == dtype and g.shape == e.shape, (name, label)
            np.testing.assert_allclose(g, e, err_msg=f"{name}: {label}", **TOL[dtype])
        assert algorithm.backward(dy.astype(dtype), None, x.astype(dtype), x.shape, w.astype(dtype), w.shape,
                                  case["stride"], case["padding"], case["dilation"], case["groups"],
                                  False, True, False)[::2] == (None, None)


@settings(deadline=None, max_examples=20)
@given(case=conv_transpose_cases(), seed=st.integers(0, 2**16))
def test_conv_transpose2d_gradients(case, seed):
    out_channels = case["w_shape"][1] * case["groups"]
    arrays = _arrays(case, np.random.default_rng(seed), out_channels)
    gradcheck(_conv_transpose_fn(case), arrays)


@pytest.mark.parametrize("case", [
    # the decoder's upsampling: kernel 2, stride 2 (windows do not overlap)
    dict(x_shape=(2, 3, 3, 2), w_shape=(3, 2, 2, 2), stride=(2, 2), padding=(0, 0), output_padding=(0, 0)),
    # kernel 3, stride 2, padding 1, output_padding 1: doubles the size exactly
    dict(x_shape=(1, 2, 3, 3), w_shape=(2, 3, 3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1)),
    # 1x1, stride 1 (the matmul path) and output_padding below the dilation but not the stride
    dict(x_shape=(1, 3, 3, 2), w_shape=(3, 2, 1, 1), stride=(1, 1), padding=(0, 0), output_padding=(1, 0),
         dilation=(2, 1)),
    # one output channel per group: the direct kernels, run backwards
    dict(x_shape=(1, 4, 3, 3), w_shape=(4, 1, 3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
         groups=2),
], ids=["k2s2", "k3s2p1op1", "1x1 op<dilation", "grouped direct"])
def test_conv_transpose2d_gradients_named_cases(case):
    case = dict(dict(dilation=(1, 1), groups=1, bias=True), **case)
    arrays = _arrays(case, np.random.default_rng(2), case["w_shape"][1] * case["groups"])
    gradcheck(_conv_transpose_fn(case), arrays)


@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (1, 2)])
@pytest.mark.parametrize("n_images", [1, 3])
def test_upsampling_split_in_bands_matches_reference(monkeypatch, n_images, kernel):
    """Transposed convs whose stride is their kernel, at a size worth two threads, each image cut into bands
    of rows (transpose.py's pixel-shuffle path): each band's GEMM and shuffle (forward), unshuffle and GEMMs
    (backward), the threads' shares of dw and db added up, give the reference's values."""
    from tinycnn.kernels.cpu import threads
    from tinycnn.kernels.cpu.conv import transpose
    monkeypatch.setattr(threads, "num_threads", lambda: 2)
    monkeypatch.setattr(transpose, "SHUFFLE_PIECE_BYTES", 1 << 14)
    rng = np.random.default_rng(3)
    x, w, b = randn(rng, n_images, 64, 33, 40), randn(rng, 64, 16, *kernel) / 8, randn(rng, 16)
    geometry = kernel, (0, 0), (0, 0), (1, 1), 1
    assert len(transpose._row_bands(n_images, 33, 16 * kernel[0] * kernel[1] * 40, 4)) > 2 * n_images
    expected = ref.conv_transpose2d_forward(x, w, b, *geometry)
    got = cpu.conv_transpose2d_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), *geometry)
    assert got.shape == (n_images, 16, 33 * kernel[0], 40 * kernel[1])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    dy = randn(rng, *expected.shape)
    expected = ref.conv_transpose2d_backward(dy, x, w, *geometry, True, True, True)
    got = cpu.conv_transpose2d_backward(dy.astype(np.float32), x.astype(np.float32), w.astype(np.float32),
                                        *geometry, True, True, True)
    for name, g, e in zip(("dx", "dw", "db"), got, expected):
        scale = np.abs(e).max()
        np.testing.assert_allclose(g / scale, e / scale, atol=2e-5, err_msg=name)
    dx, dw, db = cpu.conv_transpose2d_backward(dy, x, w, *geometry, False, True, False)
    assert dx is None and db is None
    np.testing.assert_allclose(dw, expected[1], rtol=1e-10, atol=1e-10)


@settings(deadline=None, max_examples=15)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
       pad=st.tuples(*[st.integers(0, 2)] * 4), value=st.floats(-2, 2), seed=st.integers(0, 2**16))
def test_pad_gradients(shape, pad, value, seed):
    gradcheck(lambda x: F.pad(x, pad, value), [randn(np.random.default_rng(seed), *shape)])


def test_pad_values_and_two_element_form():
    x = tinycnn.Tensor(np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3))
    y = F.pad(x, (1, 2, 0, 1), value=-1.0).numpy()
    assert y.shape == (1, 1, 3, 6) and y.dtype == np.float32
    np.testing.assert_array_equal(y[0, 0], [[-1, 0, 1, 2, -1, -1], [-1, 3, 4, 5, -1, -1], [-1] * 6])
    np.testing.assert_array_equal(F.pad(x, (2, 0)).numpy()[0, 0], [[0, 0, 0, 1, 2], [0, 0, 3, 4, 5]])


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=25)
@given(n=st.integers(1, 3), channels=st.integers(1, 4), filters=st.integers(1, 5), size=st.tuples(st.integers(3, 9),
       st.integers(3, 9)), padding=st.sampled_from([(1, 1), (0, 0), (2, 1), (0, 1, 0, 1), (1, 2, 0, 2)]),
       relu=st.booleans(), seed=st.integers(0, 2**16))
def test_first_layer_weight_gradient_matches_reference(dtype, n, channels, filters, size, padding, relu, seed):
    """A first layer's backward (dw and db, no dx) with 1–4 input channels: few_channels.weight_grad, two filters
    a pass (an odd count leaves one alone), after a fused ReLU too (dz = dy · [y > 0]), Keras' uneven 'same'."""
    rng = np.random.default_rng(seed)
    x, w, b = randn(rng, n, channels, *size).astype(dtype), randn(rng, filters, channels, 3, 3).astype(dtype), None
    geometry = (1, 1), padding, (1, 1), 1
    if relu:
        b = randn(rng, filters).astype(dtype)
        y = cpu.conv2d_bias_relu_forward(x, w, b, *geometry).copy()
    else:
        y = cpu.conv2d_forward(x, w, None, *geometry).copy()
    dy = randn(rng, *y.shape).astype(dtype)
    dz = dy * (y > 0) if relu else dy
    top, bottom, left, right = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))  # the reference's padding
    expected = ref.conv2d_backward(dz.astype(np.float64), padded, w.astype(np.float64), (1, 1), (0, 0), (1, 1), 1,
                                   False, True, True)
    got = (cpu.conv2d_bias_relu_backward(dy, y, x, w, *geometry, False, True, True) if relu
           else cpu.conv2d_backward(dy, x, w, *geometry, False, True, True))
    assert got[0] is None
    for name, g, e in zip(("dw", "db"), got[1:], expected[1:]):
        assert g.dtype == dtype and g.shape == e.shape, name
        np.testing.assert_allclose(g, e, err_msg=name, **TOL[dtype])


def test_first_layer_weight_gradient_runs_few_channels_kernel(monkeypatch):
    """An RGB first layer's dw goes to few_channels.weight_grad (Winograd hands it over); with dx, it does not."""
    from tinycnn.kernels.cpu.conv import few_channels
    calls = []
    monkeypatch.setattr(few_channels, "weight_grad", lambda *a: calls.append(a[2].shape) or (None, None))
    rng = np.random.default_rng(1)
    x, w, dy = randn(rng, 2, 3, 8, 8), randn(rng, 16, 3, 3, 3), randn(rng, 2, 16, 8, 8)
    cpu.conv2d_backward(dy, x, w, (1, 1), (1, 1), (1, 1), 1, False, True, False)
    assert calls == [(2, 3, 8, 8)]
    cpu.conv2d_backward(dy, x, w, (1, 1), (1, 1), (1, 1), 1, True, True, False)
    x5, w5 = randn(rng, 2, 5, 8, 8), randn(rng, 16, 5, 3, 3)
    cpu.conv2d_backward(dy, x5, w5, (1, 1), (1, 1), (1, 1), 1, False, True, False)
    assert calls == [(2, 3, 8, 8)]


def test_first_layer_gets_no_input_gradient():
    rng = np.random.default_rng(3)
    x = tinycnn.Tensor(randn(rng, 2, 1, 5, 5))
    w = tinycnn.Tensor(randn(rng, 4, 1, 3, 3), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    assert x.grad is None and w.grad.shape == (4, 1, 3, 3)


# ---------------------------------------------------------------------- CPU kernels against the reference

@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=20)
@given(case=conv_cases(string_padding=False), seed=st.integers(0, 2**16))
def test_conv2d_kernels_match_reference(dtype, case, seed):
    rng = np.random.default_rng(seed)
    x, w, b = (randn(rng, *case["x_shape"]).astype(dtype), randn(rng, *case["w_shape"]).astype(dtype),
               randn(rng, case["w_shape"][0]).astype(dtype) if case["bias"] else None)
    y = cpu.conv2d_forward(x, w, b, *_geometry(case))
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.conv2d_forward(x, w, b, *_geometry(case)), **TOL[dtype])

    dy = randn(rng, *y.shape).astype(dtype)
    got = cpu.conv2d_backward(dy, x, w, *_geometry(case), True, True, True)
    expected = ref.conv2d_backward(dy, x, w, *_geometry(case), True, True, True)
    for name, g, e in zip(("dx", "dw", "db"), got, expected):
        assert g.dtype == dtype and g.shape == e.shape, name
        np.testing.assert_allclose(g, e, err_msg=name, **TOL[dtype])
    assert cpu.conv2d_backward(dy, x, w, *_geometry(case), False, True, False)[::2] == (None, None)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=20)
@given(case=conv_transpose_cases(), seed=st.integers(0, 2**16))
def test_conv_transpose2d_kernels_match_reference(dtype, case, seed):
    rng = np.random.default_rng(seed)
    out_channels = case["w_shape"][1] * case["groups"]
    x, w, b = (randn(rng, *case["x_shape"]).astype(dtype), randn(rng, *case["w_shape"]).astype(dtype),
               randn(rng, out_channels).astype(dtype) if case["bias"] else None)
    y = cpu.conv_transpose2d_forward(x, w, b, *_transpose_geometry(case))
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.conv_transpose2d_forward(x, w, b, *_transpose_geometry(case)), **TOL[dtype])

    # the backward (checked in float64 against finite differences above) gives the same in float32
    dy = randn(rng, *y.shape)
    got = cpu.conv_transpose2d_backward(dy.astype(dtype), x, w, *_transpose_geometry(case), True, True, True)
    exact = cpu.conv_transpose2d_backward(dy, x.astype(np.float64), w.astype(np.float64),
                                          *_transpose_geometry(case), True, True, True)
    for name, g, e, like in zip(("dx", "dw", "db"), got, exact, (x, w, y[0, :, 0, 0])):
        assert g.dtype == dtype and g.shape == like.shape, name
        np.testing.assert_allclose(g, e, err_msg=name, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_pad_kernels_match_reference(dtype):
    x = randn(np.random.default_rng(4), 2, 3, 4, 5).astype(dtype)
    for pad in [(0, 0, 0, 0), (1, 2, 3, 0), (0, 1, 0, 1)]:
        y = cpu.pad2d_forward(x, pad, 0.5)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, ref.pad2d_forward(x, pad, 0.5))
        np.testing.assert_array_equal(cpu.pad2d_backward(y, pad), ref.pad2d_backward(y, pad))
        np.testing.assert_array_equal(cpu.pad2d_backward(y, pad), x)


def test_gemm_path_in_several_chunks_of_images(monkeypatch):
    """With a tiny budget the im2col path handles one image at a time; the results must not change."""
    rng = np.random.default_rng(5)
    x, w, dy = randn(rng, 3, 4, 6, 5), randn(rng, 6, 2, 3, 3), randn(rng, 3, 6, 3, 3)
    geometry = (2, 2), (1, 2), (1, 1), 2
    assert len(cpu.im2col._image_chunks(3, 1000)) == 1
    monkeypatch.setattr(cpu.im2col, "COLS_BUDGET_BYTES", 1)
    assert cpu.im2col._image_chunks(3, 1000) == [(0, 1), (1, 2), (2, 3)]
    np.testing.assert_allclose(cpu.conv2d_forward(x, w, None, *geometry), ref.conv2d_forward(x, w, None, *geometry))
    needs = True, True, True
    for g, e in zip(cpu.conv2d_backward(dy, x, w, *geometry, *needs), ref.conv2d_backward(dy, x, w, *geometry, *needs)):
        np.testing.assert_allclose(g, e, atol=1e-12)


def test_conv2d_64_to_64_float32_matches_reference():
    """A real layer's size: (8, 64, 24, 24) through a 64 -> 64 3×3 conv, float32 against float64."""
    rng = np.random.default_rng(6)
    x = randn(rng, 8, 64, 24, 24).astype(np.float32)
    w = (randn(rng, 64, 64, 3, 3) / 24).astype(np.float32)
    b = randn(rng, 64).astype(np.float32)
    geometry = (1, 1), (1, 1), (1, 1), 1
    y = cpu.conv2d_forward(x, w, b, *geometry)
    expected = ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), *geometry)
    assert y.dtype == np.float32 and y.shape == (8, 64, 24, 24)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


# ---------------------------------------------------------------------- the reference itself

def test_reference_conv_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y = ref.conv2d_forward(x, np.ones((1, 1, 2, 2)), np.array([1.0]), (2, 2), (0, 0), (1, 1), 1)
    np.testing.assert_array_equal(y[0, 0], [[11, 19], [43, 51]])  # window sums + 1
    counts = ref.conv2d_forward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), None, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_array_equal(counts[0, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    # two groups: each filter sees only its own channel
    two = ref.conv2d_forward(np.stack([np.ones((2, 2)), 2 * np.ones((2, 2))])[None], np.ones((2, 1, 2, 2)), None,
                             (1, 1), (0, 0), (1, 1), 2)
    np.testing.assert_array_equal(two.ravel(), [4, 8])


def test_reference_conv_transpose_by_hand():
    # each input pixel stamps its filter, stride 2 apart; padding 1 cuts the border; output_padding adds a row
    y = ref.conv_transpose2d_forward(np.array([[[[1.0, 2.0]]]]), np.ones((1, 1, 3, 3)), None,
                                     (2, 2), (0, 0), (0, 0), (1, 1), 1)
    np.testing.assert_array_equal(y[0, 0], [[1, 1, 3, 2, 2]] * 3)
    y = ref.conv_transpose2d_forward(np.array([[[[1.0, 2.0]]]]), np.ones((1, 1, 3, 3)), None,
                                     (2, 2), (0, 1), (1, 0), (1, 1), 1)
    np.testing.assert_array_equal(y[0, 0], [[1, 3, 2]] * 3 + [[0, 0, 0]])


@settings(deadline=None, max_examples=15)
@given(case=conv_cases(string_padding=False), seed=st.integers(0, 2**16))
def test_transposed_conv_is_the_adjoint_of_conv(case, seed):
    """<conv2d(x, w), v> = <x, conv_transpose2d(v, w)>, with output_padding making the sizes agree."""
    rng = np.random.default_rng(seed)
    x, w = randn(rng, *case["x_shape"]), randn(rng, *case["w_shape"])
    stride, padding, dilation, groups = _geometry(case)
    y = ref.conv2d_forward(x, w, None, stride, padding, dilation, groups)
    v = randn(rng, *y.shape)
    output_padding = tuple((size + 2 * p - d * (k - 1) - 1) % s for size, p, d, k, s
                           in zip(x.shape[2:], padding, dilation, w.shape[2:], stride))
    for module in (ref, cpu):
        xt = module.conv_transpose2d_forward(v, w, None, stride, padding, output_padding, dilation, groups)
        assert xt.shape == x.shape
        np.testing.assert_allclose((y * v).sum(), (x * xt).sum(), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- errors

def T(*shape, dtype=np.float32):
    return tinycnn.Tensor(np.zeros(shape, dtype))


@pytest.mark.parametrize("call, message", [
    (lambda: F.conv2d(T(1, 3, 5, 5), T(4, 2, 3, 3)), r"conv2d: input has 3 channels .* expects 2"),
    (lambda: F.conv2d(T(1, 4, 5, 5), T(4, 1, 3, 3), groups=2), r"conv2d: input has 4 channels .* expects 2"),
    (lambda: F.conv2d(T(1, 3, 5, 5), T(4, 1, 3, 3), groups=2), r"conv2d: 3 input channels .* groups=2"),
    (lambda: F.conv2d(T(1, 4, 5, 5), T(3, 2, 3, 3), groups=2), r"conv2d: 3 filters .* groups=2"),
    (lambda: F.conv2d(T(1, 2, 3, 3), T(4, 2, 5, 5)), r"conv2d: kernel 5×5 .* larger than the padded input 3×3"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), dilation=3), r"conv2d: kernel 3×3 \(dilation \(3, 3\), spanning 7×7\)"),
    (lambda: F.conv2d(T(2, 5, 5), T(4, 2, 3, 3)), r"conv2d expects a 4-D input .* \(2, 5, 5\)"),
    (lambda: F.conv2d(T(0, 2, 5, 5), T(4, 2, 3, 3)), r"conv2d: empty batch"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3)), r"conv2d expects a 4-D weight"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), T(3)), r"conv2d: bias shape \(3,\) .* 4 output channels"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), stride=2, padding="same"), r"conv2d: padding='same' needs stride 1"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), padding="full"), r"conv2d: padding must be"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), padding=-1), r"conv2d: padding must not be negative"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), stride=0), r"conv2d: stride must be positive"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), stride=(1, 2, 3)), r"conv2d: stride must be an int or a pair"),
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3), groups=0), r"conv2d: groups must be a positive int"),
    (lambda: F.conv_transpose2d(T(1, 3, 4, 4), T(2, 4, 3, 3)), r"conv_transpose2d: input has 3 channels .* expects 2"),
    (lambda: F.conv_transpose2d(T(1, 3, 4, 4), T(3, 4, 3, 3), groups=2), r"conv_transpose2d: 3 input channels"),
    (lambda: F.conv_transpose2d(T(1, 2, 4, 4), T(2, 4, 3, 3), stride=2, output_padding=2),
     r"conv_transpose2d: output_padding \(2, 2\) must be smaller than the stride"),
    (lambda: F.conv_transpose2d(T(1, 2, 1, 1), T(2, 4, 1, 1), padding=1), r"conv_transpose2d: the output would be"),
    (lambda: F.conv_transpose2d(T(1, 2, 4), T(2, 4, 3, 3)), r"conv_transpose2d expects a 4-D input"),
    (lambda: F.pad(T(1, 2, 3, 3), (1, 1, 1)), r"pad: pad must be"),
    (lambda: F.pad(T(1, 2, 3, 3), (1, -1, 0, 0)), r"pad: negative padding"),
    (lambda: F.pad(T(3, 3), (1, 1)), r"pad expects a 4-D input"),
])
def test_errors_name_the_op_and_the_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call, message", [
    (lambda: F.conv2d(T(1, 2, 5, 5), T(4, 2, 3, 3, dtype=np.float64)), r"conv2d: input is float32 but weight is float64"),
    (lambda: F.conv2d(np.zeros((1, 2, 5, 5)), T(4, 2, 3, 3)), r"conv2d: input must be a Tensor"),
    (lambda: F.conv_transpose2d(T(1, 2, 5, 5), T(2, 2, 3, 3), T(2, dtype=np.float64)), r"bias is float64"),
])
def test_type_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_same_padding_matches_torch_asymmetric_rule():
    """'same' with an even kernel pads the extra row/column at the bottom/right, as PyTorch does."""
    rng = np.random.default_rng(7)
    x, w = randn(rng, 1, 2, 5, 6), randn(rng, 3, 2, 2, 4)
    y = F.conv2d(tinycnn.Tensor(x), tinycnn.Tensor(w), padding="same").numpy()
    # total padding d·(K − 1) = 1 (rows: top 0, bottom 1) and 3 (columns: left 1, right 2)
    expected = ref.conv2d_forward(ref.pad2d_forward(x, (1, 2, 0, 1), 0.0), w, None, (1, 1), (0, 0), (1, 1), 1)
    assert y.shape == (1, 3, 5, 6)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", [(2, 2), (3, 2)])
def test_pixel_shuffle_transpose_matches_the_general_path(kernel, dtype, monkeypatch):
    """stride == kernel, no padding: the GEMM + pixel-shuffle path against the reference (forward) and against
    the general col2im/im2col path (backward)."""
    rng = np.random.default_rng(9)
    x, w, b = (randn(rng, 2, 3, 4, 5).astype(dtype), randn(rng, 3, 6, *kernel).astype(dtype),
               randn(rng, 6).astype(dtype))
    geometry = (kernel, (0, 0), (0, 0), (1, 1), 1)
    assert cpu.transpose._is_pixel_shuffle(w.shape, *geometry[:4], 1)
    y = cpu.conv_transpose2d_forward(x, w, b, *geometry)
    np.testing.assert_allclose(y, ref.conv_transpose2d_forward(x, w, b, *geometry), **TOL[dtype])
    dy = randn(rng, *y.shape).astype(dtype)
    fast = cpu.conv_transpose2d_backward(dy, x, w, *geometry, True, True, True)
    monkeypatch.setattr(cpu.transpose, "_is_pixel_shuffle", lambda *a: False)
    general = cpu.conv_transpose2d_backward(dy, x, w, *geometry, True, True, True)
    np.testing.assert_allclose(cpu.conv_transpose2d_forward(x, w, b, *geometry), y, **TOL[dtype])
    for name, f, g in zip(("dx", "dw", "db"), fast, general):
        assert f.shape == g.shape and f.dtype == dtype, name
        np.testing.assert_allclose(f, g, err_msg=name, **TOL[dtype])

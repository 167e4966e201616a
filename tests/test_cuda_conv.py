"""CUDA conv2d, conv_transpose2d and pad (kernels/cuda/conv.py) against the CPU kernels on the same random inputs,
forward and backward, float32 and float64. Under the simulator the GEMM tiles are 4 × 4 × 2 (_launch.py), so
these shapes cover several tiles in every direction, partial tiles, and the split of the weight gradient's long
sum over (n, oh, ow) into slices. The float32 results are compared with the CPU kernel run in float64."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import cuda

from strategies import conv_transpose_cases
from tinycnn.kernels.cpu import conv as cpu
from tinycnn.kernels.cuda import _launch as gpu, conv as cuda_conv
from tinycnn.kernels.reference import conv as ref

pytestmark = [pytest.mark.skipif(not cuda.is_available(), reason="no CUDA device or simulator"),
              pytest.mark.filterwarnings("error::numba.cuda.core.errors.NumbaPerformanceWarning")]


def dev(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return None if a is None else a.copy_to_host()


def f64(a):
    return None if a is None else a.astype(np.float64)


def assert_close(got, want, dtype, terms):
    eps = np.finfo(dtype).eps
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=8 * eps * terms, atol=8 * eps * terms * scale)


@st.composite
def conv_cases(draw):
    """A small conv2d problem at the kernel level (padding already a pair)."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    C, Fo = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    hw = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), d * (k - 1) + 7 - 2 * p))
               for k, d, p in zip(kernel, dilation, padding))
    return dict(x_shape=(draw(st.integers(1, 2)), C) + hw, w_shape=(Fo, C // groups) + kernel,
                bias=draw(st.booleans()), geometry=(stride, padding, dilation, groups),
                dtype=draw(st.sampled_from([np.float32, np.float32, np.float64])))


def check_conv2d(case, seed):
    rng = np.random.default_rng(seed)
    dtype = case["dtype"]
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    w = rng.standard_normal(case["w_shape"]).astype(dtype)
    b = rng.standard_normal(case["w_shape"][0]).astype(dtype) if case["bias"] else None
    geometry = case["geometry"]
    K = int(np.prod(case["w_shape"][1:]))
    y = cuda_conv.conv2d_forward(dev(x), dev(w), dev(b), *geometry)
    want = ref.conv2d_forward(f64(x), f64(w), f64(b), *geometry)
    assert_close(host(y), want, dtype, K)
    dy = rng.standard_normal(want.shape).astype(dtype)
    got = cuda_conv.conv2d_backward(dev(dy), dev(x), dev(w), *geometry, True, True, case["bias"])
    expected = ref.conv2d_backward(f64(dy), f64(x), f64(w), *geometry, True, True, True)
    N, F, OH, OW = want.shape
    for g, r, terms in zip(got, expected, (F * K, N * OH * OW, N * OH * OW)):
        if g is None:
            assert not case["bias"]
        else:
            assert_close(host(g), r, dtype, terms)


@settings(deadline=None, max_examples=8)
@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_conv2d_random_problems(case, seed):
    check_conv2d(case, seed)


NAMED = {
    # name: x_shape, w_shape, (stride, padding, dilation, groups)
    "tutorial conv1 (one input channel)": ((2, 1, 9, 8), (5, 1, 3, 3), ((1, 1), (0, 0), (1, 1), 1)),
    "tutorial conv2 (many channels)": ((2, 6, 5, 6), (7, 6, 3, 3), ((1, 1), (0, 0), (1, 1), 1)),
    "1x1": ((2, 3, 4, 3), (4, 3, 1, 1), ((1, 1), (0, 0), (1, 1), 1)),
    "depthwise strided": ((1, 3, 7, 6), (3, 1, 3, 3), ((2, 2), (1, 1), (1, 1), 3)),
    "stride > kernel": ((1, 2, 8, 7), (3, 2, 2, 2), ((3, 3), (0, 1), (1, 1), 1)),
    "groups 2, dilated": ((1, 4, 6, 6), (6, 2, 3, 2), ((1, 1), (2, 1), (2, 2), 2)),
    "long weight-gradient sum (split into slices)": ((3, 2, 12, 11), (3, 2, 2, 2), ((1, 1), (1, 0), (1, 1), 1)),
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_conv2d_named_problems(name):
    x_shape, w_shape, geometry = NAMED[name]
    check_conv2d(dict(x_shape=x_shape, w_shape=w_shape, bias=True, geometry=geometry, dtype=np.float32), 7)


def test_weight_gradient_is_split():
    """The 'long weight-gradient sum' case really runs with several K slices under the simulator."""
    if not gpu.SIM:
        pytest.skip("slice counts depend on the GPU's size")
    tiles = gpu.cdiv(2 * 2 * 2, gpu.BN) * gpu.cdiv(3, gpu.BM)
    assert gpu.split_k(tiles, 3 * 13 * 10)[0] > 1


@st.composite
def transpose_cases(draw):
    """tests/strategies.py's problems, with the geometry as one tuple and a dtype."""
    case = draw(conv_transpose_cases(max_filters_per_group=3))
    geometry = case["stride"], case["padding"], case["output_padding"], case["dilation"], case["groups"]
    return dict(x_shape=case["x_shape"], w_shape=case["w_shape"], bias=case["bias"], geometry=geometry,
                dtype=draw(st.sampled_from([np.float32, np.float64])))


@settings(deadline=None, max_examples=6)
@given(case=transpose_cases(), seed=st.integers(0, 2**16))
def test_conv_transpose2d(case, seed):
    rng = np.random.default_rng(seed)
    dtype, geometry = case["dtype"], case["geometry"]
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    w = rng.standard_normal(case["w_shape"]).astype(dtype)
    groups = geometry[-1]
    b = rng.standard_normal(case["w_shape"][1] * groups).astype(dtype) if case["bias"] else None
    want = cpu.conv_transpose2d_forward(f64(x), f64(w), f64(b), *geometry)
    K = case["w_shape"][0] * int(np.prod(case["w_shape"][2:]))
    assert_close(host(cuda_conv.conv_transpose2d_forward(dev(x), dev(w), dev(b), *geometry)), want, dtype, K)
    dy = rng.standard_normal(want.shape).astype(dtype)
    got = cuda_conv.conv_transpose2d_backward(dev(dy), dev(x), dev(w), *geometry, True, True, case["bias"])
    ref = cpu.conv_transpose2d_backward(f64(dy), f64(x), f64(w), *geometry, True, True, case["bias"])
    terms = want[0].size
    for g, r in zip(got, ref):
        if r is None:
            assert g is None
        else:
            assert_close(host(g), r, dtype, terms)


@pytest.mark.parametrize("pad, value", [((1, 2, 0, 3), 0.0), ((0, 0, 2, 1), -1.5), ((3, 0, 1, 1), 2.0)])
def test_pad2d(pad, value):
    x = np.random.default_rng(8).standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = cuda_conv.pad2d_forward(dev(x), pad, value)
    np.testing.assert_array_equal(host(y), cpu.pad2d_forward(x, pad, value))
    dy = np.random.default_rng(9).standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(host(cuda_conv.pad2d_backward(dev(dy), pad)), cpu.pad2d_backward(dy, pad))


def test_conv2d_of_a_list_matches_the_cpu():
    """F.conv2d([a, b], w) on the CUDA kernels, which do not declare "concatenated_input": kernels/compose.py's
    default (the concatenation built, dx split) gives the CPU's values and gradients (tests/test_conv_concat.py)."""
    import tinycnn
    import tinycnn.functional as F
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((1, 2, 5, 4), (1, 3, 5, 4), (2, 5, 3, 3))]
    results = []
    for device in ("cpu", "cuda"):
        a, b, w = (tinycnn.Tensor(v, requires_grad=True, device=device) for v in arrays)
        y = F.conv2d([a, b], w, padding=1)
        (y * y).sum().backward()
        results.append([np.asarray(v if isinstance(v, np.ndarray) else host(v))
                        for v in (y.numpy(), a.grad, b.grad, w.grad)])
    for got, want in zip(*results[::-1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))

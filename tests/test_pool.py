"""Pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d — gradients against finite differences (float64),
the CPU kernels against the NumPy reference (float32 and float64), known values and error cases."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinycnn
from tinycnn import functional as F
from tinycnn.kernels.cpu import pool as cpu
from tinycnn.kernels.reference import pool as ref
from gradcheck import check_gradients


@st.composite
def pool_cases(draw):
    """(x shape, kernel, stride, padding) with padding ≤ kernel/2 and at least one output pixel."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    H = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 5))
    W = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 5))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)
    return shape, kernel, stride, padding, draw(st.integers(0, 2 ** 31))


def distinct_values(shape, seed):
    """Values with no ties (at least 0.05 apart), so that every max-pool window has a single winner."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))) * 0.05 - 1.0).reshape(shape)


# ---------------------------------------------------------------------- gradients (float64)

@settings(deadline=None, max_examples=15)
@given(pool_cases())
def test_max_pool2d_gradient(case):
    shape, kernel, stride, padding, seed = case
    check_gradients(lambda x: F.max_pool2d(x, kernel, stride, padding), [distinct_values(shape, seed)])


@settings(deadline=None, max_examples=15)
@given(pool_cases(), st.booleans())
def test_avg_pool2d_gradient(case, count_include_pad):
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    check_gradients(lambda x: F.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad), [x])


@settings(deadline=None, max_examples=10)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2 ** 31))
def test_adaptive_avg_pool2d_gradient(oh, ow, fh, fw, seed):
    x = np.random.default_rng(seed).standard_normal((1, 2, oh * fh, ow * fw))
    check_gradients(lambda x: F.adaptive_avg_pool2d(x, (oh, ow)), [x])


# ---------------------------------------------------------------------- CPU kernels against the reference

@settings(deadline=None, max_examples=15)
@given(pool_cases(), st.sampled_from([np.float32, np.float64]))
def test_max_pool2d_kernels_match_reference(case, dtype):
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    y, argmax = cpu.max_pool2d_forward(x, kernel, stride, padding)
    y_ref, argmax_ref = ref.max_pool2d_forward(x, kernel, stride, padding)
    assert y.dtype == dtype and argmax.dtype == np.int32
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
    dx = cpu.max_pool2d_backward(dy, argmax, shape)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref.max_pool2d_backward(dy, argmax_ref, shape), rtol=1e-6, atol=1e-6)


@settings(deadline=None, max_examples=15)
@given(pool_cases(), st.booleans(), st.sampled_from([np.float32, np.float64]))
def test_avg_pool2d_kernels_match_reference(case, count_include_pad, dtype):
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    y = cpu.avg_pool2d_forward(x, kernel, stride, padding, count_include_pad)
    assert y.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref.avg_pool2d_forward(x, kernel, stride, padding, count_include_pad),
                               rtol=tol, atol=tol)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dtype)
    dx = cpu.avg_pool2d_backward(dy, shape, kernel, stride, padding, count_include_pad)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref.avg_pool2d_backward(dy, shape, kernel, stride, padding, count_include_pad),
                               rtol=tol, atol=tol)


# ---------------------------------------------------------------------- known values

def test_max_pool2d_known_values_and_default_stride():
    x = tinycnn.Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), requires_grad=True)
    y = F.max_pool2d(x, 2)                       # stride defaults to the kernel size
    np.testing.assert_array_equal(y.numpy()[0, 0], [[5, 7], [13, 15]])
    y.sum().backward()
    expected = np.zeros((4, 4), np.float32)
    expected[[1, 1, 3, 3], [1, 3, 1, 3]] = 1
    np.testing.assert_array_equal(x.grad[0, 0], expected)


def test_max_pool2d_padding_never_wins():
    x = tinycnn.Tensor(-np.ones((1, 1, 3, 3)))   # all negative: a zero from padding would win if it counted
    y = F.max_pool2d(x, 3, stride=1, padding=1)
    np.testing.assert_array_equal(y.numpy(), -np.ones((1, 1, 3, 3)))


def test_max_pool2d_overlapping_windows_add_gradients():
    x = tinycnn.Tensor(np.array([[[[0.0, 9.0, 1.0, 2.0]]]]), requires_grad=True)
    F.max_pool2d(x, (1, 3), stride=1).sum().backward()   # both windows pick the 9
    np.testing.assert_array_equal(x.grad, [[[[0, 2, 0, 0]]]])


def test_avg_pool2d_count_include_pad():
    x = tinycnn.Tensor(np.ones((1, 1, 2, 2)))
    with_pad = F.avg_pool2d(x, 3, stride=1, padding=1).numpy()
    without = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False).numpy()
    np.testing.assert_allclose(with_pad, np.full((1, 1, 2, 2), 4 / 9))   # 4 real ones, 5 padded zeros
    np.testing.assert_allclose(without, np.ones((1, 1, 2, 2)))


def test_adaptive_avg_pool2d_global_is_the_mean():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    for size in (1, (1, 1)):
        y = F.adaptive_avg_pool2d(tinycnn.Tensor(x), size)
        assert y.shape == (2, 3, 1, 1) and y.dtype == np.float32
        np.testing.assert_allclose(y.numpy(), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)


def test_adaptive_avg_pool2d_divisible_is_avg_pool():
    x = tinycnn.Tensor(np.random.default_rng(1).standard_normal((1, 2, 6, 4)))
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, (3, 2)).numpy(), F.avg_pool2d(x, (2, 2)).numpy())
    assert F.adaptive_avg_pool2d(x, (None, 2)).shape == (1, 2, 6, 2)   # None keeps that input size


# ---------------------------------------------------------------------- errors

def test_pool_errors():
    x = tinycnn.Tensor(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        F.max_pool2d(tinycnn.Tensor(np.zeros((1, 4, 4), np.float32)), 2)
    with pytest.raises(ValueError, match="4-D"):
        F.avg_pool2d(tinycnn.Tensor(np.zeros((4, 4), np.float32)), 2)
    with pytest.raises(NotImplementedError, match="ceil_mode"):
        F.max_pool2d(x, 2, ceil_mode=True)
    with pytest.raises(NotImplementedError, match="ceil_mode"):
        F.avg_pool2d(x, 2, ceil_mode=True)
    with pytest.raises(ValueError, match="half of kernel_size"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="smaller than kernel_size"):
        F.max_pool2d(x, 5)
    with pytest.raises(ValueError, match="positive"):
        F.avg_pool2d(x, 2, stride=0)
    with pytest.raises(ValueError, match="kernel_size"):
        F.max_pool2d(x, (2, 2, 2))
    with pytest.raises(TypeError, match="float"):
        F.max_pool2d(tinycnn.Tensor(np.zeros((1, 1, 4, 4), np.int64)), 2)
    with pytest.raises(ValueError, match="divide"):
        F.adaptive_avg_pool2d(x, 3)
    with pytest.raises(ValueError, match="positive"):
        F.adaptive_avg_pool2d(x, 0)

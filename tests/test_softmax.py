"""softmax and log_softmax over any axis — gradients against finite differences (float64), the CPU kernels
against the NumPy reference (float32 and float64), stability, per-pixel softmax, and error cases."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinycnn
from tinycnn import functional as F
from tinycnn.kernels.cpu import softmax as cpu
from tinycnn.kernels.reference import softmax as ref
from gradcheck import check_gradients

seeds = st.integers(0, 2 ** 31)


@st.composite
def shape_and_dim(draw):
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=4)))
    return shape, draw(st.integers(-len(shape), len(shape) - 1))


# ---------------------------------------------------------------------- gradients (float64)

@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax], ids=["softmax", "log_softmax"])
@settings(deadline=None, max_examples=15)
@given(case=shape_and_dim(), seed=seeds)
def test_gradient(fn, case, seed):
    shape, dim = case
    x = np.random.default_rng(seed).standard_normal(shape) * 3
    check_gradients(lambda x: fn(x, dim=dim), [x])


# ---------------------------------------------------------------------- CPU kernels against the reference

@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@settings(deadline=None, max_examples=15)
@given(shape3=st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 7)),
       dtype=st.sampled_from([np.float32, np.float64]), seed=seeds)
def test_kernels_match_reference(name, shape3, dtype, seed):
    rng = np.random.default_rng(seed)
    x3 = (rng.standard_normal(shape3) * 5).astype(dtype)
    dy3 = rng.standard_normal(shape3).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    y3 = getattr(cpu, name + "_forward")(x3)
    assert y3.dtype == dtype
    np.testing.assert_allclose(y3, getattr(ref, name + "_forward")(x3), rtol=tol, atol=tol)
    dx3 = getattr(cpu, name + "_backward")(dy3, y3)
    assert dx3.dtype == dtype
    np.testing.assert_allclose(dx3, getattr(ref, name + "_backward")(dy3, y3), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@settings(deadline=None, max_examples=10)
@given(shape3=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(16, 70)), scale=st.sampled_from([1, 5, 40]),
       seed=seeds)
def test_float32_rows_match_reference(name, shape3, scale, seed):
    """Per-pixel rows of float32 scores (the U-Net's output) against float64's."""
    x3 = (np.random.default_rng(seed).standard_normal(shape3) * scale).astype(np.float32)
    y3 = getattr(cpu, name + "_forward")(x3)
    assert y3.dtype == np.float32
    expected = getattr(ref, name + "_forward")(x3.astype(np.float64))
    np.testing.assert_allclose(y3, expected, rtol=1e-5, atol=1e-6 if name == "softmax" else 1e-5)


# ---------------------------------------------------------------------- behaviour

def test_softmax_sums_to_one_and_matches_log_softmax():
    x = tinycnn.Tensor(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))
    y = F.softmax(x).numpy()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.log(y), F.log_softmax(x).numpy(), rtol=1e-5, atol=1e-6)


def test_stable_for_large_logits():
    x = tinycnn.Tensor(np.array([[1000.0, 1000.0, -1000.0], [-1e4, 0.0, 1e4]]))
    with np.errstate(all="raise"):
        y = F.softmax(x).numpy()
        log_y = F.log_softmax(x).numpy()
    np.testing.assert_allclose(y, [[0.5, 0.5, 0], [0, 0, 1]])
    np.testing.assert_allclose(log_y, [[-np.log(2), -np.log(2), -2000 - np.log(2)], [-2e4, -1e4, 0]])


def test_stable_for_large_logits_float32_rows():
    x = np.zeros((1, 3, 2, 16), np.float32)
    x[0, :, 0] = np.array([1000.0, 1000.0, -1000.0])[:, None]
    x[0, :, 1] = np.array([-1e4, 0.0, 1e4])[:, None]
    with np.errstate(all="raise"):
        y = F.softmax(tinycnn.Tensor(x), dim=1).numpy()
        log_y = F.log_softmax(tinycnn.Tensor(x), dim=1).numpy()
    np.testing.assert_allclose(y[0, :, 0, 0], [0.5, 0.5, 0], atol=1e-30)
    np.testing.assert_allclose(y[0, :, 1, 0], [0, 0, 1], atol=1e-30)
    np.testing.assert_allclose(log_y[0, :, 0, 0], [-np.log(2), -np.log(2), -2000 - np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(log_y[0, :, 1, 0], [-2e4, -1e4, 0], rtol=1e-6)


def test_per_pixel_softmax_over_channels():
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 5))
    y = F.softmax(tinycnn.Tensor(x), dim=1).numpy()
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(F.log_softmax(tinycnn.Tensor(x), dim=1).numpy(), np.log(y), rtol=1e-12)


def test_zero_dim_input_is_one():
    assert F.softmax(tinycnn.Tensor(np.array(2.5)), dim=0).item() == 1.0
    assert F.log_softmax(tinycnn.Tensor(np.array(2.5)), dim=-1).item() == 0.0


def test_softmax_errors():
    x = tinycnn.Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        F.softmax(x, dim=2)
    with pytest.raises(ValueError, match="out of range"):
        F.log_softmax(x, dim=-3)
    with pytest.raises(TypeError, match="dim"):
        F.softmax(x, dim=None)
    with pytest.raises(TypeError, match="float"):
        F.softmax(tinycnn.Tensor(np.zeros((2, 3), np.int64)))


def test_kernels_split_over_threads_match_one_range(monkeypatch):
    """The kernels run over ranges of `outer` slices (threads.parallel_range): the same values bit for bit
    whether the slices run as one range or spread over two threads."""
    from tinycnn.kernels.cpu import threads
    rng = np.random.default_rng(5)
    x3 = rng.standard_normal((7, 3, 10)).astype(np.float32)
    dy3 = rng.standard_normal(x3.shape).astype(np.float32)

    def outputs(n_threads):
        monkeypatch.setattr(threads, "num_threads", lambda: n_threads)
        y, log_y = cpu.softmax_forward(x3), cpu.log_softmax_forward(x3)
        return [y, log_y, cpu.softmax_backward(dy3, y), cpu.log_softmax_backward(dy3, log_y)]

    for whole, split in zip(outputs(1), outputs(2)):
        np.testing.assert_array_equal(split, whole)

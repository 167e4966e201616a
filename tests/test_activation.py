"""Activations: relu, relu6, leaky_relu, sigmoid, tanh — gradients against finite differences (float64, inputs
away from the kinks), the CPU kernels against the NumPy reference (float32 and float64), sigmoid's stability,
the Sigmoid node that a loss may fuse with, and error cases."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinycnn
from tinycnn import functional as F
from tinycnn.kernels.cpu import activation as cpu
from tinycnn.kernels.reference import activation as ref
from gradcheck import check_gradients

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 2 ** 31)
dtypes = st.sampled_from([np.float32, np.float64])


def away_from(kinks, shape, seed, low=-8.0, high=8.0, margin=0.05):
    """Uniform values in [low, high] moved at least `margin` away from every kink."""
    x = np.random.default_rng(seed).uniform(low, high, shape)
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + np.where(x[near] >= k, margin, -margin) * 2
    return x


# ---------------------------------------------------------------------- gradients (float64)

ACTIVATIONS = {
    "relu": (F.relu, [0.0]),
    "relu6": (F.relu6, [0.0, 6.0]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), [0.0]),
    "leaky_relu_default": (F.leaky_relu, [0.0]),
    "sigmoid": (F.sigmoid, []),
    "tanh": (F.tanh, []),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@settings(deadline=None, max_examples=10)
@given(shape=shapes, seed=seeds)
def test_activation_gradient(name, shape, seed):
    fn, kinks = ACTIVATIONS[name]
    check_gradients(fn, [away_from(kinks, shape, seed)])


# ---------------------------------------------------------------------- CPU kernels against the reference

@pytest.mark.parametrize("name", ["relu", "relu6", "sigmoid", "tanh"])
@settings(deadline=None, max_examples=10)
@given(shape=shapes, dtype=dtypes, seed=seeds)
def test_kernels_match_reference(name, shape, dtype, seed):
    x = away_from([0.0, 6.0], shape, seed).astype(dtype)
    dy = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    y = getattr(cpu, name + "_forward")(x)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, getattr(ref, name + "_forward")(x), rtol=tol, atol=tol)
    saved = x if name.startswith("relu") else y       # relu's backward reads x, sigmoid's and tanh's read y
    dx = getattr(cpu, name + "_backward")(dy, saved)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, getattr(ref, name + "_backward")(dy, saved), rtol=tol, atol=tol)


@settings(deadline=None, max_examples=10)
@given(shape=shapes, slope=st.floats(0.0, 1.0), dtype=dtypes, seed=seeds)
def test_leaky_relu_kernels_match_reference(shape, slope, dtype, seed):
    x = away_from([0.0], shape, seed).astype(dtype)
    dy = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    y = cpu.leaky_relu_forward(x, slope)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.leaky_relu_forward(x, slope), rtol=tol, atol=tol)
    dx = cpu.leaky_relu_backward(dy, x, slope)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref.leaky_relu_backward(dy, x, slope), rtol=tol, atol=tol)


@pytest.mark.parametrize("threads_used", [1, 2])
def test_kernels_over_several_chunks_match_reference(monkeypatch, threads_used):
    """An array of several CHUNKs runs as pieces spread over the threads (threads.parallel_range): every
    element still computed once, as the reference does."""
    from tinycnn.kernels.cpu import threads
    monkeypatch.setattr(threads, "num_threads", lambda: threads_used)
    shape = (3, cpu.CHUNK + 7)
    x = away_from([0.0, 6.0], shape, 11).astype(np.float32)
    dy = np.random.default_rng(12).standard_normal(shape).astype(np.float32)
    for name in ("relu", "relu6", "sigmoid", "tanh"):
        y = getattr(cpu, name + "_forward")(x)
        np.testing.assert_allclose(y, getattr(ref, name + "_forward")(x), rtol=1e-6, atol=1e-6, err_msg=name)
        saved = x if name.startswith("relu") else y
        np.testing.assert_allclose(getattr(cpu, name + "_backward")(dy, saved),
                                   getattr(ref, name + "_backward")(dy, saved), rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(cpu.leaky_relu_forward(x, 0.3), ref.leaky_relu_forward(x, 0.3), rtol=1e-6)
    np.testing.assert_allclose(cpu.leaky_relu_backward(dy, x, 0.3), ref.leaky_relu_backward(dy, x, 0.3), rtol=1e-6)


# ---------------------------------------------------------------------- known values and behaviour

def test_known_values():
    x = tinycnn.Tensor(np.array([-2.0, -0.5, 0.5, 3.0, 7.0]))
    np.testing.assert_array_equal(F.relu(x).numpy(), [0, 0, 0.5, 3, 7])
    np.testing.assert_array_equal(F.relu6(x).numpy(), [0, 0, 0.5, 3, 6])
    np.testing.assert_allclose(F.leaky_relu(x).numpy(), [-0.02, -0.005, 0.5, 3, 7])
    np.testing.assert_allclose(F.sigmoid(x).numpy(), 1 / (1 + np.exp(-x.numpy())), rtol=1e-15)
    np.testing.assert_allclose(F.tanh(x).numpy(), np.tanh(x.numpy()), rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_for_large_inputs(dtype):
    x = np.array([-1000, -100, -30, -5, 0, 5, 30, 100, 1000], dtype)
    with np.errstate(all="raise"):
        y = F.sigmoid(tinycnn.Tensor(x)).numpy()
    assert y.dtype == dtype and np.all(np.isfinite(y))
    exact = np.array([0, np.exp(-100), np.exp(-30) / (1 + np.exp(-30)), 1 / (1 + np.exp(5)), 0.5,
                      1 / (1 + np.exp(-5)), 1 / (1 + np.exp(-30)), 1, 1])
    # float32 holds e^-100 only as a subnormal (spacing 1.4e-45): an absolute tolerance covers that one
    np.testing.assert_allclose(y, exact, rtol=1e-6 if dtype == np.float32 else 1e-14,
                               atol=1e-44 if dtype == np.float32 else 0)


def test_sigmoid_node_keeps_its_logits():
    logits = tinycnn.Tensor(np.array([[0.3, -1.2]], np.float32), requires_grad=True)
    out = F.sigmoid(logits)
    assert type(out._ctx).__name__ == "Sigmoid"
    assert out._ctx.inputs[0] is logits
    assert out._ctx.x is logits.data


def test_relu_passes_nan_through():
    y = F.relu(tinycnn.Tensor(np.array([np.nan, -1.0, 2.0], np.float32))).numpy()
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2


def test_activations_keep_dtype_and_shape():
    x = tinycnn.Tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32))
    for fn in (F.relu, F.relu6, F.leaky_relu, F.sigmoid, F.tanh):
        y = fn(x)
        assert y.dtype == np.float32 and y.shape == (2, 3, 4, 5)


def test_activation_errors():
    with pytest.raises(TypeError, match="float"):
        F.relu(tinycnn.Tensor(np.array([1, 2], np.int64)))
    with pytest.raises(TypeError, match="Tensor"):
        F.sigmoid(np.array([1.0]))
    with pytest.raises(TypeError, match="negative_slope"):
        F.leaky_relu(tinycnn.Tensor(np.array([1.0])), "0.1")

"""dropout: repeatable masks under manual_seed, the expectation kept, gradient = mask, finite differences
(float64, a fixed seed per call), the CPU kernel against the NumPy reference, the identity cases, errors."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinycnn
from tinycnn import functional as F
from tinycnn.kernels.cpu import dropout as cpu
from tinycnn.kernels.reference import dropout as ref
from gradcheck import check_gradients

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 2 ** 31)


@settings(deadline=None, max_examples=10)
@given(shape=shapes, p=st.floats(0.05, 0.9), seed=seeds)
def test_gradient(shape, p, seed):
    def fn(x):
        tinycnn.manual_seed(seed)          # the same mask in every evaluation of the finite differences
        return F.dropout(x, p)
    check_gradients(fn, [np.random.default_rng(seed).standard_normal(shape)])


@settings(deadline=None, max_examples=10)
@given(shape=shapes, p=st.floats(0.0, 1.0), dtype=st.sampled_from([np.float32, np.float64]), seed=seeds)
def test_kernel_matches_reference(shape, p, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    y, mask = cpu.dropout_forward(x, p, seed)
    y_ref, mask_ref = ref.dropout_forward(x, p, seed)
    assert y.dtype == dtype and mask.dtype == dtype
    np.testing.assert_array_equal(mask, mask_ref)
    np.testing.assert_array_equal(y, y_ref)
    dy = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(cpu.dropout_backward(dy, mask), ref.dropout_backward(dy, mask_ref))


def test_mask_repeatable_under_manual_seed():
    x = tinycnn.Tensor(np.ones((4, 50), np.float32))
    tinycnn.manual_seed(7)
    first, second = F.dropout(x).numpy(), F.dropout(x).numpy()
    tinycnn.manual_seed(7)
    again = F.dropout(x).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)          # each call draws a new seed


def test_mask_does_not_depend_on_thread_count():
    x = np.ones(10_000)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        _, one_thread = cpu.dropout_forward(x, 0.3, 123)
    finally:
        numba.set_num_threads(threads)
    _, all_threads = cpu.dropout_forward(x, 0.3, 123)
    np.testing.assert_array_equal(one_thread, all_threads)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_expectation_and_drop_rate(p):
    tinycnn.manual_seed(0)
    y = F.dropout(tinycnn.Tensor(np.ones(200_000, np.float32)), p).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)   # survivors scaled by 1/(1 − p)
    assert abs(kept.mean() - (1 - p)) < 0.01                      # ~5 standard deviations at n = 200,000
    assert abs(y.mean() - 1) < 0.03                               # the expectation is kept


def test_gradient_is_the_mask():
    tinycnn.manual_seed(3)
    x = tinycnn.Tensor(np.random.default_rng(0).uniform(1, 2, (3, 4, 5)), requires_grad=True)
    y = F.dropout(x, 0.4)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    mask = y.numpy() / x.numpy()                    # x ≥ 1, so the mask is y / x
    assert set(np.round(np.unique(mask), 12)) <= {0.0, round(1 / 0.6, 12)}
    np.testing.assert_allclose(x.grad, g * mask, rtol=1e-12)


def test_identity_cases_and_p_one():
    x = tinycnn.Tensor(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    y = F.dropout(x, 1.0)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), np.zeros((2, 3)))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))


def test_dropout_errors():
    x = tinycnn.Tensor(np.ones((2, 3), np.float32))
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="between 0 and 1"):
            F.dropout(x, bad)
    with pytest.raises(TypeError, match="float"):
        F.dropout(tinycnn.Tensor(np.ones((2, 3), np.int64)))

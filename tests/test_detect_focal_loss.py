"""The sigmoid focal loss op (tinycnn.ops.detection): float64 finite-difference gradients over random shapes,
the CPU kernels against the NumPy reference, and a value worked out by hand."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn.kernels.cpu import detection as cpu
from tinycnn.kernels.reference import detection as reference
from tinycnn.ops.detection import sigmoid_focal_loss

from gradcheck import check_gradients

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def heat_target(shape, seed):
    """Random Gaussian-like targets in [0, 1) with a few exact 1s (centres), or none."""
    rng = np.random.default_rng(seed)
    target = rng.random(shape) ** 3
    centres = rng.random(shape) < 0.15
    target[centres] = 1.0
    return target


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), alpha=st.sampled_from([0.0, 1.0, 2.0]),
       beta=st.sampled_from([0.0, 4.0]))
def test_focal_loss_gradient(shape, seed, alpha, beta):
    z = np.random.default_rng(seed + 1).normal(scale=2.0, size=shape)
    target = heat_target(shape, seed)
    check_gradients(lambda logits: sigmoid_focal_loss(logits, target, alpha, beta), [z])


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), dtype=st.sampled_from([np.float32, np.float64]))
def test_focal_loss_kernels_match_reference(shape, seed, dtype):
    z = (np.random.default_rng(seed + 1).normal(scale=4.0, size=shape)).astype(dtype)
    target = heat_target(shape, seed).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    loss = cpu.focal_loss_forward(z, target, 2.0, 4.0)
    assert loss.dtype == dtype and loss.shape == ()
    np.testing.assert_allclose(loss, reference.focal_loss_forward(z, target, 2.0, 4.0), rtol=tol, atol=tol)
    np.testing.assert_allclose(cpu.focal_loss_backward(z, target, 2.0, 4.0, 0.7),
                               reference.focal_loss_backward(z, target, 2.0, 4.0, 0.7), rtol=tol, atol=tol)


def test_focal_loss_by_hand():
    # one centre with logit 0 (p = 1/2): (1/2)^2 log 2; one background with t = 1/2, logit 0:
    # (1/2)^4 (1/2)^2 log 2; divided by one positive
    loss = sigmoid_focal_loss(tinycnn.Tensor(np.zeros(2)), np.array([1.0, 0.5]))
    assert float(loss.numpy()) == pytest.approx(math.log(2) * (0.25 + 0.25 / 16))


def test_focal_loss_stays_finite_for_huge_logits():
    z = np.array([-500.0, 500.0, 500.0, -500.0])
    target = np.array([1.0, 0.0, 1.0, 0.0])
    assert np.isfinite(cpu.focal_loss_forward(z, target, 2.0, 4.0))
    assert np.isfinite(cpu.focal_loss_backward(z, target, 2.0, 4.0, 1.0)).all()


def test_focal_loss_errors_name_the_problem():
    with pytest.raises(ValueError, match="sigmoid_focal_loss: target shape"):
        sigmoid_focal_loss(tinycnn.Tensor(np.zeros((2, 3))), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="alpha and beta"):
        sigmoid_focal_loss(tinycnn.Tensor(np.zeros(2)), np.zeros(2), alpha=-1)

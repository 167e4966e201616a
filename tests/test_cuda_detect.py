"""The CUDA focal-loss kernels (kernels/cuda/detection.py) against the CPU kernels on the same random inputs
(under numba's simulator on a machine without a GPU: tests/conftest.py)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import cuda

from tinycnn.kernels.cpu import detection as cpu
from tinycnn.kernels.cuda import detection as gpu

pytestmark = pytest.mark.skipif(not cuda.is_available(), reason="no CUDA device or simulator")


@settings(deadline=None, max_examples=4)
@given(size=st.integers(1, 300), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 10_000))
def test_focal_loss_matches_the_cpu_kernels(size, dtype, seed):
    rng = np.random.default_rng(seed)
    z = (rng.normal(scale=3.0, size=size)).astype(dtype)
    t = (rng.random(size) ** 3).astype(dtype)
    t[rng.random(size) < 0.1] = 1.0
    expected = cpu.focal_loss_forward(z.astype(np.float64), t.astype(np.float64), 2.0, 4.0)
    got = gpu.focal_loss_forward(cuda.to_device(z), cuda.to_device(t), 2.0, 4.0).copy_to_host()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    expected_grad = cpu.focal_loss_backward(z.astype(np.float64), t.astype(np.float64), 2.0, 4.0, 0.5)
    got_grad = gpu.focal_loss_backward(cuda.to_device(z), cuda.to_device(t), 2.0, 4.0, 0.5).copy_to_host()
    assert got_grad.dtype == dtype
    np.testing.assert_allclose(got_grad, expected_grad, rtol=tol, atol=tol)

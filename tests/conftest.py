"""pytest configuration shared by all tests.

The CUDA tests (tests/test_cuda_*.py) run numba-cuda kernels. On a machine without an NVIDIA GPU (CI) they
run in numba's CUDA simulator, which must be switched on before numba is first imported: this file does it,
unless TINYCNN_REAL_CUDA=1 asks for the real GPU. The simulator only affects numba.cuda; the CPU kernels
(@njit) are untouched.
"""
import os

if os.environ.get("TINYCNN_REAL_CUDA") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fast_cuda_simulator(request):
    """The simulator runs each GPU thread as a Python thread and syncs them at every barrier; with Python's
    default 5 ms thread switch interval a barrier costs milliseconds. The CUDA tests shorten the interval
    (20x faster there); other tests keep the default."""
    if not request.node.path.name.startswith("test_cuda_") or os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)

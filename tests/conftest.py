"""pytest configuration shared by all tests.

The CUDA tests (tests/test_cuda_*.py) run numba-cuda kernels. On a machine without an NVIDIA GPU (CI) they
run in numba's CUDA simulator, which must be switched on before numba is first imported: this file does it,
unless TINYCNN_REAL_CUDA=1 asks for the real GPU. The simulator only affects numba.cuda; the CPU kernels
(@njit) are untouched.
"""
import os

if os.environ.get("TINYCNN_REAL_CUDA") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

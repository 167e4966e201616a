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
import threading  # noqa: E402

import pytest  # noqa: E402

_simulator_patched = False


def _patch_simulator_shared_arrays():
    """numba-cuda's simulator creates a block's shared array on first use with an unlocked check-then-insert
    (FakeCUDAShared.array): two threads of a launch's first block that reach `cuda.shared.array` at the same
    time can each get their own array, and that block then computes garbage (seen here, now and then, under
    load). Serialise that lookup. Test infrastructure only: the real GPU has no such step."""
    global _simulator_patched
    if _simulator_patched:
        return
    import traceback

    import numpy as np
    from numba.cuda.simulator import kernelapi
    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def locked_array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:      # errors and dynamic shared memory: unchanged
            return original(self, shape, dtype, alignment)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]   # the kernel line, as the original
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                if isinstance(dtype, kernelapi.types.Type):
                    dtype = kernelapi.numpy_support.as_dtype(dtype)
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    kernelapi.FakeCUDAShared.array = locked_array
    _simulator_patched = True


@pytest.fixture(autouse=True)
def _cuda_simulator(request):
    """For the CUDA tests under the simulator: fix its shared-array race (above), and shorten Python's thread
    switch interval: the simulator runs each GPU thread as a Python thread and syncs them at every barrier,
    which costs milliseconds at the default 5 ms interval (20x faster here). Other tests are untouched."""
    if not request.node.path.name.startswith("test_cuda_") or os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        yield
        return
    _patch_simulator_shared_arrays()
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)

"""Launch glue of the CUDA kernels: block and tile sizes, grids, allocation, scalars, workspaces, the stream.

Every numba-cuda detail that is not a kernel lives here, so that the kernel files read as kernels and a move
to another CUDA binding stays local:

- the sizes: `THREADS` per 1-D block, the GEMM tile (`BM` × `BN` outputs per block, `BK` deep, each thread
  computing an `RM` × `RN` micro-tile), `RED` threads for block reductions. Under the simulator
  (`NUMBA_ENABLE_CUDASIM=1`) they are tiny, so that the tests' tiny shapes still cover several blocks and
  partial tiles.
- `launch(kernel, grid, block, *args)`: every kernel goes through here, on one stream.
- `empty(shape, dtype)`: a device allocation (never a host copy; elementwise.zeros/full fill it with a
  kernel); `to_device(host_array)`: the one explicit host -> device copy; `flat(a)`: the 1-D view the kernels
  take; `scalar(v, dtype)` turns Python numbers into the array's dtype, so a float32 kernel computes in float32.
- `workspace(name, shape, dtype)`: scratch buffers (split-K partial sums, reduction partials) reused across
  calls; safe because all kernels run in order on one stream.
- a caching device allocator (an EMM plugin of numba-cuda): a training step frees and allocates the same
  sizes every step, and cuMemAlloc/cuMemFree are slow (cuMemFree synchronises the device). Freed buffers go
  to a free list by size and are handed out again. `TINYCNN_CUDA_POOL=0` turns it off.
"""
import os
import weakref
from collections import defaultdict

import numpy as np
from numba import cuda

try:  # numba-cuda >= 0.20 keeps its own configuration module
    from numba.cuda.core import config as _config
except ImportError:  # pragma: no cover
    from numba.core import config as _config

SIM = bool(_config.ENABLE_CUDASIM)

# Small grids are normal here (a bias gradient, a loss): numba's "low occupancy" hint is noise for us. Its
# warning about implicit host<->device copies stays on: that one is a bug (tests turn it into an error).
_config.CUDA_LOW_OCCUPANCY_WARNINGS = 0

# ---------------------------------------------------------------------------------------------- sizes
if SIM:
    THREADS = 32        # threads of a 1-D block (elementwise kernels, grid-stride loops)
    MAX_BLOCKS = 2      # cap of a grid-stride grid
    RED = 8             # threads of a reduction block (a power of two)
    BM, BN, BK = 4, 4, 2  # GEMM tile: BM x BN outputs per block, BK deep
    RM, RN = 2, 2       # each thread computes RM x RN outputs of the tile
    TARGET_BLOCKS = 4   # split-K aims at this many blocks
else:
    THREADS = 256
    MAX_BLOCKS = 8192
    RED = 256
    BM, BN, BK = 64, 64, 16
    RM, RN = 4, 4
    TARGET_BLOCKS = None  # 2 x the number of multiprocessors, read from the device
    if os.environ.get("TINYCNN_CUDA_TILE"):  # "BM,BN,BK,RM,RN": to try other tiles (benchmarks/gpu_bench.py)
        BM, BN, BK, RM, RN = (int(v) for v in os.environ["TINYCNN_CUDA_TILE"].split(","))
TM, TN = BM // RM, BN // RN   # threads of a GEMM block along y (rows) and x (columns)
GEMM_THREADS = TM * TN
BMP, BNP = BM + 1, BN + 1     # shared-memory tile rows padded by one element (no bank conflicts on stores)
# the tile loaders hand out whole rows/columns of a tile per pass of the block's threads
assert GEMM_THREADS % BN == 0 and GEMM_THREADS % BM == 0 and GEMM_THREADS % BK == 0
assert (BM * BK) % GEMM_THREADS == 0 and (BN * BK) % GEMM_THREADS == 0
MAXDIM = 6                    # broadcasting / strided copies handle up to this many dimensions


def cdiv(a, b):
    return -(-a // b)


def grid1d(n):
    """(blocks, threads) of a grid-stride loop over n items."""
    return max(1, min(cdiv(n, THREADS), MAX_BLOCKS)), THREADS


def target_blocks():
    global TARGET_BLOCKS
    if TARGET_BLOCKS is None:
        TARGET_BLOCKS = 2 * int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    return TARGET_BLOCKS


def split(items, length, min_per, quantum=1):
    """Cut a reduction of `length` terms into slices so that items x slices fills the GPU, each slice at
    least `min_per` long and a multiple of `quantum`. Returns (slices, per_slice)."""
    if length <= 0:
        return 1, 0
    want = max(1, min(cdiv(target_blocks(), max(items, 1)), length // max(min_per, 1)))
    per = cdiv(cdiv(length, want), quantum) * quantum
    return cdiv(length, per), per


def split_k(tiles, k):
    """split() for GEMMs: slices of at least 4 BK-steps, each a whole number of BK-steps."""
    return split(tiles, k, 4 * BK, BK)


# ---------------------------------------------------------------------------------------------- launch
def stream():
    """The one stream every kernel and copy runs on (the default stream): kernels run in launch order."""
    return 0


def launch(kernel, grid, block, *args):
    """kernel[grid, block](*args) on our stream. A host (NumPy) array among the arguments would be copied to
    the device and back on every launch: that is a bug, refused here (also under the simulator)."""
    for a in args:
        if isinstance(a, np.ndarray):
            raise TypeError(f"{getattr(kernel, '__name__', kernel)}: host array passed to a CUDA kernel (an implicit copy)")
    kernel[grid, block, stream()](*args)


def launch1d(kernel, n, *args):
    """A grid-stride kernel over n items."""
    launch(kernel, *grid1d(n), *args)


# ---------------------------------------------------------------------------------------------- arrays
def is_device_array(a):
    return hasattr(a, "copy_to_host")


def empty(shape, dtype):
    return cuda.device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype), stream=stream())


def to_device(host_array):
    """An explicit host -> device copy (Tensor.to('cuda'), index arrays)."""
    return cuda.to_device(np.ascontiguousarray(host_array), stream=stream())


def flat(a):
    """A 1-D view of a C-contiguous device array (0-d arrays included)."""
    return a.reshape(max(int(a.size), 1)) if a.ndim != 1 else a


def scalar(value, dtype):
    """A Python number as a NumPy scalar of `dtype`, so that the kernel computes in that dtype."""
    return np.dtype(dtype).type(value)


_workspaces = {}


def workspace(name, shape, dtype):
    """A scratch device array reused across calls (grown when too small). Valid until the next request of
    the same name: callers use it and consume it within one host function."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    key = (name, dtype)
    buf = _workspaces.get(key)
    if buf is None or buf.size < n:
        buf = _workspaces[key] = cuda.device_array(max(n, 1), dtype=dtype, stream=stream())
    return buf[:n].reshape(tuple(int(s) for s in shape)) if n else buf[:0].reshape(tuple(shape))


# ---------------------------------------------------------------------------------------------- pool
def _install_pool():
    """Register a caching allocator with numba-cuda (before its context is created)."""
    from numba.cuda.cudadrv import driver as drv

    class CachingMemoryManager(drv.NumbaCUDAMemoryManager):
        """cuMemAlloc'd blocks are never freed while the program runs: a freed buffer joins the free list
        of its (rounded) size and serves the next request of that size. One stream orders all work, so a
        buffer reused by a later kernel is written only after the kernels that read it before."""

        def initialize(self):
            super().initialize()
            self.free_lists = defaultdict(list)
            self.pooling = True

        def memalloc(self, size):
            if not self.pooling:
                return super().memalloc(size)
            try:
                return self._pooled(size)
            except Exception:  # an incompatible numba-cuda: fall back to its own allocator for good
                self.pooling = False
                return super().memalloc(size)

        def _pooled(self, size):
            size = max(512, cdiv(size, 512) * 512)
            free = self.free_lists[size]
            if free:
                ptr = free.pop()
            else:
                try:
                    ptr = self._attempt_allocation(lambda: drv.driver.cuMemAlloc(size))
                except drv.CudaAPIError:       # out of memory: give the cached blocks back, try again
                    self.release_cached()
                    ptr = self._attempt_allocation(lambda: drv.driver.cuMemAlloc(size))

            def back_to_pool(ptr=ptr, free=free):
                free.append(ptr)

            mem = drv.AutoFreePointer(weakref.proxy(self.context), ptr, size, finalizer=back_to_pool)
            return mem.own()

        def release_cached(self):
            drv.driver.cuCtxSynchronize()
            for free in self.free_lists.values():
                while free:
                    drv.driver.cuMemFree(free.pop())

        def reset(self):
            self.release_cached()
            super().reset()

    cuda.set_memory_manager(CachingMemoryManager)


POOL = False
# The caching allocator is opt-in (TINYCNN_CUDA_POOL=1): on a real H100 its blocks went back to the pool
# while still in use ("weakly-referenced object no longer exists"); numba-cuda's own allocator is the default.
if not SIM and os.environ.get("TINYCNN_CUDA_POOL", "0") == "1":
    try:
        _install_pool()
        POOL = True
    except Exception:  # pragma: no cover - an older numba-cuda: plain cuMemAlloc
        POOL = False

"""Launch glue of the CUDA kernels: block and tile sizes, grids, allocation, scalars, workspaces, the stream.

Every numba-cuda detail that is not a kernel lives here, so that the kernel files read as kernels and a move
to another CUDA binding stays local. The kernel files import it as `gpu` (`gpu.launch(...)`, `gpu.empty(...)`):

- the sizes: `THREADS` per 1-D block, the GEMM tile (`BM` × `BN` outputs per block, `BK` deep, each thread
  computing an `RM` × `RN` micro-tile), `RED` threads for block reductions. Under the simulator
  (`NUMBA_ENABLE_CUDASIM=1`) they are tiny, so that the tests' tiny shapes still cover several blocks and
  partial tiles.
- `launch(kernel, grid, block, *args)`: every kernel goes through here, on one stream.
- `empty(shape, dtype)`: a device allocation (never a host copy; layout.full fills it with a
  kernel); `to_device(host_array)`: the one explicit host -> device copy; `flat(a)`: the 1-D view the kernels
  take; `scalar(v, dtype)` turns Python numbers into the array's dtype, so a float32 kernel computes in float32.
- `workspace(name, shape, dtype)`: scratch buffers (split-K partial sums, reduction partials) reused across
  calls; safe because all kernels run in order on one stream.
- a caching device allocator (opt-in: `TINYCNN_CUDA_POOL=1`, read when this module is imported, which must
  be before the first CUDA allocation): a training step frees and allocates the same sizes every step, and
  cuMemAlloc/cuMemFree are slow (cuMemFree synchronises the device). `BlockPool` is its bookkeeping (plain
  Python, tested with a fake driver in tests/test_cuda_pool.py); `caching_memory_manager()` plugs it into
  numba-cuda as an EMM plugin. A block goes back to the free list of its size class when the last device
  array (or slice, or view) on it dies, and serves the next request of that class; `release_pool()` gives
  the cached blocks back to the driver, `pool_stats()` counts them.
"""
import functools
import itertools
import os
import warnings
import weakref

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
class BlockPool:
    """The bookkeeping of the caching allocator, free of numba and of the driver: `allocate(nbytes) -> int`
    and `free(addr)` are the driver calls, `synchronize()` waits for the device before blocks are freed.

    - `acquire(nbytes) -> (addr, release)`: a block of `block_size(nbytes)` bytes, from the free list of that
      size class if it has one, else from `allocate`. Calling `release()` hands the block back to its free
      list. The caller ties that call to the life of whatever uses the block: numba-cuda calls it from the
      finalizer of the MemoryPointer that memalloc returns, which runs when the last array, slice or view of
      the block has died (every view holds the MemoryPointer).
    - a release counts once: a second call, or a call after `reset()`, is ignored (counted in
      `stale_releases`). So no block sits twice on a free list, none is handed out while in use, and none is
      freed twice.
    - `release_cached()`: frees the blocks of the free lists (never one in use); returns the bytes freed.
      Also run, once, when `allocate` fails (out of memory), before it is tried again.
    - `reset()`: frees every block, in use or not (numba-cuda's reset of a context frees all of its memory
      too); later releases of blocks handed out before are ignored.

    Releases come from finalizers, which the garbage collector may run at any point, even in the middle of
    `acquire` on the same thread: so no lock (it could deadlock there), only single dict and list operations
    (atomic under the GIL), and a token per hand-out so that a late or repeated release is recognised.
    `reset()` must not run while other threads allocate."""

    GRANULE = 512         # size classes up to SMALL: multiples of 512 bytes
    SMALL = 1 << 20

    def __init__(self, allocate, free, synchronize=lambda: None):
        self._allocate, self._free, self._synchronize = allocate, free, synchronize
        self._cached = {}     # size class -> [addr, ...]: the free blocks (a class's list is never removed)
        self._live = {}       # addr -> (size class, token): the blocks handed out
        self._tokens = itertools.count(1)
        self.counts = dict(driver_allocs=0, driver_frees=0, reused=0, released=0, stale_releases=0)

    @classmethod
    def block_size(cls, nbytes):
        """The size class of a request: a multiple of 512 bytes up to 1 MiB; above, a multiple of 1/8 of the
        power of two below the request (at most 12.5 % more than asked)."""
        n = max(int(nbytes), 1)
        step = cls.GRANULE if n <= cls.SMALL else 1 << (n.bit_length() - 4)
        return cdiv(n, step) * step

    def acquire(self, nbytes):
        size = self.block_size(nbytes)
        free = self._cached.setdefault(size, [])   # created here, so that a release never adds a key
        try:
            addr = free.pop()
        except IndexError:
            addr = None
        if addr is None:
            addr = self._driver_allocate(size)
        else:
            self.counts["reused"] += 1
        token = next(self._tokens)
        self._live[addr] = (size, token)
        return addr, functools.partial(self.release, addr, token)

    def release(self, addr, token):
        """Hand the block back (the `release` of `acquire`); False if that hand-out was released already."""
        entry = self._live.get(addr)
        if entry is None or entry[1] != token or self._live.pop(addr, None) is None:
            self.counts["stale_releases"] += 1
            return False
        self._cached[entry[0]].append(addr)
        self.counts["released"] += 1
        return True

    def release_cached(self):
        """Free the cached blocks (those on the free lists); returns the bytes freed."""
        return self._free_blocks(self._take_cached())

    def reset(self):
        """Free every block, cached or in use; returns the bytes freed."""
        live, self._live = self._live, {}
        return self._free_blocks([(addr, size) for addr, (size, _) in live.copy().items()] + self._take_cached())

    def stats(self):
        cached = [(size, len(free)) for size, free in self._cached.copy().items()]
        live = [size for size, _ in self._live.copy().values()]
        return dict(self.counts, cached_blocks=sum(n for _, n in cached), cached_bytes=sum(s * n for s, n in cached),
                    live_blocks=len(live), live_bytes=sum(live))

    def _driver_allocate(self, size):
        try:
            addr = self._allocate(size)
        except Exception:
            if not self.release_cached():   # nothing cached to give back: a real failure
                raise
            addr = self._allocate(size)
        if addr in self._live:
            raise RuntimeError(f"the driver returned block {addr:#x}, which is in use")
        self.counts["driver_allocs"] += 1
        return addr

    def _take_cached(self):
        blocks = []
        for size, free in self._cached.copy().items():
            while free:
                try:
                    blocks.append((free.pop(), size))
                except IndexError:    # emptied meanwhile (another thread)
                    break
        return blocks

    def _free_blocks(self, blocks):
        if not blocks:
            return 0
        self._synchronize()      # kernels queued before may still use a block whose arrays have died
        for addr, _ in blocks:
            self._free(addr)
            self.counts["driver_frees"] += 1
        return sum(size for _, size in blocks)


_manager_class = None


def caching_memory_manager():
    """The EMM plugin class of numba-cuda around a BlockPool (made on first use: it subclasses classes of
    numba-cuda's real driver module, which the simulator replaces).

    memalloc returns a plain MemoryPointer whose finalizer releases the block, as numba-cuda's EMM
    documentation asks ("MemoryPointer: returned from memalloc"; the finalizer runs "when the buffer is no
    longer needed"). The device array holds that MemoryPointer, and each slice or view of it holds it too
    (MemoryPointer.view gives views whose owner is the MemoryPointer), so the finalizer runs when the last
    of them dies. Not `AutoFreePointer(...).own()`: own() holds only a weakref.proxy of the AutoFreePointer,
    which numba's own manager keeps alive in `self.allocations`; without that the pointer died as memalloc
    returned, its block went back to the free list at once, and the array's first use of it raised
    "ReferenceError: weakly-referenced object no longer exists" (the H100 failure).

    All work runs on one stream (`stream()`), so a block reused by a later kernel or copy is written only
    after the kernels that used it before. Host allocations (pinned, mapped) stay numba's
    (HostOnlyCUDAMemoryManager)."""
    global _manager_class
    if _manager_class is not None:
        return _manager_class
    from numba.cuda.cudadrv import driver as drv

    class CachingMemoryManager(drv.GetIpcHandleMixin, drv.HostOnlyCUDAMemoryManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.pool = BlockPool(self._driver_alloc, self._driver_free, self._driver_sync)

        # the only driver calls of the plugin (tests replace them)
        def _driver_alloc(self, nbytes):
            return int(self._attempt_allocation(lambda: drv.driver.cuMemAlloc(nbytes)))

        def _driver_free(self, addr):
            drv.driver.cuMemFree(drv.binding.CUdeviceptr(addr))

        def _driver_sync(self):
            drv.driver.cuCtxSynchronize()

        def initialize(self):
            # as numba's own manager: size the queue of pending host-memory frees by the device's memory
            if not self.deallocations.memory_capacity:
                self.deallocations.memory_capacity = self.get_memory_info().total

        def memalloc(self, size):
            addr, release = self.pool.acquire(size)
            return drv.MemoryPointer(weakref.proxy(self.context), drv.binding.CUdeviceptr(addr), size,
                                     finalizer=release)

        def get_memory_info(self):
            """The driver's numbers: the blocks cached by the pool count as used."""
            free, total = drv.driver.cuMemGetInfo()
            return drv.MemoryInfo(free=free, total=total)

        def reset(self):
            self.pool.reset()
            super().reset()

        @property
        def interface_version(self):
            return 1

    _manager_class = CachingMemoryManager
    return _manager_class


def _install_pool():
    """Register the caching allocator with numba-cuda; it serves the contexts created after this only."""
    from numba.cuda.cudadrv import driver as drv
    if any(getattr(d, "primary_context", None) is not None for d in drv.driver.list_devices()):
        warnings.warn("TINYCNN_CUDA_POOL=1 ignored: a CUDA context exists already (import tinycnn's CUDA "
                      "kernels before the first CUDA call); numba-cuda's own allocator stays", RuntimeWarning)
        return False
    cuda.set_memory_manager(caching_memory_manager())
    return True


def _pool():
    """The BlockPool of the current context, or None (pool off, simulator)."""
    if not POOL:
        return None
    return getattr(cuda.current_context().memory_manager, "pool", None)


def pool_active():
    """Whether the current context allocates through the pool (creates the context if there is none)."""
    return _pool() is not None


def release_pool():
    """Give the pool's cached blocks back to the driver (blocks in use stay); returns the bytes freed."""
    pool = _pool()
    return pool.release_cached() if pool is not None else 0


def pool_stats():
    """The pool's counts (None without the pool): driver allocations and frees, reuses, releases, stale
    releases, and the blocks and bytes cached and in use."""
    pool = _pool()
    return pool.stats() if pool is not None else None


# The caching allocator is opt-in (TINYCNN_CUDA_POOL=1), chosen here, before the first allocation. Until it
# has passed benchmarks/gpu_check.sh on a real GPU, numba-cuda's own allocator stays the default.
POOL = False
if not SIM and os.environ.get("TINYCNN_CUDA_POOL", "0") == "1":
    try:
        POOL = _install_pool()
    except Exception as e:  # pragma: no cover - an incompatible numba-cuda: its own allocator
        warnings.warn(f"TINYCNN_CUDA_POOL=1 ignored: {type(e).__name__}: {e}", RuntimeWarning)

"""The CUDA caching allocator (kernels/cuda/_launch.py, TINYCNN_CUDA_POOL=1).

- `BlockPool`, its bookkeeping, with a fake driver: addresses from a counter, frees recorded, a double free or
  the free of an unknown block an error. Nothing here needs numba's behaviour (the simulator has no driver).
- the EMM plugin around it, against numba-cuda's real driver classes (MemoryPointer and its views) with the
  driver calls replaced: in a child process without the simulator (which replaces those classes), no GPU.
- on a real GPU with the pool on (TINYCNN_REAL_CUDA=1 TINYCNN_CUDA_POOL=1): device arrays and their slices.
"""
import gc
import json
import os
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

from tinycnn.kernels.cuda import _launch as gpu
from tinycnn.kernels.cuda._launch import BlockPool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeDriver:
    """cuMemAlloc/cuMemFree/cuCtxSynchronize stand-ins. `capacity` bytes at most in use (then MemoryError)."""

    def __init__(self, capacity=None):
        self.next_addr = 1 << 20
        self.allocated = {}      # addr -> bytes, allocated and not freed
        self.freed = []
        self.syncs = 0
        self.capacity = capacity
        self.lock = threading.Lock()

    def allocate(self, nbytes):
        with self.lock:
            return self._allocate(nbytes)

    def _allocate(self, nbytes):
        if self.capacity is not None and sum(self.allocated.values()) + nbytes > self.capacity:
            raise MemoryError("out of memory")
        addr = self.next_addr
        self.next_addr += max(nbytes, 1) + 4096
        self.allocated[addr] = nbytes
        return addr

    def free(self, addr):
        with self.lock:
            assert addr in self.allocated, f"free of {addr:#x}: not allocated, or freed twice"
            del self.allocated[addr]
            self.freed.append(addr)

    def synchronize(self):
        self.syncs += 1

    def pool(self):
        return BlockPool(self.allocate, self.free, self.synchronize)


class FakeMemory:
    """What numba-cuda makes of a pooled block: a MemoryPointer whose finalizer releases it, and views that
    hold the MemoryPointer (MemoryPointer.view: `owner=self.owner`)."""

    def __init__(self, pool, nbytes):
        self.addr, release = pool.acquire(nbytes)
        self._owner = None
        weakref.finalize(self, release)

    @property
    def owner(self):
        return self if self._owner is None else self._owner

    def view(self, start):
        v = FakeMemory.__new__(FakeMemory)
        v.addr, v._owner = self.addr + start, self.owner
        return v


def check_consistent(pool, drv):
    """No block both in use and cached, none cached twice, every block known to the driver."""
    cached = [a for free in pool._cached.values() for a in free]
    assert len(cached) == len(set(cached))
    assert not set(cached) & set(pool._live)
    assert set(cached) | set(pool._live) == set(drv.allocated)


# ---------------------------------------------------------------------------------------------- BlockPool


def test_size_classes():
    assert [BlockPool.block_size(n) for n in (0, 1, 512, 513, 1000, 1024, 1 << 20)] == \
        [512, 512, 512, 1024, 1024, 1024, 1 << 20]
    assert BlockPool.block_size((1 << 20) + 1) == (1 << 20) + (1 << 17)
    previous = 0
    for n in list(range(1, 5000, 7)) + [int(v) for v in np.geomspace(1 << 20, 1 << 34, 400)]:
        size = BlockPool.block_size(n)
        assert size >= n and size % 512 == 0 and size >= previous
        assert size - n < 512 if n <= 1 << 20 else size <= n * 1.125
        previous = size


def test_reuse_after_release_by_size_class():
    drv = FakeDriver()
    pool = drv.pool()
    a, release_a = pool.acquire(1000)
    release_a()
    b, release_b = pool.acquire(1024)      # the same class (1024): the same block
    assert b == a and len(drv.allocated) == 1
    c, _ = pool.acquire(2000)              # another class: a new block
    assert c != a and len(drv.allocated) == 2
    assert pool.stats()["reused"] == 1 and pool.stats()["driver_allocs"] == 2
    check_consistent(pool, drv)


def test_no_reuse_while_in_use():
    drv = FakeDriver()
    pool = drv.pool()
    held = [pool.acquire(4096) for _ in range(5)]
    assert len({addr for addr, _ in held}) == 5 and len(drv.allocated) == 5
    check_consistent(pool, drv)


def test_a_release_counts_once():
    drv = FakeDriver()
    pool = drv.pool()
    a, release = pool.acquire(100)
    assert release() is True
    assert release() is False                  # the second release of the same hand-out: ignored
    b, release_b = pool.acquire(100)
    c, _ = pool.acquire(100)
    assert b == a and c != a                   # the block was listed once, so it is handed out once
    assert release() is False                  # the old hand-out cannot release the block b now uses
    d, _ = pool.acquire(100)
    assert d not in (b, c)
    assert pool.stats()["stale_releases"] == 2
    check_consistent(pool, drv)


def test_array_lifetime_decides():
    """Through finalizers, as numba-cuda runs them: the block returns when the array and all its views died."""
    drv = FakeDriver()
    pool = drv.pool()
    x = FakeMemory(pool, 4000)
    addr = x.addr
    sl = x.view(400)                           # a slice of x
    del x
    gc.collect()
    assert pool.stats()["live_blocks"] == 1 and pool.stats()["cached_blocks"] == 0
    y = FakeMemory(pool, 4000)
    assert y.addr != addr                      # the slice keeps x's block in use
    del sl
    assert pool.stats()["live_blocks"] == 1 and pool.stats()["cached_blocks"] == 1
    z = FakeMemory(pool, 4000)
    assert z.addr == addr                      # x's block, now that its last view died
    del y, z
    assert pool.stats()["live_blocks"] == 0 and len(drv.allocated) == 2
    check_consistent(pool, drv)


def test_release_cached_frees_only_free_blocks():
    drv = FakeDriver()
    pool = drv.pool()
    kept, _ = pool.acquire(1000)
    blocks = [pool.acquire(n) for n in (1000, 3000, 3000, 1 << 21)]
    for _, release in blocks:
        release()
    assert pool.stats()["cached_bytes"] == 1024 + 2 * 3072 + (1 << 21)
    assert pool.release_cached() == 1024 + 2 * 3072 + (1 << 21)
    assert set(drv.allocated) == {kept} and drv.syncs == 1
    assert pool.release_cached() == 0 and drv.syncs == 1   # nothing cached: no driver call at all
    new, _ = pool.acquire(1000)
    assert new not in [a for a, _ in blocks] and pool.stats()["driver_allocs"] == 6
    check_consistent(pool, drv)


def test_reset_frees_everything_and_ignores_late_releases():
    drv = FakeDriver()
    pool = drv.pool()
    live, release_live = pool.acquire(1000)
    _, release_cached = pool.acquire(5000)
    release_cached()
    assert pool.reset() == 1024 + 5120
    assert drv.allocated == {} and len(drv.freed) == 2
    assert release_live() is False             # an array that outlived the reset: no double free, no reuse
    assert pool.stats()["cached_blocks"] == 0 and pool.stats()["live_blocks"] == 0
    pool.acquire(1000)
    assert pool.stats()["driver_allocs"] == 3
    check_consistent(pool, drv)


def test_out_of_memory_gives_the_cache_back_once():
    drv = FakeDriver(capacity=8192)
    pool = drv.pool()
    a, release = pool.acquire(4096)
    b, _ = pool.acquire(2048)
    release()                                  # 6144 allocated, 4096 of it cached
    c, _ = pool.acquire(6000)                  # does not fit: the cache goes back, then it fits
    assert c not in (a, b) and a in drv.freed
    with pytest.raises(MemoryError):           # nothing cached any more: the error stands
        pool.acquire(6000)
    check_consistent(pool, drv)


def test_release_during_acquire():
    """A finalizer may run in the middle of acquire (garbage collection on the same thread): here the driver
    allocation itself releases another block of the same class."""
    drv = FakeDriver()
    pool = drv.pool()
    _, release = pool.acquire(1000)
    allocate = drv.allocate

    def allocate_and_collect(nbytes):
        release()
        return allocate(nbytes)

    pool._allocate = allocate_and_collect
    b, _ = pool.acquire(1000)
    c, _ = pool.acquire(1000)                  # served by the block released meanwhile
    assert b != c and pool.stats()["reused"] == 1
    check_consistent(pool, drv)


def test_threads():
    drv = FakeDriver()
    pool = drv.pool()
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        held = []
        try:
            for _ in range(1500):
                if held and rng.random() < 0.5:
                    held.pop(int(rng.integers(len(held))))[1]()
                else:
                    held.append(pool.acquire(int(rng.integers(1, 5)) * 512))
            for _, release in held:
                assert release()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = pool.stats()
    assert stats["live_blocks"] == 0 and stats["stale_releases"] == 0
    assert stats["cached_blocks"] == stats["driver_allocs"] == len(drv.allocated)
    check_consistent(pool, drv)
    pool.release_cached()
    assert drv.allocated == {}


# ---------------------------------------------------------------------------------------------- the plugin

PLUGIN_CHECK = r"""
import gc, json, sys, weakref
try:
    from numba.cuda.cudadrv import driver as drv
    drv.MemoryPointer
except Exception as e:
    print(json.dumps({"skip": f"numba-cuda's driver module: {type(e).__name__}: {e}"}))
    sys.exit(0)
from numba import cuda
from tinycnn.kernels.cuda import _launch as gpu

out = {"sim": gpu.SIM, "POOL": gpu.POOL, "registered": drv._memory_manager is gpu.caching_memory_manager()}
allocated, freed = {}, []

class Fake(gpu.caching_memory_manager()):
    def _driver_alloc(self, nbytes):
        addr = (len(allocated) + 1) << 24
        allocated[addr] = nbytes
        return addr
    def _driver_free(self, addr):
        assert addr in allocated and addr not in freed
        freed.append(addr)
    def _driver_sync(self):
        pass

class Context:
    pass

ctx = Context()
mm = Fake(context=ctx)
out["interface_version"] = mm.interface_version
mem = mm.memalloc(1000)
out["type"] = type(mem).__name__
addr = int(mem.device_pointer)                        # the H100 failure: ReferenceError here (a dead proxy)
out["size"] = mem.size
view = mem.view(40, 400)                              # what slicing a device array does
sub = view.view(8, 16)
out["view_addr"] = int(sub.device_pointer) - addr
del mem
gc.collect()
out["live_with_views"] = mm.pool.stats()["live_blocks"]
other = mm.memalloc(1000)
out["other_differs"] = int(other.device_pointer) != addr
del view
gc.collect()
out["live_with_subview"] = mm.pool.stats()["live_blocks"]
del sub
out["after_views"] = mm.pool.stats()["live_blocks"]
again = mm.memalloc(1024)
out["reused"] = int(again.device_pointer) == addr
out["allocated"] = len(allocated)
out["release_cached"] = mm.pool.release_cached()
del again
out["release_cached_2"] = mm.pool.release_cached()
mm.reset()                                            # frees `other`, still in use
del other
out["freed"] = sorted(freed) == sorted(allocated)
out["stats"] = mm.pool.stats()
print(json.dumps(out))
"""


def test_emm_plugin_with_numba_cuda_classes():
    env = dict(os.environ, TINYCNN_CUDA_POOL="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    p = subprocess.run([sys.executable, "-c", PLUGIN_CHECK], env=env, capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["sim"] is False and out["POOL"] is True and out["registered"] is True
    assert out["interface_version"] == 1 and out["type"] == "MemoryPointer" and out["size"] == 1000
    assert out["view_addr"] == 48
    assert out["live_with_views"] == 1 and out["other_differs"]      # views keep the block
    assert out["live_with_subview"] == 2                              # a view of a view too
    assert out["after_views"] == 1 and out["reused"] and out["allocated"] == 2
    assert out["release_cached"] == 0 and out["release_cached_2"] == 1024
    assert out["freed"]
    assert out["stats"]["live_blocks"] == 0 and out["stats"]["cached_blocks"] == 0
    assert out["stats"]["stale_releases"] == 1                        # `other`, released after the reset


# ---------------------------------------------------------------------------------------------- real GPU


@pytest.mark.skipif(gpu.SIM or os.environ.get("TINYCNN_CUDA_POOL") != "1",
                    reason="needs a GPU (TINYCNN_REAL_CUDA=1) and TINYCNN_CUDA_POOL=1")
def test_pool_on_the_gpu():
    from numba import cuda
    if not cuda.is_available():
        pytest.skip("no CUDA device")

    def ptr(a):
        return a.device_ctypes_pointer.value

    assert gpu.POOL and gpu.pool_active()
    gpu.release_pool()
    x = gpu.to_device(np.arange(1000, dtype=np.float32))
    np.testing.assert_array_equal(x.copy_to_host(), np.arange(1000, dtype=np.float32))
    addr = ptr(x)
    sl = x[100:200]
    del x
    y = gpu.empty((1000,), np.float32)
    assert ptr(y) != addr
    np.testing.assert_array_equal(sl.copy_to_host(), np.arange(100, 200, dtype=np.float32))
    del sl
    z = gpu.empty((1000,), np.float32)
    assert ptr(z) == addr
    cuda.synchronize()
    del y, z
    stats = gpu.pool_stats()
    assert stats["live_blocks"] >= 0 and stats["cached_blocks"] >= 2
    assert gpu.release_pool() >= 2 * 4096 and gpu.pool_stats()["cached_blocks"] == 0

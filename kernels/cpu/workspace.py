"""Memory that CPU kernels keep across training steps, in one place: scratch buffers and recycled outputs.

Why it pays: a fresh multi-megabyte NumPy array is a fresh mmap, and the first write to each of its pages
costs a page fault and the OS zeroing the page: ~10 ms for the 79 MB output of the tutorial's first conv,
as much as the conv itself. An array kept from the previous step is already mapped (PyTorch's caching
allocator and tcmalloc buy the same).

- `scratch(role, shape, dtype)`: a temporary that never leaves the kernel asking for it (im2col's `cols`,
  the masked gradient of a fused conv + ReLU, ...). One buffer per (thread, role, dtype), grown to the
  largest size asked for: memory stays bounded whatever the model (one buffer per role, not per layer).
  Two temporaries alive at the same time need two roles.
- `output(shape, dtype)`: for a kernel's result (a new tensor's data, an input gradient): an array of that
  shape from an earlier call when nothing else refers to it any more, else a new one. "Nothing refers to it"
  is read from CPython's reference count: the cache's own reference is the only one left, so no tensor,
  view (a view holds a reference to its base), graph node or user variable can see it being reused. Only
  arrays of at least `OUTPUT_MIN_BYTES` are kept, `OUTPUT_CACHE_BYTES` in all (least recently used first out).

- `constant_weights(arrays, memo)`: a block (an inference plan's replay) in which these arrays do not change;
  inside it `prepared(w, role, make)` keeps make(w) (Winograd's transformed filters, ...) in `memo` for the
  next replay instead of deriving it again on every call. Outside such a block, or for an array that is not
  one of them, `prepared` is make(w).

Both are per thread, so two threads running kernels never share a buffer. The CUDA kernels need neither
(the GPU allocator of numba-cuda has its own pool).
"""
import collections
import contextlib
import math
import sys
import threading

import numpy as np

OUTPUT_MIN_BYTES = 1 << 20     # smaller arrays: malloc's own free lists already make them cheap
OUTPUT_CACHE_BYTES = 2 << 30   # at most this much kept for reuse

_local = threading.local()


def _free_count():
    """sys.getrefcount of an object that only a list refers to, read the way `output` reads it (2 up to
    Python 3.13; 3.14 may borrow the argument's reference and say 1)."""
    kept = [object()]
    return sys.getrefcount(kept[0])


_FREE = _free_count()


def _state():
    state = getattr(_local, "state", None)
    if state is None:
        state = _local.state = {"scratch": {}, "outputs": collections.OrderedDict(), "output_bytes": 0}
    return state


def scratch(role, shape, dtype):
    """An uninitialised C-contiguous array of `shape` and `dtype`, reused by every call with the same role."""
    buffers = _state()["scratch"]
    dtype = np.dtype(dtype)
    size = 1
    for s in shape:
        size *= int(s)
    key = (role, dtype)
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(max(size, 1), dtype)
    return buf[:size].reshape(shape)


def output(shape, dtype):
    """An uninitialised C-contiguous array of `shape` and `dtype` for a kernel's result: a recycled one
    that nothing else refers to any more, or a new one (kept for later reuse when big enough)."""
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    if nbytes < OUTPUT_MIN_BYTES:
        return np.empty(shape, dtype)
    state = _state()
    key = (shape, dtype)
    kept = state["outputs"].get(key)
    if kept is not None:
        state["outputs"].move_to_end(key)
        for i in range(len(kept)):
            if sys.getrefcount(kept[i]) <= _FREE:  # only the list refers to it: free
                return kept[i]
    array = np.empty(shape, dtype)
    while state["output_bytes"] + nbytes > OUTPUT_CACHE_BYTES and state["outputs"]:
        _, dropped = state["outputs"].popitem(last=False)  # the least recently used shape
        state["output_bytes"] -= sum(a.nbytes for a in dropped)
    if nbytes <= OUTPUT_CACHE_BYTES:
        state["outputs"].setdefault(key, []).append(array)
        state["output_bytes"] += nbytes
    return array


def clear():
    """Forget this thread's scratch buffers and recycled outputs (arrays still in use stay valid)."""
    _local.state = None


def _address(array):
    return array.__array_interface__["data"][0]


@contextlib.contextmanager
def constant_weights(arrays, memo):
    """Inside the block (on this thread), the NumPy arrays among `arrays` are constants (see the module doc);
    one memo goes with one list of arrays."""
    previous = getattr(_local, "constants", None)
    addresses = memo.get("constant addresses")  # the same arrays on every call with this memo: found once
    if addresses is None:
        addresses = memo["constant addresses"] = frozenset(_address(a) for a in arrays if isinstance(a, np.ndarray))
    _local.constants = (addresses, memo)
    try:
        yield
    finally:
        _local.constants = previous


def prepared(w, role, make):
    """make(w), kept in the memo of the enclosing `constant_weights` block when w's memory is one of its
    constants (the same memory, shape, strides and dtype: the same values), else computed now."""
    block = getattr(_local, "constants", None)
    if block is None or _address(w) not in block[0]:
        return make(w)
    key = (role, _address(w), w.shape, w.strides, w.dtype.str)
    memo = block[1]
    if key not in memo:
        memo[key] = make(w)
    return memo[key]

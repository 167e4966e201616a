"""Scratch buffers that live across training steps: the one place where CPU kernels keep memory.

A kernel that needs a big temporary (im2col's `cols`, the masked gradient of a fused conv + ReLU, ...) asks
for it here by role: `scratch("cols", shape, dtype)`. Why it pays: a fresh multi-megabyte NumPy array is a
fresh mmap, and the first write to each of its pages costs a page fault and the kernel zeroing the page
(~80 µs per MB here, as much as the kernel's own pass over the buffer). A buffer kept from the previous
step is already mapped, and often still in the L3 cache.

Rules: a scratch array never leaves the kernel that asked for it (an array returned to the caller, or kept
for the backward, must be freshly allocated), and two live temporaries need two roles. There is one buffer
per (thread, role, dtype), grown to the largest size asked for, so memory stays bounded whatever the model:
one buffer per role, not one per layer shape. Buffers are per thread, so that two threads running kernels
never share one.
"""
import threading

import numpy as np

_local = threading.local()


def scratch(role, shape, dtype):
    """An uninitialised C-contiguous array of `shape` and `dtype`, reused by every call with the same role."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    dtype = np.dtype(dtype)
    size = 1
    for s in shape:
        size *= int(s)
    key = (role, dtype)
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(max(size, 1), dtype)
    return buf[:size].reshape(shape)


def clear():
    """Free this thread's scratch buffers (tests, or after a model is done)."""
    _local.buffers = {}

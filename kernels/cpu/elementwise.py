"""Elementwise ops, array creation and copies on the CPU.

These are NumPy's own compiled loops (ufuncs): for `a + b` with broadcasting there is nothing a Numba loop
would add. The heavy ops of a CNN (conv, pooling, norms, losses) have Numba kernels in their own files.
Shapes: any; `a`, `b` broadcast as in NumPy; either may be a Python scalar.
"""
import numpy as np
from numba import njit

from . import threads
from .workspace import output

LAYOUT_SWAP_MIN_BYTES = 1 << 18  # NCHW <-> NHWC copies from this size go to the kernels below
LAYOUT_SWAP_THREADS_BYTES = 1 << 22  # and from this size to tinycnn's threads (waking them costs ~50 µs)


def asarray(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def to_numpy(a):
    return a


def zeros(shape, dtype):
    return np.zeros(shape, dtype)


def ones(shape, dtype):
    return np.ones(shape, dtype)


def full(shape, value, dtype):
    return np.full(shape, value, dtype)


def zeros_like(a):
    return np.zeros_like(a)


def copy(a):
    return a.copy()


def astype(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def reshape(a, shape):
    return np.ascontiguousarray(a).reshape(shape)


def transpose(a, axes):
    """np.transpose, materialised. NCHW -> NHWC and back (a channels-last model's input and its fallback
    convs) have parallel kernels: NumPy's one-thread strided copy took 1 ms for the regressor's 16×3×128×128
    batch, these 0.14."""
    axes = tuple(axes) if axes is not None else None
    if a.ndim == 4 and a.nbytes >= LAYOUT_SWAP_MIN_BYTES and axes in ((0, 2, 3, 1), (0, 3, 1, 2)):
        a = np.ascontiguousarray(a)
        out = output(tuple(a.shape[i] for i in axes), a.dtype)
        (_channels_to_last if axes == (0, 2, 3, 1) else _channels_to_first)(a, out)
        return out
    return np.ascontiguousarray(np.transpose(a, axes))


def _channels_to_last(x, y):
    """y[n, h, w, c] = x[n, c, h, w], in ranges of the output rows (n, h) on the threads of
    kernels/cpu/threads.py (a serial `nogil` kernel: a `prange` loop costs about a second more to compile)."""
    _rows_on_threads(_channels_to_last_rows, x, y, x.shape[0] * x.shape[2])


def _channels_to_first(x, y):
    """y[n, c, h, w] = x[n, h, w, c], in ranges of the input rows (n, h), as _channels_to_last."""
    _rows_on_threads(_channels_to_first_rows, x, y, x.shape[0] * x.shape[1])


def _rows_on_threads(kernel, x, y, rows):
    """kernel(x, y, start, stop) over range(rows): one call below LAYOUT_SWAP_THREADS_BYTES, else ranges of it."""
    if x.nbytes < LAYOUT_SWAP_THREADS_BYTES:
        kernel(x, y, 0, rows)
    else:
        threads.parallel_range(lambda start, stop: kernel(x, y, start, stop), rows)


@njit(cache=True, nogil=True, error_model="numpy")
def _channels_to_last_rows(x, y, r0, r1):
    N, C, H, W = x.shape
    for r in range(r0, r1):
        n, h = r // H, r % H
        row = y[n, h]
        for c in range(C):
            plane_row = x[n, c, h]
            for w in range(W):
                row[w, c] = plane_row[w]


@njit(cache=True, nogil=True, error_model="numpy")
def _channels_to_first_rows(x, y, r0, r1):
    N, H, W, C = x.shape
    for r in range(r0, r1):
        n, h = r // H, r % H
        row = x[n, h]
        for c in range(C):
            plane_row = y[n, c, h]
            for w in range(W):
                plane_row[w] = row[w, c]


def concatenate(arrays, axis):
    """Into a recycled array (workspace.py): a U-Net's skip concatenations are big, and a fresh array
    page-faults in (as much time as the copy itself)."""
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    out = output(tuple(shape), np.result_type(*arrays))
    return np.concatenate(arrays, axis=axis, out=out)


def slice_axis(a, axis, start, stop):
    """a[..., start:stop, ...] along `axis`, as a contiguous (recycled) array."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, stop)
    part = a[tuple(index)]
    out = output(part.shape, a.dtype)
    out[...] = part
    return out


def getitem(a, index):
    return np.require(a[index], requirements="C")  # keeps x[i, j] 0-d


def getitem_backward(g, in_shape, index):
    """Gradient of a[index]: scatter-add g back into zeros of the input's shape."""
    dx = np.zeros(in_shape, g.dtype)
    np.add.at(dx, index, g)
    return dx


add = np.add
sub = np.subtract
mul = np.multiply
div = np.true_divide
maximum = np.maximum
neg = np.negative
exp = np.exp
log = np.log
sqrt = np.sqrt
abs = np.abs


def pow_scalar(a, p):
    return np.power(a, a.dtype.type(p))


def where_positive(cond, a, b):
    """cond > 0 ? a : b, elementwise (a, b arrays or scalars), in cond's dtype."""
    return np.where(cond > 0, a, b).astype(cond.dtype, copy=False)


def sum_to_shape(g, shape):
    """Sum g over the axes that broadcasting stretched, so that the result has `shape`."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    out = g.sum(axis=axes, keepdims=True) if axes else g
    return out.reshape(shape)


def isfinite_all(a):
    return bool(np.isfinite(a).all())

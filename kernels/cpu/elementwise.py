"""Elementwise ops, array creation and copies on the CPU.

These are NumPy's own compiled loops (ufuncs): for `a + b` with broadcasting there is nothing a Numba loop
would add. The heavy ops of a CNN (conv, pooling, norms, losses) have Numba kernels in their own files.
Shapes: any; `a`, `b` broadcast as in NumPy; either may be a Python scalar.
"""
import numpy as np

from .workspace import output


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
    return np.ascontiguousarray(np.transpose(a, axes))


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

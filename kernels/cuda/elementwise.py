"""Elementwise ops, array creation and copies on the GPU (the same functions as kernels/cpu/elementwise.py).

Every kernel here is a grid-stride loop: thread t of a grid of T threads handles the elements t, t + T,
t + 2T, ... of the output, so one launch of a bounded grid covers any size.

Broadcasting and strided copies share one piece of index arithmetic, `strided_offset` (layout.py, with
`full`: the layer below this module and reduce.py, which both use it).
"""
import math

import numpy as np
from numba import cuda

from . import _launch as gpu
from . import reduce
# fill_kernel is used by tests and benchmarks/gpu_bench.py as E.fill_kernel
from .layout import broadcast_strides, contiguous_strides, fill_kernel, full, padded, strided_offset  # noqa: F401

# ------------------------------------------------------------------------------------------ kernels


@cuda.jit(cache=True)
def cast_copy_kernel(out, a):
    """out[i] = a[i], converted to out's dtype on the store. out, a: 1-D, same size."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i]


@cuda.jit(cache=True)
def strided_copy_kernel(dst, dst_off, dst_strides, src, src_off, src_strides, shape, n):
    """dst[dst_off + offset(i, dst_strides)] = src[src_off + offset(i, src_strides)] for the n elements of
    `shape`. dst, src: 1-D views of whole arrays. Serves transpose, slicing, concatenation, broadcast_to."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dst[dst_off + strided_offset(i, shape, dst_strides)] = src[src_off + strided_offset(i, shape, src_strides)]


ADD, SUB, MUL, DIV, MAXIMUM = range(5)


@cuda.jit(device=True)
def binary_op(x, y, op):
    if op == ADD:
        return x + y
    if op == SUB:
        return x - y
    if op == MUL:
        return x * y
    if op == DIV:
        return x / y
    return x if (x > y or x != x) else y   # maximum; a NaN on either side propagates, as in NumPy


@cuda.jit(cache=True)
def binary_same_kernel(out, a, b, op):
    """out[i] = a[i] op b[i]: both operands have the output's shape (the common case)."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = binary_op(a[i], b[i], op)


@cuda.jit(cache=True)
def binary_scalar_kernel(out, a, s, scalar_first, op):
    """out[i] = a[i] op s (or s op a[i] when scalar_first); s is a number of out's dtype."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        if scalar_first:
            out[i] = binary_op(s, a[i], op)
        else:
            out[i] = binary_op(a[i], s, op)


@cuda.jit(cache=True)
def binary_broadcast_kernel(out, a, a_strides, b, b_strides, shape, op):
    """out[i] = a[offset_a(i)] op b[offset_b(i)], the operands broadcast to `shape` by zero strides."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = binary_op(a[strided_offset(i, shape, a_strides)], b[strided_offset(i, shape, b_strides)], op)


NEG, EXP, LOG, SQRT, ABS, POW = range(6)


@cuda.jit(cache=True)
def unary_kernel(out, a, op, p):
    """out[i] = f(a[i]) for f in neg exp log sqrt abs pow(·, p)."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        x = a[i]
        if op == NEG:
            out[i] = -x
        elif op == EXP:
            out[i] = math.exp(x)
        elif op == LOG:
            if x > 0:
                out[i] = math.log(x)
            elif x == 0:
                out[i] = -math.inf
            else:
                out[i] = math.nan
        elif op == SQRT:
            if x >= 0:
                out[i] = math.sqrt(x)
            else:
                out[i] = math.nan
        elif op == ABS:
            out[i] = x if x >= 0 else -x    # (not abs(): this module's own `abs` shadows the builtin)
        else:
            out[i] = x ** p


@cuda.jit(cache=True)
def where_scalars_kernel(out, cond, x, y):
    """out[i] = cond[i] > 0 ? x : y, x and y numbers."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = x if cond[i] > 0 else y


@cuda.jit(cache=True)
def where_kernel(out, cond, c_strides, a, a_strides, b, b_strides, shape):
    """out[i] = cond > 0 ? a : b, the three broadcast to `shape`."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        if cond[strided_offset(i, shape, c_strides)] > 0:
            out[i] = a[strided_offset(i, shape, a_strides)]
        else:
            out[i] = b[strided_offset(i, shape, b_strides)]


@cuda.jit(cache=True)
def all_finite_kernel(flag, a):
    """flag[0] = 0 if some a[i] is inf or NaN (flag starts at 1; every writer writes the same 0)."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        if math.isnan(a[i]) or math.isinf(a[i]):
            flag[0] = 0


@cuda.jit(cache=True)
def gather_rows_kernel(out, a, index, row):
    """out[r, :] = a[index[r], :] with rows of `row` elements (index may hold negative indices)."""
    rows = a.size // row
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r = i // row
        j = index[r]
        if j < 0:
            j += rows
        out[i] = a[j * row + i % row]


@cuda.jit(cache=True)
def scatter_add_rows_kernel(dx, g, index, row):
    """dx[index[r], :] += g[r, :] (atomic: an index may repeat)."""
    rows = dx.size // row
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        r = i // row
        j = index[r]
        if j < 0:
            j += rows
        cuda.atomic.add(dx, j * row + i % row, g[i])


# ------------------------------------------------------------------------------------------ creation, copies


def asarray(a, dtype):
    """A device array of `dtype` from a host array (an explicit copy) or a device array (cast if needed)."""
    dtype = np.dtype(dtype)
    if gpu.is_device_array(a):
        return a if np.dtype(a.dtype) == dtype else astype(a, dtype)
    return gpu.to_device(np.ascontiguousarray(a, dtype=dtype))


def to_numpy(a):
    return a.copy_to_host()


def zeros(shape, dtype):
    return full(shape, 0, dtype)


def ones(shape, dtype):
    return full(shape, 1, dtype)


def zeros_like(a):
    return zeros(a.shape, a.dtype)


def astype(a, dtype):
    out = gpu.empty(a.shape, dtype)
    if out.size:
        gpu.launch1d(cast_copy_kernel, out.size, gpu.flat(out), gpu.flat(a))
    return out


def copy(a):
    return astype(a, a.dtype)


def reshape(a, shape):
    """A view with a new shape (our arrays are C-contiguous, so this never copies)."""
    return a.reshape(tuple(int(s) for s in shape))


def _strided_copy(dst, dst_off, dst_strides, src, src_off, src_strides, shape):
    n = int(np.prod(shape))
    if n == 0:
        return
    pshape, dst_strides = padded(shape, dst_strides)
    _, src_strides = padded(shape, src_strides)
    gpu.launch1d(strided_copy_kernel, n, gpu.flat(dst), int(dst_off), dst_strides,
                 gpu.flat(src), int(src_off), src_strides, pshape, n)


def transpose(a, axes):
    axes = tuple(int(x) for x in axes)
    out_shape = tuple(a.shape[x] for x in axes)
    src = contiguous_strides(a.shape)
    out = gpu.empty(out_shape, a.dtype)
    _strided_copy(out, 0, contiguous_strides(out_shape), a, 0, tuple(src[x] for x in axes), out_shape)
    return out


def broadcast_to(a, shape):
    """A contiguous copy of `a` broadcast to `shape`."""
    shape = tuple(int(s) for s in shape)
    out = gpu.empty(shape, a.dtype)
    _strided_copy(out, 0, contiguous_strides(shape), a, 0, broadcast_strides(tuple(a.shape), shape), shape)
    return out


def concatenate(arrays, axis):
    arrays = list(arrays)
    shape = list(arrays[0].shape)
    shape[axis] = sum(int(a.shape[axis]) for a in arrays)
    dtype = np.result_type(*[np.dtype(a.dtype) for a in arrays])
    out = gpu.empty(shape, dtype)
    out_strides = contiguous_strides(shape)
    start = 0
    for a in arrays:
        _strided_copy(out, start * out_strides[axis], out_strides, a, 0, contiguous_strides(a.shape), a.shape)
        start += int(a.shape[axis])
    return out


def slice_axis(a, axis, start, stop):
    shape = list(a.shape)
    shape[axis] = max(0, stop - start)
    strides = contiguous_strides(a.shape)
    out = gpu.empty(shape, a.dtype)
    _strided_copy(out, 0, contiguous_strides(shape), a, start * strides[axis], strides, shape)
    return out


# ------------------------------------------------------------------------------------------ indexing


def _is_basic(index):
    """Basic indexing: ints, slices, None and Ellipsis only (views; no element is read twice)."""
    for p in index if isinstance(index, tuple) else (index,):
        if isinstance(p, (bool, np.bool_)):
            return False
        if not (isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis):
            return False
    return True


def _basic_view(shape, index):
    """(offset, shape, strides) in elements of `a[index]` for basic indexing, computed by NumPy on a probe
    array of 1-byte items that is never read."""
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=shape,
                                            strides=contiguous_strides(shape))
    index = index if isinstance(index, tuple) else (index,)
    if not any(p is Ellipsis for p in index):
        index = index + (Ellipsis,)    # so that all-integer indices give a 0-d view, not a scalar
    view = probe[index]
    offset = view.__array_interface__["data"][0] - probe.__array_interface__["data"][0]
    return offset, view.shape, view.strides


def _row_index(index, rows):
    """An integer index array on the device for `a[index]` along axis 0 (lists, host or device arrays)."""
    if gpu.is_device_array(index):
        if np.dtype(index.dtype).kind == "b":
            raise NotImplementedError("a boolean mask on the device: index with a host array on cuda")
        return index
    idx = np.asarray(index)
    if idx.dtype.kind == "b":
        idx = np.flatnonzero(idx)
    if idx.dtype.kind not in "iu" or idx.ndim != 1:
        raise NotImplementedError("cuda getitem supports basic indexing (ints, slices, None, ...) and one "
                                  f"1-D integer or boolean array along axis 0, got {index!r}")
    if idx.size and (idx.max() >= rows or idx.min() < -rows):
        raise IndexError(f"index out of range for axis 0 of size {rows}")
    return gpu.to_device(idx.astype(np.int64))


def getitem(a, index):
    if _is_basic(index):
        offset, shape, strides = _basic_view(tuple(a.shape), index)
        out = gpu.empty(shape, a.dtype)
        _strided_copy(out, 0, contiguous_strides(shape), a, offset, strides, shape)
        return out
    idx = _row_index(index, a.shape[0])
    out = gpu.empty((idx.size,) + tuple(a.shape[1:]), a.dtype)
    if out.size:
        row = int(np.prod(a.shape[1:]))
        gpu.launch1d(gather_rows_kernel, out.size, gpu.flat(out), gpu.flat(a), idx, row)
    return out


def getitem_backward(g, in_shape, index):
    """Gradient of a[index]: g scattered back into zeros of the input's shape (added where an index repeats)."""
    dx = zeros(in_shape, g.dtype)
    if _is_basic(index):
        offset, shape, strides = _basic_view(tuple(in_shape), index)
        _strided_copy(dx, offset, strides, g, 0, contiguous_strides(shape), shape)
        return dx
    idx = _row_index(index, in_shape[0])
    if g.size:
        row = int(np.prod(in_shape[1:]))
        gpu.launch1d(scatter_add_rows_kernel, g.size, gpu.flat(dx), gpu.flat(g), idx, row)
    return dx


# ------------------------------------------------------------------------------------------ arithmetic


def _is_number(x):
    return isinstance(x, (int, float, np.number)) and not gpu.is_device_array(x)


def _binary(a, b, op):
    if _is_number(a) and _is_number(b):
        raise TypeError("at least one operand must be a device array")
    if _is_number(b) or _is_number(a):
        arr, s, first = (a, b, False) if _is_number(b) else (b, a, True)
        dtype = np.result_type(np.dtype(arr.dtype), s)
        if op == DIV and dtype.kind in "iub":
            dtype = np.dtype(np.float64)
        out = gpu.empty(arr.shape, dtype)
        if out.size:
            gpu.launch1d(binary_scalar_kernel, out.size, gpu.flat(out), gpu.flat(arr), gpu.scalar(s, dtype), first, op)
        return out
    dtype = np.result_type(np.dtype(a.dtype), np.dtype(b.dtype))
    if op == DIV and dtype.kind in "iub":
        dtype = np.dtype(np.float64)
    sa, sb = tuple(a.shape), tuple(b.shape)
    shape = np.broadcast_shapes(sa, sb)
    out = gpu.empty(shape, dtype)
    if out.size == 0:
        return out
    if sa == sb:
        gpu.launch1d(binary_same_kernel, out.size, gpu.flat(out), gpu.flat(a), gpu.flat(b), op)
        return out
    pshape, astr = padded(shape, broadcast_strides(sa, shape))
    _, bstr = padded(shape, broadcast_strides(sb, shape))
    gpu.launch1d(binary_broadcast_kernel, out.size, gpu.flat(out), gpu.flat(a), astr, gpu.flat(b), bstr, pshape, op)
    return out


def add(a, b):
    return _binary(a, b, ADD)


def sub(a, b):
    return _binary(a, b, SUB)


def mul(a, b):
    return _binary(a, b, MUL)


def div(a, b):
    return _binary(a, b, DIV)


def maximum(a, b):
    return _binary(a, b, MAXIMUM)


def _unary(a, op, p=0.0):
    dtype = np.dtype(a.dtype)
    if op in (EXP, LOG, SQRT, POW) and dtype.kind in "iub":
        dtype = np.dtype(np.float64)
    out = gpu.empty(a.shape, dtype)
    if out.size:
        gpu.launch1d(unary_kernel, out.size, gpu.flat(out), gpu.flat(a), op, gpu.scalar(p, dtype))
    return out


def neg(a):
    return _unary(a, NEG)


def exp(a):
    return _unary(a, EXP)


def log(a):
    return _unary(a, LOG)


def sqrt(a):
    return _unary(a, SQRT)


def abs(a):
    return _unary(a, ABS)


def pow_scalar(a, p):
    return _unary(a, POW, p)


def where_positive(cond, a, b):
    """cond > 0 ? a : b, elementwise (a, b device arrays or numbers), in cond's dtype."""
    dtype = np.dtype(cond.dtype)
    if _is_number(a) and _is_number(b):
        out = gpu.empty(cond.shape, dtype)
        if out.size:
            gpu.launch1d(where_scalars_kernel, out.size, gpu.flat(out), gpu.flat(cond),
                         gpu.scalar(a, dtype), gpu.scalar(b, dtype))
        return out
    a = full((), a, dtype) if _is_number(a) else a
    b = full((), b, dtype) if _is_number(b) else b
    shape = np.broadcast_shapes(tuple(cond.shape), tuple(a.shape), tuple(b.shape))
    out = gpu.empty(shape, dtype)
    if out.size:
        pshape, cs = padded(shape, broadcast_strides(tuple(cond.shape), shape))
        _, as_ = padded(shape, broadcast_strides(tuple(a.shape), shape))
        _, bs = padded(shape, broadcast_strides(tuple(b.shape), shape))
        gpu.launch1d(where_kernel, out.size, gpu.flat(out), gpu.flat(cond), cs, gpu.flat(a), as_, gpu.flat(b), bs,
                     pshape)
    return out


def sum_to_shape(g, shape):
    """Sum g over the axes that broadcasting stretched, so that the result has `shape`."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    out = reduce.sum(g, axes, True) if axes else g
    return out.reshape(shape)


def isfinite_all(a):
    if a.size == 0:
        return True
    flag = full((1,), 1, np.int32)
    gpu.launch1d(all_finite_kernel, a.size, flag, gpu.flat(a))
    return bool(flag.copy_to_host()[0])

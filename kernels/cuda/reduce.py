"""Reductions on the GPU: sum and max over a tuple of axes, argmax; and the shared-memory block reduction that
the batch-norm and loss kernels use too.

A reduction of `a` over `axis` has M outputs, each combining R elements. Output o starts at element
offset(o, kept shape, kept strides) and its r-th element sits offset(r, reduced shape, reduced strides) further
(adjacent axes that are contiguous in memory are merged first, so the index arithmetic is short).

Two kernels, chosen by the sizes:
- few elements per output (R small): one thread per output, a plain loop over its R elements;
- otherwise a block per (output, slice): the RED threads of the block stride over the slice, then combine
  their partial values in shared memory (`block_reduce`, a tree: RED/2, RED/4, ... 1 threads). When there
  are too few outputs to fill the GPU, the R elements are cut into S slices: a first launch writes M × S
  partial results, a second one reduces each row of S. No atomics: the result does not depend on timing.
"""
import numpy as np
from numba import cuda

from . import _launch as gpu
from ._launch import RED
from .layout import contiguous_strides, full, padded, strided_offset

SUM, MAX = 0, 1


@cuda.jit(device=True)
def combine(x, y, op):
    if op == SUM:
        return x + y
    return x if (x > y or x != x) else y   # max, NaN propagates as in NumPy


@cuda.jit(device=True)
def block_reduce(sh, value, op):
    """Every thread of a 1-D block passes its value; every thread gets the combination of all of them.
    sh: a shared array of blockDim.x elements (a power of two). Tree: at step s, thread t < s combines
    sh[t] and sh[t + s]; s halves until 1."""
    tid = cuda.threadIdx.x
    sh[tid] = value
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tid < s:
            sh[tid] = combine(sh[tid], sh[tid + s], op)
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()  # everyone has read sh[0] before sh is reused
    return total


@cuda.jit(cache=True)
def reduce_block_kernel(out, a, kshape, kstrides, rshape, rstrides, R, per_slice, identity, op):
    """out[o·S + s] = combination of the elements [s·per_slice, (s+1)·per_slice) of output o's R elements.
    grid (M, S), block RED threads; S = gridDim.y (S = 1: out is the result)."""
    sh = cuda.shared.array(RED, dtype=out.dtype)
    o = cuda.blockIdx.x
    s = cuda.blockIdx.y
    base = strided_offset(o, kshape, kstrides)
    acc = identity
    for r in range(s * per_slice + cuda.threadIdx.x, min(R, (s + 1) * per_slice), cuda.blockDim.x):
        acc = combine(acc, a[base + strided_offset(r, rshape, rstrides)], op)
    total = block_reduce(sh, acc, op)
    if cuda.threadIdx.x == 0:
        out[o * cuda.gridDim.y + s] = total


@cuda.jit(cache=True)
def reduce_thread_kernel(out, a, kshape, kstrides, rshape, rstrides, R, identity, op):
    """out[o] = combination of output o's R elements, one thread per output (grid-stride)."""
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        base = strided_offset(o, kshape, kstrides)
        acc = identity
        for r in range(R):
            acc = combine(acc, a[base + strided_offset(r, rshape, rstrides)], op)
        out[o] = acc


@cuda.jit(cache=True)
def argmax_kernel(out, a, kshape, kstrides, R, rstride):
    """out[o] = index of the first maximum (or first NaN) of the R elements a[base + r·rstride]."""
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        base = strided_offset(o, kshape, kstrides)
        best = a[base]
        arg = 0
        for r in range(1, R):
            v = a[base + r * rstride]
            if v > best or (v != v and best == best):
                best = v
                arg = r
        out[o] = arg


def _merge(shape, strides):
    """Merge neighbouring axes that are contiguous with each other; drop axes of size 1."""
    ms, mt = [], []
    for n, s in zip(shape, strides):
        if n == 1:
            continue
        if ms and mt[-1] == s * n:
            ms[-1] *= n
            mt[-1] = s
        else:
            ms.append(n)
            mt.append(s)
    return padded(ms, mt)


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(sorted(int(x) % ndim for x in axis))


def _reduce(a, axis, keepdims, op):
    shape = tuple(a.shape)
    axes = _axes(axis, len(shape))
    kept = [d for d in range(len(shape)) if d not in axes]
    out_shape = tuple(1 if d in axes else shape[d] for d in range(len(shape))) if keepdims else \
        tuple(shape[d] for d in kept)
    dtype = np.dtype(a.dtype)
    if op == SUM:
        dtype = np.add.reduce(np.zeros(1, dtype)).dtype   # ints and bools sum to int64, as in NumPy
        identity = 0
    elif dtype.kind == "f":
        identity = -np.inf
    else:
        identity = np.iinfo(dtype).min
    M = int(np.prod([shape[d] for d in kept]))
    R = int(np.prod([shape[d] for d in axes]))
    if R == 0 and op == MAX:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    if M == 0 or R == 0:
        return full(out_shape, identity, dtype)
    out = gpu.empty(out_shape, dtype)
    strides = contiguous_strides(shape)
    kshape, kstrides = _merge([shape[d] for d in kept], [strides[d] for d in kept])
    rshape, rstrides = _merge([shape[d] for d in axes], [strides[d] for d in axes])
    identity = gpu.scalar(identity, dtype)
    src = gpu.flat(a)
    if R <= 32:
        gpu.launch1d(reduce_thread_kernel, M, gpu.flat(out), src, kshape, kstrides, rshape, rstrides, R, identity, op)
        return out
    slices, per = gpu.split(M, R, 4 * RED)
    if slices == 1:
        gpu.launch(reduce_block_kernel, (M, 1), RED, gpu.flat(out), src, kshape, kstrides, rshape, rstrides,
                   R, R, identity, op)
        return out
    partial = gpu.workspace("reduce.partial", (M * slices,), dtype)
    gpu.launch(reduce_block_kernel, (M, slices), RED, partial, src, kshape, kstrides, rshape, rstrides,
               R, per, identity, op)
    ps, pstr = padded((M,), (slices,))
    qs, qstr = padded((slices,), (1,))
    gpu.launch(reduce_block_kernel, (M, 1), RED, gpu.flat(out), partial, ps, pstr, qs, qstr,
               slices, slices, identity, op)
    return out


def sum(a, axis, keepdims):
    return _reduce(a, axis, keepdims, SUM)


def max(a, axis, keepdims):
    return _reduce(a, axis, keepdims, MAX)


def argmax(a, axis):
    """Index of the maximum along one axis (or of the flattened array when axis is None), int64."""
    if axis is None:
        a, axis = a.reshape(a.size), 0
    elif not isinstance(axis, (int, np.integer)):
        (axis,) = axis
    shape = tuple(a.shape)
    axis = int(axis) % len(shape)
    if shape[axis] == 0:
        raise ValueError("attempt to get argmax of an empty sequence")
    out_shape = shape[:axis] + shape[axis + 1:]
    out = gpu.empty(out_shape, np.int64)
    if out.size:
        strides = contiguous_strides(shape)
        kshape, kstrides = padded(out_shape, strides[:axis] + strides[axis + 1:])
        gpu.launch1d(argmax_kernel, out.size, gpu.flat(out), gpu.flat(a), kshape, kstrides, shape[axis], strides[axis])
    return out

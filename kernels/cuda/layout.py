"""Index arithmetic and filled arrays on the GPU: the layer under elementwise.py and reduce.py (which both
use it, so that neither imports the other's internals: elementwise's `sum_to_shape` needs reduce's `sum`).

Broadcasting, strided copies and reductions share one piece of index arithmetic, `strided_offset`: the i-th
element of a C-ordered `shape` sits at Σ_d idx_d · stride_d in an array with element `strides`, where idx is i
written in the mixed radix of `shape`. A broadcast operand has stride 0 along its stretched axes, a transpose
permutes the strides, a slice adds an offset. Shapes are padded on the left to MAXDIM dimensions (size 1,
stride 0), so one compiled kernel serves every rank.
"""
from numba import cuda

from . import _launch as gpu
from ._launch import MAXDIM

# ------------------------------------------------------------------------------------------ index math


@cuda.jit(device=True)
def strided_offset(i, shape, strides):
    """Element offset of the i-th element (C order over `shape`) of an array with element `strides`."""
    off = 0
    for d in range(MAXDIM - 1, -1, -1):
        if i == 0:      # the remaining (outer) indices are all 0
            break
        n = shape[d]
        off += (i % n) * strides[d]
        i //= n
    return off


def contiguous_strides(shape):
    strides, s = [], 1
    for n in reversed(shape):
        strides.append(s)
        s *= n
    return tuple(reversed(strides))


def padded(shape, strides=None):
    """(shape, strides) padded on the left to MAXDIM dimensions, as int64 tuples for the kernels."""
    shape = tuple(int(s) for s in shape)
    strides = contiguous_strides(shape) if strides is None else tuple(int(s) for s in strides)
    if len(shape) > MAXDIM:
        raise ValueError(f"at most {MAXDIM} dimensions are supported on cuda, got shape {shape}")
    pad = MAXDIM - len(shape)
    return (1,) * pad + shape, (0,) * pad + strides


def broadcast_strides(shape, out_shape):
    """Element strides that read a C-contiguous `shape` as if broadcast to `out_shape` (0 on stretched axes)."""
    strides = contiguous_strides(shape)
    lead = len(out_shape) - len(shape)
    return tuple(0 if i < lead or shape[i - lead] == 1 else strides[i - lead] for i in range(len(out_shape)))


# ------------------------------------------------------------------------------------------ filled arrays

@cuda.jit(cache=True)
def fill_kernel(out, value):
    """out[i] = value. out: 1-D."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = value


def full(shape, value, dtype):
    out = gpu.empty(shape, dtype)
    if out.size:
        gpu.launch1d(fill_kernel, out.size, gpu.flat(out), gpu.scalar(value, out.dtype))
    return out

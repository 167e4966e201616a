"""GEMMs for the CPU kernels, split over tinycnn's threads (kernels/cpu/threads.py says why).

    matmul(a, b, out=None)  ==  np.matmul(a, b, out=out)    a (..., M, K), b (..., K, N) -> (..., M, N)

The product is cut into one piece per thread, along the stack of matrices when there is one, else along
the longer side of the output (or along the inner dimension when it is much longer than the output), and each piece is a one-thread BLAS call on a thread of our pool. Measured on
the 16 Winograd GEMMs of the tutorial's second conv (64×64 @ 64×1,728 each), 2 threads: OpenBLAS's own
2 threads 1.53 ms, this 1.46 ms, one thread 2.93 ms. Products under MIN_FLOPS_PER_THREAD per thread are
not worth waking a thread for and run in the caller.
"""
import math

import numpy as np

from . import threads as _threads

MIN_FLOPS_PER_THREAD = 4e6  # ~40 µs of one core's SGEMM: below that the hand-off costs more than it saves
_COLUMN_ALIGN = 16          # column pieces start at multiples of 16 floats (a cache line)
_LONG_REDUCTION = 64        # split the inner dimension when it is this many times the output's longer side


def matmul(a, b, out=None):
    """np.matmul(a, b, out=out) with the work split over the threads; returns out."""
    if a.ndim == 2 or b.ndim == 2:  # (np.broadcast_shapes costs µs: this runs for every GEMM of a predict)
        batch = a.shape[:-2] + b.shape[:-2]
    else:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    shape = batch + (a.shape[-2], b.shape[-1])
    if out is None:
        out = np.empty(shape, np.result_type(a, b))
    flops = 2.0 * math.prod(shape) * a.shape[-1]
    parts = max(1, min(_threads.num_threads(), int(flops // MIN_FLOPS_PER_THREAD)))
    if parts == 1:
        with _threads.one_blas_thread():
            np.matmul(a, b, out=out)
        return out
    if out.ndim == 2 and a.shape[-1] >= _LONG_REDUCTION * max(shape):
        return _split_reduction(a, b, out, parts)
    pieces = _pieces(a, b, out, parts)
    _threads.parallel_for(lambda i: np.matmul(pieces[i][0], pieces[i][1], out=pieces[i][2]), len(pieces))
    return out


def _split_reduction(a, b, out, parts):
    """A small output summed over a long inner dimension (a weight gradient dW = dyᵀ x over all the pixels
    of a batch): each thread takes a range of the sum and writes its own partial product, then they are
    added. Cut along the output instead, every thread would read all of both operands."""
    ranges = _ranges(a.shape[-1], parts, 1)
    partial = np.empty((len(ranges),) + out.shape, out.dtype)
    _threads.parallel_for(lambda i: np.matmul(a[:, ranges[i]], b[ranges[i]], out=partial[i]), len(ranges))
    return np.sum(partial, axis=0, out=out)


def _pieces(a, b, out, parts):
    """Cut the product into `parts` independent products (a_i, b_i, out_i) writing disjoint parts of out."""
    if out.ndim == 3 and out.shape[0] >= parts:  # along the stack: whole matrices per piece
        def take(m, r):
            return m[r] if m.ndim == 3 else m
        return [(take(a, r), take(b, r), out[r]) for r in _ranges(out.shape[0], parts, 1)]
    if out.shape[-2] > out.shape[-1]:  # along the rows of a and out
        return [(a[..., r, :], b, out[..., r, :]) for r in _ranges(out.shape[-2], parts, 1)]
    return [(a, b[..., :, r], out[..., :, r]) for r in _ranges(out.shape[-1], parts, _COLUMN_ALIGN)]


def _ranges(n, parts, align):
    """`parts` slices covering range(n), of nearly equal lengths, boundaries at multiples of `align`."""
    step = -(-n // parts)
    step = -(-step // align) * align
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]

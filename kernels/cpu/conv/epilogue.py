"""Epilogues of the NCHW convs: bias and activation on the output, the ReLU mask on the output gradient,
the bias gradient's plane sums."""
import numpy as np
from numba import njit

from .. import threads
from ..activation import FUSED_CODES, fused_activate
from ..workspace import output, scratch

NO_ACTIVATION = FUSED_CODES[None]


def _bias_or_zeros(b, F, dtype):
    return np.zeros(F, dtype) if b is None else np.ascontiguousarray(b, dtype=dtype)


def _gradient_buffers(dy, x_shape, w_shape, need_dx, need_dw):
    """The backward's outputs: dx (recycled, overwritten by the kernels) and dw (zeros), each when needed, and
    bias_sums (N, F), the Σ over each (n, f) plane of dz, summed over n for db."""
    dtype = dy.dtype
    dx = output(x_shape, dtype) if need_dx else None
    dw = np.zeros(w_shape, dtype) if need_dw else None
    bias_sums = np.empty((dy.shape[0], dy.shape[1]), np.float64)
    return dx, dw, bias_sums


def _masked_chunk(dy3, y, n0, n1, bias_sums, need_sums):
    """dz for images n0..n1 as (n, F, P): dy itself, or dy · [y > 0] in a scratch buffer; and, when asked (or
    free), the sums of its planes into bias_sums[n0:n1]."""
    if y is None:
        if need_sums:
            _plane_sums(dy3, bias_sums[n0:n1])
        return dy3
    dz = scratch("conv.dz", dy3.shape, dy3.dtype)
    _relu_grad_planes(dy3, y[n0:n1].reshape(dy3.shape), dz, bias_sums[n0:n1])
    return dz


def _bias_grad(dy, y, bias_sums):
    """db = Σ_{n, oh, ow} dz, dz = dy (y None) or dy · [y > 0]."""
    N, F = dy.shape[0], dy.shape[1]
    dy3 = dy.reshape(N, F, -1)
    _masked_chunk(dy3, y, 0, N, bias_sums, True)
    return bias_sums.sum(axis=0).astype(dy.dtype)


# ---------------------------------------------------------------------- epilogues: bias, ReLU, mask, sums
#
# y, dy, dz are seen as (N, F, P) (P = OH·OW); each thread takes whole (n, f) planes: each function below
# runs its serial `nogil` kernel on ranges of the planes n·F + f, on the threads of kernels/cpu/threads.py (a
# `prange` loop costs each kernel about a second more to compile on an empty cache).

def _bias_act(y, b, act):
    """y[n, f] = act(y[n, f] + b[f]) in place (act: a FUSED_CODES code; NaN passes through)."""
    threads.parallel_range(lambda p0, p1: _bias_act_planes(y, b, act, p0, p1), y.shape[0] * y.shape[1],
                           values=y.size)


def _relu_grad_planes(dy, y, dz, sums):
    """dz = dy · [y > 0] and sums[n, f] = Σ_p dz[n, f, p] (float64)."""
    threads.parallel_range(lambda p0, p1: _relu_grad_plane_range(dy, y, dz, sums, p0, p1), dy.shape[0] * dy.shape[1],
                           values=dy.size)


def _plane_sums(dy, sums):
    """sums[n, f] = Σ_p dy[n, f, p], in float64."""
    threads.parallel_range(lambda p0, p1: _plane_sum_range(dy, sums, p0, p1), dy.shape[0] * dy.shape[1],
                           values=dy.size)


@njit(cache=True, nogil=True)
def _bias_act_planes(y, b, act, p0, p1):
    N, F, P = y.shape
    for plane in range(p0, p1):
        n, f = plane // F, plane % F
        bias = b[f]
        if act:
            for p in range(P):
                y[n, f, p] = fused_activate(y[n, f, p] + bias, act)
        else:
            for p in range(P):
                y[n, f, p] += bias


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _relu_grad_plane_range(dy, y, dz, sums, p0, p1):
    """_relu_grad_planes for the planes [p0, p1) (the sums reassociated, so that they vectorize)."""
    N, F, P = dy.shape
    for plane in range(p0, p1):
        n, f = plane // F, plane % F
        total = 0.0
        for p in range(P):
            v = dy[n, f, p] if y[n, f, p] > 0 else 0
            dz[n, f, p] = v
            total += v
        sums[n, f] = total


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _plane_sum_range(dy, sums, p0, p1):
    N, F, P = dy.shape
    for plane in range(p0, p1):
        n, f = plane // F, plane % F
        total = 0.0
        for p in range(P):
            total += dy[n, f, p]
        sums[n, f] = total

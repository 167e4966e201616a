"""1×1 convolution at stride 1, without padding or groups (NCHW): x is already its own im2col matrix.

Per image, y[n] (F, H·W) = W (F, C) @ x[n] (C, H·W): one GEMM, no copy. The backward runs both GEMMs of an
image together on one thread, dz[n] read from cache by the second: dx[n] = Wᵀ @ dz[n] and this thread's
share of dW += dz[n] @ x[n]ᵀ (float64, added up at the end).
"""
import threading

import numpy as np

from .. import threads
from ..gemm import matmul
from ..workspace import scratch
from .epilogue import _bias_act, _bias_or_zeros, _gradient_buffers, _masked_chunk


def applies(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
    """1×1, stride 1, no padding, no groups (so the output has the input's size)."""
    F, Cg, KH, KW = w_shape
    pointwise = KH == KW == 1 and stride == (1, 1) and padding == (0, 0)
    return groups == 1 and pointwise and tuple(x_shape[2:]) == tuple(y_shape[2:])


def forward(x, w, b, act, stride, padding, dilation, groups, y):
    """y = act(W @ x[n] + b) per image, into y (N, F, H, W)."""
    N = x.shape[0]
    F = w.shape[0]
    P = y.shape[2] * y.shape[3]
    matmul(w.reshape(F, -1), x.reshape(N, -1, P), out=y.reshape(N, F, P))
    if b is not None or act:
        _bias_act(y.reshape(N, F, P), _bias_or_zeros(b, F, x.dtype), act)
    return y


def backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """conv2d's gradients (dz = dy · [y > 0] when y is given) -> (dx, dw, db), None for what is not needed."""
    N, F, OH, OW = dy.shape
    P = OH * OW
    dtype = dy.dtype
    dx, dw, bias_sums = _gradient_buffers(dy, x_shape, w_shape, need_dx, need_dw)
    C = x_shape[1]
    dz = _masked_chunk(dy.reshape(N, F, P), y, 0, N, bias_sums, need_db)
    # Both GEMMs of an image run together on one thread, dz[n] read from cache by the second:
    # dx[n] = Wᵀ (C, F) @ dz[n] (F, HW), and this thread's dW += dz[n] (F, HW) @ x[n]ᵀ (HW, C)
    w_t = w.reshape(F, C).T
    x3 = x.reshape(N, C, P) if need_dw else None
    dx3 = dx.reshape(N, C, P) if need_dx else None
    dw_parts = {}  # thread -> its float64 share of dW

    def image(n):
        if need_dx:
            np.matmul(w_t, dz[n], out=dx3[n])
        if need_dw:
            if threading.get_ident() not in dw_parts:
                dw_parts[threading.get_ident()] = np.zeros((F, C), np.float64)
            dw_parts[threading.get_ident()] += np.matmul(dz[n], x3[n].T, out=scratch("conv.dw_part", (F, C), dtype))

    threads.parallel_for(image, N)
    if need_dw:
        dw.reshape(F, C)[...] = np.sum(list(dw_parts.values()), axis=0)
    return dx, dw, (bias_sums.sum(axis=0).astype(dtype) if need_db else None)

"""Softmax and log-softmax on the CPU, over the middle axis of x3 (outer, C, inner).

    softmax:      y_c = e^(x_c − m) / Σ_k e^(x_k − m)        m = max_k x_k (so no e^z overflows)
                  dx_c = y_c (dy_c − Σ_k dy_k y_k)
    log_softmax:  y_c = x_c − m − log Σ_k e^(x_k − m)
                  dx_c = dy_c − e^(y_c) Σ_k dy_k

The op layer views any tensor as (outer, C, inner) around the softmax axis: (N, C) logits are (N, C, 1),
per-pixel class scores (N, C, H, W) over dim=1 are (N, C, H·W).

The forwards are NumPy's (its exp and log are SIMD code): over a few classes the passes (max, subtract,
exp, sum, divide) ran as fast as the two-thread Numba kernel they replaced on the U-Net's output, whose
compile was most of a second of the U-Net's first predict (timings: benchmarks/RESULTS.md, "Timings moved
from kernel docstrings"). The backwards are Numba's: a thread takes a range of `outer` slices; inside one
the loops run over c, then over the contiguous `inner` positions, so every pass reads memory in order,
sums in float64.
"""
import math

import numpy as np
from numba import njit

from . import threads


def _shifted(x3):
    """x − m, m the max over C: a new C-contiguous array, the start of both forwards."""
    return np.subtract(x3, x3.max(axis=1, keepdims=True))


def softmax_forward(x3):
    """x3 (outer, C, inner) -> y3 = e^(x − m) / Σ_c e^(x − m) over C, m the max over C."""
    if x3.shape[1] == 0:
        return np.empty_like(x3, order="C")
    y3 = _shifted(x3)
    with np.errstate(under="ignore"):  # e^(x − m) underflowing to 0 is no error
        np.exp(y3, out=y3)
    y3 /= y3.sum(axis=1, keepdims=True)
    return y3


def log_softmax_forward(x3):
    """x3 (outer, C, inner) -> y3 = x − m − log Σ_c e^(x − m) over C."""
    if x3.shape[1] == 0:
        return np.empty_like(x3, order="C")
    y3 = _shifted(x3)
    with np.errstate(under="ignore"):
        y3 -= np.log(np.exp(y3).sum(axis=1, keepdims=True))
    return y3


@njit(cache=True, nogil=True)
def _softmax_grad(dy, y, dx, o0, o1):
    """dx = y (dy − Σ_c dy y), for the slices o in [o0, o1)."""
    C, inner = dy.shape[1], dy.shape[2]
    for o in range(o0, o1):
        dot = np.zeros(inner, np.float64)
        for c in range(C):
            for i in range(inner):
                dot[i] += dy[o, c, i] * y[o, c, i]
        for c in range(C):
            for i in range(inner):
                dx[o, c, i] = y[o, c, i] * (dy[o, c, i] - dot[i])


@njit(cache=True, nogil=True)
def _log_softmax_grad(dy, y, dx, o0, o1):
    """dx = dy − e^y Σ_c dy, for the slices o in [o0, o1)."""
    C, inner = dy.shape[1], dy.shape[2]
    for o in range(o0, o1):
        total = np.zeros(inner, np.float64)
        for c in range(C):
            for i in range(inner):
                total[i] += dy[o, c, i]
        for c in range(C):
            for i in range(inner):
                dx[o, c, i] = dy[o, c, i] - math.exp(y[o, c, i]) * total[i]


def _backward(kernel, dy3, y3):
    dx3 = np.empty_like(dy3, order="C")
    dy3, y3 = np.ascontiguousarray(dy3), np.ascontiguousarray(y3)
    threads.parallel_range(lambda o0, o1: kernel(dy3, y3, dx3, o0, o1), dy3.shape[0], values=dy3.size)
    return dx3


def softmax_backward(dy3, y3):
    return _backward(_softmax_grad, dy3, y3)


def log_softmax_backward(dy3, y3):
    return _backward(_log_softmax_grad, dy3, y3)

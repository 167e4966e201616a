"""Softmax and log-softmax on the CPU, over the middle axis of x3 (outer, C, inner).

    softmax:      y_c = e^(x_c − m) / Σ_k e^(x_k − m)        m = max_k x_k (so no e^z overflows)
                  dx_c = y_c (dy_c − Σ_k dy_k y_k)
    log_softmax:  y_c = x_c − m − log Σ_k e^(x_k − m)
                  dx_c = dy_c − e^(y_c) Σ_k dy_k

The op layer views any tensor as (outer, C, inner) around the softmax axis: (N, C) logits are (N, C, 1),
per-pixel class scores (N, C, H, W) over dim=1 are (N, C, H·W). One thread takes one `outer` slice
(`prange`); inside it the loops run over c, then over the contiguous `inner` positions, keeping one running
max and one sum per position, so every pass reads memory in order. Sums are accumulated in float64.
"""
import math

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _max_over_c(x, o, m):
    """m[i] = max_c x[o, c, i]."""
    C, inner = x.shape[1], x.shape[2]
    for i in range(inner):
        m[i] = x[o, 0, i]
    for c in range(1, C):
        for i in range(inner):
            if x[o, c, i] > m[i]:
                m[i] = x[o, c, i]


@njit(cache=True, parallel=True)
def _softmax(x, y, log):
    outer, C, inner = x.shape
    for o in prange(outer):
        m = np.empty(inner, np.float64)
        total = np.zeros(inner, np.float64)
        _max_over_c(x, o, m)
        for c in range(C):
            for i in range(inner):
                total[i] += math.exp(x[o, c, i] - m[i])
        for c in range(C):
            for i in range(inner):
                if log:
                    y[o, c, i] = x[o, c, i] - m[i] - math.log(total[i])
                else:
                    y[o, c, i] = math.exp(x[o, c, i] - m[i]) / total[i]


def softmax_forward(x3):
    """x3 (outer, C, inner) -> y3, softmax over C."""
    y3 = np.empty_like(x3, order="C")
    if x3.shape[1] > 0:
        _softmax(np.ascontiguousarray(x3), y3, False)
    return y3


def log_softmax_forward(x3):
    """x3 (outer, C, inner) -> y3, log-softmax over C."""
    y3 = np.empty_like(x3, order="C")
    if x3.shape[1] > 0:
        _softmax(np.ascontiguousarray(x3), y3, True)
    return y3


@njit(cache=True, parallel=True)
def _softmax_grad(dy, y, dx):
    """dx = y (dy − Σ_c dy y)."""
    outer, C, inner = dy.shape
    for o in prange(outer):
        dot = np.zeros(inner, np.float64)
        for c in range(C):
            for i in range(inner):
                dot[i] += dy[o, c, i] * y[o, c, i]
        for c in range(C):
            for i in range(inner):
                dx[o, c, i] = y[o, c, i] * (dy[o, c, i] - dot[i])


@njit(cache=True, parallel=True)
def _log_softmax_grad(dy, y, dx):
    """dx = dy − e^y Σ_c dy."""
    outer, C, inner = dy.shape
    for o in prange(outer):
        total = np.zeros(inner, np.float64)
        for c in range(C):
            for i in range(inner):
                total[i] += dy[o, c, i]
        for c in range(C):
            for i in range(inner):
                dx[o, c, i] = dy[o, c, i] - math.exp(y[o, c, i]) * total[i]


def softmax_backward(dy3, y3):
    dx3 = np.empty_like(dy3, order="C")
    _softmax_grad(np.ascontiguousarray(dy3), np.ascontiguousarray(y3), dx3)
    return dx3


def log_softmax_backward(dy3, y3):
    dx3 = np.empty_like(dy3, order="C")
    _log_softmax_grad(np.ascontiguousarray(dy3), np.ascontiguousarray(y3), dx3)
    return dx3

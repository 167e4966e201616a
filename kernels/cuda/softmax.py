"""Softmax and log-softmax on the GPU, over the middle axis of x3 (outer, C, inner).

    softmax:      y_c = e^(x_c − m) / Σ_k e^(x_k − m)        m = max_k x_k (so no e^z overflows)
                  dx_c = y_c (dy_c − Σ_k dy_k y_k)
    log_softmax:  y_c = x_c − m − log Σ_k e^(x_k − m)
                  dx_c = dy_c − e^(y_c) Σ_k dy_k

One thread per (o, i) position: it walks the C classes of its position (stride `inner` in memory) three
times (max, sum of exponentials, output). Neighbouring threads take neighbouring i, so for per-pixel
scores (inner = H·W) the reads are coalesced; for (N, C) logits (inner = 1) a thread reads one row.
"""
import math

from numba import cuda

from . import _launch as gpu


@cuda.jit(cache=True)
def softmax_forward_kernel(x, y, C, inner, log):
    zero = y.dtype.type(0)        # accumulators in the array's dtype
    for t in range(cuda.grid(1), x.size // C, cuda.gridsize(1)):
        base = (t // inner) * C * inner + t % inner
        m = x[base]
        for c in range(1, C):
            v = x[base + c * inner]
            if v > m:
                m = v
        total = zero
        for c in range(C):
            total += math.exp(x[base + c * inner] - m)
        if log:
            shift = m + math.log(total)
            for c in range(C):
                y[base + c * inner] = x[base + c * inner] - shift
        else:
            for c in range(C):
                y[base + c * inner] = math.exp(x[base + c * inner] - m) / total


@cuda.jit(cache=True)
def softmax_backward_kernel(dy, y, dx, C, inner, log):
    zero = dx.dtype.type(0)
    for t in range(cuda.grid(1), y.size // C, cuda.gridsize(1)):
        base = (t // inner) * C * inner + t % inner
        total = zero
        if log:                                   # Σ dy
            for c in range(C):
                total += dy[base + c * inner]
            for c in range(C):
                k = base + c * inner
                dx[k] = dy[k] - math.exp(y[k]) * total
        else:                                     # Σ dy · y
            for c in range(C):
                total += dy[base + c * inner] * y[base + c * inner]
            for c in range(C):
                k = base + c * inner
                dx[k] = y[k] * (dy[k] - total)


def _forward(x3, log):
    y3 = gpu.empty(x3.shape, x3.dtype)
    outer, C, inner = x3.shape
    if y3.size:
        gpu.launch1d(softmax_forward_kernel, outer * inner, gpu.flat(x3), gpu.flat(y3), C, inner, log)
    return y3


def _backward(dy3, y3, log):
    dx3 = gpu.empty(y3.shape, y3.dtype)
    outer, C, inner = y3.shape
    if dx3.size:
        gpu.launch1d(softmax_backward_kernel, outer * inner, gpu.flat(dy3), gpu.flat(y3), gpu.flat(dx3), C, inner, log)
    return dx3


def softmax_forward(x3):
    return _forward(x3, False)


def log_softmax_forward(x3):
    return _forward(x3, True)


def softmax_backward(dy3, y3):
    return _backward(dy3, y3, False)


def log_softmax_backward(dy3, y3):
    return _backward(dy3, y3, True)

"""Activations on the CPU: a Numba loop over a range of the (flat) elements per function, any shape.

    relu(x) = max(x, 0)                  relu'(x) = [x > 0]
    relu6(x) = min(max(x, 0), 6)         relu6'(x) = [0 < x < 6]
    leaky_relu(x) = x if x > 0 else a·x  leaky_relu'(x) = 1 if x > 0 else a
    sigmoid(x) = 1 / (1 + e⁻ˣ)           sigmoid' = y (1 − y)   (computed from the output y)
    tanh(x)                              tanh' = 1 − y²         (computed from the output y)

Sigmoid is evaluated without overflow for any x, with one exponential: e = e^−|x| ∈ (0, 1], then
y = 1/(1 + e) for x ≥ 0 and e/(1 + e) for x < 0. A NaN input gives a NaN output (relu included), so a
diverged run shows in the loss instead of being hidden by a clamp.

Why Numba loops here: these kernels are memory bound, and a loop on both cores that reads x once beats
NumPy's one-threaded ufuncs, which also make several passes for anything but the simplest formula. Each
kernel is a serial `nogil` loop over the elements it is given; `_elementwise` cuts the arrays into chunks of
CHUNK elements and `threads.parallel_range` spreads them over tinycnn's threads (an array of one chunk, as at
batch 1, runs on the caller's thread, without waking any other). Serial kernels compile in a third of the
time of `prange` ones (benchmarks/RESULTS.md, "Cold start"); they take NumPy's error model, as a `prange` body
does (Python's checks each division for zero, and the loop no longer vectorizes).
Timed once on a (32, 64, 98, 98) float32 array (2 shared cores, median of 5): relu 15 ms (np.maximum 23 ms),
relu backward 16 ms (np.where 114 ms), sigmoid 61 ms (stable NumPy with np.where 150 ms). The exception is
tanh: NumPy has a SIMD tanh (15 ms) and Numba only libm's scalar one (165 ms), so tanh_forward is np.tanh.
"""
import math

import numpy as np
from numba import njit

from . import threads
from .workspace import output

CHUNK = 1 << 15  # elements per piece of work (128 KiB of float32)


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _elementwise(kernel, *arrays, scalars=()):
    """Make the output like arrays[0] and run kernel(*flat arrays, *scalars, flat out) on each chunk of the
    elements (the same slice of every array). The output is a recycled array when a big one of its shape is
    free (workspace.py): a fresh one costs page faults, as much as the pass."""
    out = output(arrays[0].shape, arrays[0].dtype)
    flat, flat_out, size = [_flat(a) for a in arrays], out.reshape(-1), out.size
    if size <= CHUNK:
        kernel(*flat, *scalars, flat_out)
        return out

    def work(c0, c1):
        lo, hi = c0 * CHUNK, min(c1 * CHUNK, size)
        kernel(*[a[lo:hi] for a in flat], *scalars, flat_out[lo:hi])

    threads.parallel_range(work, -(-size // CHUNK), values=size)
    return out


# ---------------------------------------------------------------------- activations fused into other kernels
#
# The conv and batch-norm kernels apply an activation in their own passes (kernels/cpu/conv/epilogue.py,
# batchnorm.py). They are told which by a code, and use these two per-value functions.

FUSED_CODES = {None: 0, "relu": 1, "relu6": 2}


@njit(cache=True)
def fused_activate(v, act):
    """act 0: v; 1: max(v, 0); 2: min(max(v, 0), 6) (NaN passes through)."""
    if act != 0 and v < 0:
        return v - v  # 0 in v's dtype
    if act == 2 and v > 6:
        return v - v + 6
    return v


@njit(cache=True)
def fused_passes(out, act):
    """act'(pre-activation) read from the activation's output: 1 where the gradient passes, else 0
    (relu: [out > 0], relu6: [0 < out < 6], the same masks as on the pre-activation)."""
    if act == 0:
        return True
    if act == 1:
        return out > 0
    return out > 0 and out < 6


# ---------------------------------------------------------------------- relu

@njit(cache=True, nogil=True, error_model="numpy")
def _relu(x, y):
    for i in range(x.size):
        y[i] = 0 if x[i] < 0 else x[i]  # NaN < 0 is false: NaN passes through


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_grad(dy, x, dx):
    for i in range(dx.size):
        dx[i] = dy[i] if x[i] > 0 else 0


def relu_forward(x):
    return _elementwise(_relu, x)


def relu_backward(dy, x):
    return _elementwise(_relu_grad, dy, x)


# ---------------------------------------------------------------------- relu6

@njit(cache=True, nogil=True, error_model="numpy")
def _relu6(x, y):
    for i in range(x.size):
        y[i] = 0 if x[i] < 0 else (6 if x[i] > 6 else x[i])


@njit(cache=True, nogil=True, error_model="numpy")
def _relu6_grad(dy, x, dx):
    for i in range(dx.size):
        dx[i] = dy[i] if 0 < x[i] < 6 else 0


def relu6_forward(x):
    return _elementwise(_relu6, x)


def relu6_backward(dy, x):
    return _elementwise(_relu6_grad, dy, x)


# ---------------------------------------------------------------------- leaky relu

@njit(cache=True, nogil=True, error_model="numpy")
def _leaky_relu(x, slope, y):
    for i in range(x.size):
        y[i] = x[i] if x[i] > 0 else slope * x[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _leaky_relu_grad(dy, x, slope, dx):
    for i in range(dx.size):
        dx[i] = dy[i] if x[i] > 0 else slope * dy[i]


def leaky_relu_forward(x, slope):
    return _elementwise(_leaky_relu, x, scalars=(x.dtype.type(slope),))


def leaky_relu_backward(dy, x, slope):
    return _elementwise(_leaky_relu_grad, dy, x, scalars=(dy.dtype.type(slope),))


# ---------------------------------------------------------------------- sigmoid

@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid(x, y):
    for i in range(x.size):
        e = math.exp(-abs(x[i]))                  # in (0, 1]: never overflows
        y[i] = (1.0 if x[i] >= 0 else e) / (1.0 + e)


@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid_grad(dy, y, dx):
    for i in range(dx.size):
        dx[i] = dy[i] * y[i] * (1 - y[i])


def sigmoid_forward(x):
    return _elementwise(_sigmoid, x)


def sigmoid_backward(dy, y):
    return _elementwise(_sigmoid_grad, dy, y)


# ---------------------------------------------------------------------- tanh

@njit(cache=True, nogil=True, error_model="numpy")
def _tanh_grad(dy, y, dx):
    for i in range(dx.size):
        dx[i] = dy[i] * (1 - y[i] * y[i])


def tanh_forward(x):
    return np.tanh(x)  # NumPy's SIMD tanh: 10x faster than a Numba loop calling libm's tanhf


def tanh_backward(dy, y):
    return _elementwise(_tanh_grad, dy, y)

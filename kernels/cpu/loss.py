"""Losses on the CPU: each forward returns the mean loss (a 0-d array in the input's dtype), each backward
the gradient of the input for an upstream gradient `g` (a Python float).

    BCE with logits:  l = w · [pw · t · softplus(−z) + (1 − t) · softplus(z)]
                      softplus(z) = log(1 + eᶻ) = max(z, 0) + log(1 + e^−|z|)   (never overflows)
                      dl/dz = w · [(1 − t) σ(z) − pw · t · (1 − σ(z))]
    BCE:              l = −w · [t log q + (1 − t) log(1 − q)],   q = clip(p, ε, 1 − ε)
                      dl/dp = w · [(1 − t)/(1 − p) − t/p] inside (ε, 1 − ε), 0 where p was clipped
    cross-entropy:    x (N, C, inner) logits, target (N, inner) class indices
                      loss = −Σ w[t] log softmax(x)[t] / Σ w[t]   over the pixels whose t ≠ ignore_index
                      dl/dx = w[t] (softmax(x) − onehot(t)) / Σ w[t]
    MSE:              l = (p − t)²,   dl/dp = 2 (p − t)

`w` (per element, any shape that broadcasts to the input's) and `pw` (pos_weight, likewise) are optional;
the host wrappers expand them to one value per element, so the kernels see flat arrays of equal length.
Sums are accumulated in float64. The element-wise kernels run `prange` over elements, and their sums are
Numba reductions (each thread sums its share, the shares are added at the end: no race); MSE is NumPy's.
Cross-entropy takes its log-softmax and exps from NumPy and gives whole samples to the threads of
kernels/cpu/threads.py, each writing its own partial sum.
"""
import numpy as np
from numba import njit, prange

from . import threads
from .softmax import log_softmax_forward


def _flat(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def _per_element(v, shape, dtype):
    """None -> ones; otherwise v broadcast to `shape`; flattened."""
    v = np.ones(1, dtype) if v is None else np.asarray(v, dtype)
    return _flat(np.broadcast_to(v, shape), dtype)


def _scalar(value, dtype):
    return np.asarray(value, dtype=dtype)


@njit(cache=True)
def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


# ---------------------------------------------------------------------- BCE with logits
#
# Serial loops (prange runs as range): the logits of a binary classifier are one per image, where starting a
# parallel loop costs more than it saves and compiling one takes a second more on an empty cache.

@njit(cache=True)
def _bce_with_logits_sum(z, t, pos_weight, weight):
    total = 0.0
    for i in prange(z.size):
        zi = np.float64(z[i])
        log_term = np.log1p(np.exp(-abs(zi)))
        softplus_z = max(zi, 0.0) + log_term          # −log(1 − σ(z))
        softplus_minus_z = max(-zi, 0.0) + log_term   # −log σ(z)
        total += weight[i] * (pos_weight[i] * t[i] * softplus_minus_z + (1.0 - t[i]) * softplus_z)
    return total


def bce_with_logits_forward(z, t, pos_weight, weight=None):
    """Mean over all elements of the logits z; t (same shape) targets in [0, 1]; pos_weight, weight or None."""
    n = z.size
    total = _bce_with_logits_sum(_flat(z, z.dtype), _flat(t, z.dtype),
                                 _per_element(pos_weight, z.shape, z.dtype), _per_element(weight, z.shape, z.dtype))
    return _scalar(total / n, z.dtype)


@njit(cache=True)
def _bce_with_logits_grad(z, t, pos_weight, weight, scale, dz):
    for i in prange(z.size):
        s = _sigmoid(np.float64(z[i]))
        dz[i] = scale * weight[i] * ((1.0 - t[i]) * s - pos_weight[i] * t[i] * (1.0 - s))


def bce_with_logits_backward(z, t, pos_weight, g, weight=None):
    """dz, the shape of z, for the mean loss times g."""
    dz = np.empty(z.size, z.dtype)
    _bce_with_logits_grad(_flat(z, z.dtype), _flat(t, z.dtype), _per_element(pos_weight, z.shape, z.dtype),
                          _per_element(weight, z.shape, z.dtype), float(g) / z.size, dz)
    return dz.reshape(z.shape)


# ---------------------------------------------------------------------- BCE on probabilities

@njit(cache=True, parallel=True)
def _bce_sum(p, t, eps, weight):
    total = 0.0
    for i in prange(p.size):
        q = min(max(np.float64(p[i]), eps), 1.0 - eps)
        total += -weight[i] * (t[i] * np.log(q) + (1.0 - t[i]) * np.log(1.0 - q))
    return total


def bce_forward(p, t, eps, weight=None):
    """Mean over all elements; p probabilities (clipped to [eps, 1 − eps]), t targets, weight or None."""
    total = _bce_sum(_flat(p, p.dtype), _flat(t, p.dtype), float(eps), _per_element(weight, p.shape, p.dtype))
    return _scalar(total / p.size, p.dtype)


@njit(cache=True, parallel=True)
def _bce_grad(p, t, eps, weight, scale, dp):
    for i in prange(p.size):
        pi = np.float64(p[i])
        if pi > eps and pi < 1.0 - eps:
            dp[i] = scale * weight[i] * ((1.0 - t[i]) / (1.0 - pi) - t[i] / pi)
        else:
            dp[i] = 0.0  # the clip passes no gradient


def bce_backward(p, t, eps, g, weight=None):
    dp = np.empty(p.size, p.dtype)
    _bce_grad(_flat(p, p.dtype), _flat(t, p.dtype), float(eps), _per_element(weight, p.shape, p.dtype),
              float(g) / p.size, dp)
    return dp.reshape(p.shape)


# ---------------------------------------------------------------------- cross-entropy over classes
#
# The log-softmax (softmax.py's) and the exps of the backward are NumPy's (SIMD exp and log, a pass each over the few
# classes of every pixel); the per-pixel picks of a class, its weight and the ignored pixels are serial Numba loops over
# whole samples, on the threads of kernels/cpu/threads.py. The kernels this replaced took their exps in Numba
# SIMD code of their own (fast_exp.py, gone with them): as fast, but their compile was most of two seconds of
# the U-Net's first training step on an empty cache (benchmarks/RESULTS.md, "Timings moved from kernel
# docstrings").

@njit(cache=True, nogil=True)
def _sample_losses(log_probs3, target2, weight, ignore_index, loss_n, weight_n, n0, n1):
    """For the samples n in [n0, n1): loss_n[n] = −Σᵢ w[t] log p[t], weight_n[n] = Σᵢ w[t], over the pixels i
    whose class t = target2[n, i] is not ignore_index (float64 sums)."""
    for n in range(n0, n1):
        loss, weight_sum = 0.0, 0.0
        for i in range(log_probs3.shape[2]):
            t = target2[n, i]
            if t != ignore_index:
                loss -= weight[t] * log_probs3[n, t, i]
                weight_sum += weight[t]
        loss_n[n] = loss
        weight_n[n] = weight_sum


def cross_entropy_forward(x3, target2, weight, ignore_index):
    """x3 (N, C, inner) logits, target2 (N, inner) int64 in [0, C) or ignore_index, weight (C,) or None
    -> (mean loss weighted as PyTorch's, log_probs3 (N, C, inner), weight_sum = Σ w[t] over counted pixels).
    With every pixel ignored the loss is NaN (0/0), as in PyTorch. Whole samples to a thread."""
    N, C, inner = x3.shape
    weight = np.ones(C) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    target2 = np.ascontiguousarray(target2, dtype=np.int64)
    log_probs3 = log_softmax_forward(x3)
    loss_n, weight_n = np.empty(N), np.empty(N)
    threads.parallel_range(lambda n0, n1: _sample_losses(log_probs3, target2, weight, int(ignore_index), loss_n,
                                                         weight_n, n0, n1), N, values=target2.size)
    loss, weight_sum = loss_n.sum(), float(weight_n.sum())
    return _scalar(loss / weight_sum if weight_sum != 0 else np.nan, x3.dtype), log_probs3, weight_sum


@njit(cache=True, nogil=True)
def _one_hot_grad(dx3, target2, weight, ignore_index, scale, n0, n1):
    """dx3[n] = scale · w[t] (dx3[n] − onehot(t)) (dx3 holding the softmax), 0 on ignored pixels, for the
    samples n in [n0, n1)."""
    C, inner = dx3.shape[1], dx3.shape[2]
    for n in range(n0, n1):
        for c in range(C):
            row = dx3[n, c]
            for i in range(inner):
                t = target2[n, i]
                if t == ignore_index:
                    row[i] = 0.0
                else:
                    row[i] = scale * weight[t] * (row[i] - (1.0 if c == t else 0.0))


def cross_entropy_backward(log_probs3, target2, weight, ignore_index, weight_sum, g):
    """dx3 (N, C, inner) = g · w[t] (softmax − onehot(t)) / weight_sum; 0 on ignored pixels."""
    N, C = log_probs3.shape[:2]
    weight = np.ones(C) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    scale = float(g) / weight_sum if weight_sum != 0 else 0.0
    target2 = np.ascontiguousarray(target2, dtype=np.int64)
    with np.errstate(under="ignore"):
        dx3 = np.exp(log_probs3)  # the softmax
    threads.parallel_range(lambda n0, n1: _one_hot_grad(dx3, target2, weight, int(ignore_index), scale, n0, n1), N,
                           values=dx3.size)
    return dx3


# ---------------------------------------------------------------------- mean squared error

# NumPy's: a box regressor's outputs are 4 values a sample, a detector's a few small maps, where the two
# parallel Numba kernels this replaced cost a first training step more in compile than they ever saved
# (benchmarks/RESULTS.md, "Timings moved from kernel docstrings").

def _difference(p, t):
    """p − t in float64 (t in p's dtype first, as the other losses take it), flat."""
    return np.subtract(_flat(p, p.dtype), _flat(t, p.dtype), dtype=np.float64)


def mse_forward(p, t):
    """Mean of (p − t)² over all elements; t has p's shape; the sum in float64, a BLAS dot held at one thread:
    on its own threads, OpenBLAS would leave one spinning after the call (unless tinycnn was imported before
    NumPy: tinycnn/__init__.py), taking a core from the backward's kernels (timings: benchmarks/RESULTS.md,
    "Timings moved from kernel docstrings")."""
    d = _difference(p, t)
    with threads.one_blas_thread():
        total = np.dot(d, d)
    return _scalar(total / p.size, p.dtype)


def mse_backward(p, t, g):
    """dp = 2 g (p − t) / size, computed in float64."""
    d = _difference(p, t)
    d *= 2.0 * float(g) / p.size
    return d.astype(p.dtype).reshape(p.shape)

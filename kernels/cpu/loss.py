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
Numba reductions (each thread sums its share, the shares are added at the end: no race). Cross-entropy
gives whole samples to the threads of kernels/cpu/threads.py, each writing its own partial sum, and takes
its float32 exps in SIMD code (fast_exp.py).
"""
import math

import numpy as np
from numba import njit, prange

from . import threads
from .fast_exp import EXP_COST, exp_row, exp_shifted


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

@njit(cache=True, nogil=True)
def _cross_entropy_samples(x3, target2, weight, ignore_index, log_probs3, loss_n, weight_n, n0, n1):
    """Samples n in [n0, n1): log_probs3[n] = log softmax over classes; loss_n[n] = −Σᵢ w[t] log p[t],
    weight_n[n] = Σᵢ w[t]. Sums and the log-normaliser in float64 (math.exp: the float64 path)."""
    N, C, inner = x3.shape
    log_norm = np.empty(inner)  # log Σ_c exp x[n, c, i], shifted by the max for stability
    total_exp = np.empty(inner)
    for n in range(n0, n1):
        for i in range(inner):
            log_norm[i] = x3[n, 0, i]
            total_exp[i] = 0.0
        for c in range(1, C):
            for i in range(inner):
                log_norm[i] = max(log_norm[i], x3[n, c, i])
        for c in range(C):
            for i in range(inner):
                total_exp[i] += math.exp(x3[n, c, i] - log_norm[i])
        for i in range(inner):
            log_norm[i] += math.log(total_exp[i])
        for c in range(C):
            for i in range(inner):
                log_probs3[n, c, i] = x3[n, c, i] - log_norm[i]
        _sample_loss(x3, target2, weight, ignore_index, log_norm, loss_n, weight_n, n)


@njit(cache=True, nogil=True)
def _cross_entropy_samples_float32(x3, target2, weight, ignore_index, log_probs3, loss_n, weight_n, n0, n1):
    """_cross_entropy_samples for float32, its exps in SIMD code (fast_exp.py): e^(x − max) is written into
    log_probs3 first, summed over the classes, then replaced by x − log Σ."""
    N, C, inner = x3.shape
    log_norm, total, powers = np.empty(inner, np.float32), np.empty(inner, np.float32), np.empty(inner, np.int32)
    for n in range(n0, n1):
        exp_shifted(x3[n], log_probs3[n], log_norm, total, powers)
        for i in range(inner):
            log_norm[i] += math.log(total[i])
        for c in range(C):
            for i in range(inner):
                log_probs3[n, c, i] = x3[n, c, i] - log_norm[i]
        _sample_loss(x3, target2, weight, ignore_index, log_norm, loss_n, weight_n, n)


@njit(cache=True)
def _sample_loss(x3, target2, weight, ignore_index, log_norm, loss_n, weight_n, n):
    """loss_n[n] = −Σᵢ w[t] (x[t] − log_norm), weight_n[n] = Σᵢ w[t], over sample n's counted pixels."""
    loss, weight_sum = 0.0, 0.0
    for i in range(x3.shape[2]):
        t = target2[n, i]
        if t != ignore_index:
            loss -= weight[t] * (x3[n, t, i] - log_norm[i])
            weight_sum += weight[t]
    loss_n[n] = loss
    weight_n[n] = weight_sum


def cross_entropy_forward(x3, target2, weight, ignore_index):
    """x3 (N, C, inner) logits, target2 (N, inner) int64 in [0, C) or ignore_index, weight (C,) or None
    -> (mean loss weighted as PyTorch's, log_probs3 (N, C, inner), weight_sum = Σ w[t] over counted pixels).
    With every pixel ignored the loss is NaN (0/0), as in PyTorch. Whole samples to a thread."""
    N, C, inner = x3.shape
    weight = np.ones(C) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    x3, target2 = np.ascontiguousarray(x3), np.ascontiguousarray(target2, dtype=np.int64)
    log_probs3 = np.empty_like(x3)
    loss_n, weight_n = np.empty(N), np.empty(N)
    kernel = _cross_entropy_samples_float32 if x3.dtype == np.float32 else _cross_entropy_samples
    threads.parallel_range(lambda n0, n1: kernel(x3, target2, weight, int(ignore_index), log_probs3, loss_n,
                                                 weight_n, n0, n1), N, values=x3.size * EXP_COST)
    loss, weight_sum = loss_n.sum(), float(weight_n.sum())
    return _scalar(loss / weight_sum if weight_sum != 0 else np.nan, x3.dtype), log_probs3, weight_sum


@njit(cache=True, nogil=True)
def _cross_entropy_grad(log_probs3, target2, weight, ignore_index, scale, simd_exp, dx3, n0, n1):
    """dx3[n] = scale · w[t] (e^(log p) − onehot(t)) for the samples n in [n0, n1); e^ in SIMD code for
    float32 (simd_exp: fast_exp.py, its shift a row of zeros)."""
    N, C, inner = log_probs3.shape
    zeros, powers = np.zeros(inner, log_probs3.dtype), np.empty(inner, np.int32)
    for n in range(n0, n1):
        for c in range(C):
            if simd_exp:
                exp_row(dx3[n, c], log_probs3[n, c], zeros, powers)
            else:
                for i in range(inner):
                    dx3[n, c, i] = math.exp(log_probs3[n, c, i])
            for i in range(inner):
                t = target2[n, i]
                if t == ignore_index:
                    dx3[n, c, i] = 0.0
                else:
                    one_hot = 1.0 if c == t else 0.0
                    dx3[n, c, i] = scale * weight[t] * (dx3[n, c, i] - one_hot)


def cross_entropy_backward(log_probs3, target2, weight, ignore_index, weight_sum, g):
    """dx3 (N, C, inner) = g · w[t] (softmax − onehot(t)) / weight_sum; 0 on ignored pixels."""
    N, C = log_probs3.shape[:2]
    weight = np.ones(C) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    scale = float(g) / weight_sum if weight_sum != 0 else 0.0
    log_probs3, target2 = np.ascontiguousarray(log_probs3), np.ascontiguousarray(target2, dtype=np.int64)
    dx3 = np.empty_like(log_probs3)
    simd_exp = log_probs3.dtype == np.float32
    threads.parallel_range(lambda n0, n1: _cross_entropy_grad(log_probs3, target2, weight, int(ignore_index), scale,
                                                              simd_exp, dx3, n0, n1), N, values=log_probs3.size * EXP_COST)
    return dx3


# ---------------------------------------------------------------------- mean squared error

@njit(cache=True, parallel=True)
def _squared_error_sum(p, t):
    total = 0.0
    for i in prange(p.size):
        d = np.float64(p[i]) - t[i]
        total += d * d
    return total


def mse_forward(p, t):
    """Mean of (p − t)² over all elements; t has p's shape."""
    return _scalar(_squared_error_sum(_flat(p, p.dtype), _flat(t, p.dtype)) / p.size, p.dtype)


@njit(cache=True, parallel=True)
def _squared_error_grad(p, t, scale, dp):
    for i in prange(p.size):
        dp[i] = scale * (p[i] - t[i])


def mse_backward(p, t, g):
    dp = np.empty(p.size, p.dtype)
    _squared_error_grad(_flat(p, p.dtype), _flat(t, p.dtype), 2.0 * float(g) / p.size, dp)
    return dp.reshape(p.shape)

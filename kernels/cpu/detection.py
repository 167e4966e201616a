"""Detection kernels on the CPU: the sigmoid focal loss of a centre heat-map (its formulas, forward and
gradient, are in kernels/reference/detection.py).

    focal_loss_forward(z, t, alpha, beta) -> 0-d array in z's dtype: Σ l / max(1, positives)
    focal_loss_backward(z, t, alpha, beta, g) -> dl/dz (z's shape and dtype), times the upstream g (a float)

A positive element is one whose target is 1 (each object's centre). The element loop is a `prange` Numba
reduction (each thread sums its share in float64; no race); the gradient writes one element per iteration.
"""
import numpy as np
from numba import njit, prange

from .loss import _sigmoid


@njit(cache=True)
def _softplus(z):
    return max(z, 0.0) + np.log1p(np.exp(-abs(z)))


@njit(cache=True, parallel=True)
def _focal_sum(z, t, alpha, beta):
    total = 0.0
    positives = 0
    for i in prange(z.size):
        zi, ti = np.float64(z[i]), np.float64(t[i])
        p = _sigmoid(zi)
        if ti >= 1.0:
            total += (1.0 - p) ** alpha * _softplus(-zi)
            positives += 1
        else:
            total += (1.0 - ti) ** beta * p ** alpha * _softplus(zi)
    return total, positives


@njit(cache=True)
def _count_positives(t):
    count = 0
    for i in range(t.size):
        if t[i] >= 1.0:
            count += 1
    return count


@njit(cache=True, parallel=True)
def _focal_grad(z, t, alpha, beta, scale, dz):
    for i in prange(z.size):
        zi, ti = np.float64(z[i]), np.float64(t[i])
        p = _sigmoid(zi)
        if ti >= 1.0:
            d = alpha * p * (1.0 - p) ** alpha * -_softplus(-zi) - (1.0 - p) ** (alpha + 1.0)
        else:
            d = (1.0 - ti) ** beta * (p ** (alpha + 1.0) + alpha * p ** alpha * (1.0 - p) * _softplus(zi))
        dz[i] = scale * d


def _flat(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def focal_loss_forward(z, t, alpha, beta):
    total, positives = _focal_sum(_flat(z, z.dtype), _flat(t, z.dtype), float(alpha), float(beta))
    return np.asarray(total / max(1, positives), dtype=z.dtype)


def focal_loss_backward(z, t, alpha, beta, g):
    flat_t = _flat(t, z.dtype)
    dz = np.empty(z.size, z.dtype)
    scale = float(g) / max(1, _count_positives(flat_t))
    _focal_grad(_flat(z, z.dtype), flat_t, float(alpha), float(beta), scale, dz)
    return dz.reshape(z.shape)

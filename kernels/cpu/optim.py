"""Optimizer updates on the CPU, in place on the parameter and its state (t counts steps from 1).

SGD (PyTorch's):  g = grad + λ θ
                  b = g on the first step, else b = μ b + (1 − τ) g            (only when μ ≠ 0)
                  g = g + μ b (nesterov)  or  g = b
                  θ = θ − η g
Adam / AdamW:     g = grad + λ θ (Adam: L2 in the gradient)  or  θ = θ (1 − η λ) (AdamW: decoupled decay)
                  m = β₁ m + (1 − β₁) g          v = β₂ v + (1 − β₂) g²
                  θ = θ − η · m̂ / (√v̂ + ε),     m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)

Every element is independent: `prange` over the flattened parameter (Adam: slices of it on tinycnn's
threads). The gradient is only read (it may be shared with other tensors' .grad). The arithmetic is float64; stores keep the parameter's dtype.
"""
import numpy as np
from numba import njit, prange

from . import threads


def _flat(a):
    """A flat view of a C-contiguous array (writes go to the array itself)."""
    assert a.flags.c_contiguous, "optimizer state must be C-contiguous"
    return a.reshape(-1)


@njit(cache=True, parallel=True)
def _sgd(param, grad, lr, weight_decay):
    for i in prange(param.size):
        param[i] -= lr * (grad[i] + weight_decay * param[i])


@njit(cache=True, parallel=True)
def _sgd_momentum(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    for i in prange(param.size):
        g = grad[i] + weight_decay * param[i]
        b = g if first_step else momentum * buf[i] + (1.0 - dampening) * g
        buf[i] = b
        param[i] -= lr * (g + momentum * b if nesterov else b)


def sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    """One SGD step, in place on param (and momentum_buf, which may be None when momentum == 0)."""
    grad = np.ascontiguousarray(grad).reshape(-1)
    if momentum == 0:
        _sgd(_flat(param), grad, float(lr), float(weight_decay))
    else:
        _sgd_momentum(_flat(param), grad, _flat(momentum_buf), float(lr), float(momentum), float(dampening),
                      float(weight_decay), bool(nesterov), bool(first_step))


@njit(inline="always")
def _adam_update(param, grad, m, v, i, lr, beta1, beta2, eps, weight_decay, decoupled, m_correction, v_correction):
    """Element i's update, in place, float64 arithmetic. Inlined into both loops below (Numba IR inlining):
    a helper that returned the new values as a tuple instead kept LLVM from vectorizing _adam, 4× slower."""
    p = np.float64(param[i])
    g = np.float64(grad[i])
    if decoupled:
        p *= 1.0 - lr * weight_decay
    else:
        g += weight_decay * p
    m_i = beta1 * m[i] + (1.0 - beta1) * g
    v_i = beta2 * v[i] + (1.0 - beta2) * g * g
    m[i] = m_i
    v[i] = v_i
    param[i] = p - lr * (m_i / m_correction) / (np.sqrt(v_i / v_correction) + eps)


@njit(cache=True, nogil=True, error_model="numpy")
def _adam(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """A serial kernel that releases the GIL: the threads of kernels/cpu/threads.py run it on slices of a big
    parameter (a `prange` loop of its own cost about half a second more to compile on an empty cache).
    NumPy's error model (x / 0 gives inf or NaN, as in a `prange` loop's body): with Python's, every division
    tests its divisor for zero, and the loop did not vectorize."""
    m_correction = 1.0 - beta1 ** step
    v_correction = 1.0 - beta2 ** step
    for i in range(param.size):
        _adam_update(param, grad, m, v, i, lr, beta1, beta2, eps, weight_decay, decoupled, m_correction, v_correction)


SERIAL_BELOW = 1 << 15  # parameters with fewer values are updated on one thread: waking the other threads
# costs more than the update (a MobileNetV2 has 56 parameter tensors, most of a few hundred values)


def adam_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam step (AdamW when `decoupled`), in place on param, m and v; `step` is t ≥ 1."""
    arrays = (_flat(param), np.ascontiguousarray(grad).reshape(-1), _flat(m), _flat(v))
    scalars = (float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), bool(decoupled), int(step))
    if param.size < SERIAL_BELOW:
        _adam(*arrays, *scalars)
    else:
        threads.parallel_range(lambda i0, i1: _adam(*(a[i0:i1] for a in arrays), *scalars), param.size,
                               pieces_per_thread=2)

"""Optimizer updates on the GPU, in place on the parameter and its state (t counts steps from 1).

SGD (momentum, dampening, nesterov, weight decay) and Adam / AdamW, with the formulas of kernels/cpu/optim.py.

Every element is independent: one grid-stride kernel per update. The hyperparameters and the bias
corrections 1 − βᵗ are computed once on the host and passed in the parameter's dtype, so the kernel's
arithmetic is in that dtype (the CPU's is float64: the two agree to float32 rounding).
"""
import math

from numba import cuda

from . import _launch as gpu


@cuda.jit(cache=True)
def sgd_kernel(param, grad, lr, weight_decay):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i] -= lr * (grad[i] + weight_decay * param[i])


@cuda.jit(cache=True)
def sgd_momentum_kernel(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    one = param.dtype.type(1)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        b = g if first_step else momentum * buf[i] + (one - dampening) * g
        buf[i] = b
        param[i] -= lr * (g + momentum * b if nesterov else b)


@cuda.jit(cache=True)
def adam_kernel(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, m_correction, v_correction):
    one = param.dtype.type(1)
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        p = param[i]
        g = grad[i]
        if decoupled:
            p *= one - lr * weight_decay
        else:
            g += weight_decay * p
        m_i = beta1 * m[i] + (one - beta1) * g
        v_i = beta2 * v[i] + (one - beta2) * g * g
        m[i] = m_i
        v[i] = v_i
        param[i] = p - lr * (m_i / m_correction) / (math.sqrt(v_i / v_correction) + eps)


def sgd_step(param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    """One SGD step, in place on param (and momentum_buf, which may be None when momentum == 0)."""
    s = lambda value: gpu.scalar(value, param.dtype)  # noqa: E731
    if momentum == 0:
        gpu.launch1d(sgd_kernel, param.size, gpu.flat(param), gpu.flat(grad), s(lr), s(weight_decay))
    else:
        gpu.launch1d(sgd_momentum_kernel, param.size, gpu.flat(param), gpu.flat(grad), gpu.flat(momentum_buf), s(lr),
                     s(momentum), s(dampening), s(weight_decay), bool(nesterov), bool(first_step))


def adam_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam step (AdamW when `decoupled`), in place on param, m and v; `step` is t ≥ 1."""
    s = lambda value: gpu.scalar(value, param.dtype)  # noqa: E731
    gpu.launch1d(adam_kernel, param.size, gpu.flat(param), gpu.flat(grad), gpu.flat(m), gpu.flat(v), s(lr), s(beta1),
                 s(beta2), s(eps), s(weight_decay), bool(decoupled),
                 s(1.0 - beta1 ** int(step)), s(1.0 - beta2 ** int(step)))

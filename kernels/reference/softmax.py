"""NumPy reference of softmax and log-softmax over the middle axis of x3 (outer, C, inner).

    softmax:      y_c = e^(x_c − m) / Σ_k e^(x_k − m)        m = max_k x_k (for stability)
                  dx_c = y_c (dy_c − Σ_k dy_k y_k)
    log_softmax:  y_c = x_c − m − log Σ_k e^(x_k − m)
                  dx_c = dy_c − e^(y_c) Σ_k dy_k
"""
import numpy as np


def softmax_forward(x3):
    e = np.exp(x3 - x3.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dy3, y3):
    return y3 * (dy3 - (dy3 * y3).sum(axis=1, keepdims=True))


def log_softmax_forward(x3):
    shifted = x3 - x3.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_softmax_backward(dy3, y3):
    return dy3 - np.exp(y3) * dy3.sum(axis=1, keepdims=True)

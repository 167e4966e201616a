"""NumPy reference of the activations, straight from their definitions.

    relu(x) = max(x, 0)                  relu'(x) = [x > 0]
    relu6(x) = min(max(x, 0), 6)         relu6'(x) = [0 < x < 6]
    leaky_relu(x) = x if x > 0 else a·x  leaky_relu'(x) = 1 if x > 0 else a
    sigmoid(x) = 1 / (1 + e⁻ˣ)           sigmoid' = y (1 − y)
    tanh(x)                              tanh' = 1 − y²
"""
import numpy as np


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(dy, x):
    return np.where(x > 0, dy, 0).astype(dy.dtype)


def relu6_forward(x):
    return np.minimum(np.maximum(x, 0), 6)


def relu6_backward(dy, x):
    return np.where((x > 0) & (x < 6), dy, 0).astype(dy.dtype)


def leaky_relu_forward(x, slope):
    return np.where(x > 0, x, slope * x).astype(x.dtype)


def leaky_relu_backward(dy, x, slope):
    return np.where(x > 0, dy, slope * dy).astype(dy.dtype)


def sigmoid_forward(x):
    with np.errstate(over="ignore"):  # e⁻ˣ = inf for very negative x gives 1/inf = 0, which is right
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


def sigmoid_backward(dy, y):
    return dy * y * (1 - y)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dy, y):
    return dy * (1 - y * y)

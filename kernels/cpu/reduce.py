"""Reductions on the CPU: sum, max and argmax over a tuple of axes (NumPy's compiled reductions)."""
import numpy as np


def sum(a, axis, keepdims):
    return np.asarray(a.sum(axis=axis, keepdims=keepdims))


def max(a, axis, keepdims):
    return np.asarray(a.max(axis=axis, keepdims=keepdims))


def argmax(a, axis):
    return np.asarray(a.argmax(axis=axis))

"""Matrix products and the dense layer on the CPU.

    y = x Wᵀ + b            x (N, I), W (O, I), b (O,)  ->  y (N, O)
    dx = dy W,  dW = dyᵀ x,  db = Σₙ dy

All three are GEMMs: they go to BLAS (NumPy's `@`, multithreaded OpenBLAS), which no hand loop beats.
"""
import numpy as np


def matmul(a, b):
    return a @ b


def linear_forward(x, w, b):
    y = x @ w.T
    if b is not None:
        y += b
    return y


def linear_backward(dy, x, w, need_dx, need_dw, need_db):
    dx = dy @ w if need_dx else None
    dw = dy.T @ x if need_dw else None
    db = dy.sum(axis=0) if need_db else None
    return dx, dw, db

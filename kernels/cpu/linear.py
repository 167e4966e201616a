"""Matrix products and the dense layer on the CPU.

    y = x Wᵀ + b            x (N, I), W (O, I), b (O,)  ->  y (N, O)
    dx = dy W,  dW = dyᵀ x,  db = Σₙ dy

All three are GEMMs: they go to BLAS, which no hand loop beats, through kernels/cpu/gemm.py (one-thread
OpenBLAS calls split over tinycnn's threads, so that OpenBLAS's own thread pool never competes with Numba's).
"""
from . import gemm


def matmul(a, b):
    return gemm.matmul(a, b)


def linear_forward(x, w, b):
    y = gemm.matmul(x, w.T)
    if b is not None:
        y += b
    return y


def linear_backward(dy, x, w, need_dx, need_dw, need_db):
    dx = gemm.matmul(dy, w) if need_dx else None
    dw = gemm.matmul(dy.T, x) if need_dw else None
    db = dy.sum(axis=0) if need_db else None
    return dx, dw, db

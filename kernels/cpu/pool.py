"""2-D max and average pooling on the CPU (NCHW, ceil_mode=False, padding ≤ kernel/2).

    OH = (H + 2·ph − kh) // sh + 1          (the same for W)
    window (oh, ow) = rows oh·sh − ph … oh·sh − ph + kh − 1, columns likewise
    max:  y = max over the window's real pixels;  argmax = h·W + w of the winner (padding never wins)
    avg:  y = Σ window / divisor,  divisor = kh·kw (count_include_pad) or the number of real pixels

Pooling is memory bound: the kernels see the input as P = N·C independent planes (H, W) and give each thread
whole planes (serial `nogil` kernels over a range of planes, run on the threads of kernels/cpu/threads.py: a
`prange` loop costs each kernel about a second more to compile on an empty cache). A plane is small (98×98
float32 = 38 KB) and stays in cache while its windows are read, and every write of a backward lands in the
thread's own plane: no two threads ever touch the same pixel, so the backward's `+=` (overlapping windows)
needs no atomics. The backward zeroes each plane of dx itself, just before adding into it (the plane is then
in cache), instead of getting a zeroed array: one pass over dx instead of two, and dx can be a recycled array
(kernels/cpu/workspace.py), as are the forward's outputs.

The common MaxPooling2D(2) (2×2 windows, stride 2, no padding) has its own forward kernel: the four pixels
of a window are named, so the loop has no window bounds to work out (3× faster than the general loop).
"""
import numpy as np
from numba import njit

from . import threads
from .workspace import output


def _output_hw(x_shape, kernel, stride, padding):
    H, W = x_shape[2], x_shape[3]
    return ((H + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (W + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def _planes(a):
    """(N, C, H, W) -> (N·C, H, W), a view."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


# ---------------------------------------------------------------------- max pooling

@njit(cache=True, nogil=True)
def _max_pool_planes(x, y, argmax, kh, kw, sh, sw, ph, pw, p0, p1):
    """x (P, H, W) -> y, argmax (P, OH, OW) for the planes [p0, p1): the first maximum of each window and its
    index h·W + w.

    A plain `v > best` (no NaN test) keeps this loop 3-6x faster; so a NaN wins only when it is the first
    pixel of its window (PyTorch always propagates NaN). A diverged net, NaN everywhere, still gives NaN.
    """
    P, H, W = x.shape
    OH, OW = y.shape[1], y.shape[2]
    for p in range(p0, p1):
        for oh in range(OH):
            h0 = oh * sh - ph
            for ow in range(OW):
                w0 = ow * sw - pw
                best = x[p, max(h0, 0), max(w0, 0)]
                best_index = max(h0, 0) * W + max(w0, 0)
                for h in range(max(h0, 0), min(h0 + kh, H)):
                    for w in range(max(w0, 0), min(w0 + kw, W)):
                        v = x[p, h, w]
                        if v > best:
                            best = v
                            best_index = h * W + w
                y[p, oh, ow] = best
                argmax[p, oh, ow] = best_index


@njit(cache=True, nogil=True)
def _max_pool_2x2_planes(x, y, argmax, p0, p1):
    """_max_pool_planes for 2×2 windows, stride 2, no padding: window (oh, ow) is a = x[2oh, 2ow], b to its
    right, c below a, d below b, compared in that order (the first maximum wins, as in the general loop)."""
    P, H, W = x.shape
    OH, OW = y.shape[1], y.shape[2]
    for p in range(p0, p1):
        for oh in range(OH):
            top, bottom = x[p, 2 * oh], x[p, 2 * oh + 1]
            row = 2 * oh * W
            for ow in range(OW):
                best, index = top[2 * ow], row + 2 * ow
                if top[2 * ow + 1] > best:
                    best, index = top[2 * ow + 1], row + 2 * ow + 1
                if bottom[2 * ow] > best:
                    best, index = bottom[2 * ow], row + W + 2 * ow
                if bottom[2 * ow + 1] > best:
                    best, index = bottom[2 * ow + 1], row + W + 2 * ow + 1
                y[p, oh, ow] = best
                argmax[p, oh, ow] = index


def max_pool2d_forward(x, kernel, stride, padding):
    """x (N, C, H, W) -> y (N, C, OH, OW) and argmax int32 (N, C, OH, OW), the winner's index h·W + w."""
    N, C = x.shape[0], x.shape[1]
    OH, OW = _output_hw(x.shape, kernel, stride, padding)
    y = output((N, C, OH, OW), x.dtype)
    argmax = output((N, C, OH, OW), np.int32)
    x, y_, argmax_ = _planes(np.ascontiguousarray(x)), _planes(y), _planes(argmax)
    if tuple(kernel) == tuple(stride) == (2, 2) and tuple(padding) == (0, 0):
        threads.parallel_range(lambda p0, p1: _max_pool_2x2_planes(x, y_, argmax_, p0, p1), N * C, values=x.size)
    else:
        threads.parallel_range(lambda p0, p1: _max_pool_planes(x, y_, argmax_, *kernel, *stride, *padding, p0, p1),
                               N * C, values=x.size)
    return y, argmax


@njit(cache=True, nogil=True)
def _max_unpool_planes(dy, argmax, dx, p0, p1):
    """dx[p] = 0, then dx[p, argmax[p, i, j]] += dy[p, i, j] for every output (i, j) of plane p.

    dx is seen as flat planes (P, H·W), which the argmax indexes directly: splitting it into (h, w) took an
    integer division per output, and made this loop 3× slower."""
    P, OH, OW = dy.shape
    for p in range(p0, p1):
        dx[p] = 0
        for i in range(OH):
            for j in range(OW):
                dx[p, argmax[p, i, j]] += dy[p, i, j]


def max_pool2d_backward(dy, argmax, x_shape):
    """dy (N, C, OH, OW) -> dx x_shape: each output's gradient goes to its window's winner."""
    dx = output(x_shape, dy.dtype)
    dy_, argmax_, dx_ = _planes(np.ascontiguousarray(dy)), _planes(argmax), dx.reshape(-1, x_shape[2] * x_shape[3])
    threads.parallel_range(lambda p0, p1: _max_unpool_planes(dy_, argmax_, dx_, p0, p1), dx_.shape[0],
                           values=dx.size)
    return dx


# ---------------------------------------------------------------------- average pooling

@njit(cache=True)
def _window_divisor(h0, w0, kh, kw, H, W, count_include_pad):
    if count_include_pad:
        return kh * kw
    return (min(h0 + kh, H) - max(h0, 0)) * (min(w0 + kw, W) - max(w0, 0))


@njit(cache=True, nogil=True)
def _avg_pool_planes(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, p0, p1):
    """x (P, H, W) -> y (P, OH, OW): the mean of each window."""
    P, H, W = x.shape
    OH, OW = y.shape[1], y.shape[2]
    for p in range(p0, p1):
        for oh in range(OH):
            h0 = oh * sh - ph
            for ow in range(OW):
                w0 = ow * sw - pw
                total = 0.0  # float64 accumulator
                for h in range(max(h0, 0), min(h0 + kh, H)):
                    for w in range(max(w0, 0), min(w0 + kw, W)):
                        total += x[p, h, w]
                y[p, oh, ow] = total / _window_divisor(h0, w0, kh, kw, H, W, count_include_pad)


def avg_pool2d_forward(x, kernel, stride, padding, count_include_pad):
    """x (N, C, H, W) -> y (N, C, OH, OW)."""
    N, C = x.shape[0], x.shape[1]
    y = output((N, C) + _output_hw(x.shape, kernel, stride, padding), x.dtype)
    x_, y_, include = _planes(np.ascontiguousarray(x)), _planes(y), bool(count_include_pad)
    threads.parallel_range(lambda p0, p1: _avg_pool_planes(x_, y_, *kernel, *stride, *padding, include, p0, p1), N * C,
                           values=x_.size)
    return y


@njit(cache=True, nogil=True)
def _avg_unpool_planes(dy, dx, kh, kw, sh, sw, ph, pw, count_include_pad, p0, p1):
    """dx[p] = 0, then dx[p, window(i, j)] += dy[p, i, j] / divisor, for every output (i, j) of plane p."""
    P, OH, OW = dy.shape
    H, W = dx.shape[1], dx.shape[2]
    for p in range(p0, p1):
        dx[p] = 0
        for oh in range(OH):
            h0 = oh * sh - ph
            for ow in range(OW):
                w0 = ow * sw - pw
                share = dy[p, oh, ow] / _window_divisor(h0, w0, kh, kw, H, W, count_include_pad)
                for h in range(max(h0, 0), min(h0 + kh, H)):
                    for w in range(max(w0, 0), min(w0 + kw, W)):
                        dx[p, h, w] += share


def avg_pool2d_backward(dy, x_shape, kernel, stride, padding, count_include_pad):
    """dy (N, C, OH, OW) -> dx x_shape: each output's gradient is shared by its window's pixels."""
    dx = output(x_shape, dy.dtype)
    dy_, dx_, include = _planes(np.ascontiguousarray(dy)), _planes(dx), bool(count_include_pad)
    threads.parallel_range(lambda p0, p1: _avg_unpool_planes(dy_, dx_, *kernel, *stride, *padding, include, p0, p1),
                           dx_.shape[0], values=dx_.size)
    return dx

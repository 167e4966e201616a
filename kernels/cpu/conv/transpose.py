"""Transposed convolution (NCHW), the adjoint of convolution, and its pixel-shuffle special case.

x (N, C, H, W), w (C, F/G, KH, KW) (PyTorch's layout) -> y (N, F, OH, OW),
OH = (H − 1)·s − 2p + d·(KH − 1) + output_padding + 1. Its forward is conv2d's input gradient (col2im) and its
backward is conv2d's forward (dx) and conv2d's weight gradient (dw), so it reuses those kernels
(algorithms.py).
"""
import numpy as np
from numba import njit

from .. import threads
from ..gemm import MIN_FLOPS_PER_THREAD, matmul
from ..workspace import output, scratch
from .algorithms import convolve, convolve_backward
from .epilogue import NO_ACTIVATION, _bias_act, _bias_or_zeros
from .geometry import conv_output_size, conv_transpose_output_size


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """x (N, C, H, W), w (C, F/G, KH, KW), b (F,) or None -> y (N, F, OH, OW),
    OH = (H − 1)·s − 2p + d·(KH − 1) + output_padding + 1.

    y is the input gradient of the convolution y' = conv2d(y, w) (which maps F channels to C): col2im."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    N, _, H, W = x.shape
    _, Fg, KH, KW = w.shape
    if _is_pixel_shuffle(w.shape, stride, padding, output_padding, dilation, groups):
        return _shuffle_transpose_forward(x, w, b)
    OH = conv_transpose_output_size(H, KH, stride[0], padding[0], output_padding[0], dilation[0])
    OW = conv_transpose_output_size(W, KW, stride[1], padding[1], output_padding[1], dilation[1])
    y = convolve_backward(x, None, None, (N, Fg * groups, OH, OW), w, w.shape, stride, padding, dilation, groups,
                  True, False, False)[0]
    if b is not None:
        _bias_act(y.reshape(N, y.shape[1], OH * OW), _bias_or_zeros(b, y.shape[1], y.dtype), NO_ACTIVATION)
    return y


def conv_transpose2d_backward(dy, x, w, stride, padding, output_padding, dilation, groups,
                              need_dx, need_dw, need_db):
    """dy (N, F, OH, OW) -> (dx like x, dw like w, db (F,)).

    dx = conv2d(dy, w) (kept to x's size: with output_padding ≥ stride, allowed when smaller than the
    dilation, conv2d gives extra rows), dw = conv2d's weight gradient with the roles of x and dy swapped."""
    dy, x, w = np.ascontiguousarray(dy), np.ascontiguousarray(x), np.ascontiguousarray(w)
    if _is_pixel_shuffle(w.shape, stride, padding, output_padding, dilation, groups):
        return _shuffle_transpose_backward(dy, x, w, need_dx, need_dw, need_db)
    dx = dw = db = None
    if need_dx:
        N, C, H, W = x.shape
        OH = conv_output_size(dy.shape[2], w.shape[2], stride[0], padding[0], dilation[0])
        OW = conv_output_size(dy.shape[3], w.shape[3], stride[1], padding[1], dilation[1])
        dx = convolve(dy, w, None, NO_ACTIVATION, stride, padding, dilation, groups, (N, C, OH, OW))
        if (OH, OW) != (H, W):
            dx = np.ascontiguousarray(dx[:, :, :H, :W])
    if need_dw:
        # conv2d's weight gradient for an input dy and an output gradient x
        dw = convolve_backward(x, None, dy, dy.shape, None, w.shape, stride, padding, dilation, groups,
                       False, True, False)[1]
    if need_db:
        db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


# A transposed conv whose stride equals its kernel (no padding, dilation or groups: the U-Net's 2×2,
# stride-2 upsampling) puts each input pixel's K×K patch on its own block of the output, with no overlap:
#
#     y[n, f, h·K + i, w·K + j] = b[f] + Σ_c x[n, c, h, w] · w[c, f, i, j]
#
# i.e. one GEMM Z[n] (F·K·K, H·W) = Wᵀ (F·K·K, C) @ x[n] (C, H·W) and a "pixel shuffle" that moves each row
# (f, i, j) of Z to its strided place in y. The backward unshuffles dy the same way (dZ) and is two GEMMs:
# dx[n] = W @ dZ[n], dW = Σₙ x[n] @ dZ[n]ᵀ, where the general path runs col2im, and im2col twice in the
# backward (timings: benchmarks/RESULTS.md, "Timings moved from kernel docstrings").

def _is_pixel_shuffle(w_shape, stride, padding, output_padding, dilation, groups):
    return (tuple(stride) == tuple(w_shape[2:]) and tuple(padding) == (0, 0) and tuple(output_padding) == (0, 0)
            and tuple(dilation) == (1, 1) and groups == 1)


def _shuffle_transpose_forward(x, w, b):
    """Each piece of work is a band of input rows of some images: its GEMM (one BLAS thread) and its
    shuffle into y run on the same thread, back to back, while its part of Z is still in cache."""
    N, C, H, W = x.shape
    _, F, KH, KW = w.shape
    w_t = w.reshape(C, F * KH * KW).T  # (F·KH·KW, C), a transposed view: BLAS reads it as it is
    x_rows = x.reshape(N, C, H * W)
    Z = scratch("conv.shuffled", (N, F * KH * KW, H * W), x.dtype)
    y = output((N, F, H * KH, W * KW), x.dtype)
    b = _bias_or_zeros(b, F, x.dtype)
    bands = _bands(N, H, max(1, min(threads.num_threads(), int(2.0 * Z.size * C // MIN_FLOPS_PER_THREAD))))

    def band(i):
        n0, n1, h0, h1 = bands[i]
        columns = slice(h0 * W, h1 * W)
        np.matmul(w_t, x_rows[n0:n1, :, columns], out=Z[n0:n1, :, columns])
        _pixel_shuffle(Z.reshape(N, F, KH, KW, H, W), b, y, n0, n1, h0, h1)

    threads.parallel_for(band, len(bands))
    return y


def _bands(N, H, parts):
    """`parts` pieces (n0, n1, h0, h1) covering the N images' H rows: whole images when there are as many
    as parts, else bands of rows of each image."""
    if N >= parts:
        return [(N * i // parts, N * (i + 1) // parts, 0, H) for i in range(parts)]
    per_image = -(-parts // N)
    return [(n, n + 1, H * i // per_image, H * (i + 1) // per_image) for n in range(N) for i in range(per_image)]


def _shuffle_transpose_backward(dy, x, w, need_dx, need_dw, need_db):
    N, C, H, W = x.shape
    _, F, KH, KW = w.shape
    dZ = scratch("conv.unshuffled", (N, F, KH, KW, H, W), dy.dtype)
    threads.parallel_range(lambda p0, p1: _pixel_unshuffle(dy, dZ, p0, p1), N * F, values=dy.size)
    dZ = dZ.reshape(N, F * KH * KW, H * W)
    dx = dw = db = None
    if need_dx:  # dx[n] = W (C, F·KH·KW) @ dZ[n]
        dx = output(x.shape, dy.dtype)
        matmul(w.reshape(C, F * KH * KW), dZ, out=dx.reshape(N, C, H * W))
    if need_dw:  # dW = Σₙ x[n] (C, H·W) @ dZ[n]ᵀ (H·W, F·KH·KW)
        dw = matmul(x.reshape(N, C, H * W), dZ.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    if need_db:
        db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


@njit(cache=True, nogil=True)
def _pixel_shuffle(Z, b, y, n0, n1, h0, h1):
    """y[n, f, h·KH + i, w·KW + j] = Z[n, f, i, j, h, w] + b[f] for the images n0 ≤ n < n1 and their input
    rows h0 ≤ h < h1."""
    N, F, KH, KW, H, W = Z.shape
    for n in range(n0, n1):
        for f in range(F):
            for h in range(h0, h1):
                for i in range(KH):
                    row = y[n, f, h * KH + i]
                    for j in range(KW):
                        src = Z[n, f, i, j, h]
                        for w_ in range(W):
                            row[w_ * KW + j] = src[w_] + b[f]


@njit(cache=True, nogil=True)
def _pixel_unshuffle(dy, dZ, p0, p1):
    """dZ[n, f, i, j, h, w] = dy[n, f, h·KH + i, w·KW + j] for the (n, f) planes p0 ≤ n·F + f < p1."""
    N, F, KH, KW, H, W = dZ.shape
    for plane in range(p0, p1):
        n, f = plane // F, plane % F
        for h in range(H):
            for i in range(KH):
                row = dy[n, f, h * KH + i]
                for j in range(KW):
                    dst = dZ[n, f, i, j, h]
                    for w_ in range(W):
                        dst[w_] = row[w_ * KW + j]

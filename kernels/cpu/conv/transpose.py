"""Transposed convolution (NCHW), the adjoint of convolution, and its pixel-shuffle special case.

x (N, C, H, W), w (C, F/G, KH, KW) (PyTorch's layout) -> y (N, F, OH, OW),
OH = (H − 1)·s − 2p + d·(KH − 1) + output_padding + 1. Its forward is conv2d's input gradient (col2im) and its
backward is conv2d's forward (dx) and conv2d's weight gradient (dw), so it reuses those kernels
(algorithms.py).
"""
import threading

import numba
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
#
# The backward's work is cut into bands of input rows of one image (a whole image while its dZ is within
# SHUFFLE_PIECE_BYTES, about a core's L2 cache); each band runs start to finish on one of tinycnn's threads:
# its unshuffle, then its two GEMMs while dZ is in cache (faster in the U-Net's step than dZ unshuffled
# whole, then the GEMMs over the batch; smaller bands were slower: timings in benchmarks/RESULTS.md, "Timings
# moved from kernel docstrings"). The forward's pieces are a thread's share of the images: cut like the
# backward's, it ran no faster, and its kernel compiled 0.14 s longer on the U-Net's first predict.

SHUFFLE_PIECE_BYTES = 1 << 20


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


def _shuffle_transpose_backward(dy, x, w, need_dx, need_dw, need_db):
    """Each band: its dZ unshuffled from dy (its bias sums taken on the way), then dx's band and this thread's
    share of dW, while dZ is in cache; the threads' shares are added at the end."""
    N, C, H, W = x.shape
    _, F, KH, KW = w.shape
    FK = F * KH * KW
    w_rows, x_rows = w.reshape(C, FK), x.reshape(N, C, H * W)
    dx = output(x.shape, dy.dtype) if need_dx else None
    bands = _row_bands(N, H, FK * W, dy.dtype.itemsize)
    unshuffle = _unshuffle_band_pairs if KW == 2 else _unshuffle_band
    shares = {}  # thread -> its (dW (C, F·KH·KW), db (F,)) sums

    def band(i):
        n, h0, h1 = bands[i]
        columns = slice(h0 * W, h1 * W)
        share = shares.get(threading.get_ident())
        if share is None:
            share = shares[threading.get_ident()] = (np.zeros((C, FK), dy.dtype), np.zeros(F, dy.dtype))
        dZ = scratch("conv.unshuffled", (F, KH, KW, h1 - h0, W), dy.dtype)
        unshuffle(dy, dZ, n, h0, share[1], dy.dtype.type(0))
        dZ = dZ.reshape(FK, (h1 - h0) * W)
        if need_dx:  # dx[n] = W (C, F·KH·KW) @ dZ[n]
            np.matmul(w_rows, dZ, out=dx.reshape(N, C, H * W)[n, :, columns])
        if need_dw:  # dW += x[n] (C, H·W) @ dZ[n]ᵀ (H·W, F·KH·KW)
            product = scratch("conv.unshuffled_dw", (C, FK), dy.dtype)
            share[0][...] += np.matmul(x_rows[n, :, columns], dZ.T, out=product)

    _run_bands(band, len(bands), 2 * N * C * FK * H * W * (need_dx + need_dw))
    parts = list(shares.values())
    dw, db = parts[0]
    for part in parts[1:]:  # added in place (np.sum of the list would stack them in a new array first)
        dw += part[0]
        db += part[1]
    return dx, (dw.reshape(w.shape) if need_dw else None), (db if need_db else None)


def _bands(N, H, parts):
    """`parts` pieces (n0, n1, h0, h1) covering the N images' H rows: whole images when there are as many
    as parts, else bands of rows of each image."""
    if N >= parts:
        return [(N * i // parts, N * (i + 1) // parts, 0, H) for i in range(parts)]
    per_image = -(-parts // N)
    return [(n, n + 1, H * i // per_image, H * (i + 1) // per_image) for n in range(N) for i in range(per_image)]


def _row_bands(N, H, row_values, itemsize):
    """Pieces (n, h0, h1): bands of each image's input rows whose part of Z (row_values a row) fits
    SHUFFLE_PIECE_BYTES."""
    rows = max(1, min(H, SHUFFLE_PIECE_BYTES // (row_values * itemsize)))
    return [(n, h0, min(H, h0 + rows)) for n in range(N) for h0 in range(0, H, rows)]


def _run_bands(band, count, flops):
    """band(i) for every band, on tinycnn's threads, or all on the caller's when the work is too small to
    share (a batch-1 predict): as one piece of parallel_for, so that BLAS still runs on one thread."""
    if flops < 2 * MIN_FLOPS_PER_THREAD:
        threads.parallel_for(lambda _: [band(i) for i in range(count)], 1)
    else:
        threads.parallel_for(band, count)


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


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _unshuffle_band(dy, dZ, n, h0, sums, zero):
    """dZ[f, i, j, h − h0, w] = dy[n, f, h·KH + i, w·KW + j] for the band's rows h, and sums[f] += their sum
    (zero: 0 in dy's dtype, so the sums are SIMD ones)."""
    F, KH, KW, rows, W = dZ.shape
    for f in range(F):
        s = zero
        for r in range(rows):
            for i in range(KH):
                row = dy[n, f, (h0 + r) * KH + i]
                for j in range(KW):
                    dst = dZ[f, i, j, r]
                    for w_ in range(W):
                        v = row[w_ * KW + j]
                        dst[w_] = v
                        s += v
        sums[f] += s


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _unshuffle_band_pairs(dy, dZ, n, h0, sums, zero):
    """_unshuffle_band for KW = 2 (the U-Net's)."""
    F, KH, _, rows, W = dZ.shape
    for f in range(F):
        s = zero
        for r in range(rows):
            for i in range(KH):
                s += _split_pairs(dy[n, f, (h0 + r) * KH + i], dZ[f, i, 0, r], dZ[f, i, 1, r], zero)
        sums[f] += s


# KW = 2 (the U-Net's) has a kernel of its own, its row loop a function of its own with unsigned indices: LLVM
# then makes the two column phases one interleaved load (written inline in the band loop, the loop stayed
# scalar and the unshuffle took 2× as long). A kernel of its own, not a branch of _unshuffle_band: that
# compiled 0.1 s longer.

@njit(cache=True, fastmath={"reassoc"})
def _split_pairs(row, even, odd, zero):
    """even[w] = row[2w], odd[w] = row[2w + 1]; returns Σ row."""
    s = zero
    for w_ in range(even.size):
        k = numba.uint64(2 * w_)
        a, b = row[k], row[k + numba.uint64(1)]
        even[w_] = a
        odd[w_] = b
        s += a + b
    return s

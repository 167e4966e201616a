"""im2col + GEMM: the general NCHW convolution (any kernel, stride, padding, dilation, groups).

`_im2col` copies every input window of an image into a column of a matrix cols[n] (C·KH·KW, OH·OW); then,
per image and group, y[n] (F/G, OH·OW) = W (F/G, C/G·KH·KW) @ cols[n] is one BLAS GEMM (kernels/cpu/gemm.py:
one-thread OpenBLAS calls split over our threads) that writes straight into the NCHW output: no
transposition pass. The weight gradient is dW = Σₙ dy[n] @ cols[n]ᵀ and the input gradient is
dcols[n] = Wᵀ @ dy[n], which `_col2im` adds back into the image. The Numba kernels only move memory:
`_im2col` is parallel over the (image, row) pairs of cols and `_col2im` over the (n, c) planes of dx, so no
two threads ever write the same element. The batch is cut into chunks of a few images so that cols stays
under `COLS_BUDGET_BYTES`: small enough to stay in the L3 cache between im2col writing it and the GEMM
reading it, and it lives in a workspace buffer (kernels/cpu/workspace.py) reused by every chunk, layer and
step instead of a fresh allocation; so do the big outputs (y, dx), recycled from an earlier step when
nothing refers to them any more. The bias and activation are applied to each chunk of y while it is in
cache (epilogue.py); the backward masks dy by [y > 0] chunk by chunk when the conv had a fused ReLU.
"""
import numpy as np
from numba import njit

from .. import threads
from ..gemm import matmul
from ..workspace import scratch
from .epilogue import _bias_act, _bias_or_zeros, _gradient_buffers, _masked_chunk
from .rows import _copy_row, _scatter_add_row, _valid_range

COLS_BUDGET_BYTES = 16 * 2**20  # im2col matrices are built this many bytes of images at a time


def applies(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
    """Any convolution."""
    return True


def forward(x, w, b, act, stride, padding, dilation, groups, y):
    """y = act(conv2d(x, w) + b) into y (N, F, OH, OW), chunk by chunk of images; padding (top, left)."""
    F, _, KH, KW = w.shape
    y_shape = y.shape
    P = y_shape[2] * y_shape[3]
    Fg, K, chunks = _gemm_setup(x.shape, w.shape, P, groups, x.dtype)
    w_rows = w.reshape(F, K)
    for n0, n1 in chunks:
        cols = scratch("conv.cols", (n1 - n0, groups * K, P), x.dtype)
        _im2col(x[n0:n1], KH, KW, stride, padding, dilation, y_shape[2], y_shape[3], cols)
        y_chunk = y[n0:n1].reshape(n1 - n0, F, P)
        for g in range(groups):  # one GEMM per image: y[n, group g] = W_g @ cols[n, group g]
            matmul(w_rows[g * Fg:(g + 1) * Fg], cols[:, g * K:(g + 1) * K], out=y_chunk[:, g * Fg:(g + 1) * Fg])
        if b is not None or act:  # the epilogue, while the chunk of y is still in cache
            _bias_act(y_chunk, _bias_or_zeros(b, F, x.dtype), act)
    return y


def backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """conv2d's gradients (dz = dy · [y > 0] when y is given) -> (dx, dw, db), None for what is not needed."""
    N, F, OH, OW = dy.shape
    _, Cg, KH, KW = w_shape
    P = OH * OW
    dtype = dy.dtype
    dx, dw, bias_sums = _gradient_buffers(dy, x_shape, w_shape, need_dx, need_dw)
    Fg, K, chunks = _gemm_setup(x_shape, w_shape, P, groups, dtype)
    dw_rows = dw.reshape(F, K) if need_dw else None
    w_rows = w.reshape(F, K) if need_dx else None
    for n0, n1 in chunks:
        nb = n1 - n0
        dz = _masked_chunk(dy[n0:n1].reshape(nb, F, P), y, n0, n1, bias_sums, need_db)
        if need_dw:  # dW_g += Σₙ dz[n, g] @ cols[n, g]ᵀ
            cols = scratch("conv.cols", (nb, groups * K, P), dtype)
            _im2col(x[n0:n1], KH, KW, stride, padding, dilation, OH, OW, cols)
            for g in range(groups):
                dw_rows[g * Fg:(g + 1) * Fg] += matmul(
                    dz[:, g * Fg:(g + 1) * Fg], cols[:, g * K:(g + 1) * K].transpose(0, 2, 1)).sum(axis=0)
        if need_dx:  # dcols[n, g] = W_gᵀ @ dz[n, g], added back into the image by col2im
            dcols = scratch("conv.dcols", (nb, groups * K, P), dtype)
            for g in range(groups):
                matmul(w_rows[g * Fg:(g + 1) * Fg].T, dz[:, g * Fg:(g + 1) * Fg], out=dcols[:, g * K:(g + 1) * K])
            _col2im(dcols, KH, KW, stride, padding, dilation, OH, OW, dx[n0:n1])
    return dx, dw, (bias_sums.sum(axis=0).astype(dtype) if need_db else None)


def _image_chunks(N, bytes_per_image):
    """Split the batch into runs of images [n0, n1) whose im2col matrix fits COLS_BUDGET_BYTES."""
    per_chunk = max(1, COLS_BUDGET_BYTES // max(1, bytes_per_image))
    return [(n0, min(N, n0 + per_chunk)) for n0 in range(0, N, per_chunk)]


def _gemm_setup(x_shape, w_shape, pixels, groups, dtype):
    """Shapes of the GEMMs: per image and group, W_g (F/G, K) @ cols[n, g] (K, pixels), K = C/G·KH·KW."""
    F, Cg, KH, KW = w_shape
    K = Cg * KH * KW
    chunks = _image_chunks(x_shape[0], groups * K * pixels * np.dtype(dtype).itemsize)
    return F // groups, K, chunks


# ---------------------------------------------------------------------- im2col + GEMM

def _im2col(x, KH, KW, stride, padding, dilation, OH, OW, cols):
    """x (N, C, H, W) -> cols (N, C·KH·KW, OH·OW), for each image one row per (c, i, j), one column per output:

        cols[n, (c·KH + i)·KW + j, oh·OW + ow] = x[n, c, oh·sh + i·dil_h − ph, ow·sw + j·dil_w − pw]

    (0 where that pixel is padding).

    Parallel over the (n, row) pairs: each thread fills whole rows, left to right; the KH·KW rows of a plane
    are neighbours, so a thread reads each input plane from its cache KH·KW times. (A serial `nogil` kernel
    on ranges of the pairs, on the threads of kernels/cpu/threads.py: a `prange` loop costs each kernel
    about a second more to compile on an empty cache.)"""
    threads.parallel_range(lambda t0, t1: _im2col_rows(x, KH, KW, stride, padding, dilation, OH, OW, cols, t0, t1),
                           x.shape[0] * x.shape[1] * KH * KW, values=cols.size)


@njit(cache=True, nogil=True)
def _im2col_rows(x, KH, KW, stride, padding, dilation, OH, OW, cols, t0, t1):
    N, C, H, W = x.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    R = C * KH * KW
    for task in range(t0, t1):
        n, row = task // R, task % R
        c, i, j = row // (KH * KW), (row // KW) % KH, row % KW
        oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
        ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
        iw_lo = ow_lo * sw + j * dil_w - pw
        for oh in range(OH):
            out = cols[n, row, oh * OW:(oh + 1) * OW]
            if oh < oh_lo or oh >= oh_hi:
                out[:] = 0
                continue
            out[:ow_lo] = 0
            _copy_row(out[ow_lo:ow_hi], x[n, c, oh * sh + i * dil_h - ph, iw_lo:], sw)
            out[ow_hi:] = 0


def _col2im(cols, KH, KW, stride, padding, dilation, OH, OW, dx):
    """The adjoint of _im2col: dx[n, c, ih, iw] = the sum of every entry of cols that _im2col copied from
    (ih, iw) (dx is overwritten: each plane is zeroed first, while it is in this thread's cache).

    Parallel over the (n, c) planes of dx: a thread adds only into its own plane, so there are no races."""
    threads.parallel_range(lambda p0, p1: _col2im_planes(cols, KH, KW, stride, padding, dilation, OH, OW, dx, p0, p1),
                           dx.shape[0] * dx.shape[1], values=cols.size)


@njit(cache=True, nogil=True)
def _col2im_planes(cols, KH, KW, stride, padding, dilation, OH, OW, dx, p0, p1):
    N, C, H, W = dx.shape
    (sh, sw), (ph, pw), (dil_h, dil_w) = stride, padding, dilation
    for plane in range(p0, p1):
        n, c = plane // C, plane % C
        dx[n, c] = 0
        for i in range(KH):
            oh_lo, oh_hi = _valid_range(i * dil_h - ph, sh, H, OH)
            for j in range(KW):
                ow_lo, ow_hi = _valid_range(j * dil_w - pw, sw, W, OW)
                iw_lo = ow_lo * sw + j * dil_w - pw
                row = (c * KH + i) * KW + j
                for oh in range(oh_lo, oh_hi):
                    ih = oh * sh + i * dil_h - ph
                    _scatter_add_row(dx[n, c, ih, iw_lo:], cols[n, row, oh * OW + ow_lo:oh * OW + ow_hi], sw)

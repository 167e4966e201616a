"""Channels-last convolution: x (N, H, W, C) -> y (N, OH, OW, F), w in its usual (F, C/G, KH, KW) layout, for
groups = 1 (1×1 convs as one GEMM, others as im2col + GEMM) and depthwise convs (groups = C = F, direct
kernels over whole rows of channels). The why and the math are in the comments below.
"""
import numba
import numpy as np
from numba import njit, prange

from .. import threads
from ..activation import FUSED_CODES, fused_activate
from ..gemm import matmul
from ..workspace import output, prepared, scratch
from . import depthwise3x3
from .depthwise3x3 import TAP_WORK  # a depthwise conv's passes go on the threads from half SERIAL_BELOW
from .epilogue import NO_ACTIVATION, _bias_or_zeros
from .geometry import _geometry
from .im2col import COLS_BUDGET_BYTES
from .rows import _valid_range


# ---------------------------------------------------------------------- channels-last (NHWC)
#
# The same convolution with the channels last: x (N, H, W, C) -> y (N, OH, OW, F), w in its usual
# (F, C/G, KH, KW) layout, padding as above:
#
#     y[n, oh, ow, f] = b[f] + Σ_{c, i, j} w[f, c, i, j] · x[n, oh·s + i·d − top, ow·s + j·d − left, c]
#
# Why a second layout: MobileNet's blocks are 1×1 convs and depthwise 3×3 convs on few channels, and both
# run faster with the channels last (on the MobileNetV2 regressor's layers; timings: benchmarks/RESULTS.md,
# "Timings moved from kernel docstrings"):
# - a 1×1 conv is ONE GEMM over all N·H·W pixels, y (M, F) = x (M, C) @ Wᵀ (C, F): OpenBLAS runs that
#   faster than NCHW's per-image W (F, C) @ x[n] (C, H·W) for C = 16–144;
# - a depthwise conv reads all the channels of a pixel at once: its inner loop is C contiguous values (SIMD)
#   whatever the stride, where NCHW's steps along a row by the stride (and a plane of 8×8 = 64 values is
#   too short a loop).
# Other convs (the stem's 3×3 on 3 channels) are im2col + GEMM, the columns of a pixel being KH·KW runs of C
# contiguous values. Supported here: groups = 1, and depthwise (groups = C = F); the op layer (ops/conv.py)
# runs any other conv through the NCHW kernels between two transposes.


# ---------------------------------------------------------------------- threads
#
# Each kernel below that loops over rows (or over the shares of a sum) is a serial `nogil` kernel over a range
# of them, kernel(..., start, stop), run on the threads of kernels/cpu/threads.py: a `prange` loop costs each
# kernel about a second more to compile on an empty cache (benchmarks/RESULTS.md, "Cold start").

_on_threads = threads.on_threads  # one call below threads.SERIAL_BELOW values, else tinycnn's threads


def conv2d_channels_last_forward(x, w, b, stride, padding, dilation, groups, activation=None):
    """x (N, H, W, C), w (F, C/G, KH, KW), b (F,) or None -> y = act(conv2d + b) (N, OH, OW, F), for groups = 1
    or a depthwise conv (groups = C = F); activation None, "relu" or "relu6"."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    (top, left), y_shape, depthwise = _channels_last_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    act = FUSED_CODES[activation]
    y = output(y_shape, x.dtype)
    F = w.shape[0]
    bias = _bias_or_zeros(b, F, x.dtype)
    if depthwise:
        if depthwise3x3.applies(x.shape, w.shape, y_shape, stride, (top, left), dilation):  # MobileNet's
            taps = prepared(w, "nine_taps", depthwise3x3.nine_taps)
            depthwise3x3.depthwise3x3(x, taps, bias, stride, (top, left), y, act)
        elif stride[1] == 1:  # the re-laid taps and bias are kept across an inference plan's replays
            OW = y_shape[2]
            P = min(OW, max(1, DEPTHWISE_CHUNK // F))  # pixels a chunk
            tap_rows = prepared(w, ("depthwise_tap_rows", P), lambda w: _tiled_taps(_taps_last(w)[:, :, 0], P))
            bias_row = np.tile(bias, P) if b is None else prepared(b, ("bias_row", P), lambda _: np.tile(bias, P))
            _depthwise_rows_forward(_image_rows(x), tap_rows, bias_row, F, x.shape[1], y_shape[1],
                                    stride[0], (top, left), dilation, _image_rows(y), act)
        else:
            _depthwise_last_forward(x, _taps_last(w)[:, :, 0], bias, stride, (top, left), dilation, y, act)
        return y
    y2 = y.reshape(-1, F)
    if _is_pointwise(x.shape, w.shape, stride, y_shape):  # x is its own im2col matrix
        matmul(x.reshape(-1, x.shape[3]), w.reshape(F, -1).T, out=y2)
    else:  # (KH·KW·C, F), rows in the (i, j, c) order of the columns; kept across an inference plan's replays
        weights = prepared(w, "taps_last", _taps_last).reshape(-1, F)
        _im2col_gemm_last(x, weights, bias, act, w.shape, stride, (top, left), dilation, y_shape, y2)
        return y
    if b is not None or act != NO_ACTIVATION:
        _bias_act_last(y2, bias, act)
    return y


def conv2d_channels_last_backward(dy, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """dy (N, OH, OW, F) -> (dx like x, dw like w, db (F,)), None for what is not needed."""
    dy, x, w = np.ascontiguousarray(dy), np.ascontiguousarray(x), np.ascontiguousarray(w)
    (top, left), y_shape, depthwise = _channels_last_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    F = w.shape[0]
    dx = dw = db = None
    if depthwise:
        nine = depthwise3x3.gradient_applies(x.shape, w.shape, y_shape, stride, (top, left), dilation)
        if nine and y_shape[1] == x.shape[1] and (need_dw or need_db) and F >= depthwise3x3.BANDED_MIN_CHANNELS:
            sums = np.zeros((numba.get_num_threads(), 10, F), np.float64)  # dx, dw, db band by band: dy read once
            dx = depthwise3x3.backward(dy, x, depthwise3x3.nine_taps(w), top,
                                       output(x.shape, x.dtype) if need_dx else None, sums)
            sums = sums.sum(axis=0)
            dw = np.ascontiguousarray(sums[:9].T.reshape(w.shape), x.dtype) if need_dw else None
            return dx, dw, (sums[9].astype(x.dtype) if need_db else None)
        taps = _taps_last(w)[:, :, 0]  # (KH, KW, C)
        unit_stride, OW = stride[1] == 1, y_shape[2]
        if need_dx:
            dx = output(x.shape, x.dtype)
            if nine:  # the turned taps
                turned = depthwise3x3.turned(depthwise3x3.nine_taps(w))
                depthwise3x3.depthwise3x3(dy, turned, np.zeros(F, dy.dtype), (1, 1), (2 - top, 1), dx, NO_ACTIVATION)
            elif unit_stride:
                _depthwise_rows_input_grad(_image_rows(dy), _tiled_taps(taps, OW), F, x.shape[1], y_shape[1], stride[0],
                                           (top, left), dilation, _image_rows(dx))
            else:
                _depthwise_last_input_grad(dy, taps, stride, (top, left), dilation, dx)
        if need_dw or need_db:
            KH, KW = taps.shape[:2]
            if unit_stride:  # sums per (tap, ow, c), added up over ow here
                sums = np.zeros((numba.get_num_threads(), KH * KW + 1, OW * F), np.float64)
                _depthwise_rows_weight_grad(_image_rows(dy), _image_rows(x), F, x.shape[1], y_shape[1], stride[0],
                                            (top, left), dilation, KW, sums)
                sums = sums.sum(axis=0).reshape(KH * KW + 1, OW, F).sum(axis=1)
            else:
                sums = np.zeros((numba.get_num_threads(), KH * KW + 1, F), np.float64)
                _depthwise_last_weight_grad(dy, x, KH, KW, stride, (top, left), dilation, sums)
                sums = sums.sum(axis=0)
            dw = np.ascontiguousarray(sums[:-1].T.reshape(w.shape), x.dtype) if need_dw else None
            db = sums[-1].astype(x.dtype) if need_db else None
        return dx, dw, db
    dy2 = dy.reshape(-1, F)
    if _is_pointwise(x.shape, w.shape, stride, y_shape):
        x2 = x.reshape(-1, x.shape[3])
        if need_dx and need_dw:
            dx2, dw2 = _pointwise_backward(dy2, x2, w.reshape(F, -1))
            dx, dw = dx2.reshape(x.shape), dw2.reshape(w.shape)
        else:
            dx = matmul(dy2, w.reshape(F, -1), out=output(x2.shape, x.dtype)).reshape(x.shape) if need_dx else None
            dw = matmul(dy2.T, x2).reshape(w.shape) if need_dw else None
    elif need_dw and not need_dx:  # a first layer (its input needs no gradient): the columns piece by piece
        dweights = _im2col_weight_grad_last(x, dy2, w.shape, stride, (top, left), dilation, y_shape)
        KH, KW = w.shape[2], w.shape[3]
        dw = np.ascontiguousarray(dweights.reshape(F, KH, KW, -1).transpose(0, 3, 1, 2), x.dtype)
    else:
        weights = _taps_last(w).reshape(-1, F)
        dweights = np.zeros(weights.T.shape, np.float64) if need_dw else None
        if need_dx:
            dx = output(x.shape, x.dtype)
        for n0, n1, cols in _columns_last(x, w.shape, stride, (top, left), dilation, y_shape, fill=need_dw):
            rows = dy2[n0 * y_shape[1] * y_shape[2]:n1 * y_shape[1] * y_shape[2]]
            if need_dw:
                dweights += matmul(rows.T, cols)
            if need_dx:  # the columns' gradient, added back into the images (col2im)
                dcols = matmul(rows, weights.T, out=cols)
                _col2im_last(dcols.reshape(n1 - n0, y_shape[1], y_shape[2], -1), w.shape[2], w.shape[3],
                             stride, (top, left), dilation, dx[n0:n1])
        if need_dw:  # (F, KH·KW·C) in (i, j, c) order -> (F, C, KH, KW)
            KH, KW = w.shape[2], w.shape[3]
            dw = np.ascontiguousarray(dweights.reshape(F, KH, KW, -1).transpose(0, 3, 1, 2), x.dtype)
    db = _column_sums(dy2) if need_db else None
    return dx, dw, db


POINTWISE_CHUNK_BYTES = 192 * 1024  # rows of dy per GEMM pair: this many bytes, so they stay in L2 between the two


def _pointwise_backward(dy2, x2, w2):
    """dx = dy W and dW = dyᵀ x of a 1×1 conv (dy (M, F), x (M, C), W (F, C)) in one pass over dy: each thread
    takes chunks of rows and runs both GEMMs on a chunk while it is in its L2 cache, summing its own share of
    dW (added up after). As two whole GEMMs, each read dy from memory (the regressor's 16 → 96 conv at 64×64
    has a 25 MB dy) (timings: benchmarks/RESULTS.md, "Timings moved from kernel docstrings"). A few filters
    (a detector head's 1 or 4): a row at a time in one kernel (GEMMs with 1 to 4 columns ran far below
    BLAS's speed)."""
    M, F = dy2.shape
    if F <= THIN_FILTERS:
        return _thin_pointwise_backward(dy2, x2, w2)
    rows = max(16, POINTWISE_CHUNK_BYTES // (F * dy2.dtype.itemsize) // 16 * 16)
    chunks = [slice(lo, min(M, lo + rows)) for lo in range(0, M, rows)]
    parts = max(1, min(threads.num_threads(), len(chunks)))
    dx2 = output(x2.shape, x2.dtype)
    dw_parts = np.zeros((parts,) + w2.shape, np.float64)

    def work(t):
        product = np.empty(w2.shape, dy2.dtype)
        for chunk in chunks[t::parts]:
            np.matmul(dy2[chunk], w2, out=dx2[chunk])
            np.matmul(dy2[chunk].T, x2[chunk], out=product)
            dw_parts[t] += product
    threads.parallel_for(work, parts)
    return dx2, dw_parts.sum(axis=0).astype(dy2.dtype)


THIN_FILTERS = 4  # 1×1 convs with at most this many filters: _thin_pointwise_backward


def _thin_pointwise_backward(dy2, x2, w2):
    """_pointwise_backward for a few filters: each share of the rows (one per thread) writes its rows of dx
    and sums its own dW (in the data's dtype for 256 rows at a time, then in float64), added up after."""
    dx2 = output(x2.shape, x2.dtype)
    shares = np.zeros((numba.get_num_threads(),) + w2.shape, np.float64)
    _on_threads(_thin_pointwise_shares, shares.shape[0], 2 * x2.size, dy2, x2, np.ascontiguousarray(w2), dx2,
                shares)
    return dx2, shares.sum(axis=0).astype(dy2.dtype)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _thin_pointwise_shares(dy2, x2, w2, dx2, shares, t0, t1):
    T, F, C = shares.shape
    M = x2.shape[0]
    part = np.zeros((F, C), x2.dtype)
    for t in range(t0, t1):
        first, last = t * M // T, (t + 1) * M // T
        for m in range(first, last):
            g, row, d = dy2[m], x2[m], dx2[m]
            for k in range(C):
                d[k] = g[0] * w2[0, k]
            for f in range(1, F):
                for k in range(C):
                    d[k] += g[f] * w2[f, k]
            for f in range(F):
                acc = part[f]
                for k in range(C):
                    acc[k] += g[f] * row[k]
            if (m - first) % 256 == 255 or m == last - 1:
                for f in range(F):
                    for k in range(C):
                        shares[t, f, k] += part[f, k]
                part[:] = 0


def _column_sums(a2):
    """Σ over the rows of a2 (M, F) -> (F,) in a2's dtype: the bias gradient Σ_{n, oh, ow} dy, in parallel
    (NumPy's float64 sum over the rows is one-threaded and slower; timings: benchmarks/RESULTS.md,
    "Timings moved from kernel docstrings")."""
    sums = np.zeros((numba.get_num_threads(), a2.shape[1]), np.float64)
    _on_threads(_row_block_sums, sums.shape[0], a2.size, a2, sums)
    return sums.sum(axis=0).astype(a2.dtype)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _row_block_sums(a2, sums, t0, t1):
    """sums[t] += Σ of share t of the rows of a2 (T = len(sums) shares), for t in [t0, t1), in the data's
    dtype for 64 rows at a time (SIMD over the columns), then into the float64 totals."""
    T, F = sums.shape
    M = a2.shape[0]
    for t in range(t0, t1):
        part = np.zeros(F, a2.dtype)
        first, last = t * M // T, (t + 1) * M // T
        for m in range(first, last):
            row = a2[m]
            for f in range(F):
                part[f] += row[f]
            if (m - first) % 64 == 63 or m == last - 1:
                for f in range(F):
                    sums[t, f] += part[f]
                part[:] = 0


def _channels_last_geometry(x_shape, w_shape, stride, padding, dilation, groups):
    """-> (top, left), the output's shape (N, OH, OW, F), and whether the conv is depthwise."""
    N, H, W, C = x_shape
    F, Cg, KH, KW = w_shape
    top_left, (_, _, OH, OW) = _geometry((N, C, H, W), w_shape, stride, padding, dilation)
    depthwise = groups == C and F == C and Cg == 1
    if groups != 1 and not depthwise:
        raise ValueError(f"channels-last conv: groups={groups} with weight {w_shape} is neither 1 nor depthwise")
    return top_left, (N, OH, OW, F), depthwise


def _is_pointwise(x_shape, w_shape, stride, y_shape):
    """A 1×1 conv at stride 1 without padding: y (M, F) = x (M, C) @ Wᵀ, x being its own im2col matrix."""
    return w_shape[2:] == (1, 1) and stride == (1, 1) and x_shape[1:3] == y_shape[1:3]


def _taps_last(w):
    """(F, C/G, KH, KW) -> (KH, KW, C/G, F), contiguous: the filters' taps with the filters last."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _columns_last(x, w_shape, stride, top_left, dilation, y_shape, fill=True):
    """Yield (n0, n1, cols) for chunks of images: cols (n·OH·OW, KH·KW·C) their im2col matrix, one row per
    output pixel (filled only when `fill`), in a workspace buffer reused by every chunk."""
    N, H, W, C = x.shape
    _, OH, OW, _ = y_shape
    KH, KW = w_shape[2], w_shape[3]
    image_bytes = OH * OW * KH * KW * C * x.dtype.itemsize  # one image's columns
    per_chunk = max(1, min(N, COLS_BUDGET_BYTES // max(image_bytes, 1)))
    for n0 in range(0, N, per_chunk):
        n1 = min(N, n0 + per_chunk)
        cols = scratch("cols_last", ((n1 - n0) * OH * OW, KH * KW * C), x.dtype)
        if fill:
            _im2col_last(x[n0:n1], KH, KW, stride, top_left, dilation, OH, OW, cols)
        yield n0, n1, cols


def _im2col_last(x, KH, KW, stride, padding, dilation, OH, OW, cols):
    """cols[(n, oh, ow), (i, j, c)] = x[n, oh·sh + i·dil_h − top, ow·sw + j·dil_w − left, c], 0 outside the image.
    In ranges of the output rows (n, oh): each writes its own rows of cols. On the threads even when small:
    its nine copies of a batch-1 RGB stem's input (0.44 M values) took ~0.45 ms on one thread, ~0.25 on two."""
    threads.parallel_range(lambda r0, r1: _im2col_last_rows(x, KH, KW, stride, padding, dilation, OH, OW,
                                                            cols[r0 * OW:r1 * OW], r0, r1),
                           x.shape[0] * OH, pieces_per_thread=4)


IM2COL_PIECE_BYTES = 256 * 1024  # the columns of a piece of the forward (_im2col_gemm_last): in L2 for the GEMM
IM2COL_MIN_PIECES = 8  # work for every thread of a batch-1 predict


def _piece_bounds(rows, row_bytes):
    """Bounds of pieces of output rows whose columns take about IM2COL_PIECE_BYTES, at least IM2COL_MIN_PIECES
    of them: cut from the shapes alone, never from the thread count (a GEMM's bits can depend on its size,
    OpenBLAS having a kernel for small products), so outputs are the same bits whatever the threads."""
    step = max(1, min(IM2COL_PIECE_BYTES // row_bytes, -(-rows // IM2COL_MIN_PIECES)))
    return list(range(0, rows, step)) + [rows]


def _im2col_gemm_last(x, weights, bias, act, w_shape, stride, padding, dilation, y_shape, y2):
    """y2 (N·OH·OW, F) = act(im2col(x) @ weights + bias), piece by piece of output rows (n, oh): each piece's
    columns are written to a buffer of its thread and multiplied while they are in its L2 cache, then the
    bias and activation applied to its rows of y (as one im2col of the whole batch, the columns went to
    memory and back: the RGB stem's are 9× its input)."""
    N, OH, OW, F = y_shape
    KH, KW = w_shape[2], w_shape[3]
    K = weights.shape[0]
    bounds = _piece_bounds(N * OH, OW * K * x.dtype.itemsize)

    def piece(i):
        r0, r1 = bounds[i], bounds[i + 1]
        cols = scratch("cols_last_piece", ((r1 - r0) * OW, K), x.dtype)
        _im2col_last_rows(x, KH, KW, stride, padding, dilation, OH, OW, cols, r0, r1)
        out = y2[r0 * OW:r1 * OW]
        np.matmul(cols, weights, out=out)
        _bias_act_last_rows(out, bias, act, 0, out.shape[0])

    threads.parallel_for(piece, len(bounds) - 1)


def _im2col_weight_grad_last(x, dy2, w_shape, stride, padding, dilation, y_shape):
    """dweights (F, KH·KW·C) = Σ dyᵀ im2col(x), in float64, piece by piece of output rows as
    _im2col_gemm_last cuts them: each piece's columns are built in its thread's L2 and multiplied there, each
    piece's product kept apart and the products added at the end (the same bits whatever the threads)."""
    N, OH, OW, F = y_shape
    KH, KW = w_shape[2], w_shape[3]
    K = KH * KW * x.shape[3]
    bounds = _piece_bounds(N * OH, OW * K * x.dtype.itemsize)
    products = np.empty((len(bounds) - 1, F, K), x.dtype)

    def piece(i):
        r0, r1 = bounds[i], bounds[i + 1]
        cols = scratch("cols_last_piece", ((r1 - r0) * OW, K), x.dtype)
        _im2col_last_rows(x, KH, KW, stride, padding, dilation, OH, OW, cols, r0, r1)
        np.matmul(dy2[r0 * OW:r1 * OW].T, cols, out=products[i])

    threads.parallel_for(piece, len(bounds) - 1)
    return products.sum(axis=0, dtype=np.float64)


@njit(cache=True, nogil=True, error_model="numpy")
def _im2col_last_rows(x, KH, KW, stride, padding, dilation, OH, OW, cols, r0, r1):
    """_im2col_last for the output rows [r0, r1) into cols (their (r1 − r0)·OW rows), tap by tap: the pixels
    ow in [lo, hi) whose tap reads inside the image copy its C values, the others get zeros (the bounds found
    once a tap, not tested per pixel)."""
    N, H, W, C = x.shape
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    for r in range(r0, r1):
        n, oh = r // OH, r % OH
        rows = cols[(r - r0) * OW:(r - r0 + 1) * OW]
        for i in range(KH):
            ih = oh * sh + i * dil_h - top
            for j in range(KW):
                k, shift = (i * KW + j) * C, j * dil_w - left
                lo, hi = _valid_range(shift, sw, W, OW)
                if ih < 0 or ih >= H:
                    lo, hi = OW, OW
                for ow in range(min(lo, OW)):
                    for c in range(C):  # (a slice assignment per pixel costs more than its 3 values on RGB)
                        rows[ow, k + c] = 0
                for ow in range(hi, OW):
                    for c in range(C):
                        rows[ow, k + c] = 0
                if lo < hi:
                    src = x[n, ih]
                    for ow in range(lo, hi):
                        pixel, dst = src[ow * sw + shift], rows[ow]
                        for c in range(C):
                            dst[k + c] = pixel[c]


@njit(cache=True)
def _output_row(ih, i, top, dil_h, sh, OH):
    """The output row oh whose kernel row i reads input row ih (oh·sh + i·dil_h − top = ih), or −1: the rows
    a backward kernel gathers from when it writes input row ih."""
    t = ih + top - i * dil_h
    if t < 0 or t % sh != 0 or t // sh >= OH:
        return -1
    return t // sh


@njit(cache=True, parallel=True)
def _col2im_last(dcols, KH, KW, stride, padding, dilation, dx):
    """dx[n, ih, iw, c] = Σ dcols[n, oh, ow, (i, j, c)] over the (oh, ow, i, j) that read (ih, iw).
    Parallel over the input rows (n, ih), each gathered by `_gather_input_row`: each thread writes only its
    own rows of dx."""
    N, H, W, C = dx.shape
    no_taps = np.empty((KH, KW, 0), dx.dtype)
    for r in prange(N * H):
        n, ih = r // H, r % H
        _gather_input_row(dx[n, ih], dcols[n], no_taps, False, ih, KH, KW, C, stride, padding, dilation)


@njit(cache=True, fastmath={"contract"})
def _gather_input_row(row, src, taps, weighted, ih, KH, KW, C, stride, padding, dilation):
    """row (W, C) = input row ih's gradient, gathered from the outputs that read it: Σ over the (oh, ow, i, j)
    with oh·sh + i·dil_h − top = ih and ow·sw + j·dil_w − left = iw of
      - src[oh, ow, (i, j, c)], when not weighted (src: the columns' gradient, col2im),
      - taps[i, j, c] · src[oh, ow, c], when weighted (src: dy of a depthwise conv).
    The backward of both channels-last layouts' convs, one image row at a time."""
    OH, OW = src.shape[0], src.shape[1]
    W = row.shape[0]
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    row[:] = 0
    for i in range(KH):
        oh = _output_row(ih, i, top, dil_h, sh, OH)
        if oh < 0:
            continue
        for j in range(KW):
            lo, hi = _valid_range(j * dil_w - left, sw, W, OW)
            if weighted:  # (the test outside the pixel loop, so that its channel loop vectorizes)
                tap = taps[i, j]
                for ow in range(lo, hi):
                    grad, acc = src[oh, ow], row[ow * sw + j * dil_w - left]
                    for c in range(C):
                        acc[c] += grad[c] * tap[c]
            else:
                k = (i * KW + j) * C
                for ow in range(lo, hi):
                    grad, acc = src[oh, ow, k:k + C], row[ow * sw + j * dil_w - left]
                    for c in range(C):
                        acc[c] += grad[c]


def _bias_act_last(y2, b, act):
    """y2 (M, F) = act(y2 + b), per row."""
    _on_threads(_bias_act_last_rows, y2.shape[0], y2.size, y2, b, act)


@njit(cache=True, nogil=True, error_model="numpy")
def _bias_act_last_rows(y2, b, act, m0, m1):
    M, F = y2.shape
    for m in range(m0, m1):
        row = y2[m]
        for f in range(F):
            row[f] = fused_activate(row[f] + b[f], act)


def _depthwise_last_forward(x, taps, b, stride, padding, dilation, y, act):
    """y[n, oh, ow, c] = act(b[c] + Σ_{i,j} taps[i, j, c] · x[n, oh·sh + i·dil_h − top, ow·sw + j·dil_w − left, c]).
    In ranges of the output rows (n, oh); the row (OW·C values) is built in place, tap by tap, each tap a
    multiply-add of C contiguous values per pixel."""
    _on_threads(_depthwise_last_forward_rows, y.shape[0] * y.shape[1], TAP_WORK * y.size, x, taps, b, stride, padding,
                dilation, y, act)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _depthwise_last_forward_rows(x, taps, b, stride, padding, dilation, y, act, r0, r1):
    N, H, W, C = x.shape
    _, OH, OW, _ = y.shape
    KH, KW, _ = taps.shape
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    for r in range(r0, r1):
        n, oh = r // OH, r % OH
        out = y[n, oh]
        for ow in range(OW):  # element by element: an array assignment would compile Numba's formatted
            for c in range(C):  # shape-mismatch error (seconds of string formatting on a cold cache)
                out[ow, c] = b[c]
        for i in range(KH):
            ih = oh * sh + i * dil_h - top
            if ih < 0 or ih >= H:
                continue
            pixels = x[n, ih]  # (the row's view taken once, as in _depthwise_last_weight_grad_shares)
            for j in range(KW):
                tap = taps[i, j]
                shift = j * dil_w - left
                lo, hi = _valid_range(shift, sw, W, OW)
                for ow in range(lo, hi):
                    pixel, acc = pixels[ow * sw + shift], out[ow]
                    for c in range(C):
                        acc[c] += pixel[c] * tap[c]
        if act != NO_ACTIVATION:
            for ow in range(OW):
                acc = out[ow]
                for c in range(C):
                    acc[c] = fused_activate(acc[c], act)


def _depthwise_last_input_grad(dy, taps, stride, padding, dilation, dx):
    """dx[n, ih, iw, c] = Σ taps[i, j, c] · dy[n, oh, ow, c] over the (oh, ow, i, j) with oh·sh + i·dil_h − top = ih
    and ow·sw + j·dil_w − left = iw. In ranges of the input rows (n, ih), each gathering from its output rows
    (`_gather_input_row`)."""
    _on_threads(_depthwise_last_input_grad_rows, dx.shape[0] * dx.shape[1], TAP_WORK * dx.size, dy, taps, stride,
                padding, dilation, dx)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _depthwise_last_input_grad_rows(dy, taps, stride, padding, dilation, dx, r0, r1):
    N, H, W, C = dx.shape
    KH, KW, _ = taps.shape
    for r in range(r0, r1):
        n, ih = r // H, r % H
        _gather_input_row(dx[n, ih], dy[n], taps, True, ih, KH, KW, C, stride, padding, dilation)


def _depthwise_last_weight_grad(dy, x, KH, KW, stride, padding, dilation, sums):
    """sums[t, i·KW + j, c] = Σ dy[n, oh, ow, c] · x[n, oh·sh + i·dil_h − top, ow·sw + j·dil_w − left, c] and
    sums[t, KH·KW, c] = Σ dy[n, oh, ow, c] (the bias gradient), over share t of the output rows (T = len(sums)
    shares, one range of them a call). Each output row is summed in the data's dtype (SIMD over c), then added
    to the float64 totals; the caller adds the shares' totals: no two threads write the same value."""
    _on_threads(_depthwise_last_weight_grad_shares, sums.shape[0], TAP_WORK * dy.size, dy, x, KH, KW, stride, padding,
                dilation, sums)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _depthwise_last_weight_grad_shares(dy, x, KH, KW, stride, padding, dilation, sums, t0, t1):
    N, H, W, C = x.shape
    _, OH, OW, _ = dy.shape
    T, taps_and_bias, _ = sums.shape
    (sh, sw), (top, left), (dil_h, dil_w) = stride, padding, dilation
    rows = N * OH
    row_sums = np.zeros((taps_and_bias, C), dy.dtype)
    for t in range(t0, t1):
        for r in range(t * rows // T, (t + 1) * rows // T):
            n, oh = r // OH, r % OH
            row_sums[:] = 0
            grads = dy[n, oh]
            bias = row_sums[KH * KW]
            for ow in range(OW):
                grad = grads[ow]
                for c in range(C):
                    bias[c] += grad[c]
            for i in range(KH):
                ih = oh * sh + i * dil_h - top
                if ih < 0 or ih >= H:
                    continue
                pixels = x[n, ih]  # (the row views taken once: indexed x[n, ih, ...] per pixel, 7 % slower)
                for j in range(KW):
                    acc = row_sums[i * KW + j]
                    shift = j * dil_w - left
                    lo, hi = _valid_range(shift, sw, W, OW)
                    for ow in range(lo, hi):
                        grad, pixel = grads[ow], pixels[ow * sw + shift]
                        for c in range(C):
                            acc[c] += grad[c] * pixel[c]
            for k in range(taps_and_bias):
                for c in range(C):
                    sums[t, k, c] += row_sums[k, c]


# Unit stride along the rows (the depthwise convs at stride 1): a row of the output, (OW, C), is one run of
# OW·C values, and the input pixels that a tap (i, j) reads for it are one run too, shifted by j·dil_w − left
# pixels. With each tap repeated OW times (`_tiled_taps`: tap_rows[i, j, ow·C + c] = taps[i, j, c]), a tap is
# one multiply-add over a whole row, out[k] += tap_row[k] · x_row[k + shift·C]: a SIMD loop of OW·C values
# instead of OW loops of C (2 vectors for 32 channels, where the loop overhead was half the time)
# (timings: benchmarks/RESULTS.md, "Timings moved from kernel docstrings").

DEPTHWISE_CHUNK = 1024  # values of an output row summed at a time over all taps (the forward): with its taps
# and bias tiled to that length (not to the whole row), the chunk, its taps and its bias stay in L1


def _image_rows(a):
    """(N, H, W, C) -> (N·H, W·C), a view: one image row per row."""
    N, H, W, C = a.shape
    return a.reshape(N * H, W * C)


def _tiled_taps(taps, OW):
    """(KH, KW, C) -> (KH, KW, OW·C), each tap repeated OW times."""
    return np.ascontiguousarray(np.tile(taps, (1, 1, OW)))


def _depthwise_rows_forward(x_rows, tap_rows, bias_row, C, H, OH, sh, padding, dilation, y_rows, act):
    """y[n, oh] = act(bias + Σ_{i,j} tap_row[i, j] · (x[n, oh·sh + i·dil_h − top] shifted by j·dil_w − left pixels)),
    x_rows (N·H, W·C), y_rows (N·OH, OW·C), tap_rows (KH, KW, OW·C); in ranges of the output rows (n, oh)."""
    _on_threads(_depthwise_rows_forward_range, y_rows.shape[0], TAP_WORK * y_rows.size, x_rows, tap_rows, bias_row, C,
                H, OH, sh, padding, dilation, y_rows, act)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _depthwise_rows_forward_range(x_rows, tap_rows, bias_row, C, H, OH, sh, padding, dilation, y_rows, act, r0, r1):
    KH, KW, _ = tap_rows.shape
    W, OW = x_rows.shape[1] // C, y_rows.shape[1] // C
    P = tap_rows.shape[2] // C  # pixels a chunk: the taps are tiled P times (DEPTHWISE_CHUNK)
    top, left = padding
    dil_h, dil_w = dilation
    for r in range(r0, r1):
        n, oh = r // OH, r % OH
        out = y_rows[r]
        for p0 in range(0, OW, P):  # a chunk of the row at a time, all its taps while it is in L1
            p1 = min(OW, p0 + P)
            chunk = out[p0 * C:p1 * C]
            for k in range(chunk.size):  # not out[:] = bias_row: see _depthwise_last_forward_rows
                chunk[k] = bias_row[k]
            for i in range(KH):
                ih = oh * sh + i * dil_h - top
                if ih < 0 or ih >= H:
                    continue
                src = x_rows[n * H + ih]
                for j in range(KW):
                    shift = j * dil_w - left
                    lo, hi = _valid_range(shift, 1, W, OW)
                    lo, hi = max(lo, p0), min(hi, p1)
                    if lo >= hi:
                        continue
                    acc, pixels = out[lo * C:hi * C], src[(lo + shift) * C:(hi + shift) * C]
                    tap = tap_rows[i, j, (lo - p0) * C:(hi - p0) * C]
                    for k in range(acc.size):
                        acc[k] += pixels[k] * tap[k]
            if act != NO_ACTIVATION:
                for k in range(chunk.size):
                    chunk[k] = fused_activate(chunk[k], act)


def _depthwise_rows_input_grad(dy_rows, tap_rows, C, H, OH, sh, padding, dilation, dx_rows):
    """dx[n, ih] = Σ tap_row[i, j] · (dy[n, oh] shifted by j·dil_w − left pixels) over the taps (i, j) and the
    output rows oh with oh·sh + i·dil_h − top = ih; dy_rows (N·OH, OW·C), dx_rows (N·H, W·C). In ranges of the
    input rows (n, ih): each gathers into its own row."""
    _on_threads(_depthwise_rows_input_grad_range, dx_rows.shape[0], TAP_WORK * dx_rows.size, dy_rows, tap_rows, C, H,
                OH, sh, padding, dilation, dx_rows)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _depthwise_rows_input_grad_range(dy_rows, tap_rows, C, H, OH, sh, padding, dilation, dx_rows, r0, r1):
    KH, KW, _ = tap_rows.shape
    W, OW = dx_rows.shape[1] // C, dy_rows.shape[1] // C
    top, left = padding
    dil_h, dil_w = dilation
    for r in range(r0, r1):
        n, ih = r // H, r % H
        row = dx_rows[r]
        row[:] = 0
        for i in range(KH):
            oh = _output_row(ih, i, top, dil_h, sh, OH)
            if oh < 0:
                continue
            grad = dy_rows[n * OH + oh]
            for j in range(KW):
                shift = j * dil_w - left
                lo, hi = _valid_range(shift, 1, W, OW)
                acc, g, tap = row[(lo + shift) * C:(hi + shift) * C], grad[lo * C:hi * C], tap_rows[i, j]
                for k in range(acc.size):
                    acc[k] += g[k] * tap[k]


def _depthwise_rows_weight_grad(dy_rows, x_rows, C, H, OH, sh, padding, dilation, KW, sums):
    """sums[t, i·KW + j, ow·C + c] = Σ dy[n, oh, ow, c] · x[n, oh·sh + i·dil_h − top, ow + j·dil_w − left, c], and
    sums[t, KH·KW] = Σ dy (the bias gradient), over share t of the output rows (n, oh) (T = len(sums) shares,
    one range of them a call): one SIMD multiply-add over a whole row per tap. The sums run in the data's
    dtype for 16 rows at a time, then go into the float64 totals; the caller adds them over t and ow."""
    _on_threads(_depthwise_rows_weight_grad_shares, sums.shape[0], TAP_WORK * dy_rows.size, dy_rows, x_rows, C, H, OH,
                sh, padding, dilation, KW, sums)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _depthwise_rows_weight_grad_shares(dy_rows, x_rows, C, H, OH, sh, padding, dilation, KW, sums, t0, t1):
    T, taps_and_bias, OWC = sums.shape
    KH = (taps_and_bias - 1) // KW
    W, OW = x_rows.shape[1] // C, OWC // C
    top, left = padding
    dil_h, dil_w = dilation
    rows = dy_rows.shape[0]
    for t in range(t0, t1):
        part = np.zeros((taps_and_bias, OWC), dy_rows.dtype)
        first, last = t * rows // T, (t + 1) * rows // T
        for r in range(first, last):
            n, oh = r // OH, r % OH
            grad = dy_rows[r]
            bias = part[KH * KW]
            for k in range(OWC):
                bias[k] += grad[k]
            for i in range(KH):
                ih = oh * sh + i * dil_h - top
                if ih < 0 or ih >= H:
                    continue
                src = x_rows[n * H + ih]
                for j in range(KW):
                    shift = j * dil_w - left
                    lo, hi = _valid_range(shift, 1, W, OW)
                    acc, g, pixels = part[i * KW + j, lo * C:hi * C], grad[lo * C:hi * C], src[(lo + shift) * C:(hi + shift) * C]
                    for k in range(acc.size):
                        acc[k] += g[k] * pixels[k]
            if (r - first) % 16 == 15 or r == last - 1:
                for q in range(taps_and_bias):
                    for k in range(OWC):
                        sums[t, q, k] += part[q, k]
                part[:] = 0

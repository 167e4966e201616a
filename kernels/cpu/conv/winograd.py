"""Winograd F(4×4, 3×3): 3×3, stride-1 NCHW convolutions with enough channels (where the FLOPs are: the
64 → 64 conv of the tutorial is 90 % of its arithmetic), as 36 GEMMs between transformed filters and
transformed input tiles, 4× fewer multiply-adds than im2col + GEMM, forward and backward. The math and how
the work is cut are in the comments below.
"""
import threading

import numpy as np
from numba import njit

from .. import threads
from ..activation import fused_activate
from ..gemm import MIN_FLOPS_PER_THREAD, matmul
from ..workspace import output, prepared, scratch
from . import few_channels
from .epilogue import _bias_or_zeros, _gradient_buffers
from .rows import _copy_row, _relu_grad_row

# ---------------------------------------------------------------------- Winograd F(4×4, 3×3)
#
# A 3×3, stride-1 conv computes each 4×4 block of outputs from a 6×6 tile of input (tiles overlap by 2).
# Winograd's minimal filtering (Lavin & Gray, 2016) does it with 36 multiplications per channel instead of
# 144: with the tile d (6×6) and the filter g (3×3),
#
#     y (4×4) = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
#
#     Bᵀ = [4  0 −5  0  1  0]    G = [ 1/4     0     0  ]    Aᵀ = [1  1  1  1  1  0]
#          [0 −4 −4  1  1  0]        [−1/6  −1/6  −1/6 ]         [0  1 −1  2 −2  0]
#          [0  4 −4 −1  1  0]        [−1/6   1/6  −1/6 ]         [0  1  1  4  4  0]
#          [0 −2 −1  2  1  0]        [1/24  1/12   1/6 ]         [0  1 −1  8 −8  1]
#          [0  2 −1 −2  1  0]        [1/24 −1/12   1/6 ]
#          [0  4  0 −5  0  1]        [  0     0     1  ]
#
# and the sum over input channels moves inside, between the transforms: for each of the 36 positions ξ of
# the 6×6 transformed tile, M_ξ (F, tiles) = U_ξ (F, C) @ V_ξ (C, tiles), U = G g Gᵀ (the filters,
# transformed once per call, or once per inference plan), V = Bᵀ d B (every input tile). The backward is
# the same three steps read backwards (each transform's adjoint is its transpose):
#
#     dM = A dY Aᵀ (per 4×4 block of dy),  dU_ξ = dM_ξ @ V_ξᵀ,  dV_ξ = U_ξᵀ @ dM_ξ,
#     dg = Gᵀ dU G,                        dd = B dV Bᵀ (added into the overlapping input tiles).
#
# 2.25 multiplications an output instead of im2col's 9 (F(2×2, 3×3), which this file ran before, did 4, and
# its transforms moved 4 values an output where these move 2.25: it was slower on every task model's conv,
# forward and backward; timings: benchmarks/RESULTS.md, "Timings moved from kernel docstrings").
# The points 0, ±1, ±2 keep the coefficients small: float32 results stay within ~1e-5 of the direct sum
# relative to its scale. Used for 3×3, stride 1, no dilation, no groups, with at least
# WINOGRAD_MIN_CHANNELS input channels (fewer go to few_channels.py), any number of filters: even an RGB
# first layer with 16 filters, or 64 channels into 4, ran faster here than through im2col's GEMM. Tiles
# hanging over the padded input's bottom or right edge read zeros there, and their extra outputs are dropped.
#
# How the work is cut: into pieces of a few rows of tiles, each piece run start to finish by one thread of
# kernels/cpu/threads.py — the transforms and GEMMs of its tiles — in buffers of that thread about the size
# of its core's L2 cache (WINOGRAD_PIECE_BYTES for V and M together; the backward's pieces run three
# transforms, each call costing µs of Python: twice that budget was faster, the spill going to the L3). Transforming the whole batch first and then multiplying sent V and M through main memory, and one
# core's SGEMM slowed down by a third (timings: benchmarks/RESULTS.md, "Timings moved from kernel
# docstrings"). The forward's pieces are any rows of tiles (they write disjoint rows of y). The backward's
# unit is an image, or a few small ones: neighbouring tiles overlap in the input, so one image's input
# gradient is summed by one thread, in a padded plane buffer of its own; each thread also sums its own share
# of dU (its first product written straight into it), added up at the end.
#
# The transforms run along the tiles, writing each transformed value of a tile to its own contiguous
# stream, in straight-line loops LLVM vectorizes. The tiles of a piece sit in slots, TW + 1 per row of
# tiles: tile (r, tw) in slot (r − r0)·(TW + 1) + tw, and one spare slot at the end of each row, so that a
# tile's right neighbour is always the next slot and the loops run over all the piece's slots at once (a row
# of the tutorial's second conv has only 12 tiles, too short for a vector loop). The spare slots carry junk
# forward (their outputs are dropped) and zeros backward (dM there is 0). A tile reads the padded row's
# columns 4·tw … 4·tw + 5: its four column phases at tw and the first two at tw + 1. What made these loops
# fast (each measured, RESULTS.md as above): the four phases split in one loop (LLVM makes it one
# interleaved load; a loop per phase stayed scalar), constants in the data's dtype (an integer literal makes
# Numba compute in float64), and results for rows of V or dM that lie far apart written to a small
# contiguous buffer first, then copied (written straight there, LLVM left the loop scalar). The kernels are serial and release the GIL: the
# threads of kernels/cpu/threads.py run them on their own pieces.

WINOGRAD_MIN_CHANNELS = 3  # input channels; with 1 or 2, few_channels.py's planes are faster


def applies(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
    """3×3, stride 1, no dilation or groups, at least WINOGRAD_MIN_CHANNELS input channels, a symmetric
    padding of at most 2 (the tiles take the padding as symmetric: the output is H + 2·ph − 2 rows)."""
    F, Cg, KH, KW = w_shape
    symmetric = y_shape[2] == x_shape[2] + 2 * padding[0] - 2 and y_shape[3] == x_shape[3] + 2 * padding[1] - 2
    return ((KH, KW) == (3, 3) and stride == dilation == (1, 1) and groups == 1 and symmetric
            and Cg >= WINOGRAD_MIN_CHANNELS and padding[0] <= 2 and padding[1] <= 2)


WINOGRAD_PIECE_BYTES = 1 << 20  # V and M of one piece: about one core's L2 cache
WINOGRAD_BACKWARD_PIECE_BYTES = 2 << 20  # the backward's: its three transforms cost µs of Python a call
MIN_DU_SLOTS = 256  # tiles a GEMM dU += dM Vᵀ sums over, at least (several small images a piece)

_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
# G g Gᵀ for every 3×3 filter g at once: flattened row by row, vec(G g Gᵀ) = (G ⊗ G) vec(g), so the
# transformed filters are one GEMM (F·C, 9) @ (9, 36), and the gradient's Gᵀ dU G one (F·C, 36) @ (36, 9).
# Through gemm.matmul, like every BLAS call of the kernels: a bare `@` here woke OpenBLAS's own threads,
# which slowed whole steps down.
_GG = np.kron(_G, _G)  # (36, 9)


def forward(x, w, b, act, stride, padding, dilation, groups, y):
    """y = act(conv2d(x, w) + b) into y (N, F, OH, OW); padding (top, left)."""
    _forward(x, w, _bias_or_zeros(b, w.shape[0], y.dtype), act, padding, y)
    return y


def forward_maxpool2(x, w, b, act, stride, padding, dilation, y_shape, pooled):
    """pooled = max_pool2d(act(conv2d(x, w) + b), 2): each 4×4 output tile holds four pooling windows."""
    _forward(x, w, _bias_or_zeros(b, w.shape[0], pooled.dtype), act, padding, pooled, y_shape)
    return pooled


def backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """conv2d's gradients (dz = dy · [y > 0] when y is given) -> (dx, dw, db), None for what is not needed.
    x may be a list, the parts of a channel concatenation (x_shape the whole's): dx is then a list too, each
    part's gradient. A first layer's (dw without dx, an RGB image's few channels) goes to few_channels.py's
    weight_grad."""
    concatenated = isinstance(x, list)
    if need_dw and not need_dx and w_shape[1] <= few_channels.WEIGHT_GRAD_CHANNELS:
        x = np.concatenate(x, axis=1) if concatenated else x
        return few_channels.backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx,
                                     need_dw, need_db)
    dx, dw, bias_sums = _gradient_buffers(dy, x_shape, w_shape, need_dx and not concatenated, need_dw)
    if need_dx and concatenated:
        dx = [output(part.shape, dy.dtype) for part in x]
    _backward(dy, y, x, x_shape, w, w_shape, padding, dx if concatenated or dx is None else [dx], dw, bias_sums)
    return dx, dw, (bias_sums.sum(axis=0).astype(dy.dtype) if need_db else None)


def _sources(x, channels):
    """The input's parts as (array, first channel, channels): x itself (None in a backward that needs only dx),
    or each part of a channel concatenation (a list)."""
    parts = x if isinstance(x, list) else [x]
    counts = [channels] if x is None else [part.shape[1] for part in parts]
    firsts = np.cumsum([0] + counts[:-1])
    return [(part, int(c0), count) for part, c0, count in zip(parts, firsts, counts)]


def _filters(w):
    """U = G g Gᵀ for every (filter, channel) -> (36, F, C): the 36 GEMMs' left operands."""
    F, C = w.shape[0], w.shape[1]
    U = matmul(w.reshape(F * C, 9), _GG.T.astype(w.dtype))
    return np.ascontiguousarray(U.T.reshape(36, F, C))


def _forward(x, w, b, act, padding, y, pooled_from=None):
    """y = act(conv2d(x, w) + b) piece by piece of tile rows (r = n·TH + th): V = input transform, M_ξ = U_ξ @ V_ξ
    (36 GEMMs), y = output transform (+ bias, activation); with pooled_from (the conv's output shape), y is
    its 2×2 max pooling."""
    sources = _sources(x, w.shape[1])
    N, C = sources[0][0].shape[0], w.shape[1]
    F = w.shape[0]
    OH, OW = y.shape[2:] if pooled_from is None else pooled_from[2:]
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    U = prepared(w, "winograd_filters", _filters)
    dtype = y.dtype
    rows = _piece_rows(C, F, TW, dtype.itemsize, N * TH)
    pieces = -(-N * TH // rows)
    constants = np.array([2, 4, 8], dtype)

    def piece(i):
        r0, r1 = i * rows, min(N * TH, (i + 1) * rows)
        S = (r1 - r0) * (TW + 1)
        V = scratch("conv.winograd_v", (36, C, S), dtype)
        M = scratch("conv.winograd_m", (36, F, S), dtype)
        for part, c0, _ in sources:
            _input(part, c0, padding[0], padding[1], TH, TW, r0, r1, V, np.zeros((6, 4 * S + 4), dtype),
                   np.empty((6, 4, S + 1), dtype), np.empty((6, 4, S + 1), dtype), np.empty((6, S), dtype), constants)
        np.matmul(U, V, out=M)
        _output(M, b, act, pooled_from is not None, OH, OW, TH, TW, r0, r1, y, np.empty((24, S), dtype),
                np.empty((4, 4 * S), dtype), constants)

    threads.parallel_for(piece, pieces)


def _piece_rows(C, F, TW, itemsize, total_rows):
    """Rows of tiles per piece: V (36, C, slots) and M (36, F, slots) within WINOGRAD_PIECE_BYTES (TW + 1
    slots a row), or fewer so that every thread gets a piece when its share of the GEMMs is worth waking it
    for (a batch-1 predict: the tiles of one image would otherwise be one or two pieces)."""
    rows = max(1, WINOGRAD_PIECE_BYTES // (36 * (C + F) * (TW + 1) * itemsize))
    parts = min(threads.num_threads(), int(2.0 * 36 * F * C * (TW + 1) * total_rows // MIN_FLOPS_PER_THREAD))
    return min(rows, -(-total_rows // parts)) if parts > 1 else rows


def _backward(dy, y, x, x_shape, w, w_shape, padding, dxs, dw, bias_sums):
    """The forward's three steps read backwards, each transform's adjoint its transpose: dM = A dz Aᵀ (each 4×4
    block of dz = dy · [y > 0], or dy), dU_ξ += dM_ξ V_ξᵀ (V the input transform, computed again), dV_ξ = U_ξᵀ dM_ξ,
    dd = B dV Bᵀ added into the overlapping 6×6 tiles of the images' padded plane buffers, dg = Gᵀ dU G. A task
    is an image in pieces of tile rows, or, for small images, a few whole images in one piece (so that dU's
    GEMMs sum over enough tiles: one 12×12 image has 9); its images' planes are its own (tiles overlap in dx),
    and each thread sums its own share of dU (in the data's dtype: a (36, F, C) float64 share and a buffer for
    each product took 28 MB more for a 128 → 256 conv). Fills dxs (a gradient for each of x's parts, or None)
    and dw (when not None) and bias_sums (N, F), the sums of dz's planes."""
    N, F = dy.shape[0], dy.shape[1]
    C, H, W = w_shape[1], x_shape[2], x_shape[3]
    sources = _sources(x, C)
    OH, OW = dy.shape[2], dy.shape[3]
    ph, pw = padding
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    Ut = np.ascontiguousarray(_filters(w).transpose(0, 2, 1)) if dxs is not None else None
    rows = max(1, WINOGRAD_BACKWARD_PIECE_BYTES // (36 * (C + F) * (TW + 1) * dy.dtype.itemsize))
    images = 1  # a task's images: one in pieces of rows, or, when whole images fit the budget, as many as fit
    if rows >= TH:  # or enough for dU's GEMMs to sum over MIN_DU_SLOTS tiles, leaving no thread without a task
        images = min(max(rows // TH, -(-MIN_DU_SLOTS // (TH * (TW + 1)))), -(-N // threads.num_threads()))
    tasks = [(n0, min(N, n0 + images)) for n0 in range(0, N, images)]
    masked = y is not None
    constants = np.array([2, 4, 8, 5], dy.dtype)
    dU_parts = {}  # thread -> its (36, F, C) share of dU

    def task(i):
        n0, n1 = tasks[i]
        bias_sums[n0:n1] = 0.0
        if dxs is not None:
            planes = scratch("conv.winograd_dx", (n1 - n0, C, 4 * TH + 2, 4 * TW + 2), dy.dtype)
            planes[...] = 0
        step = rows if n1 - n0 == 1 else (n1 - n0) * TH
        for r0 in range(n0 * TH, n1 * TH, step):
            r1 = min(n1 * TH, r0 + step)
            S = (r1 - r0) * (TW + 1)
            dM = scratch("conv.winograd_m", (36, F, S), dy.dtype)
            _output_grad(dy, y if masked else dy, masked, TH, TW, r0, r1, dM, bias_sums, np.zeros((4, 4 * S), dy.dtype),
                         np.empty((6, 4 * S), dy.dtype), np.empty((4, S), dy.dtype), np.empty((6, S), dy.dtype),
                         constants)
            if dw is not None:  # dU_ξ += dM_ξ V_ξᵀ
                V = scratch("conv.winograd_v", (36, C, S), dy.dtype)
                for part, c0, _ in sources:
                    _input(part, c0, ph, pw, TH, TW, r0, r1, V, np.zeros((6, 4 * S + 4), dy.dtype),
                           np.empty((6, 4, S + 1), dy.dtype), np.empty((6, 4, S + 1), dy.dtype),
                           np.empty((6, S), dy.dtype), constants)
                share = dU_parts.get(threading.get_ident())
                if share is None:  # this thread's first product: its share
                    dU_parts[threading.get_ident()] = np.matmul(dM, V.transpose(0, 2, 1))
                else:
                    share += np.matmul(dM, V.transpose(0, 2, 1), out=scratch("conv.winograd_dup", (36, F, C), dy.dtype))
            if dxs is not None:  # dV_ξ = U_ξᵀ dM_ξ, then B dV Bᵀ into the planes
                dV = scratch("conv.winograd_v", (36, C, S), dy.dtype)
                np.matmul(Ut, dM, out=dV)
                _input_grad(dV, TH, TW, r0, r1, planes, n0, np.empty((36, S), dy.dtype), np.empty((6, S), dy.dtype),
                            np.empty(4 * S + 4, dy.dtype), constants)
        for dx, (_, c0, channels) in zip(dxs or (), sources):  # each part's channels of the planes
            dx[n0:n1] = planes[:, c0:c0 + channels, ph:ph + H, pw:pw + W]

    threads.parallel_for(task, len(tasks))
    if dw is not None:  # dg = Gᵀ dU G, the threads' shares added in place (np.sum of the list would stack
        # them in a new array first)
        parts = list(dU_parts.values())
        dU = parts[0]
        for part in parts[1:]:
            dU += part
        dw[...] = matmul(dU.reshape(36, F * C).T, _GG.astype(dU.dtype)).reshape(F, C, 3, 3)


@njit(cache=True, nogil=True)
def _input(x, c0, ph, pw, TH, TW, r0, r1, V, rows, phases, t, out, k2):
    """V[ξ, c0 + c, slot] = (Bᵀ d B)[ξ] for the tiles of rows r = n·TH + th in [r0, r1) (slot (r − r0)·(TW + 1)
    + tw), d the 6×6 tile at (4·th, 4·tw) of the zero-padded x[n, c] (x: the input, c0 = 0, or one part of a
    channel concatenation, c0 its first channel). Row i of every tile row is copied, padded, into
    rows[i] (4·(TW + 1) columns a tile row) and split into its column phases (phases[i, q, k] = column 4k + q);
    Bᵀ d combines the six rows phase by phase, then · B the columns q = 0..3 at k and q = 0, 1 at k + 1.
    k2 = (2, 4, 8) in x's dtype: with integer literals Numba computes in float64 (see above)."""
    N, C, H, W = x.shape
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    for c in range(C):
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            base = 4 * (r - r0) * TW1 + pw
            for i in range(6):
                h = 4 * th + i - ph
                if 0 <= h < H:
                    _copy_row(rows[i, base:base + W], x[n, c, h], 1)
        for i in range(6):  # the four phases in one loop (LLVM vectorizes it as one interleaved load)
            ri, p0, p1, p2, p3 = rows[i], phases[i, 0], phases[i, 1], phases[i, 2], phases[i, 3]
            for k in range(S + 1):
                p0[k], p1[k], p2[k], p3[k] = ri[4 * k], ri[4 * k + 1], ri[4 * k + 2], ri[4 * k + 3]
        for q in range(4):  # Bᵀ d: combine the six rows, each column phase
            _b_transposed(phases[0, q], phases[1, q], phases[2, q], phases[3, q], phases[4, q], phases[5, q],
                          t[0, q], t[1, q], t[2, q], t[3, q], t[4, q], t[5, q], S + 1, k2)
        for i in range(6):  # (Bᵀ d) B: combine the columns of row i: phases 0..3 at k, then 0, 1 at k + 1
            a0, a1, a2, a3 = t[i, 0], t[i, 1], t[i, 2], t[i, 3]
            _b_transposed(a0, a1, a2, a3, a0[1:], a1[1:], out[0], out[1], out[2], out[3], out[4], out[5], S, k2)
            _store_rows(out, V, 6 * i, c0 + c, S)


@njit(cache=True, nogil=True, inline="always")
def _store_rows(out, dst, first, index, n):
    """dst[first + j, index, :n] = out[j, :n] for the six rows of `out`: the transforms write a tile's six
    values to a small contiguous buffer, copied here into rows of V or dM that lie far apart (written there
    straight from the transform, LLVM left the loop scalar: see the comment above _input)."""
    for j in range(6):
        row, src = dst[first + j, index], out[j]
        for k in range(n):
            row[k] = src[k]


@njit(cache=True, nogil=True, inline="always")
def _b_transposed(d0, d1, d2, d3, d4, d5, t0, t1, t2, t3, t4, t5, n, k2):
    """t = Bᵀ d for the first n columns of six rows d, into six rows t."""
    two, four = k2[0], k2[1]
    for k in range(n):
        a0, a1, a2, a3, a4, a5 = d0[k], d1[k], d2[k], d3[k], d4[k], d5[k]
        t0[k] = (a0 - a2) * four + (a4 - a2)
        t1[k] = a3 + a4 - (a1 + a2) * four
        t2[k] = (a1 - a2) * four + a4 - a3
        t3[k] = (a3 - a1) * two + a4 - a2
        t4[k] = a4 - a2 - (a3 - a1) * two
        t5[k] = (a1 - a3) * four + (a5 - a3)


@njit(cache=True, nogil=True)
def _output(M, b, act, pooled, OH, OW, TH, TW, r0, r1, y, s, out, k2):
    """For the tile rows r in [r0, r1): the 4×4 blocks Aᵀ M A of the row's tiles, + b[f], through `act`, into
    y[n, f, 4th:4th + 4] (what lies past OH × OW dropped); pooled: y gets the max of each 2×2 window of the
    block (+ b, then act, which commute with the max), windows past y's size dropped."""
    F = M.shape[1]
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    POH, POW = y.shape[2], y.shape[3]
    two, four, eight = k2[0], k2[1], k2[2]  # in M's dtype (see _input)
    for f in range(F):
        for j in range(6):  # Aᵀ M: combine the six rows of the tiles, column j
            m0, m1, m2, m3, m4, m5 = (M[j, f, :S], M[6 + j, f, :S], M[12 + j, f, :S], M[18 + j, f, :S],
                                      M[24 + j, f, :S], M[30 + j, f, :S])
            s0, s1, s2, s3 = s[j], s[6 + j], s[12 + j], s[18 + j]
            for k in range(S):
                p, q = m1[k] + m2[k], m1[k] - m2[k]
                u, v = m3[k] + m4[k], m3[k] - m4[k]
                s0[k] = m0[k] + p + u
                s1[k] = q + v * two
                s2[k] = p + u * four
                s3[k] = q + v * eight + m5[k]
        for i in range(4):  # (Aᵀ M) A: combine the columns of output row i, a slot's four outputs in one loop
            # (LLVM vectorizes their stores as one interleaved store)
            a0, a1, a2, a3, a4, a5 = s[6 * i], s[6 * i + 1], s[6 * i + 2], s[6 * i + 3], s[6 * i + 4], s[6 * i + 5]
            row = out[i]
            for k in range(S):
                p, q = a1[k] + a2[k], a1[k] - a2[k]
                u, v = a3[k] + a4[k], a3[k] - a4[k]
                row[4 * k], row[4 * k + 1] = a0[k] + p + u, q + v * two
                row[4 * k + 2], row[4 * k + 3] = p + u * four, q + v * eight + a5[k]
        bias = b[f]
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            base = 4 * (r - r0) * TW1
            if pooled:
                for i in range(2):
                    ph = 2 * th + i
                    if ph >= POH:
                        break
                    top, bottom, dst = out[2 * i, base:], out[2 * i + 1, base:], y[n, f, ph]
                    for pw in range(POW):
                        m = max(max(top[2 * pw], top[2 * pw + 1]), max(bottom[2 * pw], bottom[2 * pw + 1]))
                        dst[pw] = fused_activate(m + bias, act)
                continue
            for i in range(min(4, OH - 4 * th)):
                dst, src = y[n, f, 4 * th + i], out[i, base:base + OW]
                if act:
                    for ow in range(OW):
                        dst[ow] = fused_activate(src[ow] + bias, act)
                else:
                    for ow in range(OW):
                        dst[ow] = src[ow] + bias


@njit(cache=True, nogil=True, inline="always")
def _a(d0, d1, d2, d3, t0, t1, t2, t3, t4, t5, n, k2):
    """t = A d for the first n columns of four rows d, into six rows t (A = (Aᵀ)ᵀ, 6×4)."""
    two, four, eight = k2[0], k2[1], k2[2]
    for k in range(n):
        a0, a1, a2, a3 = d0[k], d1[k], d2[k], d3[k]
        t0[k] = a0
        t1[k] = a0 + a1 + a2 + a3
        t2[k] = a0 - a1 + a2 - a3
        t3[k] = a0 + a1 * two + a2 * four + a3 * eight
        t4[k] = a0 - a1 * two + a2 * four - a3 * eight
        t5[k] = a3


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _output_grad(dy, y, masked, TH, TW, r0, r1, dM, sums, dz, t, phases, out, k2):
    """For the tile rows r in [r0, r1): dM[ξ, f, slot] = (A dz Aᵀ)[ξ], dz the 4×4 block of dz = dy · [y > 0] (dy
    when not masked) at (4·th, 4·tw), 0 past the plane's edge and in the spare slots; sums[n, f] += Σ of dz
    over those rows (float64). dz's four rows hold four columns a slot: A dz combines the rows (unit stride),
    then each row's columns are split into their phases (one interleaved loop) and combined, into `out`,
    copied into dM's rows (see _input)."""
    N, F, OH, OW = dy.shape
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    for f in range(F):
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            base = 4 * (r - r0) * TW1
            total = 0.0
            for i in range(4):
                oh = 4 * th + i
                if oh < OH:
                    total += _relu_grad_row(dz[i, base:base + OW], dy[n, f, oh], y[n, f, oh], masked, 1)
            sums[n, f] += total
        _a(dz[0], dz[1], dz[2], dz[3], t[0], t[1], t[2], t[3], t[4], t[5], 4 * S, k2)
        for i in range(6):
            ti, p0, p1, p2, p3 = t[i], phases[0], phases[1], phases[2], phases[3]
            for k in range(S):
                p0[k], p1[k], p2[k], p3[k] = ti[4 * k], ti[4 * k + 1], ti[4 * k + 2], ti[4 * k + 3]
            _a(p0, p1, p2, p3, out[0], out[1], out[2], out[3], out[4], out[5], S, k2)
            _store_rows(out, dM, 6 * i, f, S)


@njit(cache=True, nogil=True, inline="always")
def _b(d0, d1, d2, d3, d4, d5, t0, t1, t2, t3, t4, t5, n, k2):
    """t = B d for the first n columns of six rows d, into six rows t (B = (Bᵀ)ᵀ: the adjoint of _b_transposed)."""
    two, four, five = k2[0], k2[1], k2[3]
    for k in range(n):
        a0, a1, a2, a3, a4, a5 = d0[k], d1[k], d2[k], d3[k], d4[k], d5[k]
        t0[k] = a0 * four
        t1[k] = (a2 - a1 + a5) * four + (a4 - a3) * two
        t2[k] = -(a0 * five) - (a1 + a2) * four - a3 - a4
        t3[k] = a1 - a2 + (a3 - a4) * two - a5 * five
        t4[k] = a0 + a1 + a2 + a3 + a4
        t5[k] = a5


@njit(cache=True, nogil=True)
def _input_grad(dV, TH, TW, r0, r1, planes, n0, q, m, row, k2):
    """For the tile rows r = n·TH + th in [r0, r1): add B dV Bᵀ of each tile into planes[n − n0, c] (the gradient
    of image n's padded planes, (C, 4TH + 2, 4TW + 2)) at (4·th, 4·tw) (tiles overlap by 2 rows and 2
    columns). B combines the rows (q), then the columns of each row i into m; a tile's columns 0–3 and the
    previous tile's 4, 5 are added up slot by slot into `row` (the spare slots' dV is 0), added into the
    plane's row at unit stride."""
    C = planes.shape[1]
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    for c in range(C):
        for j in range(6):  # B dV: combine the rows, for each column j of the tiles
            _b(dV[j, c], dV[6 + j, c], dV[12 + j, c], dV[18 + j, c], dV[24 + j, c], dV[30 + j, c],
               q[j], q[6 + j], q[12 + j], q[18 + j], q[24 + j], q[30 + j], S, k2)
        for i in range(6):  # (B dV) Bᵀ: combine the columns of row i
            _b(q[6 * i], q[6 * i + 1], q[6 * i + 2], q[6 * i + 3], q[6 * i + 4], q[6 * i + 5],
               m[0], m[1], m[2], m[3], m[4], m[5], S, k2)
            m0, m1, m2, m3, m4, m5 = m[0], m[1], m[2], m[3], m[4], m[5]
            row[0], row[1], row[2], row[3] = m0[0], m1[0], m2[0], m3[0]
            for k in range(1, S):
                row[4 * k], row[4 * k + 1] = m0[k] + m4[k - 1], m1[k] + m5[k - 1]
                row[4 * k + 2], row[4 * k + 3] = m2[k], m3[k]
            for r in range(r0, r1):  # into the plane, row by row of tiles: cols 0 .. 4·TW + 1 of the row
                n, th = r // TH, r % TH
                base = 4 * (r - r0) * TW1
                dst, src = planes[n - n0, c, 4 * th + i], row[base:base + 4 * TW + 2]
                for k in range(4 * TW + 2):
                    dst[k] += src[k]

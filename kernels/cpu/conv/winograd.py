"""Winograd F(2×2, 3×3): the backward of the 3×3, stride-1 NCHW convolutions with enough channels (where the
FLOPs are: the 64 → 64 conv of the tutorial is 90 % of its arithmetic), as GEMMs between transformed
filters and transformed tiles, 2.25× fewer multiply-adds than im2col + GEMM. The forward is winograd4.py's
F(4×4, 3×3); `applies` here says which convs both take. The math and how the work is cut are in the
comments below.
"""
import threading

import numpy as np
from numba import njit

from .. import threads
from ..gemm import matmul
from ..workspace import scratch
from .epilogue import _gradient_buffers
from .rows import _copy_row, _relu_grad_row

WINOGRAD_MIN_CHANNELS = 16  # below this many input channels and filters, im2col's GEMM is the better one


def applies(x_shape, w_shape, y_shape, stride, padding, groups, dilation):
    """3×3, stride 1, no dilation or groups, at least WINOGRAD_MIN_CHANNELS channels in and out, a symmetric
    padding of at most 2 (the tiles take the padding as symmetric: the output is H + 2·ph − 2 rows)."""
    F, Cg, KH, KW = w_shape
    symmetric = y_shape[2] == x_shape[2] + 2 * padding[0] - 2 and y_shape[3] == x_shape[3] + 2 * padding[1] - 2
    return ((KH, KW) == (3, 3) and stride == dilation == (1, 1) and groups == 1 and symmetric
            and min(Cg, F) >= WINOGRAD_MIN_CHANNELS and padding[0] <= 2 and padding[1] <= 2)


def backward(dy, y, x, x_shape, w, w_shape, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    """conv2d's gradients (dz = dy · [y > 0] when y is given) -> (dx, dw, db), None for what is not needed."""
    dx, dw, bias_sums = _gradient_buffers(dy, x_shape, w_shape, need_dx, need_dw)
    _winograd_backward(dy, y, x, x_shape, w, w_shape, padding, dx, dw, bias_sums)
    return dx, dw, (bias_sums.sum(axis=0).astype(dy.dtype) if need_db else None)


# ---------------------------------------------------------------------- Winograd F(2×2, 3×3)
#
# A 3×3, stride-1 conv computes each 2×2 block of outputs from a 4×4 tile of input (tiles overlap by 2).
# Winograd's minimal filtering (Lavin & Gray, 2016) does it with 16 multiplications per channel instead of
# 36: with the tile d (4×4) and the filter g (3×3),
#
#     y (2×2) = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A     Bᵀ = [1  0 −1  0]   G = [ 1    0    0 ]   Aᵀ = [1 1  1  0]
#                                                      [0  1  1  0]       [1/2  1/2  1/2]        [0 1 −1 −1]
#                                                      [0 −1  1  0]       [1/2 −1/2  1/2]
#                                                      [0  1  0 −1]       [ 0    0    1 ]
#
# and the sum over input channels moves inside, between the transforms: for each of the 16 positions ξ of
# the 4×4 transformed tile, M_ξ (F, tiles) = U_ξ (F, C) @ V_ξ (C, tiles), U = G g Gᵀ (the filters,
# transformed once per call), V = Bᵀ d B (every input tile). So the conv becomes 16 GEMMs with 2.25× fewer
# multiply-adds than im2col's one, and the transforms move 4× the input instead of im2col's 9×. The
# backward is the same three steps read backwards (each transform's adjoint is its transpose):
#
#     dM = A dY Aᵀ (per 2×2 block of dy),  dU_ξ = dM_ξ @ V_ξᵀ,  dV_ξ = U_ξᵀ @ dM_ξ,
#     dg = Gᵀ dU G,                        dd = B dV Bᵀ (added into the overlapping input tiles).
#
# For the tutorial's 64 → 64 conv that is 2.3 GFLOP of GEMM per pass instead of 5.2. The transforms'
# coefficients are 0, ±1 and ±1/2, so float32 results stay within a few ulps of im2col's. Used for 3×3,
# stride 1, no dilation, no groups, with at least WINOGRAD_MIN_CHANNELS channels in and out (the GEMMs'
# inner dimension is C, so they need a few). Tiles hanging over the padded input's bottom or right edge
# (odd output sizes) read zeros there and their extra outputs are dropped. The forward (winograd4.py) uses
# the larger F(4×4, 3×3) tiles; the backward keeps these: its three transforms (dM, V again for dU, dd)
# are simpler, and F(4×4)'s backward is not written.
#
# How the work is cut: into pieces of a few rows of tiles, each piece run start to finish by one thread of
# kernels/cpu/threads.py — the transforms and GEMMs of its tiles — in buffers of that thread about the size
# of its core's L2 cache (winograd4.py's WINOGRAD_PIECE_BYTES for V and M together; the backward's pieces
# run three transforms, each call costing µs of Python: twice that budget was 5–15 % faster on the task
# models' convs, the spill going to the L3). Transforming the whole batch first and then multiplying (16
# GEMMs over ~18,000 tiles for the tutorial) sent V and M through main memory, and one core's SGEMM slowed
# down by a third; the transforms, writing 16 strided streams, lost as much (timings: benchmarks/RESULTS.md,
# "Timings moved from kernel docstrings"). The forward's pieces are any rows of tiles (they write disjoint
# rows of y). The backward's unit is an image: neighbouring tiles overlap in the input, so one image's input
# gradient is summed by one thread, in a padded plane buffer of its own; each thread also sums its own share
# of dU (float64), added up at the end.

WINOGRAD_BACKWARD_PIECE_BYTES = 2 << 20  # V and M of one backward piece (the forward's: winograd4.py)

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# G g Gᵀ for every 3×3 filter g at once: flattened row by row, vec(G g Gᵀ) = (G ⊗ G) vec(g), so the
# transformed filters are one GEMM (F·C, 9) @ (9, 16), and the gradient's Gᵀ dU G one (F·C, 16) @ (16, 9)
# (NumPy's stacked 4×3 @ 3×3 products were slower). Through gemm.matmul, like every BLAS call of the
# kernels: a bare `@` here woke OpenBLAS's own threads, which slowed whole steps down.
_GG = np.kron(_G, _G)  # (16, 9)


def _winograd_tiles(y_hw):
    """The number of 2×2 output tiles, down and across."""
    return (y_hw[0] + 1) // 2, (y_hw[1] + 1) // 2


def _winograd_filters(w):
    """U = G g Gᵀ for every (filter, channel) -> (16, F, C): the 16 GEMMs' left operands."""
    F, C = w.shape[0], w.shape[1]
    U = matmul(w.reshape(F * C, 9), _GG.T.astype(w.dtype))  # (F·C, 16): row f·C + c is G w[f, c] Gᵀ, flattened
    return np.ascontiguousarray(U.T.reshape(16, F, C))


def _winograd_piece_rows(C, F, TW, itemsize):
    """Rows of tiles per backward piece: V (16, C, slots) and M (16, F, slots) within
    WINOGRAD_BACKWARD_PIECE_BYTES (TW + 1 slots per row of tiles, see the transforms)."""
    return max(1, WINOGRAD_BACKWARD_PIECE_BYTES // (16 * (C + F) * (TW + 1) * itemsize))


def _input_buffers(S, dtype):
    """_winograd_input's buffers for a piece of S slots (made here: arrays made in the kernel cost its first
    compile more): the padded rows (zeros: only the input's pixels are written), their even and odd
    columns, and Bᵀ d on those (+ 1: the last spare slot reads one past the end)."""
    return (np.zeros((4, 2 * S + 2), dtype),) + tuple(np.empty((4, S + 1), dtype) for _ in range(4))


def _winograd_backward(dy, y, x, x_shape, w, w_shape, padding, dx, dw, bias_sums):
    """conv2d's gradients for 3×3, stride 1, with dz = dy · [y > 0] when y is given (fused ReLU), else dy.
    Fills dx and dw (each when not None) and bias_sums (N, F), the sums of dz's planes. One image per task,
    in pieces of tile rows: dM = output-gradient transform, then dU += dM Vᵀ (V the input transform) and
    dV = Uᵀ dM, whose input-gradient transform is summed into the image's padded plane buffer."""
    N, F = dy.shape[0], dy.shape[1]
    C, H, W = w_shape[1], x_shape[2], x_shape[3]
    ph, pw = padding
    TH, TW = _winograd_tiles(dy.shape[2:])
    Ut = np.ascontiguousarray(_winograd_filters(w).transpose(0, 2, 1)) if dx is not None else None
    rows = _winograd_piece_rows(C, F, TW, dy.dtype.itemsize)
    masked = y is not None
    dU_parts = {}  # thread -> its float64 (16, F, C) share of dU

    def image(n):
        bias_sums[n] = 0.0
        if dx is not None:
            plane = scratch("conv.winograd_dx", (C, 2 * TH + 2, 2 * TW + 2), dy.dtype)
            plane[...] = 0
        if dw is not None:
            if threading.get_ident() not in dU_parts:  # this thread's first image
                dU_parts[threading.get_ident()] = np.zeros((16, F, C), np.float64)
            dU = dU_parts[threading.get_ident()]
        for th0 in range(0, TH, rows):
            r0, r1 = n * TH + th0, n * TH + min(TH, th0 + rows)
            tiles = (r1 - r0) * (TW + 1)  # slots: TW tiles and one spare per row
            dM = scratch("conv.winograd_m", (16, F, tiles), dy.dtype)
            _winograd_output_grad(dy, y if masked else dy, masked, TH, TW, r0, r1, dM, bias_sums)
            if dw is not None:  # dU_ξ += dM_ξ @ V_ξᵀ
                V = scratch("conv.winograd_v", (16, C, tiles), dy.dtype)
                _winograd_input(x, ph, pw, TH, TW, r0, r1, V, *_input_buffers(tiles, dy.dtype))
                dU += np.matmul(dM, V.transpose(0, 2, 1), out=scratch("conv.winograd_dup", (16, F, C), dy.dtype))
            if dx is not None:  # dV_ξ = U_ξᵀ @ dM_ξ, then dd = B dV Bᵀ into the image's plane buffer
                dV = scratch("conv.winograd_v", (16, C, tiles), dy.dtype)
                np.matmul(Ut, dM, out=dV)
                _winograd_input_grad(dV, TH, TW, r0, r1, plane)
        if dx is not None:
            dx[n] = plane[:, ph:ph + H, pw:pw + W]

    threads.parallel_for(image, N)
    if dw is not None:  # dg = Gᵀ dU G
        dU = np.sum(list(dU_parts.values()), axis=0)
        dw[...] = matmul(dU.reshape(16, F * C).T, _GG).reshape(F, C, 3, 3)


# Each transform is applied as two 1-D passes, the rows of the tile then its columns (Bᵀ d B = (Bᵀ d) B),
# and the loops run along the tiles, writing each of the 16 transformed values of a tile to its own
# contiguous stream: straight-line loop bodies with unit or stride-2 steps, which LLVM vectorizes (a loop
# over ξ or a function returning tuples inside the loop did not, and was several times slower). The tiles of
# a piece sit in slots, TW + 1 per row of tiles: tile (r, tw) in slot (r − r0)·(TW + 1) + tw, and one spare
# slot at the end of each row. With the spare, a tile's right neighbour is always the next slot, so the loops run over
# all the piece's slots at once instead of row by row: a row of the tutorial's second conv has only 24
# tiles, too short for a vector loop (timings of both: benchmarks/RESULTS.md, moved from here). The
# spare slots carry junk forward (their outputs are dropped) and zeros backward (dM there is 0), and cost
# 1/(TW + 1) more GEMM. The kernels are serial and release the GIL: the threads of kernels/cpu/threads.py
# run them on their own pieces.

@njit(cache=True, nogil=True)
def _winograd_input(x, ph, pw, TH, TW, r0, r1, V, rows, e, o, te, to):
    """V[ξ, c, slot] = (Bᵀ d B)[ξ] for the tiles of rows r = n·TH + th in [r0, r1), slot (r − r0)·(TW + 1)
    + tw, d the 4×4 tile at (2·th, 2·tw) of the zero-padded x[n, c] (ξ = 4·row + column of the transformed
    tile); the spare slots get junk.

    Tile tw reads the padded row's columns 2tw .. 2tw + 3, i.e. its even columns tw, tw + 1 and its odd
    columns tw, tw + 1. So row i of every tile row of the piece is copied, zero-padded, into rows[i] (2·(TW + 1)
    columns a tile row: the spare slot's place) and split into its even and odd columns (e[i], o[i]), the
    rows are combined (Bᵀ d) on those, and the columns (· B) then read e[·, t], o[·, t], e[·, t + 1],
    o[·, t + 1]: every loop but the copies runs at unit or stride 2 over all the piece's slots."""
    N, C, H, W = x.shape
    TW1 = TW + 1
    S = (r1 - r0) * TW1  # slots in the piece
    for c in range(C):
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            base = 2 * (r - r0) * TW1 + pw
            for i in range(4):  # the input row 2th + i (a padding row stays 0, for every channel)
                h = 2 * th + i - ph
                if 0 <= h < H:
                    _copy_row(rows[i, base:base + W], x[n, c, h], 1)  # not a slice assignment (direct.py)
        for i in range(4):  # even and odd columns
            ri, ei, oi = rows[i], e[i], o[i]
            for k in range(S + 1):
                ei[k] = ri[2 * k]
                oi[k] = ri[2 * k + 1]
        e0, e1, e2, e3 = e[0], e[1], e[2], e[3]
        o0, o1, o2, o3 = o[0], o[1], o[2], o[3]
        te0, te1, te2, te3 = te[0], te[1], te[2], te[3]
        to0, to1, to2, to3 = to[0], to[1], to[2], to[3]
        for k in range(S + 1):  # Bᵀ d: combine the rows
            te0[k], te1[k], te2[k], te3[k] = e0[k] - e2[k], e1[k] + e2[k], e2[k] - e1[k], e1[k] - e3[k]
            to0[k], to1[k], to2[k], to3[k] = o0[k] - o2[k], o1[k] + o2[k], o2[k] - o1[k], o1[k] - o3[k]
        for i in range(4):  # (Bᵀ d) B: combine the columns of each row i, slot by slot
            ei, oi = te[i], to[i]
            # 1-D unit-stride views: Numba knows they are contiguous, so LLVM vectorizes the loop
            v0, v1 = V[4 * i, c, :S], V[4 * i + 1, c, :S]
            v2, v3 = V[4 * i + 2, c, :S], V[4 * i + 3, c, :S]
            for t in range(S):
                v0[t] = ei[t] - ei[t + 1]
                v1[t] = oi[t] + ei[t + 1]
                v2[t] = ei[t + 1] - oi[t]
                v3[t] = oi[t] - oi[t + 1]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _winograd_output_grad(dy, y, masked, TH, TW, r0, r1, dM, sums):
    """For the tile rows r = n·TH + th in [r0, r1): dM[ξ, f, slot] = (A dz Aᵀ)[ξ] (slot (r − r0)·(TW + 1) +
    tw), dz the 2×2 block of dz = dy · [y > 0] (or dy when not masked) at (2·th, 2·tw), 0 past the plane's
    edge and in the spare slots; and sums[n, f] += Σ of those rows of dz (float64)."""
    N, F, OH, OW = dy.shape
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    dz = np.zeros((2, 2 * S), dy.dtype)  # 2 columns a slot; what no output reaches stays 0
    t = np.empty((4, 2 * S), dy.dtype)  # A dz: the 4 rows
    for f in range(F):
        for r in range(r0, r1):
            n, th = r // TH, r % TH
            base = 2 * (r - r0) * TW1
            total = 0.0
            for i in range(2):
                oh = 2 * th + i
                if oh < OH:
                    total += _relu_grad_row(dz[i, base:base + OW], dy[n, f, oh], y[n, f, oh], masked, 1)
            sums[n, f] += total
        z0, z1 = dz[0], dz[1]
        t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
        for j in range(2 * S):  # A dz: combine the 2 rows
            t0[j], t1[j], t2[j], t3[j] = z0[j], z0[j] + z1[j], z0[j] - z1[j], -z1[j]
        for i in range(4):  # (A dz) Aᵀ: combine the 2 columns of each row i (1-D views: vectorized)
            ti = t[i]
            v0, v1, v2, v3 = dM[4 * i, f, :S], dM[4 * i + 1, f, :S], dM[4 * i + 2, f, :S], dM[4 * i + 3, f, :S]
            for k in range(S):
                a0, a1 = ti[2 * k], ti[2 * k + 1]
                v0[k] = a0
                v1[k] = a0 + a1
                v2[k] = a0 - a1
                v3[k] = -a1


@njit(cache=True, nogil=True)
def _winograd_input_grad(dV, TH, TW, r0, r1, plane):
    """For the tile rows r = n·TH + th in [r0, r1) (one image): add B dV Bᵀ of each tile into plane[c]
    (C, 2TH + 2, 2TW + 2), the gradient of the image's padded planes, at the tile's place (tiles overlap by
    2 rows and 2 columns). The transforms run over all the piece's slots; each tile's 4 columns go to two
    interleaved streams (its columns 0, 1 and 2, 3), added into each row of the plane by two unit-stride
    loops (tile tw's columns 2 and 3 are tile tw + 1's 0 and 1)."""
    C = plane.shape[0]
    TW1 = TW + 1
    S = (r1 - r0) * TW1
    q = np.empty((16, S), dV.dtype)  # B dV
    left = np.empty((4, 2 * S), dV.dtype)  # (B dV) Bᵀ: row i's columns 0, 1 of each slot ...
    right = np.empty((4, 2 * S), dV.dtype)  # ... and its columns 2, 3
    for c in range(C):
        for j in range(4):  # B dV: combine the rows, for each column j of the tiles (1-D views: vectorized)
            d0, d1, d2, d3 = dV[j, c, :S], dV[4 + j, c, :S], dV[8 + j, c, :S], dV[12 + j, c, :S]
            q0, q1, q2, q3 = q[j], q[4 + j], q[8 + j], q[12 + j]
            for t in range(S):
                q0[t] = d0[t]
                q1[t] = d1[t] - d2[t] + d3[t]
                q2[t] = d1[t] + d2[t] - d0[t]
                q3[t] = -d3[t]
        for i in range(4):  # (B dV) Bᵀ: combine the columns of row i
            a0, a1, a2, a3 = q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]
            li, ri = left[i], right[i]
            for t in range(S):
                li[2 * t] = a0[t]
                li[2 * t + 1] = a1[t] - a2[t] + a3[t]
                ri[2 * t] = a1[t] + a2[t] - a0[t]
                ri[2 * t + 1] = -a3[t]
        for r in range(r0, r1):  # added into the plane, row by row of tiles (the spare slots are left out)
            th = r % TH
            base = 2 * (r - r0) * TW1
            for i in range(4):
                row = plane[c, 2 * th + i]
                dst, src = row[:2 * TW], left[i, base:base + 2 * TW]
                for k in range(2 * TW):
                    dst[k] += src[k]
                dst, src = row[2:2 * TW + 2], right[i, base:base + 2 * TW]
                for k in range(2 * TW):
                    dst[k] += src[k]

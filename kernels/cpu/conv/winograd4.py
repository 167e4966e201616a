"""Winograd F(4×4, 3×3), the forward of the 3×3, stride-1 convs winograd.py takes: each 4×4 block of outputs
from a 6×6 tile of input, 36 GEMMs instead of F(2×2, 3×3)'s 16 on four times fewer tiles (2.25
multiplications an output instead of 4, and transformed inputs 2.25 values an output instead of 4). The
backward stays F(2×2, 3×3) (winograd.py): its gradients do not depend on how the forward was computed.

    y (4×4) = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,   d the 6×6 tile, g the 3×3 filter (Lavin & Gray, 2016):

    Bᵀ = [4  0 −5  0  1  0]    G = [ 1/4     0     0  ]    Aᵀ = [1  1  1  1  1  0]
         [0 −4 −4  1  1  0]        [−1/6  −1/6  −1/6 ]         [0  1 −1  2 −2  0]
         [0  4 −4 −1  1  0]        [−1/6   1/6  −1/6 ]         [0  1  1  4  4  0]
         [0 −2 −1  2  1  0]        [1/24  1/12   1/6 ]         [0  1 −1  8 −8  1]
         [0  2 −1 −2  1  0]        [1/24 −1/12   1/6 ]
         [0  4  0 −5  0  1]        [  0     0     1  ]

The points 0, ±1, ±2 make the transforms' coefficients small: float32 results stay within ~1e-6 of the
direct sum relative to its scale. How the work is cut and laid out is winograd.py's (pieces of tile rows in
L2-sized buffers, one thread a piece, slots of TW + 1 tiles a row); here a tile reads the padded row's
columns 4·tw … 4·tw + 5, i.e. its four column phases at tw and the first two at tw + 1.
"""
import numpy as np
from numba import njit

from .. import threads
from ..activation import fused_activate
from ..gemm import MIN_FLOPS_PER_THREAD, matmul
from ..workspace import prepared, scratch
from .epilogue import _bias_or_zeros
from .rows import _copy_row

WINOGRAD_PIECE_BYTES = 1 << 20  # V and M of one piece: about one core's L2 cache

_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_GG = np.kron(_G, _G)  # (36, 9): vec(G g Gᵀ) = (G ⊗ G) vec(g), as in winograd.py


def forward(x, w, b, act, stride, padding, dilation, groups, y):
    """y = act(conv2d(x, w) + b) into y (N, F, OH, OW); padding (top, left)."""
    _forward(x, w, _bias_or_zeros(b, w.shape[0], x.dtype), act, padding, y)
    return y


def forward_maxpool2(x, w, b, act, stride, padding, dilation, y_shape, pooled):
    """pooled = max_pool2d(act(conv2d(x, w) + b), 2): each 4×4 output tile holds four pooling windows."""
    _forward(x, w, _bias_or_zeros(b, w.shape[0], x.dtype), act, padding, pooled, y_shape)
    return pooled


def _filters(w):
    """U = G g Gᵀ for every (filter, channel) -> (36, F, C): one GEMM, as in winograd.py."""
    F, C = w.shape[0], w.shape[1]
    U = matmul(w.reshape(F * C, 9), _GG.T.astype(w.dtype))
    return np.ascontiguousarray(U.T.reshape(36, F, C))


def _forward(x, w, b, act, padding, y, pooled_from=None):
    """y = act(conv2d(x, w) + b) piece by piece of tile rows (r = n·TH + th): V = input transform, M_ξ = U_ξ @ V_ξ
    (36 GEMMs), y = output transform (+ bias, activation); with pooled_from (the conv's output shape), y is
    its 2×2 max pooling."""
    N, C = x.shape[0], x.shape[1]
    F = w.shape[0]
    OH, OW = y.shape[2:] if pooled_from is None else pooled_from[2:]
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    U = prepared(w, "winograd4_filters", _filters)
    rows = _piece_rows(C, F, TW, x.dtype.itemsize, N * TH)
    pieces = -(-N * TH // rows)
    constants = np.array([2, 4, 8], x.dtype)

    def piece(i):
        r0, r1 = i * rows, min(N * TH, (i + 1) * rows)
        S = (r1 - r0) * (TW + 1)
        V = scratch("conv.winograd_v", (36, C, S), x.dtype)
        M = scratch("conv.winograd_m", (36, F, S), x.dtype)
        _input(x, padding[0], padding[1], TH, TW, r0, r1, V, np.zeros((6, 4 * S + 4), x.dtype),
               np.empty((6, 4, S + 1), x.dtype), np.empty((6, 4, S + 1), x.dtype), np.empty((6, S), x.dtype), constants)
        np.matmul(U, V, out=M)
        _output(M, b, act, pooled_from is not None, OH, OW, TH, TW, r0, r1, y, np.empty((24, S), x.dtype),
                np.empty((4, 4 * S), x.dtype), constants)

    threads.parallel_for(piece, pieces)


def _piece_rows(C, F, TW, itemsize, total_rows):
    """Rows of tiles per piece: V (36, C, slots) and M (36, F, slots) within WINOGRAD_PIECE_BYTES (TW + 1
    slots a row), or fewer so that every thread gets a piece when its share of the GEMMs is worth waking it
    for (a batch-1 predict: the tiles of one image would otherwise be one or two pieces)."""
    rows = max(1, WINOGRAD_PIECE_BYTES // (36 * (C + F) * (TW + 1) * itemsize))
    parts = min(threads.num_threads(), int(2.0 * 36 * F * C * (TW + 1) * total_rows // MIN_FLOPS_PER_THREAD))
    return min(rows, -(-total_rows // parts)) if parts > 1 else rows


@njit(cache=True, nogil=True)
def _input(x, ph, pw, TH, TW, r0, r1, V, rows, phases, t, out, k2):
    """V[ξ, c, slot] = (Bᵀ d B)[ξ] for the tiles of rows r = n·TH + th in [r0, r1) (slot (r − r0)·(TW + 1) + tw),
    d the 6×6 tile at (4·th, 4·tw) of the zero-padded x[n, c]. Row i of every tile row is copied, padded, into
    rows[i] (4·(TW + 1) columns a tile row) and split into its column phases (phases[i, q, k] = column 4k + q);
    Bᵀ d combines the six rows phase by phase, then · B the columns q = 0..3 at k and q = 0, 1 at k + 1.
    k2 = (2, 4, 8) in x's dtype: with integer literals Numba computes in float64 (2.4× slower)."""
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
        for i in range(6):  # (Bᵀ d) B: combine the columns of row i: phases 0..3 at k, then 0, 1 at k + 1,
            # into `out`, then copied into V's six rows (written straight into them, 3× slower: the six rows
            # lie far apart, and LLVM's checks that they do not overlap the inputs left the loop scalar)
            a0, a1, a2, a3 = t[i, 0], t[i, 1], t[i, 2], t[i, 3]
            _b_transposed(a0, a1, a2, a3, a0[1:], a1[1:], out[0], out[1], out[2], out[3], out[4], out[5], S, k2)
            for j in range(6):
                dst, src = V[6 * i + j, c], out[j]
                for k in range(S):
                    dst[k] = src[k]


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

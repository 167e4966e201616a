"""The backward of a 1×1 conv with the channels last, on tiles of sums held in registers.

    dx = dy W     dW = dyᵀ x        dy (M, F), x (M, C), W (F, C); M = N·H·W pixels, C and F ≤ a few hundred

The tile: 4 rows × 32 columns of a product, 128 sums, while k runs over the inner dimension: per k, four
broadcasts of the left operand's a[r, k], two 16-wide loads of the right one's row k, eight fused
multiply-adds; the sums leave the registers only when the tile is stored.

Each thread takes a share of the rows, chunk by chunk (ROWS rows: a chunk of dy and x stays in its L2
cache), and for each chunk
- dW's share: dyᵀ x over the chunk's pixels (`_gram_add`) — on tiles of 4 filters × 32 channels, or of
  4 channels × 32 filters (dWᵀ = xᵀ dy) where that leaves fewer zeros in the last tile; summed in the data's
  dtype over a chunk, then into the thread's float64 share;
- dx's rows (`_rows_product`, tiles of 4 pixels × 32 channels over k < F) where C ≤ F: an expanding or
  square conv. Where C > F (a projecting conv) F is too short an inner dimension for the tile (its stores
  weigh): dx is then one BLAS GEMM.
At 16 channels (half of each tile zeros, or dx by BLAS reading dy once more) and for a projecting conv
whose channels do not fill whole tiles, BLAS's two GEMMs per chunk stayed as fast: `applies`.
As two BLAS GEMMs per chunk (channels_last.py's _pointwise_backward) the products with an inner dimension of
F or of a chunk ran at about 55–75 % of the cores' peak, the tiles at 80–90 % (timings: benchmarks/RESULTS.md,
"Timings moved from kernel docstrings").

Registers, not memory: the sums are a stack array (`stack_tile`, an LLVM alloca of a constant size) indexed
by constants once the loops over a tile's rows and columns are unrolled, which LLVM keeps in registers
(8 AVX-512 registers; 16 AVX2 ones, all of them, where some spill). A NumPy array made in the kernel lives
on the heap, where as far as LLVM can tell its stores may change the operands: it kept the sums in memory,
at half the speed. Whole tiles of the right operand are read in place; the columns of its last, partial
tile are copied into a buffer padded with zeros, and W is laid out in tiles the same way (`column_tiles`).
The last block of rows or filters reads its last one again in place of those past the end and does not
store them. Every index in the inner loops is a loop counter ≥ 0 plus a row offset (Numba's wraparound of
negative indices costs a select that leaves LLVM's loop scalar: depthwise3x3.py).
"""
import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .. import threads
from ..gemm import matmul
from ..workspace import output

TILE_ROWS, TILE_COLUMNS = 4, 32
ROWS = 512  # pixels per chunk: a chunk's rows of dy and x (≤ 256 KB up to 128 channels in all) stay in L2
MIN_ROWS = 4096  # fewer pixels: BLAS was as fast (1,024 × 64 → 384)


def applies(M, C, F):
    """Where the tiles beat the two GEMMs per chunk (measured): ≥ MIN_ROWS pixels, more than 4 filters and 16
    channels, and a projecting conv (C > F) only with whole tiles of channels (C a multiple of 32)."""
    return M >= MIN_ROWS and F > 4 and C > 16 and (C <= F or C % TILE_COLUMNS == 0)


@intrinsic
def stack_tile(typingctx, like):
    """A pointer to TILE_ROWS × TILE_COLUMNS values of like's dtype on the calling kernel's stack."""
    def codegen(context, builder, signature, args):
        value_type = context.get_value_type(signature.args[0].dtype)
        return cgutils.alloca_once(builder, value_type, size=TILE_ROWS * TILE_COLUMNS)
    return types.CPointer(like.dtype)(like), codegen


def column_tiles(b):
    """b (K, N) -> (⌈N/32⌉, K, 32) C-contiguous: tile t holds columns 32t … 32t + 31, zeros past N."""
    K, N = b.shape
    count = _tile_count(N)
    padded = np.zeros((K, count * TILE_COLUMNS), b.dtype)
    padded[:, :N] = b
    return np.ascontiguousarray(padded.reshape(K, count, TILE_COLUMNS).transpose(1, 0, 2))


def _tile_count(columns):
    return -(-columns // TILE_COLUMNS)


def backward(dy2, x2, w2):
    """(dx (M, C), dW (F, C)) of a 1×1 conv's dy2 (M, F), x2 (M, C), w2 (F, C), C-contiguous."""
    M, F = dy2.shape
    C = x2.shape[1]
    dx2 = output(x2.shape, x2.dtype)
    dx_on_tiles = C <= F
    if not dx_on_tiles:
        matmul(dy2, w2, out=dx2)
    over_channels = _tile_count(C) * TILE_COLUMNS * F <= _tile_count(F) * TILE_COLUMNS * C  # fewer zeros
    left, right = (dy2, x2) if over_channels else (x2, dy2)  # dW = leftᵀ right, or its transpose
    shares = np.zeros((numba.get_num_threads(), left.shape[1], right.shape[1]), np.float64)
    w_tiles = column_tiles(w2) if dx_on_tiles else np.zeros((0, 0, TILE_COLUMNS), w2.dtype)
    threads.on_threads(_backward_shares, shares.shape[0], 2 * dy2.size + x2.size, left, right, dy2, w_tiles, dx2,
                       shares, dx_on_tiles)
    dw = shares.sum(axis=0)
    return dx2, np.ascontiguousarray(dw if over_channels else dw.T, dy2.dtype)


@njit(cache=True, nogil=True, error_model="numpy")
def _backward_shares(left, right, dy, w_tiles, dx, shares, dx_on_tiles, t0, t1):
    """For the shares t in [t0, t1) of the rows (T = len(shares)): shares[t] += leftᵀ right over them, and
    dx's rows when dx_on_tiles."""
    T, P, Q = shares.shape
    M = dy.shape[0]
    tail = np.zeros((ROWS, TILE_COLUMNS), right.dtype)  # the last, partial tile of right's chunk; 0 past Q
    part = np.empty((P, Q), right.dtype)
    for t in range(t0, t1):
        first, last = t * M // T, (t + 1) * M // T
        for lo in range(first, last, ROWS):
            n = min(ROWS, last - lo)
            if dx_on_tiles:
                _rows_product(dy, w_tiles, dx, lo, lo + n)
            part[:] = 0
            _gram_add(left, right, tail, lo, n, part)
            for p in range(P):
                for q in range(Q):
                    shares[t, p, q] += part[p, q]


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _rows_product(a, tiles, out, r0, r1):
    """out[r0:r1] = a[r0:r1] @ B, B (K, N) given as column_tiles(B)."""
    K = a.shape[1]
    N = out.shape[1]
    acc = numba.carray(stack_tile(a), (TILE_ROWS, TILE_COLUMNS))
    for i in range(r0, r1, TILE_ROWS):
        i1, i2, i3 = min(i + 1, r1 - 1), min(i + 2, r1 - 1), min(i + 3, r1 - 1)
        for t in range(tiles.shape[0]):
            for r in range(TILE_ROWS):
                for j in range(TILE_COLUMNS):
                    acc[r, j] = 0
            for k in range(K):
                a0, a1, a2, a3 = a[i, k], a[i1, k], a[i2, k], a[i3, k]
                for j in range(TILE_COLUMNS):
                    b = tiles[t, k, j]
                    acc[0, j] += a0 * b
                    acc[1, j] += a1 * b
                    acc[2, j] += a2 * b
                    acc[3, j] += a3 * b
            for r in range(min(TILE_ROWS, r1 - i)):
                for j in range(min(TILE_COLUMNS, N - t * TILE_COLUMNS)):
                    out[i + r, t * TILE_COLUMNS + j] = acc[r, j]


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _gram_add(left, right, tail, lo, n, part):
    """part (P, Q) += left[lo:lo + n]ᵀ @ right[lo:lo + n]: tiles of 4 of left's columns × 32 of right's; whole
    tiles of right read in place, its last partial one from `tail` (its columns copied there first)."""
    P, Q = part.shape
    whole = Q // TILE_COLUMNS
    for k in range(n):  # the partial tile's columns (the zeros past Q stay from the allocation)
        for j in range(Q - whole * TILE_COLUMNS):
            tail[k, j] = right[lo + k, whole * TILE_COLUMNS + j]
    acc = numba.carray(stack_tile(part), (TILE_ROWS, TILE_COLUMNS))
    for p in range(0, P, TILE_ROWS):
        p1, p2, p3 = min(p + 1, P - 1), min(p + 2, P - 1), min(p + 3, P - 1)
        for t in range(-(-Q // TILE_COLUMNS)):
            source, row, column = (right, lo, t * TILE_COLUMNS) if t < whole else (tail, 0, 0)
            for r in range(TILE_ROWS):
                for j in range(TILE_COLUMNS):
                    acc[r, j] = 0
            for k in range(n):
                a0, a1, a2, a3 = left[lo + k, p], left[lo + k, p1], left[lo + k, p2], left[lo + k, p3]
                for j in range(TILE_COLUMNS):
                    b = source[row + k, numba.uint64(column + j)]  # unsigned: no wraparound select
                    acc[0, j] += a0 * b
                    acc[1, j] += a1 * b
                    acc[2, j] += a2 * b
                    acc[3, j] += a3 * b
            for r in range(min(TILE_ROWS, P - p)):
                for j in range(min(TILE_COLUMNS, Q - t * TILE_COLUMNS)):
                    part[p + r, t * TILE_COLUMNS + j] += acc[r, j]

"""The backward of a 1×1 conv with the channels last, on tiles of accumulators held in registers.

    dx = dy W     dW = dyᵀ x        dy (M, F), x (M, C), W (F, C); M = N·H·W pixels, C and F ≤ a few hundred

Each thread takes a share of the rows, chunk by chunk (ROWS rows: the chunk of dy and x stays in its L2
cache), and for each chunk
- dx's rows: for 4 rows at a time and a tile of 32 columns, 4 × 32 sums run over k < F: per k, four
  broadcasts of dy[r, k], two 16-wide loads of W's row k and eight fused multiply-adds, the sums never
  leaving the registers until they are stored (`_rows_product`);
- dW's share: the same tile with the filters as its rows and the chunk's pixels as k, the chunk of x first
  copied into the tiles' layout (`_gram_add`), summed in the data's dtype over the chunk, then into the
  thread's float64 share.
As two BLAS GEMMs per chunk (channels_last.py's _pointwise_backward) the products with an inner dimension
of F or of a chunk ran at about 60 % of the cores' peak, and each chunk cost two calls. This runs 10–45 %
faster where C ≤ F (the expanding and the square 1×1 convs) from 24 channels, and slower where C > F
(dx's inner dimension F is then short beside its C columns) or at 16 channels (half of each tile zeros):
channels_last.py takes it where it is faster (`applies`; timings: benchmarks/RESULTS.md, "Timings moved
from kernel docstrings").

Registers, not memory: the accumulators are a stack array (`stack_tile`, an LLVM alloca of a constant size),
indexed by constants once the loops over a tile's rows and columns are unrolled, which LLVM keeps in
registers (4 × 32 float32 = 8 AVX-512 registers). A NumPy array made in the kernel lives on the heap, where
as far as LLVM can tell its stores may change dy or W: it kept the sums in memory, at half the speed. The
tile width is a constant of each kernel (two kernels, one code inlined), so that the column loops unroll; W's and x's
columns are padded with zeros to whole tiles. The last block of rows reads its last row again in place of
rows past the end and does not store them.
"""
import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .. import threads
from ..workspace import output

TILE_ROWS, TILE_COLUMNS = 4, 32
ROWS = 512  # pixels per chunk: a chunk's rows of dy and x (≤ 256 KB up to 128 channels in all) stay in L2
MIN_ROWS = 4096  # fewer pixels: BLAS was faster (1,024 × 64 → 384)


def applies(M, C, F):
    """Where this beat the two GEMMs per chunk: 24 ≤ C ≤ F (expanding or square convs), M ≥ MIN_ROWS."""
    return 16 < C <= F and M >= MIN_ROWS


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
    count = -(-N // TILE_COLUMNS)
    padded = np.zeros((K, count * TILE_COLUMNS), b.dtype)
    padded[:, :N] = b
    return np.ascontiguousarray(padded.reshape(K, count, TILE_COLUMNS).transpose(1, 0, 2))


def backward(dy2, x2, w2):
    """(dx (M, C), dW (F, C)) of a 1×1 conv's dy2 (M, F), x2 (M, C), w2 (F, C), C-contiguous."""
    F, C = w2.shape
    dx2 = output(x2.shape, x2.dtype)
    shares = np.zeros((numba.get_num_threads(), F, C), np.float64)
    threads.on_threads(_backward_shares, shares.shape[0], 2 * dy2.size + x2.size, dy2, x2, column_tiles(w2), dx2,
                       shares)
    return dx2, shares.sum(axis=0).astype(dy2.dtype)


@njit(cache=True, nogil=True, error_model="numpy")
def _backward_shares(dy, x, w_tiles, dx, shares, t0, t1):
    """For the shares t in [t0, t1) of the rows (T = len(shares)): dx's rows, and shares[t] += dyᵀ x over them."""
    T, F, C = shares.shape
    M = x.shape[0]
    x_tiles = np.zeros((w_tiles.shape[0], ROWS, TILE_COLUMNS), x.dtype)  # x's chunk, 0 past its C columns
    part = np.empty((F, C), x.dtype)
    for t in range(t0, t1):
        first, last = t * M // T, (t + 1) * M // T
        for lo in range(first, last, ROWS):
            n = min(ROWS, last - lo)
            _rows_product(dy, w_tiles, dx, lo, lo + n)
            _to_tiles(x, lo, n, x_tiles)
            part[:] = 0
            _gram_add(dy, x_tiles, lo, n, part)
            for f in range(F):
                for c in range(C):
                    shares[t, f, c] += part[f, c]


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
def _gram_add(dy, x_tiles, lo, n, part):
    """part (F, C) += dy[lo:lo + n]ᵀ @ x[lo:lo + n], the chunk of x given in tiles (_to_tiles)."""
    F, C = part.shape
    acc = numba.carray(stack_tile(x_tiles), (TILE_ROWS, TILE_COLUMNS))
    for f in range(0, F, TILE_ROWS):
        f1, f2, f3 = min(f + 1, F - 1), min(f + 2, F - 1), min(f + 3, F - 1)
        for t in range(x_tiles.shape[0]):
            for r in range(TILE_ROWS):
                for j in range(TILE_COLUMNS):
                    acc[r, j] = 0
            for k in range(n):
                row = lo + k
                a0, a1, a2, a3 = dy[row, f], dy[row, f1], dy[row, f2], dy[row, f3]
                for j in range(TILE_COLUMNS):
                    b = x_tiles[t, k, j]
                    acc[0, j] += a0 * b
                    acc[1, j] += a1 * b
                    acc[2, j] += a2 * b
                    acc[3, j] += a3 * b
            for r in range(min(TILE_ROWS, F - f)):
                for j in range(min(TILE_COLUMNS, C - t * TILE_COLUMNS)):
                    part[f + r, t * TILE_COLUMNS + j] += acc[r, j]


@njit(cache=True, nogil=True, error_model="numpy")
def _to_tiles(x, lo, n, x_tiles):
    """x_tiles[t, k, j] = x[lo + k, 32t + j] for k < n and 32t + j < C (the zeros past C are never written)."""
    C = x.shape[1]
    for t in range(x_tiles.shape[0]):
        columns = min(TILE_COLUMNS, C - t * TILE_COLUMNS)
        for k in range(n):
            for j in range(columns):
                x_tiles[t, k, j] = x[lo + k, t * TILE_COLUMNS + j]

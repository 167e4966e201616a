"""Matrix products and the dense layer on the GPU: a tiled GEMM in shared memory.

    y = x Wᵀ + b            x (N, I), W (O, I), b (O,)  ->  y (N, O)
    dx = dy W,  dW = dyᵀ x,  db = Σₙ dy

One kernel computes every product: C (M × N) = A (M × K) · B (K × N), where A and B are read through
strides (a[m·a_rs + k·a_cs]), so a transposed operand is just other strides (Wᵀ is W with its strides
swapped) and nothing is copied.

The tiling (sizes in _launch.py; real GPU: BM = BN = 64, BK = 16, RM = RN = 4):
- a block of TM × TN = 16 × 16 threads owns a BM × BN tile of C;
- it walks along K in steps of BK: the threads copy an A tile (BM × BK) and a B tile (BK × BN) into shared
  memory (neighbouring threads read neighbouring addresses), wait, and each thread adds the products of its
  RM × RN outputs (`tile_mma`): BK·(RM + RN) reads from shared memory for BK·RM·RN multiply-adds, the
  reuse that makes a GEMM fast. Thread (ty, tx) owns rows ty + i·TM and columns tx + j·TN, so a warp's
  shared-memory reads fall into distinct banks (rows are padded by one element against conflicts);
- split-K: when M × N has too few tiles to fill the GPU (the first dense layer of the tutorial: 32 × 64
  outputs, K = 33,856), the K range is cut into slices, one per grid.z: each block writes its partial tile to a
  workspace, and `splitk_sum_kernel` adds the slices (and the bias) in a second pass.
The pieces the conv kernels (conv.py, implicit GEMM) share with it are in gemm_tiles.py.
"""
import numpy as np
from numba import cuda

from . import _launch as gpu
from . import reduce
from ._launch import BK, BM, BMP, BN, BNP, RM, RN, TM, TN
from .gemm_tiles import clear, load_strided, multiply_tiles, store_tile, thread_in_block, tile_origin


@cuda.jit(cache=True)
def gemm_kernel(a, a_rs, a_cs, b, b_rs, b_cs, c, M, N, K, k_per_slice, bias, has_bias):
    """c[z·M·N + m·N + n] = Σ_{k in slice z} a[m·a_rs + k·a_cs] · b[k·b_rs + n·b_cs]  (+ bias[n] if has_bias)

    a, b, c, bias: 1-D. Slice z = blockIdx.z covers k in [z·k_per_slice, (z+1)·k_per_slice).
    grid (⌈N/BN⌉, ⌈M/BM⌉, slices), block (TN, TM); thread (ty, tx) computes rows m0 + ty + i·TM and
    columns n0 + tx + j·TN of the block's tile (i < RM, j < RN)."""
    As = cuda.shared.array((BK, BMP), dtype=c.dtype)
    Bs = cuda.shared.array((BK, BNP), dtype=c.dtype)
    acc = cuda.local.array((RM, RN), dtype=c.dtype)
    ra = cuda.local.array(RM, dtype=c.dtype)
    rb = cuda.local.array(RN, dtype=c.dtype)
    tx, ty, tid = thread_in_block()
    m0, n0 = tile_origin()
    z = cuda.blockIdx.z
    k_lo = z * k_per_slice
    k_hi = min(K, k_lo + k_per_slice)
    clear(acc)
    for k0 in range(k_lo, k_hi, BK):
        load_strided(As, a, a_rs, a_cs, m0, M, k0, k_hi, BM, tid)  # As[kk, mm] = a[m0 + mm, k0 + kk]
        load_strided(Bs, b, b_cs, b_rs, n0, N, k0, k_hi, BN, tid)  # Bs[kk, nn] = b[k0 + kk, n0 + nn]
        multiply_tiles(As, Bs, acc, ra, rb, ty, tx)
    store_tile(c, acc, z * M, 0, m0, M, n0, N, N, bias, has_bias, False, ty, tx)


@cuda.jit(cache=True)
def splitk_sum_kernel(out, parts, slices, bias, has_bias, ncols):
    """out[i] = Σ_s parts[s·size + i] (+ bias[i % ncols]), size = out.size: the second pass of split-K."""
    size = out.size
    for i in range(cuda.grid(1), size, cuda.gridsize(1)):
        v = parts[i]
        for s in range(1, slices):
            v += parts[s * size + i]
        if has_bias:
            v += bias[i % ncols]
        out[i] = v


def gemm(a, a_rs, a_cs, b, b_rs, b_cs, M, N, K, bias=None, dtype=None):
    """C (M × N) = A · B (+ bias over columns), A and B given as 1-D views and element strides."""
    dtype = np.dtype(dtype or np.result_type(np.dtype(a.dtype), np.dtype(b.dtype)))
    out = gpu.empty((M, N), dtype)
    if M * N == 0:
        return out
    has_bias = bias is not None
    bias = gpu.flat(bias) if has_bias else gpu.flat(out)   # a stand-in that is never read
    slices, per = gpu.split_k(gpu.cdiv(M, BM) * gpu.cdiv(N, BN), K)
    grid = (gpu.cdiv(N, BN), gpu.cdiv(M, BM), slices)
    if slices == 1:
        gpu.launch(gemm_kernel, grid, (TN, TM), a, a_rs, a_cs, b, b_rs, b_cs, gpu.flat(out), M, N, K, per,
                   bias, has_bias)
        return out
    parts = gpu.workspace("gemm.parts", (slices * M * N,), dtype)
    gpu.launch(gemm_kernel, grid, (TN, TM), a, a_rs, a_cs, b, b_rs, b_cs, parts, M, N, K, per, bias, False)
    gpu.launch1d(splitk_sum_kernel, M * N, gpu.flat(out), parts, slices, bias, has_bias, N)
    return out


def matmul(a, b):
    """(M, K) @ (K, N), both C-contiguous."""
    (M, K), N = a.shape, b.shape[1]
    return gemm(gpu.flat(a), K, 1, gpu.flat(b), N, 1, M, N, K)


def linear_forward(x, w, b):
    """y = x Wᵀ + b: A = x (N × I), B = Wᵀ (I × O) read as W with swapped strides."""
    (N, I), O = x.shape, w.shape[0]
    return gemm(gpu.flat(x), I, 1, gpu.flat(w), 1, I, N, O, I, bias=b)


def linear_backward(dy, x, w, need_dx, need_dw, need_db):
    (N, I), O = x.shape, w.shape[0]
    dx = gemm(gpu.flat(dy), O, 1, gpu.flat(w), I, 1, N, I, O) if need_dx else None     # dy (N×O) · W (O×I)
    dw = gemm(gpu.flat(dy), 1, O, gpu.flat(x), I, 1, O, I, N) if need_dw else None     # dyᵀ (O×N) · x (N×I)
    db = reduce.sum(dy, (0,), False) if need_db else None
    return dx, dw, db

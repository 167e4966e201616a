"""The pieces that every tiled GEMM kernel of the CUDA backend shares: linear.py's `gemm_kernel` and the
implicit-GEMM conv kernels of conv.py (which build their operand tiles from the images on the fly).

A block of TM × TN threads owns a BM × BN tile of C = A · B and walks along K in steps of BK: it loads an A
tile (BK × BM, in shared memory as As[kk, mm]) and a B tile (Bs[kk, nn]), waits, adds their product into each
thread's RM × RN accumulators (`multiply_tiles`), and waits again before the next tiles overwrite them. The
sizes are in _launch.py; the tiling is explained in linear.py.
"""
from numba import cuda

from ._launch import BK, BM, BN, GEMM_THREADS, RM, RN, TM, TN


@cuda.jit(device=True)
def thread_in_block():
    """(tx, ty, tid): the thread's column and row in the TM × TN block, and its rank ty·TN + tx."""
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    return tx, ty, ty * TN + tx


@cuda.jit(device=True)
def tile_origin():
    """(m0, n0): the first row and column of the block's BM × BN tile of C (grid: x along N, y along M)."""
    return cuda.blockIdx.y * BM, cuda.blockIdx.x * BN


@cuda.jit(device=True)
def clear(acc):
    """acc = 0: a thread's RM × RN accumulators, before the walk along K."""
    for i in range(RM):
        for j in range(RN):
            acc[i, j] = 0


@cuda.jit(device=True)
def tile_mma(As, Bs, acc, ra, rb, ty, tx):
    """acc[i, j] += Σ_kk As[kk, ty + i·TM] · Bs[kk, tx + j·TN]: the thread's RM × RN outputs of the tile.
    ra, rb: the thread's registers for one column of A and one row of B."""
    for kk in range(BK):
        for i in range(RM):
            ra[i] = As[kk, ty + i * TM]
        for j in range(RN):
            rb[j] = Bs[kk, tx + j * TN]
        for i in range(RM):
            for j in range(RN):
                acc[i, j] += ra[i] * rb[j]


@cuda.jit(device=True)
def multiply_tiles(As, Bs, acc, ra, rb, ty, tx):
    """Wait until the block has loaded As and Bs, add their product into acc, and wait until every thread
    has read them (the next step's loads overwrite them)."""
    cuda.syncthreads()
    tile_mma(As, Bs, acc, ra, rb, ty, tx)
    cuda.syncthreads()


@cuda.jit(device=True)
def load_strided(S, src, o_stride, k_stride, o0, O, k0, k_end, width, tid):
    """A tile of a strided operand (linear.py's GEMM): S[kk, oo] = src[(o0 + oo)·o_stride + (k0 + kk)·k_stride]
    where o0 + oo < O and k0 + kk < k_end, else 0; `width` the tile's extent along o (BM for A, BN for B).
    Neighbouring threads read neighbouring addresses: along k when the operand is contiguous along k, else
    along o."""
    for e in range(tid, width * BK, GEMM_THREADS):
        if k_stride == 1:
            kk = e % BK
            oo = e // BK
        else:
            oo = e % width
            kk = e // width
        o = o0 + oo
        k = k0 + kk
        if o < O and k < k_end:
            S[kk, oo] = src[o * o_stride + k * k_stride]
        else:
            S[kk, oo] = 0


@cuda.jit(device=True)
def load_rows_along_k(As, src, row_offsets, m0, M, m_stride, k0, k_end, tid):
    """The A tile of the conv kernels: As[kk, mm] = src[row_offsets[kk] + (m0 + mm)·m_stride] where
    m0 + mm < M and k0 + kk < k_end, else 0. row_offsets (BK,): where row k0 + kk of the operand starts for
    m = 0 (a shared table the block fills first). Neighbouring threads take neighbouring kk."""
    for e in range(tid, BM * BK, GEMM_THREADS):
        kk = e % BK
        mm = e // BK
        m = m0 + mm
        if m < M and k0 + kk < k_end:
            As[kk, mm] = src[row_offsets[kk] + m * m_stride]
        else:
            As[kk, mm] = 0


@cuda.jit(device=True)
def store_tile(out, acc, row_base, rows, m0, M, j0, cols, pixels, bias, has_bias, bias_per_row, ty, tx):
    """out[n, row_base + m, p] = acc (+ the bias) for the thread's outputs (m, column j = n·pixels + p) of the
    tile inside the M × cols matrix, out being (images, rows, pixels):
    - an implicit-GEMM conv's NCHW output (y, dx): `rows` channels of `pixels` pixels per image, the bias per
      channel (bias_per_row: bias[row_base + m]);
    - a row-major C (linear.py's GEMM, the conv weight gradient): pixels = cols, one "image", so that
      out[(row_base + m)·cols + j], the bias per column (bias[j])."""
    for i in range(RM):
        m = m0 + ty + i * TM
        if m < M:
            for j in range(RN):
                jc = j0 + tx + j * TN
                if jc < cols:
                    v = acc[i, j]
                    if has_bias:
                        v += bias[row_base + m] if bias_per_row else bias[jc]
                    out[((jc // pixels) * rows + row_base + m) * pixels + jc % pixels] = v

"""2-D convolution and transposed convolution on the GPU: implicit GEMMs in shared memory.

A convolution is a matrix product once the input is unrolled into the im2col matrix X̂, whose row
k = (c, kh, kw) and column j = (n, oh, ow) hold x[n, c, oh·sh − ph + kh·dh, ow·sw − pw + kw·dw] (0 in the
padding). Per group g (Cg = C/G input and Fg = F/G output channels):

    forward   Y_g  (Fg × N·OH·OW)    = W_g (Fg × Cg·KH·KW)   · X̂_g (Cg·KH·KW × N·OH·OW)
    dx        DX_g (Cg × N·H·W)      = W_gᵀ (Cg × Fg·KH·KW)  · D̂_g (Fg·KH·KW × N·H·W)
              where D̂[(f, kh, kw), (n, h, w)] = dy[n, f, oh, ow] with oh·sh = h + ph − kh·dh,
              ow·sw = w + pw − kw·dw (0 when these do not divide exactly or fall outside dy)
    dW        dW_g (Fg × Cg·KH·KW)   = DY_g (Fg × N·OH·OW)   · X̂_gᵀ (N·OH·OW × Cg·KH·KW)

X̂ and D̂ are never stored (that would be KH·KW times the input): the kernels below are the tiled GEMM of
linear.py (same tiles, same `tile_mma`), whose tile loaders compute the im2col addresses on the fly.
The divisions that split k into (c, kh, kw) are done once per tile, for the BK rows of the tile, into small
shared tables (`Koff`, `Kh`, `Kw`), so that loading an element costs a few additions and a bounds check.

The transposed convolution is the same three products with roles exchanged: its forward is conv2d's dx,
its dx is conv2d's forward, its dW is conv2d's dW with x and dy swapped. Bias gradients are sums of dy over
(n, oh, ow): reduce.sum.
"""
import numpy as np
from numba import cuda, int64

from . import _launch as gpu
from . import reduce
from ._launch import BK, BM, BMP, BN, BNP, GEMM_THREADS, RM, RN, TM, TN
from .gemm_tiles import clear, load_rows_along_k, multiply_tiles, store_tile, thread_in_block, tile_origin
from .linear import splitk_sum_kernel

OUTSIDE = -(1 << 40)   # a row offset that puts every position outside the image: the row is padding


@cuda.jit(cache=True)
def conv2d_forward_kernel(x, w, b, has_bias, y, N, C, H, W, F, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G):
    """y[n, g·Fg + f, oh, ow] = b[.] + Σ_{c,kh,kw} w[g·Fg + f, c, kh, kw] · x[n, g·Cg + c, ih, iw],
    ih = oh·sh − ph + kh·dh, iw = ow·sw − pw + kw·dw.  Y_g = W_g · X̂_g, M = Fg rows, N·OH·OW columns.
    x, w, b, y: 1-D views of the NCHW arrays. grid (⌈N·OH·OW/BN⌉, ⌈Fg/BM⌉, G), block (TN, TM)."""
    As = cuda.shared.array((BK, BMP), dtype=y.dtype)
    Bs = cuda.shared.array((BK, BNP), dtype=y.dtype)
    Koff = cuda.shared.array(BK, dtype=int64)   # offset of row k = (c, kh, kw) of X̂ from x[n, g·Cg, ih0, iw0]
    Kh = cuda.shared.array(BK, dtype=int64)     # kh·dh (OUTSIDE past the last row)
    Kw = cuda.shared.array(BK, dtype=int64)     # kw·dw
    Kwrow = cuda.shared.array(BK, dtype=int64)  # offset of w[g·Fg, k] (filter f's row k is at + f·Kdim)
    acc = cuda.local.array((RM, RN), dtype=y.dtype)
    ra = cuda.local.array(RM, dtype=y.dtype)
    rb = cuda.local.array(RN, dtype=y.dtype)
    tx, ty, tid = thread_in_block()
    g = cuda.blockIdx.z
    Cg, Fg, KK = C // G, F // G, KH * KW  # channels and filters per group, taps per filter
    Kdim = Cg * KK
    P = OH * OW
    cols = N * P
    m0, j0 = tile_origin()
    # This thread always loads the same column j of X̂ (BN divides the thread count): decompose it once.
    jj = tid % BN
    j = j0 + jj
    n = j // P
    p = j % P
    ih0 = (p // OW) * sh - ph
    iw0 = (p % OW) * sw - pw
    xrow = ((n * C + g * Cg) * H + ih0) * W + iw0
    clear(acc)
    for k0 in range(0, Kdim, BK):
        if tid < BK:                        # the tile's row table
            k = k0 + tid
            c = k // KK
            r = k % KK
            Kh[tid] = (r // KW) * dh if k < Kdim else OUTSIDE
            Kw[tid] = (r % KW) * dw
            Koff[tid] = (c * H + (r // KW) * dh) * W + (r % KW) * dw
            Kwrow[tid] = g * Fg * Kdim + k
        cuda.syncthreads()
        # A tile: As[kk, mm] = w[g·Fg + m0 + mm, k0 + kk] (w is contiguous along k: threads walk along k)
        load_rows_along_k(As, w, Kwrow, m0, Fg, Kdim, k0, Kdim, tid)
        # B tile: Bs[kk, jj] = X̂[k0 + kk, j] (threads walk along j: along ow in memory)
        for e in range(tid, BN * BK, GEMM_THREADS):
            kk = e // BN
            ih = ih0 + Kh[kk]
            iw = iw0 + Kw[kk]
            if j < cols and ih >= 0 and ih < H and iw >= 0 and iw < W:
                Bs[kk, jj] = x[xrow + Koff[kk]]
            else:
                Bs[kk, jj] = 0
        multiply_tiles(As, Bs, acc, ra, rb, ty, tx)
    store_tile(y, acc, g * Fg, F, m0, Fg, j0, cols, P, b, has_bias, True, ty, tx)


@cuda.jit(cache=True)
def conv2d_dx_kernel(dy, w, b, has_bias, dx, N, C, H, W, F, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G):
    """dx[n, g·Cg + c, h, x] = b[.] + Σ_{f,kh,kw} w[g·Fg + f, c, kh, kw] · dy[n, g·Fg + f, oh, ow]
    with oh·sh = h + ph − kh·dh and ow·sw = x + pw − kw·dw exactly.  DX_g = W_gᵀ · D̂_g, M = Cg rows,
    N·H·W columns, K = Fg·KH·KW. (With the bias, this is the transposed convolution's forward.)
    grid (⌈N·H·W/BN⌉, ⌈Cg/BM⌉, G), block (TN, TM)."""
    As = cuda.shared.array((BK, BMP), dtype=dx.dtype)
    Bs = cuda.shared.array((BK, BNP), dtype=dx.dtype)
    Kf = cuda.shared.array(BK, dtype=int64)     # offset of dy's plane f of row k = (f, kh, kw)
    Kwo = cuda.shared.array(BK, dtype=int64)    # offset of w[g·Fg + f, 0, kh, kw]
    Kh = cuda.shared.array(BK, dtype=int64)     # kh·dh (OUTSIDE past the last row)
    Kw = cuda.shared.array(BK, dtype=int64)     # kw·dw
    acc = cuda.local.array((RM, RN), dtype=dx.dtype)
    ra = cuda.local.array(RM, dtype=dx.dtype)
    rb = cuda.local.array(RN, dtype=dx.dtype)
    tx, ty, tid = thread_in_block()
    g = cuda.blockIdx.z
    Cg, Fg, KK = C // G, F // G, KH * KW  # channels and filters per group, taps per filter
    Kdim = Fg * KK
    HW = H * W
    cols = N * HW
    m0, j0 = tile_origin()
    jj = tid % BN                   # this thread's column j = (n, h, x) of D̂, fixed
    j = j0 + jj
    n = j // HW
    hp = (j % HW) // W + ph         # h + ph
    xp = (j % W) + pw               # x + pw
    dybase = (n * F + g * Fg) * OH * OW
    clear(acc)
    for k0 in range(0, Kdim, BK):
        if tid < BK:
            k = k0 + tid
            f = k // KK
            r = k % KK
            Kf[tid] = f * OH * OW
            Kwo[tid] = (g * Fg + f) * Cg * KK + r
            Kh[tid] = (r // KW) * dh if k < Kdim else OUTSIDE
            Kw[tid] = (r % KW) * dw
        cuda.syncthreads()
        # A tile: As[kk, mm] = w[g·Fg + f, m0 + mm, kh, kw] for row k0 + kk = (f, kh, kw)
        load_rows_along_k(As, w, Kwo, m0, Cg, KK, k0, Kdim, tid)
        # B tile: Bs[kk, jj] = D̂[k0 + kk, j]
        for e in range(tid, BN * BK, GEMM_THREADS):
            kk = e // BN
            th = hp - Kh[kk]
            tw = xp - Kw[kk]
            if sh == 1 and sw == 1:
                oh = th
                ow = tw
                hit = True
            else:
                oh = th // sh
                ow = tw // sw
                hit = oh * sh == th and ow * sw == tw
            if j < cols and hit and th >= 0 and tw >= 0 and oh < OH and ow < OW:
                Bs[kk, jj] = dy[dybase + Kf[kk] + oh * OW + ow]
            else:
                Bs[kk, jj] = 0
        multiply_tiles(As, Bs, acc, ra, rb, ty, tx)
    store_tile(dx, acc, g * Cg, C, m0, Cg, j0, cols, HW, b, has_bias, True, ty, tx)


@cuda.jit(cache=True)
def conv2d_dw_kernel(dy, x, out, N, C, H, W, F, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G, slices, k_per_slice):
    """dw[g·Fg + f, c, kh, kw] = Σ_{n,oh,ow} dy[n, g·Fg + f, oh, ow] · x[n, g·Cg + c, ih, iw].
    dW_g = DY_g · X̂_gᵀ: M = Fg rows, Cg·KH·KW columns, K = N·OH·OW, cut into `slices` slices:
    grid (⌈Cg·KH·KW/BN⌉, ⌈Fg/BM⌉, G·slices), block (TN, TM); slice s of group g writes
    out[s, g·Fg + f, (c, kh, kw)] (out = dw itself when slices = 1)."""
    As = cuda.shared.array((BK, BMP), dtype=out.dtype)
    Bs = cuda.shared.array((BK, BNP), dtype=out.dtype)
    Kdy = cuda.shared.array(BK, dtype=int64)    # offset of dy[n, g·Fg, oh, ow] for row k = (n, oh, ow)
    Kx = cuda.shared.array(BK, dtype=int64)     # offset of x[n, g·Cg, ih0, iw0]
    Kih = cuda.shared.array(BK, dtype=int64)    # ih0 = oh·sh − ph (OUTSIDE past the slice)
    Kiw = cuda.shared.array(BK, dtype=int64)    # iw0 = ow·sw − pw
    Joff = cuda.shared.array(BN, dtype=int64)   # offset of column (c, kh, kw) from x[n, g·Cg, ih0, iw0]
    Jh = cuda.shared.array(BN, dtype=int64)     # kh·dh
    Jw = cuda.shared.array(BN, dtype=int64)     # kw·dw
    acc = cuda.local.array((RM, RN), dtype=out.dtype)
    ra = cuda.local.array(RM, dtype=out.dtype)
    rb = cuda.local.array(RN, dtype=out.dtype)
    tx, ty, tid = thread_in_block()
    g = cuda.blockIdx.z // slices
    s = cuda.blockIdx.z % slices
    Cg, Fg, KK = C // G, F // G, KH * KW  # channels and filters per group, taps per filter
    Jdim = Cg * KK
    P = OH * OW
    k_lo = s * k_per_slice
    k_hi = min(N * P, k_lo + k_per_slice)
    m0, j0 = tile_origin()
    if tid < BN:                    # the block's column table, fixed for the whole kernel
        jc = j0 + tid
        c = jc // KK
        r = jc % KK
        Joff[tid] = (c * H + (r // KW) * dh) * W + (r % KW) * dw
        Jh[tid] = (r // KW) * dh
        Jw[tid] = (r % KW) * dw
    clear(acc)
    for k0 in range(k_lo, k_hi, BK):
        if tid < BK:
            k = k0 + tid
            n = k // P
            p = k % P
            Kdy[tid] = (n * F + g * Fg) * P + p
            Kih[tid] = (p // OW) * sh - ph if k < k_hi else OUTSIDE
            Kiw[tid] = (p % OW) * sw - pw
            Kx[tid] = ((n * C + g * Cg) * H + (p // OW) * sh - ph) * W + (p % OW) * sw - pw
        cuda.syncthreads()
        # A tile: As[kk, mm] = dy[n, g·Fg + m0 + mm, oh, ow] for row k0 + kk = (n, oh, ow) (threads along k)
        load_rows_along_k(As, dy, Kdy, m0, Fg, P, k0, k_hi, tid)
        # B tile: Bs[kk, jj] = X̂[(c, kh, kw) = j0 + jj, k0 + kk] (threads along k: along x in memory)
        for e in range(tid, BN * BK, GEMM_THREADS):
            kk = e % BK
            jj = e // BK
            ih = Kih[kk] + Jh[jj]
            iw = Kiw[kk] + Jw[jj]
            if j0 + jj < Jdim and ih >= 0 and ih < H and iw >= 0 and iw < W:
                Bs[kk, jj] = x[Kx[kk] + Joff[jj]]
            else:
                Bs[kk, jj] = 0
        multiply_tiles(As, Bs, acc, ra, rb, ty, tx)
    store_tile(out, acc, s * F + g * Fg, 0, m0, Fg, j0, Jdim, Jdim, out, False, False, ty, tx)


@cuda.jit(cache=True)
def pad_kernel(x, y, H, W, OH, OW, top, left, value):
    """y[p, h, w] = x[p, h − top, w − left] inside the image, value outside (one thread per output)."""
    for o in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        w = o % OW - left
        h = (o // OW) % OH - top
        if h >= 0 and h < H and w >= 0 and w < W:
            y[o] = x[((o // (OW * OH)) * H + h) * W + w]
        else:
            y[o] = value


@cuda.jit(cache=True)
def crop_kernel(dy, dx, H, W, OH, OW, top, left):
    """dx[p, h, w] = dy[p, h + top, w + left]: the gradient of padding."""
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = i % W
        h = (i // W) % H
        dx[i] = dy[((i // (W * H)) * OH + h + top) * OW + w + left]


# ------------------------------------------------------------------------------------------ launchers


def _forward(x, w, b, y, stride, padding, dilation, groups):
    """y (allocated, N × F × OH × OW) = conv2d(x, w) + b."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = y.shape[2], y.shape[3]
    return _run_nchw(conv2d_forward_kernel, x, w, b, y, F // groups, N * OH * OW,
                     (N, C, H, W, F, KH, KW, OH, OW), stride, padding, dilation, groups)


def _dx(dy, w, b, dx, stride, padding, dilation, groups):
    """dx (allocated, N × C × H × W) = the gradient of conv2d(x, w) wrt x for the output gradient dy (+ b)."""
    N, F, OH, OW = dy.shape
    _, C, H, W = dx.shape
    KH, KW = w.shape[2], w.shape[3]
    return _run_nchw(conv2d_dx_kernel, dy, w, b, dx, C // groups, N * H * W,
                     (N, C, H, W, F, KH, KW, OH, OW), stride, padding, dilation, groups)


def _run_nchw(kernel, source, w, b, out, rows, columns, sizes, stride, padding, dilation, groups):
    """Launch an implicit-GEMM kernel that writes the NCHW array `out` (allocated): per group a rows × columns
    product, one block per BM × BN tile. sizes: (N, C, H, W, F, KH, KW, OH, OW)."""
    if out.size == 0:
        return out
    has_bias = b is not None
    grid = (gpu.cdiv(columns, BN), gpu.cdiv(rows, BM), groups)
    gpu.launch(kernel, grid, (TN, TM), gpu.flat(source), gpu.flat(w), gpu.flat(b if has_bias else w), has_bias,
               gpu.flat(out), *sizes, *stride, *padding, *dilation, groups)
    return out


def _dw(dy, x, w_shape, stride, padding, dilation, groups):
    """dW (F × C/G × KH × KW) of conv2d(x, w) for the output gradient dy."""
    N, C, H, W = x.shape
    _, F, OH, OW = dy.shape
    _, Cg, KH, KW = w_shape
    dw = gpu.empty(w_shape, dy.dtype)
    if dw.size == 0:
        return dw
    Jdim, Fg = Cg * KH * KW, F // groups
    tiles = gpu.cdiv(Jdim, BN) * gpu.cdiv(Fg, BM) * groups
    slices, per = gpu.split_k(tiles, N * OH * OW)
    if N * OH * OW == 0:
        slices, per = 1, 0
    out = dw if slices == 1 else gpu.workspace("conv.dw.parts", (slices * dw.size,), dy.dtype)
    grid = (gpu.cdiv(Jdim, BN), gpu.cdiv(Fg, BM), groups * slices)
    gpu.launch(conv2d_dw_kernel, grid, (TN, TM), gpu.flat(dy), gpu.flat(x), gpu.flat(out),
               N, C, H, W, F, KH, KW, OH, OW, *stride, *padding, *dilation, groups, slices, per)
    if slices > 1:
        gpu.launch1d(splitk_sum_kernel, dw.size, gpu.flat(dw), out, slices, out, False, 1)
    return dw


def _bias_grad(dy):
    return reduce.sum(dy, (0, 2, 3), False)


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ------------------------------------------------------------------------------------------ the contract


def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    N, _, H, W = x.shape
    F, _, KH, KW = w.shape
    OH = _out_size(H, KH, stride[0], padding[0], dilation[0])
    OW = _out_size(W, KW, stride[1], padding[1], dilation[1])
    y = gpu.empty((N, F, OH, OW), np.result_type(np.dtype(x.dtype), np.dtype(w.dtype)))
    return _forward(x, w, b, y, stride, padding, dilation, groups)


def conv2d_backward(dy, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db):
    dx = _dx(dy, w, None, gpu.empty(x.shape, dy.dtype), stride, padding, dilation, groups) if need_dx else None
    dw = _dw(dy, x, tuple(w.shape), stride, padding, dilation, groups) if need_dw else None
    db = _bias_grad(dy) if need_db else None
    return dx, dw, db


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """y = the transposed convolution of x (N, Cin, H, W) by w (Cin, Fout/G, KH, KW): conv2d's dx with dy = x."""
    N, _, H, W = x.shape
    _, Fg, KH, KW = w.shape
    OH = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (KH - 1) + output_padding[0] + 1
    OW = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (KW - 1) + output_padding[1] + 1
    y = gpu.empty((N, Fg * groups, OH, OW), np.result_type(np.dtype(x.dtype), np.dtype(w.dtype)))
    return _dx(x, w, b, y, stride, padding, dilation, groups)


def conv_transpose2d_backward(dy, x, w, stride, padding, output_padding, dilation, groups, need_dx, need_dw, need_db):
    """dx = conv2d(dy, w) (of x's size), dW = conv2d's dW with the roles of x and dy exchanged, db = Σ dy."""
    dx = _forward(dy, w, None, gpu.empty(x.shape, dy.dtype), stride, padding, dilation, groups) if need_dx else None
    dw = _dw(x, dy, tuple(w.shape), stride, padding, dilation, groups) if need_dw else None
    db = _bias_grad(dy) if need_db else None
    return dx, dw, db


def pad2d_forward(x, pad, value):
    """x (N, C, H, W), pad = (left, right, top, bottom) -> y (N, C, H + top + bottom, W + left + right)."""
    left, right, top, bottom = pad
    N, C, H, W = x.shape
    y = gpu.empty((N, C, H + top + bottom, W + left + right), x.dtype)
    if y.size:
        gpu.launch1d(pad_kernel, y.size, gpu.flat(x), gpu.flat(y), H, W, y.shape[2], y.shape[3], top, left,
                     gpu.scalar(value, x.dtype))
    return y


def pad2d_backward(dy, pad):
    left, right, top, bottom = pad
    N, C, OH, OW = dy.shape
    dx = gpu.empty((N, C, OH - top - bottom, OW - left - right), dy.dtype)
    if dx.size:
        gpu.launch1d(crop_kernel, dx.size, gpu.flat(dy), gpu.flat(dx), dx.shape[2], dx.shape[3], OH, OW, top, left)
    return dx

"""Batch normalisation on the CPU, x viewed as (N, C, inner) (inner = H·W, or 1 for (N, C) inputs and for
channels-last maps seen as (N·H·W, C, 1): those have their own kernels, in the section at the end).

Per channel c, over its M = N · inner values:

    mean_c = Σ x / M          var_c = Σ (x − mean_c)² / M          invstd_c = 1 / √(var_c + ε)
    x̂ = (x − mean_c) · invstd_c          y = γ_c x̂ + β_c
    backward:  dβ_c = Σ dy     dγ_c = Σ dy x̂     dx = γ_c invstd_c · (dy − dβ_c / M − x̂ · dγ_c / M)

Every channel's sums are independent of the others', so each kernel gives whole channels to the threads
(a range of channels per call of a serial `nogil` kernel, run on the threads of kernels/cpu/threads.py: a
`prange` loop costs each kernel about a second more to compile on an empty cache): no two threads ever
write the same value, and no sum is split between threads (the channels-last kernels split the rows
between threads instead, each summing into its own row). The variance takes two passes (the mean first,
then the squared deviations, which is stable where Σx² − M·mean² cancels).

Speed: each (n, c) row of `inner` values is summed in the data's dtype by a SIMD loop (`_row_sum`, with
fastmath "reassoc" so that LLVM may keep 16 partial sums in a vector register), and the rows' sums are added
in float64. A plain float64 accumulator over the whole channel is one long chain of dependent adds that
cannot be vectorized: 5× slower on the MobileNetV2 regressor's batch norms. A row holds at most a few
thousand values, so its float32 partial sums lose nothing a float64 sum of them would notice at the
tolerances of a float32 network. The per-channel scalars are kept in the data's dtype (stored in the
(C,) outputs and read back), so the elementwise loops run in float32 SIMD too. Outputs come from the
workspace (recycled arrays, kernels/cpu/workspace.py): a fresh one page-faults in, ~8 ms per step for the
regressor's 96 MB of batch-norm outputs.

Fused activation (the optional capability "fused_activation" of kernels/contract.py, declared in
kernels/cpu/__init__.py): with activation "relu" or "relu6"
the forward writes act(y) in its own pass, and the backward takes dz = dy · act'(·) from that output
(relu: [out > 0], relu6: [0 < out < 6], the same masks as on the pre-activation) as it reads dy: two
passes over the activations fewer per layer, forward and backward, than batch norm then ReLU6. Given beta,
the backward recomputes the pre-activation from x (x · scale + shift, the forward's arithmetic, so the same
mask) instead of reading the output: two arrays a pass instead of three.
"""
import numba
import numpy as np
from numba import njit

from . import threads
from .activation import FUSED_CODES, fused_activate, fused_passes
from .conv.epilogue import _bias_act
from .workspace import output


@njit(cache=True, fastmath={"reassoc", "contract"})
def _row_sum(row, zero):
    """Σ row, in the row's dtype (zero is 0 of that dtype)."""
    s = zero
    for i in range(row.size):
        s += row[i]
    return s


@njit(cache=True, fastmath={"reassoc", "contract"})
def _row_squares(row, mu, zero):
    """Σ (row − mu)²."""
    s = zero
    for i in range(row.size):
        d = row[i] - mu
        s += d * d
    return s


@njit(cache=True, fastmath={"reassoc", "contract"})
def _row_dots(dy_row, x_row, mu, zero, y_row, act, scale, shift, from_input):
    """(Σ dz, Σ dz · (x − mu)) over a row, dz = dy · act'(·): act' read from y, or (from_input) from the
    pre-activation x · scale + shift, computed as the forward did (y is not read); dz = dy when act is 0."""
    s = zero
    t = zero
    if act == 0:
        for i in range(dy_row.size):
            s += dy_row[i]
            t += dy_row[i] * (x_row[i] - mu)
    elif from_input:
        for i in range(dy_row.size):
            dz = dy_row[i] if fused_passes(x_row[i] * scale + shift, act) else zero
            s += dz
            t += dz * (x_row[i] - mu)
    else:
        for i in range(dy_row.size):
            dz = dy_row[i] if fused_passes(y_row[i], act) else zero
            s += dz
            t += dz * (x_row[i] - mu)
    return s, t


@njit(cache=True, fastmath={"contract"})
def _row_affine(out_row, x_row, scale, shift, act):
    """out = act(x · scale + shift)."""
    if act == 0:
        for i in range(x_row.size):
            out_row[i] = x_row[i] * scale + shift
    else:
        for i in range(x_row.size):
            out_row[i] = fused_activate(x_row[i] * scale + shift, act)


@njit(cache=True, nogil=True)
def _train_forward(x3, gamma, beta, eps, y3, mean, invstd, var_unbiased, zero, act, c0, c1):
    N, C, inner = x3.shape
    count = N * inner
    for c in range(c0, c1):
        total = 0.0
        for n in range(N):
            total += _row_sum(x3[n, c], zero)
        mean[c] = total / count
        mu = mean[c]  # in the data's dtype
        squares = 0.0
        for n in range(N):
            squares += _row_squares(x3[n, c], mu, zero)
        invstd[c] = 1.0 / np.sqrt(squares / count + eps)
        var_unbiased[c] = squares / (count - 1) if count > 1 else np.nan
        scale = gamma[c] * invstd[c]
        shift = beta[c] - mu * scale
        for n in range(N):
            _row_affine(y3[n, c], x3[n, c], scale, shift, act)


def batch_norm_train_forward(x3, gamma, beta, eps, activation=None):
    """x3 (N, C, inner), gamma/beta (C,) -> y3 (N, C, inner), mean, invstd, var_unbiased (C,). Needs N·inner ≥ 2.
    y3 = activation(batch norm) when activation is "relu" or "relu6"."""
    if x3.shape[2] == 1:  # (M, C): channels last (or a dense layer's features), see below
        return _last_train_forward(x3, gamma, beta, eps, FUSED_CODES[activation])
    C = x3.shape[1]
    y3 = output(x3.shape, x3.dtype)
    mean, invstd, var_unbiased = (np.empty(C, x3.dtype) for _ in range(3))
    x3, eps, zero, act = np.ascontiguousarray(x3), float(eps), x3.dtype.type(0), FUSED_CODES[activation]
    threads.parallel_range(lambda c0, c1: _train_forward(x3, gamma, beta, eps, y3, mean, invstd, var_unbiased, zero,
                                                         act, c0, c1), C, values=3 * x3.size)  # 3 passes
    return y3, mean, invstd, var_unbiased


def batch_norm_eval_forward(x3, gamma, beta, running_mean, running_var, eps, activation=None):
    """y = γ (x − running_mean) / √(running_var + ε) + β, per channel, then the activation if any;
    x3 (N, C, inner) -> y3 (N, C, inner). NCHW: y = x · scale (NumPy), then the conv epilogue's bias +
    activation pass: an inference plan folds these batch norms into their convs, so this runs mostly in the
    forward that builds a model's weights, and a kernel of its own cost a first predict ~0.25 s of compile."""
    scale = (gamma / np.sqrt(running_var.astype(np.float64) + eps)).astype(x3.dtype)
    shift = (beta - running_mean * scale).astype(x3.dtype)
    y3 = output(x3.shape, x3.dtype)
    if x3.shape[2] == 1:
        _last_affine(np.ascontiguousarray(x3).reshape(-1), _tiled(scale), _tiled(shift), y3.reshape(-1),
                     FUSED_CODES[activation])
        return y3
    np.multiply(x3, scale[:, None], out=y3)
    _bias_act(y3, shift, FUSED_CODES[activation])
    return y3


@njit(cache=True)
def _channel_sums(dy3, x3, c, mean, invstd, dgamma, dbeta, zero, y3, act, scale, shift, from_input):
    """dβ_c = Σ dz and dγ_c = Σ dz · x̂ = invstd_c · Σ dz · (x − mean_c) for channel c (dz: _row_dots)."""
    N = x3.shape[0]
    sum_dy = 0.0
    sum_dy_xc = 0.0
    for n in range(N):
        s, t = _row_dots(dy3[n, c], x3[n, c], mean[c], zero, y3[n, c], act, scale, shift, from_input)
        sum_dy += s
        sum_dy_xc += t
    dbeta[c] = sum_dy
    dgamma[c] = sum_dy_xc * invstd[c]


@njit(cache=True, fastmath={"contract"})
def _row_input_grad(dx_row, dy_row, x_row, a, b, offset, mu, y_row, act, scale, shift, from_input):
    """dx = a · dz + b · (x − mu) + offset, dz = dy · act'(·) as in _row_dots."""
    if act == 0:
        for i in range(dy_row.size):
            dx_row[i] = a * dy_row[i] + b * (x_row[i] - mu) + offset
    elif from_input:
        for i in range(dy_row.size):
            dz = dy_row[i] if fused_passes(x_row[i] * scale + shift, act) else dy_row[i] - dy_row[i]
            dx_row[i] = a * dz + b * (x_row[i] - mu) + offset
    else:
        for i in range(dy_row.size):
            dz = dy_row[i] if fused_passes(y_row[i], act) else dy_row[i] - dy_row[i]
            dx_row[i] = a * dz + b * (x_row[i] - mu) + offset


@njit(cache=True, nogil=True)
def _backward(dy3, x3, gamma, beta, mean, invstd, dgamma, dbeta, dx3, need_dx, coef, zero, y3, act, from_input,
              c0, c1):
    """Per channel (one thread each): the two sums, then, while the channel's dy, x (and y) are still in
    this core's cache, dx = γ invstd · (dy − dβ / M − x̂ dγ / M) = a · dz + b · (x − mean) + offset, with
    a = γ invstd, b = −a · invstd · dγ / M, offset = −a · dβ / M (kept in coef (C, 3), the data's dtype).
    (Two kernels, all sums first, read every array from main memory twice: 1.6× slower.) from_input: the
    activation's mask from x · scale + shift, scale and shift computed as _train_forward did."""
    N, C, inner = x3.shape
    count = N * inner
    for c in range(c0, c1):
        scale = gamma[c] * invstd[c]
        shift = beta[c] - mean[c] * scale
        _channel_sums(dy3, x3, c, mean, invstd, dgamma, dbeta, zero, y3, act, scale, shift, from_input)
        if need_dx:
            a = gamma[c] * invstd[c]
            coef[c, 0] = a
            coef[c, 1] = -a * invstd[c] * dgamma[c] / count
            coef[c, 2] = -a * dbeta[c] / count
            for n in range(N):
                _row_input_grad(dx3[n, c], dy3[n, c], x3[n, c], coef[c, 0], coef[c, 1], coef[c, 2], mean[c],
                                y3[n, c], act, scale, shift, from_input)


def batch_norm_backward(dy3, x3, gamma, mean, invstd, need_dx, need_dgamma, need_dbeta, y3=None, activation=None,
                        beta=None):
    """Training-mode gradients: dy3, x3 (N, C, inner); gamma, mean, invstd (C,) -> (dx3, dgamma, dbeta) or None.
    With an activation, dy3 is the gradient of the activation's output y3 (given), and the mask comes from y3,
    or, when beta is given, from x (the pre-activation γ x̂ + β, as the forward computed it)."""
    dy3, x3 = np.ascontiguousarray(dy3), np.ascontiguousarray(x3)
    act = FUSED_CODES[activation]
    y3 = dy3 if act == 0 else np.ascontiguousarray(y3)  # not read when act is 0
    if x3.shape[2] == 1:
        dx3, dgamma, dbeta = _last_backward(dy3, x3, gamma, beta, mean, invstd, need_dx, y3, act)
        return dx3, (dgamma if need_dgamma else None), (dbeta if need_dbeta else None)
    C = x3.shape[1]
    dgamma, dbeta = np.empty(C, x3.dtype), np.empty(C, x3.dtype)
    dx3 = output(x3.shape, x3.dtype) if need_dx else x3  # x3: a placeholder, not written
    coef, zero = np.empty((C, 3), x3.dtype), x3.dtype.type(0)
    from_input = act != 0 and beta is not None  # the mask from x: y is not read (a third of the traffic)
    beta = beta if from_input else gamma  # (unread)
    threads.parallel_range(lambda c0, c1: _backward(dy3, x3, gamma, beta, mean, invstd, dgamma, dbeta, dx3, need_dx,
                                                    coef, zero, y3, act, from_input, c0, c1),
                           C, values=3 * x3.size)  # x and dy read twice, dx written: as much as 3 passes
    dx3 = dx3 if need_dx else None
    return dx3, (dgamma if need_dgamma else None), (dbeta if need_dbeta else None)


@njit(cache=True)
def _blend(running, batch_value, momentum):
    for c in range(running.shape[0]):
        running[c] = (1.0 - momentum) * running[c] + momentum * batch_value[c]


def update_running(running, batch_value, momentum):
    """In place: running = (1 − m) · running + m · batch_value (both (C,))."""
    _blend(running, batch_value, float(momentum))


# ---------------------------------------------------------------------- channels last: x (M, C), inner = 1
#
# With the channels last (x (N, H, W, C) seen as (M = N·H·W, C, 1)) a channel's values are C apart, so the
# per-channel loops above would run over rows of one value. Instead every pass reads x as one long run of
# M·C values in blocks of `BLOCK_ROWS` rows: within a block, value k belongs to channel k mod C, so the
# per-channel vectors (sums, scale, shift, ...) are tiled to the block's length once and every inner loop is
# one contiguous SIMD loop of R·C values, whatever C is (16 channels would otherwise be one vector per row).
# Threads take whole blocks (ranges of them, each a call of a serial `nogil` kernel on the threads of
# kernels/cpu/threads.py, as above): the sums go to one row per share of the blocks (as many shares as
# threads, added up after), the elementwise passes write their own blocks. The statistics take one pass: Σ (x − K) and Σ (x − K)² with K = x's first row, a
# shift that keeps the variance from cancelling (as the synchronised batch norm does with the running
# mean); the sums are taken in the data's dtype for up to 64 blocks, then added into float64.

_on_threads = threads.on_threads  # one call below threads.SERIAL_BELOW values, else tinycnn's threads


def _block_rows(C):
    """Rows per block: about 512 values, a whole number of rows."""
    return max(1, 512 // C)


def _tiled(v):
    """A per-channel vector (C,) repeated to the length of a block."""
    return np.ascontiguousarray(np.tile(v, _block_rows(v.shape[0])))


def _last_train_forward(x3, gamma, beta, eps, act):
    M, C, _ = x3.shape
    flat = np.ascontiguousarray(x3).reshape(-1)
    shift = np.ascontiguousarray(x3[0, :, 0])
    sums = np.zeros((numba.get_num_threads(), 2, _block_rows(C) * C), np.float64)
    _last_shifted_sums(flat, _tiled(shift), sums)
    sums = sums.sum(axis=0).reshape(2, -1, C).sum(axis=1)
    mean_shifted = sums[0] / M
    var = np.maximum(sums[1] / M - mean_shifted ** 2, 0.0)
    mean = (shift + mean_shifted).astype(x3.dtype)
    invstd = (1.0 / np.sqrt(var + eps)).astype(x3.dtype)
    var_unbiased = (var * M / (M - 1) if M > 1 else np.full(C, np.nan)).astype(x3.dtype)
    y3 = output(x3.shape, x3.dtype)
    _last_affine(flat, *_affine(gamma, beta, mean, invstd, x3.dtype), y3.reshape(-1), act)
    return y3, mean, invstd, var_unbiased


def _affine(gamma, beta, mean, invstd, dtype):
    """The tiled scale γ·invstd and shift β − mean·scale of y = x · scale + shift, in the data's dtype."""
    scale = (gamma * invstd).astype(dtype)
    return _tiled(scale), _tiled((beta - mean * scale).astype(dtype))


def _last_backward(dy3, x3, gamma, beta, mean, invstd, need_dx, y3, act):
    """With an activation and beta, the mask comes from x: z = x · scale + shift, computed as the forward
    did, so the output y is not read (a third of the passes' memory traffic)."""
    M, C, _ = x3.shape
    flat = np.ascontiguousarray(x3).reshape(-1)
    from_input = act != 0 and beta is not None
    mean_tiled = _tiled(mean)
    scale, shift = _affine(gamma, beta, mean, invstd, x3.dtype) if from_input else (mean_tiled, mean_tiled)  # unread
    mask = (flat, y3.reshape(-1), scale, shift, mean_tiled, act, from_input)  # the arguments both kernels read
    sums = np.zeros((numba.get_num_threads(), 2, _block_rows(C) * C), np.float64)
    _last_grad_sums(dy3.reshape(-1), *mask, sums)
    sums = sums.sum(axis=0).reshape(2, -1, C).sum(axis=1)
    dbeta, dgamma = sums[0], sums[1] * invstd
    dx3 = None
    if need_dx:  # dx = a · dz + b · (x − mean) + offset, as in _backward
        a = gamma * invstd
        coef = [_tiled(np.asarray(v, x3.dtype)) for v in (a, -a * invstd * dgamma / M, -a * dbeta / M)]
        dx3 = output(x3.shape, x3.dtype)
        _last_input_grad(dy3.reshape(-1), *mask, *coef, dx3.reshape(-1))
    return dx3, dgamma.astype(x3.dtype), dbeta.astype(x3.dtype)


# (Each block is taken as slices of the arrays: indexed as flat[start + k] instead, LLVM left the loops
# scalar, 5× slower.)

def _last_shifted_sums(flat, shift, sums):
    """sums[t] += (Σ (x − shift), Σ (x − shift)²) per position of a block, over share t of the blocks."""
    _on_threads(_last_shifted_sum_shares, sums.shape[0], flat.size, flat, shift, sums)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _last_shifted_sum_shares(flat, shift, sums, t0, t1):
    T, _, L = sums.shape
    blocks = -(-flat.size // L)
    for t in range(t0, t1):
        s = np.zeros(L, flat.dtype)
        q = np.zeros(L, flat.dtype)
        for block in range(t * blocks // T, (t + 1) * blocks // T):
            x = flat[block * L:(block + 1) * L]
            for k in range(x.size):
                d = x[k] - shift[k]
                s[k] += d
                q[k] += d * d
            if (block + 1) % 64 == 0:  # into float64 every 64 blocks: each float32 sum adds ≤ 64 values
                _flush(s, q, sums[t])
        _flush(s, q, sums[t])


@njit(cache=True)
def _flush(s, q, totals):
    for k in range(s.size):
        totals[0, k] += s[k]
        totals[1, k] += q[k]
    s[:] = 0
    q[:] = 0


def _last_affine(flat, scale, shift, out, act):
    """out = act(x · scale + shift), the tiled scale and shift repeating every block."""
    _on_threads(_last_affine_blocks, -(-flat.size // scale.size), flat.size, flat, scale, shift, out, act)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _last_affine_blocks(flat, scale, shift, out, act, b0, b1):
    L = scale.size
    for block in range(b0, b1):
        x, y = flat[block * L:(block + 1) * L], out[block * L:(block + 1) * L]
        for k in range(x.size):
            y[k] = fused_activate(x[k] * scale[k] + shift[k], act)


@njit(cache=True, fastmath={"contract"})  # the forward's x · scale + shift is contracted (one FMA) too
def _passes(x, y, scale, shift, act, from_input):
    """act'(·) of one value: from the output y, or (from_input) from the pre-activation x · scale + shift."""
    return fused_passes(x * scale + shift if from_input else y, act)


def _last_grad_sums(dy, flat, y, scale, shift, mean, act, from_input, sums):
    """sums[t] += (Σ dz, Σ dz · (x − mean)) per position of a block, over share t of the blocks,
    dz = dy · act'(·) (_passes)."""
    _on_threads(_last_grad_sum_shares, sums.shape[0], 2 * flat.size, dy, flat, y, scale, shift, mean, act, from_input,
                sums)  # dy and x: on the threads from half SERIAL_BELOW's size (measured: 4096 × 192, 0.76 -> 0.54 ms)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _last_grad_sum_shares(dy, flat, y, scale, shift, mean, act, from_input, sums, t0, t1):
    T, _, L = sums.shape
    blocks = -(-flat.size // L)
    for t in range(t0, t1):
        s = np.zeros(L, flat.dtype)
        q = np.zeros(L, flat.dtype)
        for block in range(t * blocks // T, (t + 1) * blocks // T):
            lo, hi = block * L, (block + 1) * L
            g, x, out = dy[lo:hi], flat[lo:hi], y[lo:hi]
            for k in range(x.size):
                dz = g[k] if _passes(x[k], out[k], scale[k], shift[k], act, from_input) else g[k] - g[k]
                s[k] += dz
                q[k] += dz * (x[k] - mean[k])
            if (block + 1) % 64 == 0:
                _flush(s, q, sums[t])
        _flush(s, q, sums[t])


def _last_input_grad(dy, flat, y, scale, shift, mean, act, from_input, a, b, offset, dx):
    """dx = a · dz + b · (x − mean) + offset, dz = dy · act'(·) (_passes), coefficients tiled per block."""
    _on_threads(_last_input_grad_blocks, -(-flat.size // a.size), 2 * flat.size, dy, flat, y, scale, shift, mean, act,
                from_input, a, b, offset, dx)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _last_input_grad_blocks(dy, flat, y, scale, shift, mean, act, from_input, a, b, offset, dx, b0, b1):
    L = a.size
    for block in range(b0, b1):
        lo, hi = block * L, (block + 1) * L
        g, x, out, d = dy[lo:hi], flat[lo:hi], y[lo:hi], dx[lo:hi]
        for k in range(x.size):
            dz = g[k] if _passes(x[k], out[k], scale[k], shift[k], act, from_input) else g[k] - g[k]
            d[k] = a[k] * dz + b[k] * (x[k] - mean[k]) + offset[k]

"""The inner loops of the conv kernels, one image row at a time, shared by every algorithm."""
from numba import njit


@njit(cache=True)
def _valid_range(offset, stride, in_size, out_size):
    """The outputs o in [lo, hi) whose input index o·stride + offset falls inside [0, in_size)."""
    lo = max(0, (-offset + stride - 1) // stride)
    hi = min(out_size, (in_size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


# ---------------------------------------------------------------------- the inner loops, one image row at a time
#
# Every kernel below works on rows: `a` is a run of outputs along a row, `b` the input row it reads with a
# step of `stride` (b starts at the first pixel that a[0] reads). The step-1 case has its own loop, which LLVM
# turns into SIMD code; a generic `k·step` index (or a 4-D index that might be negative) stays scalar and is
# several times slower.

@njit(cache=True)
def _copy_row(a, b, step):
    """a[k] = b[k·step]"""
    if step == 1:
        for k in range(a.size):
            a[k] = b[k]
    else:
        for k in range(a.size):
            a[k] = b[k * step]


@njit(cache=True)
def _scatter_add_row(b, a, step):
    """b[k·step] += a[k]  (the adjoint of _copy_row)"""
    if step == 1:
        for k in range(a.size):
            b[k] += a[k]
    else:
        for k in range(a.size):
            b[k * step] += a[k]


@njit(cache=True)
def _add_scaled_row(a, weight, b, step):
    """a[k] += weight · b[k·step]"""
    if step == 1:
        for k in range(a.size):
            a[k] += weight * b[k]
    else:
        for k in range(a.size):
            a[k] += weight * b[k * step]


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot_row(total, a, b, step):
    """total + Σₖ a[k] · b[k·step], in total's dtype (reassociated, so that it vectorizes like BLAS's dot)."""
    if step == 1:
        for k in range(a.size):
            total += a[k] * b[k]
    else:
        for k in range(a.size):
            total += a[k] * b[k * step]
    return total


@njit(cache=True, fastmath={"reassoc", "contract"})
def _relu_grad_row(dz, dy, y, masked, step):
    """dz[k·step] = dy[k] · [y[k] > 0] (or dy[k] when not masked); returns Σ dz in float64."""
    total = 0.0
    if step == 1 and masked:
        for k in range(dy.size):
            v = dy[k] if y[k] > 0 else 0
            dz[k] = v
            total += v
    elif step == 1:
        for k in range(dy.size):
            dz[k] = dy[k]
            total += dy[k]
    else:
        for k in range(dy.size):
            v = dy[k] if (y[k] > 0 or not masked) else 0
            dz[k * step] = v
            total += v
    return total

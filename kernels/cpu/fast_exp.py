"""e^x over a float32 row in SIMD code.

Numba's `math.exp` is a scalar call per value (LLVM vectorizes it only with Intel's SVML, which a plain
pip install does not have), so a loop of exps runs several times slower than the loads around it. Here
exp is written in the arithmetic LLVM does vectorize (Cephes' expf, as in the SIMD math libraries):

    e^x = 2^k · e^r,   k = round(x · log₂e),   r = x − k·ln 2  ∈ [−ln2/2, ln2/2]
    e^r ≈ 1 + r + r²·P(r)      P a degree-5 polynomial (relative error under 2e-7, float32's rounding)
    2^k = the float whose exponent bits are k + 127:  (k + 127) << 23, read as a float32

x is clamped to [−87.33, 88.37], where 2^k stays a normal float: e^x below ~1.2e-38 comes out as ~1.2e-38
instead of a denormal or 0 (no softmax weight or sum notices), above the range as ~2.4e38, not inf.
"""
import numpy as np
from numba import njit

EXP_COST = 8  # an exp costs about as much as moving this many values: kernels of exps go on the threads
              # from 1/8 of threads.SERIAL_BELOW's size (softmax.py, loss.py)
_LOW, _HIGH = np.float32(-87.33), np.float32(88.37)  # k stays in [−126, 127]
_LOG2E = np.float32(1.44269504)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 in two parts (Cody–Waite)
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)


@njit(cache=True, fastmath={"contract"}, inline="always")
def exp_row(out, x, shift, powers):
    """out[i] = e^(x[i] − shift[i]) for float32 rows; powers is an int32 scratch row of the same length
    (2^k is put together in a second loop: integer bits and float arithmetic in one loop do not vectorize).
    Inlined into its caller: compiled on its own as well, it cost a first run ~0.4 s more."""
    for i in range(out.size):
        v = min(max(x[i] - shift[i], _LOW), _HIGH)
        k = np.floor(v * _LOG2E + np.float32(0.5))
        r = v - k * _LN2_HI - k * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        out[i] = p * r * r + r + np.float32(1.0)
        powers[i] = (np.int32(k) + np.int32(127)) << 23
    scale = powers.view(np.float32)
    for i in range(out.size):
        out[i] *= scale[i]


@njit(cache=True, inline="always")
def exp_shifted(x, out, m, total, powers):
    """For one sample's classes x (C, inner), float32: m = max over the classes, out = e^(x − m) (exp_row)
    and total = Σ over the classes of out, per position: the common start of a softmax and a log-softmax."""
    C, inner = x.shape
    for i in range(inner):
        m[i] = x[0, i]
        total[i] = 0
    for c in range(1, C):
        for i in range(inner):
            m[i] = max(m[i], x[c, i])
    for c in range(C):
        exp_row(out[c], x[c], m, powers)
        for i in range(inner):
            total[i] += out[c, i]

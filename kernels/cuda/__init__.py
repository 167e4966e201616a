"""CUDA kernels (numba-cuda), file for file beside kernels/cpu (see kernels/README.md).

CAPABILITIES: the kernel families this backend provides and the optional parts of the contract
(kernels/contract.py) each one implements: none of the optional ones yet, so the fused ops run the
compositions of kernels/compose.py.
"""
import numpy as _np

# numba-cuda 0.30 registers an overload of np.row_stack when it first compiles a kernel; NumPy 2.5 removed that
# alias of np.vstack, so without it every launch fails with "module 'numpy' has no attribute 'row_stack'"
# (seen on a GPU with NumPy 2.5.2). Restore the alias for numba-cuda's sake only; NumPy itself is unchanged.
if not hasattr(_np, "row_stack"):
    _np.row_stack = _np.vstack

CAPABILITIES = {
    "elementwise": set(), "reduce": set(), "linear": set(), "conv": set(), "pool": set(), "interpolate": set(),
    "activation": set(), "softmax": set(), "batchnorm": set(), "dropout": set(), "loss": set(), "detection": set(),
    "optim": set(),
}

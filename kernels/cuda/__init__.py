"""CUDA kernels (numba-cuda), file for file beside kernels/cpu (see kernels/README.md).

CAPABILITIES: the kernel families this backend provides and the optional parts of the contract
(kernels/contract.py) each one implements: none of the optional ones yet, so the fused ops run the
compositions of kernels/compose.py.
"""
CAPABILITIES = {
    "elementwise": set(), "reduce": set(), "linear": set(), "conv": set(), "pool": set(), "interpolate": set(),
    "activation": set(), "softmax": set(), "batchnorm": set(), "dropout": set(), "loss": set(), "detection": set(),
    "optim": set(),
}

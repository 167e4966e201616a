"""CPU kernels: Numba `@njit(cache=True)` functions, one file per op family (see kernels/README.md).

CAPABILITIES: the kernel families this backend provides and the optional parts of the contract
(kernels/contract.py) each one implements, declared here rather than probed.
"""
from tinycnn import _start_cpu_thread_pool
from tinycnn.compile_notice import install as _install_compile_notice

_start_cpu_thread_pool()  # with tinycnn's thread settings, before a kernel can start it (tinycnn/__init__.py)
_install_compile_notice()  # one line on stderr while kernels compile (an empty cache), none when they load

CAPABILITIES = {
    "elementwise": set(), "reduce": set(), "linear": set(),
    "conv": {"asymmetric_padding", "fused_relu", "fused_activation", "fused_relu_maxpool2", "channels_last",
             "fused_separable", "constant_weights", "concatenated_input"},
    "pool": set(), "interpolate": set(), "activation": set(), "softmax": set(),
    "batchnorm": {"fused_activation"},
    "dropout": set(), "loss": set(), "detection": set(), "optim": set(),
}

"""Devices: which kernel set serves a tensor.

A tensor's data is a NumPy array on the CPU and a numba device array on CUDA. `kernels_for(device)` returns
the kernel set of that device: a namespace whose attributes are the kernel families
(`k.conv.conv2d_forward`, `k.pool.max_pool2d_backward`, ...), the same names on every device. This module
is the only place in the engine that knows which devices exist.
"""
import importlib

from .kernels import compose

_FAMILIES = ("elementwise", "reduce", "linear", "conv", "pool", "interpolate", "activation",
             "softmax", "batchnorm", "dropout", "loss", "detection", "optim")
_kernel_sets = {}


def normalize_device(device):
    """'cpu' | 'cuda' | 'auto' | None -> 'cpu' or 'cuda' (a clear error when cuda is missing)."""
    if device is None:
        return "cpu"
    name = str(device).lower()
    if name == "auto":  # a real GPU only: Numba's CUDA simulator is for tests, never picked by itself
        return "cuda" if cuda_available() and not _simulated() else "cpu"
    if name.startswith("cuda"):
        if not cuda_available():
            raise RuntimeError("device 'cuda' was asked for, but no CUDA GPU is available "
                               "(install numba-cuda and an NVIDIA driver, or use --device cpu)")
        return "cuda"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'auto'")


def cuda_available():
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:
        return False


def _simulated():
    import os
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def kernels_for(device):
    """The kernel set of `device` ('cpu' or 'cuda'), imported on first use."""
    if device not in _kernel_sets:
        _kernel_sets[device] = KernelSet(device)
    return _kernel_sets[device]


class KernelSet:
    """`k.conv` imports tinycnn.kernels.<device>.conv on first use (so numba compiles only what runs), with the
    composed defaults (kernels/compose.py) of the fused kernels that the backend does not declare.
    `k.has(family, capability)` reads the backend's declared CAPABILITIES (kernels/contract.py)."""

    def __init__(self, device):
        self.device = device
        self.capabilities = importlib.import_module(f"tinycnn.kernels.{device}").CAPABILITIES

    def has(self, family, capability):
        return capability in self.capabilities.get(family, ())

    def __getattr__(self, family):
        if family not in _FAMILIES:
            raise AttributeError(f"no kernel family {family!r}")
        module = importlib.import_module(f"tinycnn.kernels.{self.device}.{family}")
        kernels = compose.with_defaults(self, family, module, self.capabilities.get(family, set()))
        setattr(self, family, kernels)
        return kernels


def device_of(array):
    """'cpu' for NumPy arrays, 'cuda' for numba device arrays."""
    return "cuda" if hasattr(array, "copy_to_host") else "cpu"

"""Plain NumPy references of every op: slow, obvious, the oracle of the tests.

CAPABILITIES (kernels/contract.py): the families with a reference (element-wise ops and reductions have
none: NumPy itself is their oracle), with none of the optional parts: the fused ops' references are their
compositions (kernels/compose.py).
"""
CAPABILITIES = {
    "linear": set(), "conv": set(), "pool": set(), "interpolate": set(), "activation": set(), "softmax": set(),
    "batchnorm": set(), "dropout": set(), "loss": set(), "detection": set(), "optim": set(),
}

"""tinycnn: a from-scratch CNN engine in Python, NumPy and Numba.

    import tinycnn
    from tinycnn import layers
    model = tinycnn.Sequential([layers.Conv2D(64, 3, activation="relu", input_shape=(100, 100, 1)), ...])
"""
import os as _os

# Run from a source checkout without installing: kernels/ and tasks/ sit beside this package at the top of
# the repository and are installed as tinycnn.kernels and tinycnn.tasks; let the package find them there too.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(_os.path.join(_root, "kernels", "cpu")):
    if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "kernels")):
        __path__.append(_root)  # noqa: F821  (the package's own __path__)

from .tensor import Tensor, no_grad, is_grad_enabled, tensor  # noqa: E402
from .ops.basic import cat  # noqa: E402
from . import functional  # noqa: E402
from .random import manual_seed  # noqa: E402
from .nn import Module, Parameter  # noqa: E402
from .models import Sequential  # noqa: E402
from . import layers, losses, metrics, optimizers, callbacks  # noqa: E402
from .saving import load_model, ModelFileError  # noqa: E402
from .training import TrainingError  # noqa: E402

__version__ = "0.1.0"

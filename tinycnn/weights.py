"""Weights in and out as named arrays: safetensors files, and state dicts checked tensor by tensor.

    model.save_weights("w.safetensors")        # every parameter and buffer, by its state_dict() name
    model.load_weights("w.safetensors")        # the same names and shapes, or one line saying which differ
    weights.load_state(model, {name: array})   # what load_weights and tinycnn.convert place arrays with

Names are PyTorch's scheme: the attribute path of the module, then the tensor ("features.3.conv.kernel",
"stem.bn.moving_mean"); a functional Model's layers by their Keras names ("block_1_expand.kernel"). Arrays
keep tinycnn's layouts (a conv kernel (F, C/groups, KH, KW), a dense kernel (units, features)). The files are
the `safetensors` package's (NumPy API, no torch needed): `pip install tinycnn[weights]`.
"""
import os

import numpy as np

from .checks import UserInputError

SUFFIX = ".safetensors"


class WeightsError(UserInputError):
    """Weights that do not fit the model, or a file that cannot be read; one line naming what is at fault."""


def save_weights(model, path):
    """Write every parameter and buffer of `model` to `path` (a .safetensors file)."""
    save_file, _ = _safetensors()
    _check_suffix(path)
    _build(model)
    state = {name: np.ascontiguousarray(array) for name, array in model.state_dict().items()}
    save_file(state, os.fspath(path), metadata={"format": "tinycnn", "class": type(model).__name__})
    return path


def load_weights(model, path):
    """Read `path` (written by save_weights, or any safetensors file with the model's names and shapes) into
    `model`, in place."""
    _, load_file = _safetensors()
    _check_suffix(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        state = load_file(os.fspath(path))
    except Exception as error:  # noqa: BLE001  (the package's own errors: a damaged or foreign file)
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None
    load_state(model, state, source=os.fspath(path))
    return model


def load_state(model, state, source="the weights"):
    """Copy {name: array} into the model's tensors, in place: every tensor of the model must be given, with its
    shape, and every array must find a tensor. Versions are bumped (tinycnn/fuse.py's cache notices)."""
    _build(model)
    own = dict(model.named_parameters())
    own.update(model.named_buffers())
    missing = [name for name in own if name not in state]
    unexpected = [name for name in state if name not in own]
    if missing or unexpected:
        raise WeightsError(f"{source} do not fit {type(model).__name__}: " + "; ".join(
            part for part in (_listed("missing", missing), _listed("unexpected", unexpected)) if part))
    for name, tensor in own.items():
        array = np.asarray(state[name])
        if array.shape != tensor.shape:
            raise WeightsError(f"{source}: tensor '{name}' has shape {array.shape}, the model's has {tensor.shape}")
    for name, tensor in own.items():
        _assign(tensor, np.asarray(state[name]))


def _assign(tensor, array):
    """tensor's data <- array (same shape), in place on the CPU; then its version is bumped."""
    array = array.astype(tensor.dtype, copy=False)
    if tensor.device == "cpu" and tensor.data.flags.writeable:
        tensor.data[...] = array
    else:
        from .tensor import Tensor
        tensor.data = Tensor(np.ascontiguousarray(array), device=tensor.device).data
    tensor.grad = None
    tensor.bump_version()


def _listed(what, names, shown=6):
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{what} {', '.join(names[:shown])}{more}"


def _build(model):
    """Create the weights of a model that knows its input shape and has not made them yet."""
    ensure = getattr(model, "_ensure_built", None)
    if ensure is not None:
        ensure()


def _check_suffix(path):
    if not os.fspath(path).endswith(SUFFIX):
        raise WeightsError(f"{path}: weights files are safetensors files ending in {SUFFIX} "
                           "(a whole model: model.save('x.tcnn'))")


def _safetensors():
    try:
        from safetensors.numpy import load_file, save_file
    except ImportError:
        raise WeightsError("weights files need the safetensors package: pip install 'tinycnn[weights]'") from None
    return save_file, load_file

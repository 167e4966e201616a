"""One file per model: architecture (JSON), weights and optimizer state, in a NumPy .npz archive.

Layout of the archive:
    __tinycnn__      uint8 bytes of a JSON header: format version, model class + config, input shape,
                     loss/optimizer/metrics config, optimizer scalars, user metadata (task, preprocessing)
    param/<name>     each parameter and buffer (float arrays)
    optim/<path>     each optimizer state array

Loading never unpickles (`allow_pickle=False`): a file from elsewhere cannot run code. A truncated or
foreign file is a clear error. Saving writes a temporary file beside the target and renames it over the
target (atomic on POSIX), so a crash during a save leaves the previous checkpoint intact.
"""
import importlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "tinycnn-model"
VERSION = 1


class ModelFileError(ValueError):
    """The file is not a (complete) tinycnn model file."""


def save_model(model, path, include_optimizer=True):
    from . import losses, metrics, optimizers
    path = os.fspath(path)
    header = {
        "format": FORMAT, "version": VERSION,
        "class": type(model).__name__, "module": type(model).__module__,
        "config": model.get_config(),
        "input_shape": list(getattr(model, "build_input_shape", None) or []) or None,
        "metadata": getattr(model, "metadata", {}) or {},
    }
    arrays = {f"param/{name}": value for name, value in model.state_dict().items()}
    if getattr(model, "loss", None) is not None:
        header["loss"] = losses.to_config(model.loss)
        header["metrics"] = [name for name, fn in model.metrics if metrics.is_builtin(name)]  # callables: pass again
        spec = getattr(model, "_optimizer_spec", None)
        header["optimizer"] = optimizers.to_config(spec) if spec is not None else None
        if include_optimizer and model.optimizer is not None and hasattr(model.optimizer, "state_dict"):
            header["optimizer_state"] = _split_arrays(model.optimizer.state_dict(), "optim", arrays)
    arrays["__tinycnn__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_model(path, device="cpu", compile=True):
    """Rebuild a model saved by `model.save(path)`: architecture, weights, and (if compiled) loss and
    optimizer with its state, so that training can resume."""
    from . import losses
    from .nn import Module
    path = os.fspath(path)
    header, arrays = _read(path)
    model_class = _model_class(header, Module.registry, path)
    config = header.get("config") or {}
    model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(**config)
    if header.get("input_shape"):
        model.build_input_shape = tuple(header["input_shape"])
        model._weights_built = False
        model._ensure_built()
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    try:
        model.load_state_dict(weights)
    except ValueError as error:
        raise ModelFileError(f"{path}: weights do not fit the saved architecture: {error}") from None
    model.metadata = header.get("metadata", {})
    model.to(device)
    if compile and header.get("loss"):
        model.compile(loss=losses.from_config(header["loss"]), optimizer=header.get("optimizer") or "adam",
                      metrics=header.get("metrics") or [])
        state = header.get("optimizer_state")
        if state is not None and hasattr(model.optimizer, "load_state_dict"):
            model.optimizer.load_state_dict(_join_arrays(state, arrays))
    return model


def read_metadata(path):
    """The user metadata of a model file (task, preprocessing, class names) without building the model."""
    return _read(os.fspath(path))[0].get("metadata", {})


def _read(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as error:
        raise ModelFileError(f"{path} is not a tinycnn model file (truncated, or another format): {error}") from None
    if "__tinycnn__" not in arrays:
        raise ModelFileError(f"{path} is a NumPy archive but not a tinycnn model file (no __tinycnn__ header)")
    try:
        header = json.loads(arrays.pop("__tinycnn__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: the model header is damaged: {error}") from None
    if header.get("format") != FORMAT or header.get("version", 0) > VERSION:
        raise ModelFileError(f"{path}: unsupported model file format {header.get('format')!r} "
                             f"version {header.get('version')!r}")
    return header, arrays


def _model_class(header, registry, path):
    name, module = header.get("class"), header.get("module", "")
    if name not in registry and module.startswith("tinycnn."):
        try:  # the task models live in tinycnn.tasks.*: importing our own package runs no foreign code
            importlib.import_module(module)
        except ImportError:
            pass
    if name not in registry:
        raise ModelFileError(f"{path}: unknown model class {name!r} (defined in {module!r}); import the module "
                             "that defines it before load_model")
    return registry[name]


def _split_arrays(obj, prefix, arrays):
    """Replace every NumPy array inside a nested dict/list by a reference, storing the array in `arrays`."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {str(k): _split_arrays(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _join_arrays(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _join_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays) for v in obj]
    return obj

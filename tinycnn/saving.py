"""One file per model: architecture (JSON), weights and optimizer state, in a NumPy .npz archive.

Layout of the archive (a zip file of .npy members, stored uncompressed):
    __tinycnn__      uint8 bytes of a JSON header: format version, model class + config, input shape,
                     loss/optimizer/metrics config, optimizer scalars, user metadata (task, preprocessing)
    param/<name>     each parameter and buffer (float arrays)
    optim/<path>     each optimizer state array (float arrays)

Loading treats the file as hostile until checked, and every problem is a ModelFileError naming the field:
- it never unpickles (a file from elsewhere cannot run code) and never imports a module outside tinycnn;
- before anything is inflated: the zip directory (members, compression, encryption), each member's declared
  size against MAX_MODEL_BYTES and against the file's own size (a compressed member may inflate at most
  MAX_INFLATION times: a zip bomb is refused at once, without allocating), each .npy header (dtype: floating
  point only, shape, and shape x itemsize equal to the member's declared size), and the JSON header's fields;
- after inflating: NaN or inf weights are refused (`allow_nonfinite=True` loads them with a warning);
- while building: the weights are created as untouched zeros (no random draws) and each layer's weights are
  compared with the arrays of the file as soon as the layer is built, so a small file whose config declares
  a huge layer is refused before that layer runs (and before its memory is ever written).
Saving writes a temporary file `.tmp-<pid>-*.npz` beside the target and renames it over the target (atomic
on POSIX), so a crash during a save leaves the previous checkpoint intact; the next save in that folder
removes temporary files whose writer is gone. Saved files follow the umask, as files written with open() do.
"""
import contextlib
import importlib
import json
import math
import os
import re
import tempfile
import threading
import time
import warnings
import zipfile

import numpy as np

from .checks import UserInputError
from .registry import CLASSES, AmbiguousClassError, register_serializable  # noqa: F401  (tinycnn.saving.register_serializable)

FORMAT = "tinycnn-model"
VERSION = 1
HEADER = "__tinycnn__"
MAX_MODEL_BYTES = 8 << 30      # the arrays of one model file, inflated (load_model(max_bytes=...) to change)
MAX_INFLATION = 20             # a compressed member may inflate at most this many times (float weights: ~1.1)
MAX_HEADER_BYTES = 64 << 20    # the JSON header
MAX_INPUT_ELEMENTS = 1 << 26   # of the declared input shape (one sample): 64 Mi, e.g. 3 x 4096 x 4096 and more
MAX_MEMBERS = 100_000          # arrays in one file (a large net with its optimizer state: a few thousand)
STALE_TMP_SECONDS = 60         # a temporary file untouched this long, whose writer is gone, is removed
_ARRAY_KINDS = {"param": "f", "optim": "f"}  # what each kind of member may hold: floating point only
_TMP = re.compile(r"^\.tmp-(?:(\d+)-)?.*\.(npz|npy|json)$")  # model files and the image-folder cache


class ModelFileError(UserInputError):
    """The file is not a (complete, well-formed) tinycnn model file; the message names the file and field."""


class NonFiniteWeightsWarning(UserWarning):
    """load_model(allow_nonfinite=True) loaded weights that hold NaN or inf."""


def save_model(model, path, include_optimizer=True):
    from . import losses, metrics, optimizers
    path = os.fspath(path)
    header = {
        "format": FORMAT, "version": VERSION,
        "class": CLASSES.describe(type(model))[0], "module": CLASSES.describe(type(model))[1],
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
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)

    def write(file):
        np.savez(file, **arrays)
    write_atomically(path, write, suffix=".npz")


def write_atomically(path, write, suffix=""):
    """Call write(file) on a temporary file beside `path`, then rename it over `path` (os.replace): a crash
    leaves the old file, never half a new one. The file follows the umask; stale temporary files of earlier,
    interrupted writes in that folder are removed first."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def remove_stale_temporaries(directory):
    """Remove `.tmp-<pid>-*` files of `directory` left by a write that was killed: the process <pid> is gone
    (or the name has no pid: an older tinycnn's) and the file has not changed for STALE_TMP_SECONDS."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        match = _TMP.match(name) if name.startswith(".tmp-") else None
        if match is None or (match.group(1) and _process_alive(int(match.group(1)))):
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if now - os.stat(path).st_mtime >= STALE_TMP_SECONDS:
                os.remove(path)


def _process_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _umask():
    """The process umask, read without changing it where /proc allows (os.umask sets while it reads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_model(path, device="cpu", compile=True, allow_nonfinite=False, max_bytes=MAX_MODEL_BYTES):
    """Rebuild a model saved by `model.save(path)`: architecture, weights, and (if compiled) loss and
    optimizer with its state, so that training can resume. See the module docstring for what is checked;
    allow_nonfinite=True loads weights holding NaN or inf (with a NonFiniteWeightsWarning)."""
    from . import losses
    path = os.fspath(path)
    header, arrays = _read(path, max_bytes=max_bytes, allow_nonfinite=allow_nonfinite)
    model_class = _model_class(header, path)
    config = header.get("config") or {}
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    with _building_against(weights, path):
        with _field(path, "config", f"cannot build a {header['class']} from it"):
            model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(**config)
        if header.get("input_shape"):
            model.build_input_shape = tuple(header["input_shape"])
            model._weights_built = False
            model._ensure_built()
    try:
        model.load_state_dict(weights)
    except ValueError as error:
        raise ModelFileError(f"{path}: weights do not fit the saved architecture: {error}") from None
    model.metadata = header.get("metadata") or {}
    model.to(device)
    if compile and header.get("loss"):
        with _field(path, "loss", "not a loss this tinycnn knows"):
            loss = losses.from_config(header["loss"])
        with _field(path, "optimizer", "not an optimizer (or metrics) this tinycnn knows"):
            model.compile(loss=loss, optimizer=header.get("optimizer") or "adam", metrics=header.get("metrics") or [])
        state = header.get("optimizer_state")
        if state is not None and hasattr(model.optimizer, "load_state_dict"):
            with _field(path, "optimizer_state", "does not fit the optimizer"):
                model.optimizer.load_state_dict(_join_arrays(state, arrays))
    return model


def load_optimizer_state(path, optimizer):
    """Put the optimizer state kept in a model file into `optimizer`, for a model its task compiled again (with a
    loss or metric load_model cannot rebuild), so that a resumed run keeps Adam's moments and step count.
    Returns False when the file holds none; a ModelFileError naming optimizer_state when it does not fit."""
    path = os.fspath(path)
    header, arrays = _read(path)
    state = header.get("optimizer_state")
    if state is None or not hasattr(optimizer, "load_state_dict"):
        return False
    with _field(path, "optimizer_state", "does not fit the optimizer"):
        optimizer.load_state_dict(_join_arrays(state, arrays))
    return True


def read_metadata(path):
    """The user metadata of a model file (task, preprocessing, class names) without building the model or
    reading its weights."""
    path = os.fspath(path)
    with _open_archive(path) as archive:
        return _read_header(archive, path).get("metadata") or {}


# -------------------------------------------------------------------------------------------- reading

def _read(path, max_bytes=MAX_MODEL_BYTES, allow_nonfinite=False):
    """(header dict, {member name: array}) of a model file, every field checked (module docstring)."""
    with _open_archive(path) as archive:
        header = _read_header(archive, path)
        index = _index_arrays(archive, path, max_bytes)
        arrays = {name: _read_array(archive, path, name, entry) for name, entry in index.items()}
    for name, array in arrays.items():
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad and not allow_nonfinite:
            raise ModelFileError(f"{path}: {name} holds {bad} NaN or inf value(s) of {array.size} (a diverged "
                                 f"training?); load_model(..., allow_nonfinite=True) loads it anyway")
        if bad:
            warnings.warn(f"{path}: {name} holds {bad} NaN or inf value(s)", NonFiniteWeightsWarning, stacklevel=3)
    _check_array_references(header, arrays, path)
    return header, arrays


@contextlib.contextmanager
def _open_archive(path):
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a folder, not a model file (a run folder holds best.tcnn and "
                                    f"last.tcnn)")
        raise FileNotFoundError(f"no model file at {path}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise ModelFileError(f"{path} is not a tinycnn model file: not a zip (.npz) archive, or a truncated one "
                             f"({error})") from None
    with archive:
        yield archive


def _members(archive, path):
    """{member name without .npy: ZipInfo}, with the zip-level checks of every member."""
    members = {}
    own_size = os.path.getsize(path)
    if len(archive.infolist()) > MAX_MEMBERS:
        raise ModelFileError(f"{path}: {len(archive.infolist()):,} members, more than the {MAX_MEMBERS:,} a model "
                             f"file may hold")
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy") or name in members:
            raise ModelFileError(f"{path}: member {info.filename!r} is not a NumPy array or is repeated")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{path}: member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(f"{path}: member {info.filename!r} uses zip compression method "
                                 f"{info.compress_type} (only stored or deflated members are read)")
        stored = info.compress_type == zipfile.ZIP_STORED
        if info.compress_size > own_size or (stored and info.file_size != info.compress_size) \
                or info.file_size > MAX_INFLATION * max(info.compress_size, 1) + 4096:
            raise ModelFileError(f"{path}: member {info.filename!r} declares {info.file_size:,} bytes from "
                                 f"{info.compress_size:,} in a {own_size:,}-byte file: a damaged file or a "
                                 f"zip bomb, refused")
        members[name] = info
    return members


def _read_header(archive, path):
    members = _members(archive, path)
    if HEADER not in members:
        raise ModelFileError(f"{path} is a NumPy archive but not a tinycnn model file (no {HEADER} header)")
    entry = _npy_entry(archive, path, HEADER, members[HEADER])
    if entry["dtype"] != np.uint8 or len(entry["shape"]) != 1 or entry["nbytes"] > MAX_HEADER_BYTES:
        raise ModelFileError(f"{path}: the {HEADER} member must be at most {MAX_HEADER_BYTES:,} bytes of "
                             f"uint8, not {entry['dtype']} of shape {entry['shape']}")
    raw = _read_array(archive, path, HEADER, entry)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelFileError(f"{path}: the model header is damaged: {error}") from None
    _check_header(header, path)
    return header


def _check_header(header, path):
    """ModelFileError naming the first field of the JSON header that is missing or malformed."""
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the model header is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT or not isinstance(header.get("version"), int) \
            or isinstance(header.get("version"), bool) or not 1 <= header["version"] <= VERSION:
        raise ModelFileError(f"{path}: unsupported model file format {header.get('format')!r} "
                             f"version {header.get('version')!r} (this tinycnn reads {FORMAT!r} 1..{VERSION})")
    expected = {"class": str, "module": str, "config": (dict, type(None)), "metadata": (dict, type(None)),
                "input_shape": (list, type(None)), "metrics": (list, type(None)),
                "loss": (str, dict, type(None)), "optimizer": (str, dict, type(None)),
                "optimizer_state": (dict, type(None))}
    for field, types in expected.items():
        if field in header and not isinstance(header[field], types):
            raise ModelFileError(f"{path}: header field {field!r} is a {type(header[field]).__name__}: "
                                 f"{str(header[field])[:60]!r}")
    if not header.get("class"):
        raise ModelFileError(f"{path}: header field 'class' is missing: which model does the file hold?")
    header.setdefault("module", "")
    shape = header.get("input_shape")
    if shape is not None:
        if not shape or len(shape) > 4 or not all(type(n) is int and n >= 1 for n in shape):
            raise ModelFileError(f"{path}: header field 'input_shape' must be 1 to 4 positive whole numbers, "
                                 f"got {str(shape)[:80]}")
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ModelFileError(f"{path}: header field 'input_shape' {shape} declares {math.prod(shape):,} values "
                                 f"per sample, more than the {MAX_INPUT_ELEMENTS:,} a model file may")
    try:
        _check_config_shapes(header.get("config"), path)
    except RecursionError:
        raise ModelFileError(f"{path}: header field 'config' is nested too deeply") from None
    if not all(isinstance(name, str) for name in header.get("metrics") or []):
        raise ModelFileError(f"{path}: header field 'metrics' must list metric names")


def _check_config_shapes(config, path, where="config"):
    """Every list of whole numbers under a key ending in "shape" (an Input's shape, a layer's input_shape, a
    Reshape's target) is at most MAX_INPUT_ELEMENTS values: the model is built by running such shapes."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        here = f"{where}.{key}"
        sizes = [n for n in value if n is not None] if isinstance(value, list) else None
        if isinstance(key, str) and key.endswith("shape") and sizes is not None \
                and all(type(n) is int for n in sizes):
            if math.prod(abs(n) for n in sizes) > MAX_INPUT_ELEMENTS:
                raise ModelFileError(f"{path}: header field {here!r} declares the shape {str(value)[:80]}, more "
                                     f"than the {MAX_INPUT_ELEMENTS:,} values a model file may")
        elif isinstance(value, (dict, list)):
            _check_config_shapes(value, path, here)


def _index_arrays(archive, path, max_bytes):
    """{member name: .npy entry} of the weight arrays, checked (dtype, shape, sizes) without inflating them."""
    members = _members(archive, path)
    index, total = {}, 0
    for name, info in members.items():
        if name == HEADER:
            continue
        kind = name.split("/", 1)[0]
        if kind not in _ARRAY_KINDS or "/" not in name:
            raise ModelFileError(f"{path}: unexpected member {name!r} (a model file holds {HEADER}, param/* "
                                 f"and optim/*)")
        entry = _npy_entry(archive, path, name, info)
        if entry["dtype"].kind not in _ARRAY_KINDS[kind]:
            raise ModelFileError(f"{path}: {name} has dtype {entry['dtype']}; weights must be floating point "
                                 f"(float16, float32 or float64)")
        total += entry["nbytes"]
        if total > max_bytes:
            raise ModelFileError(f"{path}: the arrays declare more than {max_bytes:,} bytes in all (at {name}); "
                                 f"load_model(..., max_bytes=...) raises the limit")
        index[name] = entry
    return index


def _npy_entry(archive, path, name, info):
    """The .npy header of a member ({dtype, shape, fortran, offset, nbytes}), read without its data; its
    shape x itemsize must be exactly what the zip directory says the member holds."""
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, TypeError, SyntaxError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as error:
        raise ModelFileError(f"{path}: {name}: not a readable NumPy array header ({error})") from None
    if dtype.hasobject or not all(type(n) is int and n >= 0 for n in shape):
        raise ModelFileError(f"{path}: {name}: dtype {dtype} or shape {shape} is not allowed")
    nbytes = math.prod(shape) * dtype.itemsize
    if offset + nbytes != info.file_size:
        raise ModelFileError(f"{path}: {name} declares shape {shape} of {dtype} ({nbytes:,} bytes) but its member "
                             f"holds {info.file_size - offset:,} bytes")
    return {"info": info, "dtype": dtype, "shape": tuple(shape), "fortran": fortran, "offset": offset,
            "nbytes": nbytes}


def _read_array(archive, path, name, entry):
    """Inflate one checked member into a new array (never more than its declared size)."""
    array = np.empty(entry["shape"], dtype=entry["dtype"], order="F" if entry["fortran"] else "C")
    view = memoryview(array.reshape(-1, order="A").view(np.uint8)) if array.size else memoryview(b"")
    try:
        with archive.open(entry["info"]) as f:
            f.seek(entry["offset"])
            done = 0
            while done < entry["nbytes"]:
                got = f.readinto(view[done:])
                if not got:
                    raise EOFError(f"ends after {done:,} of {entry['nbytes']:,} bytes")
                done += got
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, RuntimeError) as error:  # CRC or inflate errors
        raise ModelFileError(f"{path}: {name}: the array data is damaged ({error})") from None
    if entry["fortran"]:
        array = np.ascontiguousarray(array)
    return array


def _check_array_references(header, arrays, path):
    """Every {"__array__": name} of the optimizer state names an array of the file."""
    def walk(obj):
        if isinstance(obj, dict):
            if set(obj) == {"__array__"}:
                if obj["__array__"] not in arrays:
                    raise ModelFileError(f"{path}: header field 'optimizer_state' names the array "
                                         f"{str(obj['__array__'])[:80]!r}, which the file does not hold")
                return
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)
    walk(header.get("optimizer_state"))


@contextlib.contextmanager
def _field(path, field, what):
    """Turn a ValueError/TypeError/KeyError while using a header field into a ModelFileError naming it."""
    try:
        yield
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ModelFileError(f"{path}: header field {field!r}: {what} ({type(error).__name__}: {error})") from None


# ------------------------------------------------------------------------------------------- building

@contextlib.contextmanager
def _building_against(weights, path):
    """While load_model builds the model (its from_config, and the first call that builds the layers): each
    layer's weights start as zeros (no random draws, and memory that is never written before the file's values
    replace it), and as soon as a layer is built each of its weights must match, by shape, an array of the file
    not yet matched; so a config that declares more or bigger weights than the file holds is refused at its
    first such layer, before that layer runs. Only this thread's layer calls are checked."""
    from collections import Counter
    Layer = CLASSES.lookup("Layer", "tinycnn.layers")  # noqa: N806  (the registry, not an import: no cycle)
    unmatched = Counter(tuple(array.shape) for array in weights.values())
    original, thread = Layer.__dict__["__call__"], threading.get_ident()

    def call(layer, *args, **kwargs):
        if threading.get_ident() == thread and not layer.built and "build" not in layer.__dict__:
            layer.__dict__["build"] = _checked_build(layer, unmatched, path)
        return original(layer, *args, **kwargs)

    Layer.__call__ = call
    try:
        yield
    finally:
        Layer.__call__ = original


def _checked_build(layer, unmatched, path):
    """The layer's build, once, with zero-initialised weights, each then matched against `unmatched` shapes."""
    def checked(input_shape):
        build = layer.__dict__.pop("build")  # noqa: F841  (this wrapper, used once)
        initializer = layer.__dict__.get("kernel_initializer")
        if initializer is not None:
            object.__setattr__(layer, "kernel_initializer", "zeros")
        try:
            type(layer).build(layer, input_shape)
        finally:
            if initializer is not None:
                object.__setattr__(layer, "kernel_initializer", initializer)
        for name, tensor in {**layer._parameters, **layer._buffers}.items():
            shape = tuple(tensor.shape)
            if unmatched[shape] < 1:
                layer._parameters.clear()  # let the zeros go now
                error = ModelFileError(f"{path}: layer '{getattr(layer, 'name', '?')}' ({type(layer).__name__}) "
                                       f"makes its weight {name!r} of shape {shape} from the header field 'config', "
                                       f"but the file holds no (further) array of that shape: the config does "
                                       f"not fit the weights")
                error._layer_named = True
                raise error
            unmatched[shape] -= 1
    return checked


def _model_class(header, path):
    """The registered class of the file's (module, class); a file that stores a bare class name (from before
    the registry was keyed by module) finds it by that name alone when only one class has it."""
    name, module = header.get("class"), header.get("module", "")
    if module.startswith("tinycnn.") and f"{module}.{name}" not in CLASSES:
        try:  # the task models live in tinycnn.tasks.*: importing our own package runs no foreign code
            importlib.import_module(module)
        except ImportError:
            pass
    try:
        found = CLASSES.lookup(name, module)
    except AmbiguousClassError as error:
        raise ModelFileError(f"{path}: {error}") from None
    if found is None:
        raise ModelFileError(f"{path}: unknown model class {name!r} (defined in {module!r}); import the module "
                             "that defines it before load_model")
    return found


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

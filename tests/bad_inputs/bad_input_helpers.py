"""Helpers of the bad-input tests (tests/bad_inputs/): hand-made model files, and running a command line in a fresh process.

`write_model_file` writes an archive member by member, so that a test can put in it exactly the malformed or
hostile part it is about; `run_cli` runs `python -m tinycnn.<command>` the way a user does and returns its
exit status, stdout and stderr.
"""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def npy_bytes(array):
    """The bytes of `array` as a .npy file (pickled objects allowed: an attack needs them)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=True)
    return buffer.getvalue()


def header_array(header):
    """The __tinycnn__ member of a model file for a header (a dict, or raw bytes for a damaged one)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return np.frombuffer(raw, dtype=np.uint8)


def write_model_file(path, header, arrays=(), compression=zipfile.ZIP_STORED):
    """A model file holding the JSON `header` and the arrays {member name: array or raw .npy bytes}."""
    members = {"__tinycnn__": header_array(header), **dict(arrays)}
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, value in members.items():
            archive.writestr(name + ".npy", value if isinstance(value, bytes) else npy_bytes(value))
    return path


def read_model_file(path):
    """(header dict, {member name: array}) of a model file, read with NumPy (for tests that edit a file)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return json.loads(arrays.pop("__tinycnn__").tobytes()), arrays


def run_module(module, *args, env=None, timeout=120):
    """Run `python -m <module> args...` from the repository root: (exit status, stdout, stderr)."""
    merged = dict(os.environ, **(env or {}))
    merged.pop("TINYCNN_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=merged,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr

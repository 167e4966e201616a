"""Importing and running tinycnn leaves the process environment as it was, while the thread pools that
tinycnn starts still get its thread settings (tinycnn/__init__.py, "Threads")."""
import json
import os
import subprocess
import sys

from bad_input_helpers import REPO

SCRIPT = r"""
import ctypes, json, os, sys
before = dict(os.environ)
import tinycnn
after_import = dict(os.environ)
import numpy as np
from tinycnn import layers
model = tinycnn.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1))])
model.predict(np.zeros((2, 8, 8, 1), np.float32))
after_kernels = dict(os.environ)
import numba
layer = numba.threading_layer()
sys.stdout.write(json.dumps(dict(import_same=after_import == before, kernels_same=after_kernels == before,
                                 layer=layer)) + "\n")
sys.stdout.flush()
if layer == "omp":
    ctypes.CDLL("libgomp.so.1").omp_display_env(1)   # libgomp prints the settings it runs with, on stderr
"""


def _run(**env):
    merged = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                                "OPENBLAS_THREAD_TIMEOUT")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=dict(merged, **env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_import_and_kernels_leave_the_environment_alone_and_the_pool_gets_the_settings():
    seen, display = _run()
    assert seen["import_same"] and seen["kernels_same"]
    if seen["layer"] == "omp" and "OPENMP DISPLAY ENVIRONMENT" in display:
        assert "OMP_WAIT_POLICY = 'PASSIVE'" in display and "GOMP_SPINCOUNT = '3000'" in display


def test_a_setting_the_user_made_is_kept():
    seen, display = _run(OMP_WAIT_POLICY="ACTIVE")
    assert seen["import_same"] and seen["kernels_same"]
    if seen["layer"] == "omp" and "OPENMP DISPLAY ENVIRONMENT" in display:
        assert "OMP_WAIT_POLICY = 'ACTIVE'" in display

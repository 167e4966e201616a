"""tinycnn: a from-scratch CNN engine in Python, NumPy and Numba.

    import tinycnn
    from tinycnn import layers
    model = tinycnn.Sequential([layers.Conv2D(64, 3, activation="relu", input_shape=(100, 100, 1)), ...])
"""
import contextlib as _contextlib
import os as _os

# Threads. Numba's parallel kernels run on an OpenMP pool and NumPy's GEMMs on OpenBLAS's own pool, one
# after the other, many times per training step. By default both pools keep their threads spinning after
# each call, waiting for more work: on a 2-core machine the spinning threads of one pool take the cores from
# the working threads of the other, and a 2-thread step ran 2× slower than a 1-thread one (8× under other
# load). So, unless the user chose otherwise, idle OpenMP threads sleep (OMP_WAIT_POLICY) and idle OpenBLAS
# threads go to sleep almost at once (OPENBLAS_THREAD_TIMEOUT=4: 2⁴ cycles). Measured in
# benchmarks/RESULTS.md ("Threads"). A thread that sleeps at once, though, must be woken for the next kernel:
# ~40 µs per parallel kernel, and a training step launches hundreds (a 1-image inference of the plate
# regressor spent a third of its time so). GOMP_SPINCOUNT=3000 (libgomp's OpenMP, which numba uses here)
# lets an idle thread spin ~3,000 pauses, tens of µs, first: a launch costs ~1.5 µs when the next kernel
# follows at once, and the spin is over before the other pool's work needs the core.
# These variables are process-wide: other libraries (and child processes) read them too. So tinycnn never
# leaves them in the environment: each library reads them once, as it loads, and `_thread_settings()` puts
# them there (those the user has not set) only while a pool that tinycnn starts loads, then takes them out:
# OpenBLAS when tinycnn is imported before NumPy (just below; `python -m tinycnn.<command>` always is), and
# numba's OpenMP pool when the first CPU kernel module is imported (kernels/cpu/__init__.py starts it with
# `_start_cpu_thread_pool`). A pool that another library started first keeps that library's settings.
_THREAD_SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000", "OPENBLAS_THREAD_TIMEOUT": "4"}


@_contextlib.contextmanager
def _thread_settings():
    """_THREAD_SETTINGS in os.environ inside the block (a variable the user set is left as it is); after it,
    the environment is exactly as before."""
    added = [name for name in _THREAD_SETTINGS if name not in _os.environ]
    _os.environ.update({name: _THREAD_SETTINGS[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            _os.environ.pop(name, None)


def _start_cpu_thread_pool():
    """Start numba's thread pool (its OpenMP library reads the settings as it loads); nothing if running."""
    from numba.np.ufunc import parallel
    if not parallel._is_initialized:
        with _thread_settings():
            parallel._launch_threads()


with _thread_settings():
    import numpy as _numpy  # noqa: E402,F401  (loads OpenBLAS, which reads OPENBLAS_THREAD_TIMEOUT now)

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
from .model import Model  # noqa: E402
from .functional_model import Input  # noqa: E402
from . import layers, losses, metrics, optimizers, callbacks  # noqa: E402
from . import applications  # noqa: E402
from . import utils, keras  # noqa: E402,F401  (keras: Keras' module names, tinycnn.keras.layers ...: tinycnn/keras.py)
from .saving import load_model, ModelFileError  # noqa: E402
from .training import TrainingError  # noqa: E402

__version__ = "0.1.0"


def set_num_threads(n):
    """Threads for every CPU kernel (Numba's parallel loops and the GEMMs, kernels/cpu/gemm.py), like
    torch.set_num_threads. At most NUMBA_NUM_THREADS (the machine's cores unless set before the import)."""
    import numba
    numba.set_num_threads(int(n))


def get_num_threads():
    import numba
    return numba.get_num_threads()

"""One seeded random generator for the whole engine: weight init, shuffling, dropout masks, augmentation.

`tinycnn.manual_seed(s)` makes a run repeatable: the same seed gives the same weights and batches.
"""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Re-seed the engine's generator (and NumPy's legacy global one, for user code that uses it)."""
    global _generator
    _generator = np.random.default_rng(seed)
    np.random.seed(seed % (2 ** 32))


def generator():
    """The engine's np.random.Generator."""
    return _generator


def next_seed():
    """A fresh 63-bit integer seed drawn from the engine's generator (for kernels that draw their own numbers)."""
    return int(_generator.integers(0, 2 ** 63 - 1))

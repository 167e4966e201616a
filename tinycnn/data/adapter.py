"""What fit, evaluate and predict accept, turned into arrays or into a stream of batches.

Arrays (the fast path, batched by index inside fit as before): a NumPy array or Tensor; a list or tuple of
equally shaped arrays (stacked into a batch: a list of images); a list holding one array (that array, as Keras
unwraps a single input). For a model of several inputs or outputs a list or dict is one array per input or
output instead, checked by the model (tinycnn/trainer.py, tinycnn/nested.py; `check=` here), never stacked. Any numeric dtype: integers and bool are cast to float32 without rescaling (as
Keras does: uint8 pixels stay 0..255), float64 stays float64, other floats become float32.

Streams (`BatchStream`): a tinycnn Dataset, any iterable of batches (a list of batches, a generator object,
a PyTorch-style loader), each batch `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)` of arrays. The number
of batches per epoch is `steps_per_epoch` if given, else the iterable's len() if it has one, else unknown (the
epoch ends when the iterable does). Without steps_per_epoch each epoch is a fresh pass; with it, batches are
drawn on from where the last epoch stopped, and a re-iterable source starts a new pass when it runs out. A
one-shot iterator (a generator object) that runs out ends training with a warning, as in Keras.
"""
import collections.abc
import warnings

import numpy as np


class RanOutOfData(UserWarning):
    """A one-shot iterator of batches ended before training did."""


def is_array_input(x):
    """True for what fit batches by index: an array, a Tensor, or a list/tuple of equally shaped arrays."""
    from ..tensor import Tensor
    if isinstance(x, (np.ndarray, Tensor)):
        return True
    if isinstance(x, (list, tuple)) and x and not any(isinstance(v, (tuple, dict)) for v in x):
        try:
            return len({np.shape(v) for v in x}) == 1
        except ValueError:
            return False
    return False


def check_x(x, where):
    """Inputs as a float array (N, ...) with no NaN or inf; one-line errors naming `where`."""
    from ..tensor import Tensor
    if isinstance(x, (list, tuple)) and len(x) == 1 and isinstance(x[0], (np.ndarray, Tensor)):
        x = x[0]                                    # a list holding one array: that array (Keras)
    if isinstance(x, Tensor):
        x = x.numpy()
    if isinstance(x, (list, tuple)):
        x = [v.numpy() if isinstance(v, Tensor) else v for v in x]
        try:
            x = np.asarray(x)
        except ValueError:
            raise ValueError(f"{where}: a list of inputs must hold arrays of one shape, got "
                             f"{sorted({np.shape(v) for v in x})[:3]}") from None
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: inputs must be a NumPy array, a list of arrays or a Dataset, got {type(x).__name__}")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{where}: inputs must be numbers, got an array of dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{where}: inputs need a batch axis and features, got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{where}: empty input (shape {x.shape})")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{where}: inputs contain NaN or inf in {len(bad)} sample(s), first at index {bad[:5].tolist()}")
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def check_arrays(x, y, where):
    """(inputs, targets) as checked arrays of the same length."""
    from ..tensor import Tensor
    x = check_x(x, where)
    if y is None:
        raise ValueError(f"{where}: targets y are missing (give y, or a Dataset of (x, y) batches as x)")
    y = y.numpy() if isinstance(y, Tensor) else np.asarray(y)
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(f"{where}: {len(x)} inputs but {y.size if y.ndim == 0 else len(y)} targets")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{where}: targets contain NaN or inf")
    return x, y


def is_stream(x):
    """True for a Dataset or any other iterable of batches (a str or a dict is not)."""
    return isinstance(x, collections.abc.Iterable) and not isinstance(x, (str, bytes, dict, np.ndarray))


def split_batch(batch, where, targets, check=None):
    """One batch -> (x, y or None, sample_weight or None), checked; y required when `targets`. `check`: a model's
    own (check_x, check_arrays) pair, for a model of several inputs or outputs, whose batch x (or y) is a list
    or dict of arrays, one per input, not a list of samples (tinycnn/trainer.py)."""
    check_inputs, check_pair = check or (check_x, check_arrays)
    from ..tensor import Tensor
    parts = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"{where}: a batch must be x, (x, y) or (x, y, sample_weight), got a tuple of {len(parts)}")
    parts = tuple(p.numpy() if isinstance(p, Tensor) else p for p in parts) + (None,) * (3 - len(parts))
    x, y, weight = parts
    if targets and y is None:
        raise ValueError(f"{where}: the batches carry no targets: yield (x, y) or (x, y, sample_weight)")
    if y is None:
        return check_inputs(x, where), None, None
    x, y = check_pair(x, y, where)
    if weight is not None:
        weight, n = np.asarray(weight, np.float32).reshape(-1), len(x[0] if isinstance(x, list) else x)
        if len(weight) != n:
            raise ValueError(f"{where}: {n} inputs but {len(weight)} sample weights")
    return x, y, weight


class BatchStream:
    """Batches from a Dataset or an iterable, epoch after epoch; see the module docstring."""

    def __init__(self, source, where, steps=None, targets=True, check=None):
        if callable(source) and not is_stream(source):
            raise TypeError(f"{where}: got a function; pass the generator it returns (call it), or a Dataset")
        self.source, self.where, self.targets, self.check = source, where, targets, check
        self.one_shot = isinstance(source, collections.abc.Iterator)
        self.steps_given = steps is not None
        if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
            raise ValueError(f"{where}: the number of steps must be a positive integer, got {steps!r}")
        self.steps = int(steps) if steps is not None else self._known_length()
        self.exhausted = False          # a one-shot source has run out
        self._pending, self._first, self._template = None, None, None

    def _known_length(self):
        if self.one_shot:
            return None
        try:
            return len(self.source)
        except TypeError:
            return None

    def first(self):
        """The first batch, split and checked (it is still given by the first epoch)."""
        if self._template is None:
            batch = self._next_raw(restart=False)
            if batch is None:
                raise ValueError(f"{self.where}: the data holds no batch")
            self._first, self._template = batch, split_batch(batch, self.where, self.targets, self.check)
        return self._template

    def epoch(self):
        """One epoch's batches, each (x, y, sample_weight) (y and sample_weight may be None)."""
        if not self.steps_given and self._first is None:
            self._pending = None        # each epoch a fresh pass (the first one may have begun with first())
        count = 0
        while self.steps is None or count < self.steps:
            batch = self._next_raw(restart=self.steps_given)
            if batch is None:
                if self.steps_given and count < self.steps:
                    self.exhausted = True
                break
            count += 1
            yield split_batch(batch, self.where, self.targets, self.check)
        if self.one_shot and count == 0:
            self.exhausted = True

    def _next_raw(self, restart):
        """The next batch as it comes, or None at the end of a pass (a re-iterable one restarts if asked)."""
        if self._first is not None:
            batch, self._first = self._first, None
            return batch
        for attempt in range(2):
            if self._pending is None:
                if self.one_shot and attempt > 0:
                    return None
                self._pending = iter(self.source)
            try:
                return next(self._pending)
            except StopIteration:
                self._pending = None
                if not restart or self.one_shot:
                    return None
        return None

    def warn_ran_out(self):
        warnings.warn(f"{self.where}: the input ran out of data; training stopped. Give steps_per_epoch and "
                      "epochs that the data can supply, or use a repeating Dataset", RanOutOfData, stacklevel=3)

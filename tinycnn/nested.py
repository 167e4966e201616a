"""Several inputs or outputs: a model's x or y as a list of arrays, indexed and checked together.

A functional Model with several inputs takes `x` as a list (in the order of `Model(inputs=[...])`) or a dict
keyed by the Input layers' names, as Keras does; one with several outputs takes `y` the same way (keyed by the
output layers' names). Inside fit they are plain lists of arrays of one length: `take(arrays, index)` batches
them all at once. A model with one input never gets a list here: for it a list of arrays is a list of samples
(tinycnn/data/adapter.py stacks them).

Per-output losses (`compile(loss=[...] or {...}, loss_weights=...)`) are one `OutputLosses`: the weighted
sum of each output's loss on its own targets.
"""
import numpy as np

from .data.adapter import check_x
from .tensor import Tensor


def as_list(value, names, what, where):
    """A list or tuple (in order) or a dict keyed by `names` -> a list of len(names) values."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        missing = [name for name in names if name not in value]
        if unknown or missing:
            raise ValueError(f"{where}: the {what} dict must have the keys {names}; missing {missing}, "
                             f"unknown {unknown}")
        return [value[name] for name in names]
    if not isinstance(value, (list, tuple)) or len(value) != len(names):
        got = f"a {type(value).__name__} of {len(value)}" if isinstance(value, (list, tuple)) \
            else f"one {type(value).__name__}"
        raise ValueError(f"{where}: the model has {len(names)} {what}s {names}; give a list of {len(names)} "
                         f"arrays or a dict keyed by those names, got {got}")
    return list(value)


def check_inputs(x, names, where):
    """Several inputs as a list of checked arrays of one length."""
    arrays = [check_x(v, f"{where} (input '{name}')") for v, name in zip(as_list(x, names, "input", where), names)]
    same_length(arrays, names, "input", where)
    return arrays


def check_targets(y, names, n, where):
    """Several targets as a list of arrays, each of n samples."""
    if y is None:
        raise ValueError(f"{where}: targets y are missing (a list or dict with one array per output {names})")
    arrays = [v.numpy() if isinstance(v, Tensor) else np.asarray(v) for v in as_list(y, names, "output", where)]
    for array, name in zip(arrays, names):
        if array.ndim == 0 or len(array) != n:
            raise ValueError(f"{where}: {n} inputs but {len(array) if array.ndim else 1} targets for output '{name}'")
    return arrays


def same_length(arrays, names, what, where):
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"{where}: the {what} arrays have different numbers of samples: "
                         f"{dict(zip(names, (len(a) for a in arrays)))}")


def take(value, index):
    """value[index], for one array or each array of a list."""
    return [v[index] for v in value] if isinstance(value, list) else value[index]


def length(value):
    return len(value[0]) if isinstance(value, list) else len(value)


class OutputLosses:
    """The loss of a model with several outputs: sum over outputs of weight · loss(output, its targets)."""

    def __init__(self, losses, weights):
        self.losses, self.weights = losses, weights

    def __call__(self, outputs, targets, sample_weight=None):
        total = None
        for loss, weight, out, y in zip(self.losses, self.weights, outputs, targets):
            if loss is None:
                continue
            value = loss(out, y) if sample_weight is None else loss(out, y, sample_weight=sample_weight)
            value = value * weight if weight != 1.0 else value
            total = value if total is None else total + value
        return total


def output_losses(loss, loss_weights, names, get):
    """compile's loss and loss_weights for a model with outputs `names`: one loss for all, a list, or a dict
    (an output left out of a dict has no loss); `get` resolves each (tinycnn.losses.get)."""
    where = "compile"
    if isinstance(loss, (list, tuple, dict)):
        losses = [None if v is None else get(v) for v in _per_output(loss, names, "loss", where)]
    else:
        losses = [get(loss) for _ in names]
    weights = [1.0] * len(names) if loss_weights is None else \
        [float(w) for w in _per_output(loss_weights, names, "loss weight", where)]
    return OutputLosses(losses, weights)


def _per_output(value, names, what, where):
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{where}: {what}s given for unknown outputs {unknown}; the outputs are {names}")
        return [value.get(name, 1.0 if what == "loss weight" else None) for name in names]
    return as_list(value, names, what, where)

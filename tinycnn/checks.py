"""User input that cannot be used: the error type every tinycnn check raises, and the target checks of the losses.

    from tinycnn.checks import UserInputError, check_binary_targets, check_class_indices
    check_binary_targets(y)                 # every target in [0, 1] (0/1 labels, or soft labels as Keras allows)
    check_class_indices(y, num_classes=10)  # every target a whole number in [0, 10)

`UserInputError` (a ValueError) marks a mistake in what the user gave: a file, a folder, an argument, a
label. Its message names the thing at fault (file and row, argument, layer, first bad label) and says what
would be right. The command-line tools (tinycnn/cli.py) print such an error as one line and exit with status 2;
any other exception is a bug in tinycnn and keeps its traceback. ModelFileError, ImageDecodeError and the plate
tasks' AnnotationError are UserInputErrors.

The target checks look at the whole array and name the FIRST bad target by its index (a tuple for targets of
more than one dimension, e.g. a pixel of a segmentation mask) and value, so a label of 2 given to binary
cross-entropy is an error instead of a silently wrong loss.
"""
import numpy as np


class UserInputError(ValueError):
    """Input from the user that cannot be used; the message names what is at fault and why."""


def check_finite_targets(y, loss="the loss"):
    """Every target is a finite number (no NaN or inf)."""
    y = _numeric(y, loss)
    if y.dtype.kind == "f":
        _first_bad(~np.isfinite(y), y, f"{loss}: targets must be finite numbers")
    return y


def check_binary_targets(y, loss="binary_crossentropy"):
    """Every target lies in [0, 1]: the class labels 0 and 1, or soft labels (probabilities) between them."""
    y = check_finite_targets(y, loss)
    _first_bad((y < 0) | (y > 1), y, f"{loss}: targets must be 0 or 1 (or a probability in [0, 1])")
    return y


def check_class_indices(y, num_classes, loss="sparse_categorical_crossentropy", ignore_index=None):
    """Every target is a whole number in [0, num_classes) (or equal to ignore_index, a pixel left out)."""
    y = check_finite_targets(y, loss)
    bad = (y < 0) | (y >= num_classes)
    if y.dtype.kind == "f":
        bad |= y != np.floor(y)
    if ignore_index is not None:
        bad &= y != ignore_index
    ignoring = f" (or {ignore_index}, ignored)" if ignore_index is not None else ""
    _first_bad(bad, y, f"{loss}: targets must be class indices 0..{num_classes - 1}{ignoring} "
                       f"for a model with {num_classes} outputs")
    return y


def check_probability_targets(y, loss="categorical_crossentropy"):
    """Every target lies in [0, 1] (one-hot rows, or soft labels)."""
    return check_binary_targets(y, loss)


def _numeric(y, loss):
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise UserInputError(f"{loss}: targets must be numbers, got an array of dtype {y.dtype}")
    return y


def _first_bad(bad, y, message):
    """Raise UserInputError(message + the index and value of the first True of `bad`), if any."""
    if not bad.any():
        return
    flat = int(np.flatnonzero(bad.reshape(-1))[0])
    index = np.unravel_index(flat, y.shape) if y.ndim > 1 else (flat,)
    where = ", ".join(str(int(i)) for i in index)
    count = int(bad.sum())
    more = f" ({count} bad targets in all)" if count > 1 else ""
    raise UserInputError(f"{message}; target [{where}] is {y.reshape(-1)[flat].item()!r}{more}")

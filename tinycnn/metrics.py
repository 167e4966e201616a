"""Metrics for `model.compile(metrics=[...])`: accumulated over an epoch, batch by batch, on the host.

'accuracy' picks its meaning from the shapes, as Keras does: one output column (or sigmoid outputs shaped
like the targets) -> binary accuracy at 0.5; several classes -> argmax over the class axis (axis 1, which
is also the per-pixel class axis of (N, C, H, W) segmentation outputs) against integer or one-hot targets.
A user's metric is any `fn(y_true, y_pred) -> float` (batch mean), averaged over samples.
"""
import numpy as np


def accuracy(y_true, y_pred):
    y_true = np.asarray(y_true)
    if y_pred.ndim == 1 or y_pred.shape[1] == 1:  # binary
        return float(np.mean((y_pred.reshape(len(y_pred), -1) > 0.5) == (y_true.reshape(len(y_true), -1) > 0.5)))
    predicted = y_pred.argmax(axis=1)
    if y_true.shape == y_pred.shape:  # one-hot (N, C) targets
        y_true = y_true.argmax(axis=1)
    elif y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return float(np.mean(predicted == y_true.reshape(predicted.shape)))


def mean_absolute_error(y_true, y_pred):
    return float(np.mean(np.abs(y_pred - np.asarray(y_true).reshape(y_pred.shape))))


def mean_squared_error(y_true, y_pred):
    return float(np.mean((y_pred - np.asarray(y_true).reshape(y_pred.shape)) ** 2))


_BUILTIN = {"accuracy": accuracy, "acc": accuracy, "mae": mean_absolute_error, "mse": mean_squared_error}


def is_builtin(name):
    return name in _BUILTIN


def get(metric):
    """(name, fn) for a metric name or callable."""
    if isinstance(metric, str):
        if metric not in _BUILTIN:
            raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(_BUILTIN)} or pass a callable")
        return ("accuracy" if metric == "acc" else metric), _BUILTIN[metric]
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    raise TypeError(f"a metric must be a name or a callable, got {type(metric).__name__}")


class Mean:
    """A running mean weighted by batch size."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, value, n):
        self.total += float(value) * n
        self.count += n

    def result(self):
        return self.total / self.count if self.count else float("nan")

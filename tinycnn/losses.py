"""Keras-style losses for `model.compile(loss=...)`, built on tinycnn.functional.

A loss is called as `loss(pred, y, sample_weight=None)` with the model's output tensor (NCHW for image
outputs) and the targets as a NumPy array; it returns a scalar tensor. When the model's last activation is
a sigmoid or softmax, the loss reads the logits kept on the output (`pred._logits`) and uses the fused,
numerically stable form (log-sum-exp), as Keras does, so large logits never give inf or NaN.

Keras' arguments: `from_logits` (the output is a logit, no activation applied) for the cross-entropies;
`label_smoothing` ε for the binary and categorical ones, which train on softened targets
    binary:       y' = y·(1 − ε) + ε/2            categorical:  y' = y·(1 − ε) + ε/C   (C classes)
and Huber(delta δ): per element e = pred − y, 0.5·e² where |e| ≤ δ, δ·(|e| − 0.5·δ) beyond (written as
q = min(|e|, δ), 0.5·q² + δ·(|e| − q), so the engine's relu gives the gradient). Names: "binary_crossentropy",
"categorical_crossentropy", "sparse_categorical_crossentropy", "mse", "mae", "huber" (and Keras' long forms).
"""
import numpy as np

from . import functional as F
from .checks import check_binary_targets, check_class_indices, check_finite_targets, check_probability_targets
from .tensor import Tensor


def _numpy(y):
    """Targets as a NumPy array (checked there, before they reach the device)."""
    return np.asarray(y.numpy() if isinstance(y, Tensor) else y)


def _targets(y, pred, dtype=None):
    """Targets as a tensor on pred's device (float targets in pred's dtype)."""
    if isinstance(y, Tensor):
        y = y.numpy()
    y = np.asarray(y)
    return Tensor(y.astype(dtype or pred.dtype, copy=False), device=pred.device)


def _logits(pred, activation):
    saved = getattr(pred, "_logits", None)
    return saved[1] if saved is not None and saved[0] == activation else None


class Loss:
    name = "loss"

    def __call__(self, pred, y, sample_weight=None):
        raise NotImplementedError

    def get_config(self):
        return {}


class BinaryCrossentropy(Loss):
    """−[y log p + (1 − y) log(1 − p)], mean over elements; y shaped like p, or (N,) for p (N, 1)."""
    name = "binary_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0):
        self.from_logits = bool(from_logits)
        self.label_smoothing = _check_smoothing(label_smoothing, self.name)

    def __call__(self, pred, y, sample_weight=None):
        y = check_binary_targets(_numpy(y), self.name)  # a label of 2 is an error naming it, not a wrong loss
        y = np.reshape(y, pred.shape) if np.size(y) == pred.size else y
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        y = _targets(y, pred)
        if tuple(y.shape) != pred.shape:
            raise ValueError(f"binary_crossentropy: targets of shape {y.shape} do not fit predictions {pred.shape}")
        weight = None if sample_weight is None else _targets(
            np.reshape(sample_weight, (-1,) + (1,) * (pred.ndim - 1)) * np.ones(pred.shape), pred)
        logits = pred if self.from_logits else _logits(pred, "sigmoid")
        if logits is not None:
            return F.binary_cross_entropy_with_logits(logits, y, weight=weight)
        return F.binary_cross_entropy(pred, y, weight=weight)

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(Loss):
    """−log p[class], for integer targets: (N,) for (N, C) outputs, (N, H, W) per pixel for (N, C, H, W)."""
    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False, class_weight=None, ignore_index=-100):
        self.from_logits = bool(from_logits)
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self.ignore_index = int(ignore_index)

    def __call__(self, pred, y, sample_weight=None):
        y = check_class_indices(_numpy(y), pred.shape[1], self.name, ignore_index=self.ignore_index)
        if y.ndim == pred.ndim and y.shape[-1] == 1:
            y = y[..., 0]
        logits = pred if self.from_logits else _logits(pred, "softmax")
        if logits is None:  # probabilities from elsewhere: log p, and log_softmax(log p) = log p
            logits = F.log_softmax((pred + 1e-7).log(), dim=1)
        weight = None if self.class_weight is None else Tensor(np.asarray(self.class_weight, pred.dtype), device=pred.device)
        if sample_weight is not None and weight is None:
            weight = _class_weights_from_samples(y, sample_weight, pred)
        target = Tensor(y.astype(np.int64), device=pred.device)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)

    def get_config(self):
        return {"from_logits": self.from_logits, "class_weight": self.class_weight, "ignore_index": self.ignore_index}


def _class_weights_from_samples(y, sample_weight, pred):
    """Per-class weights from per-sample weights that depend only on the class (class_weight in fit)."""
    weights = np.ones(pred.shape[1], pred.dtype)
    labels = y.reshape(len(y), -1)[:, 0]
    for label, w in zip(labels, sample_weight):
        weights[int(label)] = w
    return Tensor(weights, device=pred.device)


class CategoricalCrossentropy(Loss):
    """−Σ y log p for one-hot (or soft) targets shaped like the output."""
    name = "categorical_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0):
        self.from_logits = bool(from_logits)
        self.label_smoothing = _check_smoothing(label_smoothing, self.name)

    def __call__(self, pred, y, sample_weight=None):
        y = check_probability_targets(_numpy(y), self.name)
        if y.shape != pred.shape:
            raise ValueError(f"categorical_crossentropy: targets {y.shape} do not match predictions {pred.shape}")
        if self.label_smoothing:  # the classes lie on axis 1 (NCHW inside, or (N, C))
            y = y * (1.0 - self.label_smoothing) + self.label_smoothing / pred.shape[1]
        y = _targets(y, pred)
        logits = pred if self.from_logits else _logits(pred, "softmax")
        log_p = F.log_softmax(logits, dim=1) if logits is not None else (pred + 1e-7).log()
        per_sample = -(y * log_p).sum(axis=1)
        return weighted_mean(per_sample, sample_weight)

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class MeanSquaredError(Loss):
    name = "mse"

    def __call__(self, pred, y, sample_weight=None):
        y = check_finite_targets(_numpy(y), self.name)
        y = _targets(np.reshape(y, pred.shape) if np.size(y) == pred.size else y, pred)
        if tuple(y.shape) != pred.shape:
            raise ValueError(f"mse: targets of shape {y.shape} do not match predictions {pred.shape}")
        if sample_weight is None:
            return F.mse_loss(pred, y)
        error = pred - y
        return weighted_mean(error * error, sample_weight)


class MeanAbsoluteError(Loss):
    """mean |pred − y| (|e| = relu(e) + relu(−e): the engine's relu gives the gradient)."""
    name = "mae"

    def __call__(self, pred, y, sample_weight=None):
        error = pred - _same_shape_targets(check_finite_targets(_numpy(y), self.name), pred, self.name)
        return weighted_mean(F.relu(error) + F.relu(-error), sample_weight)


class Huber(Loss):
    """Keras' Huber loss, mean over elements: quadratic within `delta` of the target, linear beyond."""
    name = "huber"

    def __init__(self, delta=1.0):
        self.delta = float(delta)
        if self.delta <= 0:
            raise ValueError(f"huber: delta must be positive, got {delta}")

    def __call__(self, pred, y, sample_weight=None):
        error = pred - _same_shape_targets(check_finite_targets(_numpy(y), self.name), pred, self.name)
        absolute = F.relu(error) + F.relu(-error)
        quadratic = absolute - F.relu(absolute - self.delta)  # min(|e|, δ)
        return weighted_mean(quadratic * quadratic * 0.5 + (absolute - quadratic) * self.delta, sample_weight)

    def get_config(self):
        return {"delta": self.delta}


def weighted_mean(losses, sample_weight=None):
    """The mean of per-element losses (N, ...); with sample_weight (N,), Keras' Σᵢ wᵢ·mean(lossᵢ) / N."""
    if sample_weight is None:
        return losses.mean()
    per_sample = losses.reshape(losses.shape[0], -1).mean(axis=1) if losses.ndim > 1 else losses
    weights = np.asarray(sample_weight.numpy() if isinstance(sample_weight, Tensor) else sample_weight,
                         per_sample.dtype).reshape(-1)
    if len(weights) != per_sample.shape[0]:
        raise ValueError(f"sample_weight: {len(weights)} weights for {per_sample.shape[0]} samples")
    return (per_sample * Tensor(weights, device=per_sample.device)).mean()


def _same_shape_targets(y, pred, name):
    y = _targets(np.reshape(y, pred.shape) if np.size(y) == pred.size else y, pred)
    if tuple(y.shape) != pred.shape:
        raise ValueError(f"{name}: targets of shape {y.shape} do not match predictions {pred.shape}")
    return y


def _check_smoothing(value, name):
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {value}")
    return value


_ALIASES = {
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
}


def get(loss):
    """A loss object from a name ('binary_crossentropy', 'mse', ...), a Loss, or a callable(pred, y)."""
    if isinstance(loss, str):
        if loss not in _ALIASES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(_ALIASES)} or pass a callable")
        return _ALIASES[loss]()
    if callable(loss):
        return loss
    raise TypeError(f"loss must be a name or a callable, got {type(loss).__name__}")


_BUILTIN_CLASSES = {c.__name__: c for c in (BinaryCrossentropy, SparseCategoricalCrossentropy,
                                            CategoricalCrossentropy, MeanSquaredError, MeanAbsoluteError, Huber)}


def to_config(loss):
    """The saved form of a built-in loss; None for a user's loss (pass it again to compile after load_model)."""
    if type(loss).__name__ in _BUILTIN_CLASSES and type(loss) is _BUILTIN_CLASSES[type(loss).__name__]:
        return {"name": type(loss).__name__, "config": loss.get_config()}
    return None


def from_config(config):
    return _BUILTIN_CLASSES[config["name"]](**config["config"])

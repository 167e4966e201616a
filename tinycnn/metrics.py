"""Metrics for `model.compile(metrics=[...])`, by Keras' names, computed on the host, batch by batch.

    "accuracy" / "acc"               resolved from the loss, then the shapes, as Keras does:
                                         binary_crossentropy                -> binary_accuracy (at 0.5)
                                         sparse_categorical_crossentropy    -> sparse_categorical_accuracy
                                         categorical_crossentropy           -> categorical_accuracy
                                         other losses: one output column -> binary; targets shaped like the
                                         outputs -> categorical (one-hot); else sparse (integer labels)
    "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy" (k=5), "sparse_top_k_categorical_accuracy", "mae", "mse"
                                     batch means, averaged over the samples of an epoch
    "precision", "recall", "auc", MeanIoU(num_classes), Precision(thresholds), Recall(...), AUC(num_thresholds)
                                     not batch means: they keep counts across batches (true/false positives,
                                     a confusion matrix) with Keras' update_state / result / reset_state

Every built-in metric reads Keras' layout: the class axis last, so per-pixel outputs (N, H, W, C) with one-hot
(N, H, W, C) or integer (N, H, W) / (N, H, W, 1) masks work. During fit/evaluate the model's image outputs are
NCHW (tinycnn runs NCHW inside): `batch_value` moves the class axis last first (`keras_layout`). A user's
metric is any `fn(y_true, y_pred) -> float` (a batch mean, on the model's own output layout), averaged over
the samples.
"""
import numpy as np

# ---------------------------------------------------------------------- layouts


def keras_layout(y_true, y_pred):
    """(y_true, y_pred) with the class axis last, from targets in the user's layout and 4-D outputs in the
    model's (N, C, H, W): targets shaped like the outputs are NCHW too (a channels-first model), targets
    (N, H, W, C) are channels-last one-hot, anything else holds integer labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_pred.ndim != 4:
        return y_true, y_pred
    if y_true.shape == y_pred.shape:
        return y_true.transpose(0, 2, 3, 1), y_pred.transpose(0, 2, 3, 1)
    return y_true, y_pred.transpose(0, 2, 3, 1)


def _labels(y_true, y_pred):
    """Integer labels of sparse targets: (N, ...) or (N, ..., 1) against y_pred (N, ..., C)."""
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    if y_true.size != y_pred.size // y_pred.shape[-1]:
        raise ValueError(f"sparse targets of shape {y_true.shape} do not fit predictions {y_pred.shape} "
                         "(one integer label per row of class scores)")
    return y_true.reshape(y_pred.shape[:-1]).astype(np.int64)


def _same_shape(y_true, y_pred, name):
    y_true = np.asarray(y_true)
    if y_true.size != y_pred.size:
        raise ValueError(f"{name}: targets of shape {y_true.shape} do not fit predictions {y_pred.shape}")
    return y_true.reshape(y_pred.shape)


# ---------------------------------------------------------------------- batch means

def binary_accuracy(y_true, y_pred, threshold=0.5):
    y_true = _same_shape(y_true, y_pred, "binary_accuracy")
    return float(np.mean((y_pred > threshold) == (y_true > 0.5)))


def categorical_accuracy(y_true, y_pred):
    y_true = _same_shape(y_true, y_pred, "categorical_accuracy")
    return float(np.mean(y_pred.argmax(axis=-1) == y_true.argmax(axis=-1)))


def sparse_categorical_accuracy(y_true, y_pred):
    return float(np.mean(y_pred.argmax(axis=-1) == _labels(y_true, y_pred)))


def _in_top_k(labels, y_pred, k):
    scores = y_pred.reshape(-1, y_pred.shape[-1])
    labels = labels.reshape(-1)
    own = scores[np.arange(len(labels)), labels]
    return (scores > own[:, None]).sum(axis=1) < k  # fewer than k classes score higher (ties count for it)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    y_true = _same_shape(y_true, y_pred, "top_k_categorical_accuracy")
    return float(np.mean(_in_top_k(y_true.argmax(axis=-1), y_pred, k)))


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    return float(np.mean(_in_top_k(_labels(y_true, y_pred), y_pred, k)))


def accuracy(y_true, y_pred):
    """Accuracy resolved from the shapes alone (`get` resolves it from the loss first)."""
    return _accuracy_for(None, y_true, y_pred)(y_true, y_pred)


def _accuracy_for(loss_name, y_true, y_pred):
    by_loss = {"binary_crossentropy": binary_accuracy, "sparse_categorical_crossentropy": sparse_categorical_accuracy,
               "categorical_crossentropy": categorical_accuracy}
    if loss_name in by_loss:
        return by_loss[loss_name]
    if y_pred.ndim == 1 or y_pred.shape[-1] == 1:
        return binary_accuracy
    return categorical_accuracy if np.shape(y_true) == y_pred.shape else sparse_categorical_accuracy


def mean_absolute_error(y_true, y_pred):
    return float(np.mean(np.abs(y_pred - _same_shape(y_true, y_pred, "mae"))))


def mean_squared_error(y_true, y_pred):
    return float(np.mean((y_pred - _same_shape(y_true, y_pred, "mse")) ** 2))


# ---------------------------------------------------------------------- metrics with state

class Metric:
    """A metric that keeps counts across batches, as Keras': `update_state(y_true, y_pred)` adds a batch's
    counts (Keras' layout: class axis last), `result()` gives the value, `reset_state()` starts again."""
    name = "metric"

    def __init__(self, name=None):
        self.name = name or self.name
        self.reset_state()

    def reset_state(self):
        self.state = None

    def counts(self, y_true, y_pred):
        """This batch's additive counts (a NumPy array)."""
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(f"{self.name}: sample_weight is not supported")
        counts = self.counts(np.asarray(y_true), np.asarray(y_pred, np.float64))
        self.state = counts if self.state is None else self.state + counts

    def result(self):
        return float("nan") if self.state is None else float(self.value(self.state))

    def __call__(self, y_true, y_pred):  # Keras: update, then the result so far
        self.update_state(y_true, y_pred)
        return self.result()


class Precision(Metric):
    """true positives / predicted positives, elementwise on binary (or one-hot) targets, at `thresholds`."""
    name = "precision"

    def __init__(self, thresholds=0.5, name=None):
        self.thresholds = float(thresholds)
        super().__init__(name)

    def counts(self, y_true, y_pred):
        truth = _same_shape(y_true, y_pred, self.name) > 0.5
        predicted = y_pred > self.thresholds
        return np.array([np.sum(predicted & truth), np.sum(predicted & ~truth), np.sum(~predicted & truth)], float)

    def value(self, state):
        tp, fp, fn = state
        return tp / (tp + fp) if tp + fp else 0.0


class Recall(Precision):
    """true positives / actual positives."""
    name = "recall"

    def value(self, state):
        tp, fp, fn = state
        return tp / (tp + fn) if tp + fn else 0.0


class AUC(Metric):
    """Area under the ROC curve, as Keras: true/false positive counts at `num_thresholds` thresholds
    (−ε, 1/(n−1), ..., (n−2)/(n−1), 1 + ε), the curve integrated by the trapezoid rule."""
    name = "auc"

    def __init__(self, num_thresholds=200, name=None):
        if num_thresholds < 2:
            raise ValueError(f"AUC: num_thresholds must be at least 2, got {num_thresholds}")
        inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        self.thresholds = np.array([-1e-7] + inner + [1 + 1e-7])
        super().__init__(name)

    def counts(self, y_true, y_pred):
        truth = _same_shape(y_true, y_pred, self.name).reshape(-1) > 0.5
        scores = y_pred.reshape(-1)
        above = scores[None, :] > self.thresholds[:, None]  # (thresholds, values)
        tp, fp = (above & truth).sum(axis=1), (above & ~truth).sum(axis=1)
        return np.stack([tp, fp, truth.sum() - tp, (~truth).sum() - fp]).astype(float)

    def value(self, state):
        tp, fp, fn, tn = state
        tpr = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
        fpr = np.divide(fp, fp + tn, out=np.zeros_like(fp), where=(fp + tn) > 0)
        return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))


class MeanIoU(Metric):
    """Mean over classes of TP / (TP + FP + FN), from a confusion matrix summed over batches. Targets are
    integer labels (N, ...) (one-hot targets are argmaxed); predictions are labels, or class scores
    (N, ..., num_classes), argmaxed. Classes absent from both are left out of the mean, as Keras."""
    name = "mean_io_u"

    def __init__(self, num_classes, name=None):
        self.num_classes = int(num_classes)
        super().__init__(name)

    def counts(self, y_true, y_pred):
        c, y_true = self.num_classes, np.asarray(y_true)
        if y_true.ndim == y_pred.ndim and y_true.ndim > 1 and y_true.shape[-1] == 1:
            y_true = y_true[..., 0]
        if y_pred.ndim == y_true.ndim + 1:  # class scores against labels
            y_pred = y_pred.argmax(axis=-1)
        elif y_true.shape == y_pred.shape and y_pred.shape[-1] == c > 1 and np.any(y_pred != np.round(y_pred)):
            y_true, y_pred = y_true.argmax(axis=-1), y_pred.argmax(axis=-1)  # one-hot targets, class scores
        truth, predicted = y_true.reshape(-1).astype(np.int64), y_pred.reshape(-1).astype(np.int64)
        if truth.size != predicted.size:
            raise ValueError(f"{self.name}: {truth.size} target labels but {predicted.size} predicted labels")
        if truth.size and (min(truth.min(), predicted.min()) < 0 or max(truth.max(), predicted.max()) >= c):
            raise ValueError(f"{self.name}: labels must lie in [0, {c}) for num_classes={c}")
        return np.bincount(truth * c + predicted, minlength=c * c).reshape(c, c).astype(float)

    def value(self, confusion):
        tp = np.diag(confusion)
        union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
        present = union > 0
        return float(np.mean(tp[present] / union[present])) if present.any() else 0.0


# ---------------------------------------------------------------------- by name

_MEANS = {
    "binary_accuracy": binary_accuracy, "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "top_k_categorical_accuracy": top_k_categorical_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
    "mae": mean_absolute_error, "mean_absolute_error": mean_absolute_error,
    "mse": mean_squared_error, "mean_squared_error": mean_squared_error,
}
_STATEFUL = {"precision": Precision, "recall": Recall, "auc": AUC}
_ACCURACY = ("accuracy", "acc")


def is_builtin(name):
    return name in _MEANS or name in _STATEFUL or name in _ACCURACY


class _Accuracy:
    """'accuracy' for a compiled model: resolved from the loss's name, else from each batch's shapes."""
    __name__ = "accuracy"

    def __init__(self, loss_name):
        self.loss_name = loss_name

    def __call__(self, y_true, y_pred):
        return _accuracy_for(self.loss_name, y_true, y_pred)(y_true, y_pred)


def get(metric, loss=None):
    """(name, metric) for a Keras metric name, a Metric object, or a callable fn(y_true, y_pred)."""
    if isinstance(metric, str):
        if metric in _ACCURACY:
            return "accuracy", _Accuracy(getattr(loss, "name", None))
        if metric in _STATEFUL:
            return metric, _STATEFUL[metric]()
        if metric not in _MEANS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(_MEANS) + sorted(_STATEFUL)}, "
                             "'accuracy', or pass a callable")
        return metric, _MEANS[metric]
    if isinstance(metric, Metric):
        return metric.name, metric
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    raise TypeError(f"a metric must be a name or a callable, got {type(metric).__name__}")


# ---------------------------------------------------------------------- what training calls

def _built_in(fn):
    return isinstance(fn, (Metric, _Accuracy)) or fn in _MEANS.values()


def batch_value(fn, y_true, y_pred):
    """One batch's value for the epoch's mean: a built-in metric reads Keras' layout (`keras_layout`); a
    Metric adds the batch to its counts (its epoch value is its `result()`, see `Mean.of`) and gives 0."""
    if not _built_in(fn):
        return float(fn(y_true, y_pred))
    y_true, y_pred = keras_layout(y_true, y_pred)
    if isinstance(fn, Metric):
        fn.update_state(y_true, y_pred)
        return 0.0
    return float(fn(y_true, y_pred))


def reset_states(metrics):
    """Start every Metric of a compiled model's [(name, fn)] list afresh (before an evaluation)."""
    for _, fn in metrics:
        if isinstance(fn, Metric):
            fn.reset_state()


def final_value(fn, mean):
    """The epoch's value of a metric whose batch values averaged to `mean`."""
    return fn.result() if isinstance(fn, Metric) else mean


class Mean:
    """A running mean weighted by batch size; for a Metric (`Mean.of`), the metric's own result."""

    def __init__(self, metric=None):
        self.total, self.count, self.metric = 0.0, 0, metric
        if metric is not None:
            metric.reset_state()

    @classmethod
    def of(cls, fn):
        return cls(fn if isinstance(fn, Metric) else None)

    def update(self, value, n):
        self.total += float(value) * n
        self.count += n

    def result(self):
        if self.metric is not None:
            return self.metric.result()
        return self.total / self.count if self.count else float("nan")

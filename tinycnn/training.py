"""The Keras-style training API every Module has: compile, fit, evaluate, predict, summary, save.

    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, batch_size=32, epochs=10, validation_split=0.1)

`fit` runs, per batch: forward -> loss -> backward -> optimizer step, with a tqdm bar per epoch. Inputs are
NumPy arrays: channels-last (N, H, W, C) for a Sequential (as the tutorial builds them), channels-first
(N, C, H, W) for a Module subclass (as PyTorch). A loss that becomes NaN or inf stops training with an error
naming the epoch and batch; checkpoints already written are left intact.

`fit(..., distributed=tinycnn.distributed.auto())` trains data-parallel under mpiexec: every step runs
through the context's `sum_step` (a single process's context, `SingleProcess`, runs it as it is). See
tinycnn/distributed.py.
"""
import math
import time

import numpy as np

from .device import kernels_for
from .distributed import SingleProcess
from .metrics import Mean, batch_value, final_value, reset_states
from .fuse import inference_form
from .random import generator
from .tensor import Tensor, no_grad


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged)."""


class History:
    def __init__(self):
        self.history, self.epoch = {}, []

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


class TrainingAPI:
    optimizer = None
    stop_training = False

    # ------------------------------------------------------------------ compile
    def compile(self, loss, optimizer="adam", metrics=None):
        from . import losses, metrics as metrics_module, optimizers
        self._ensure_built()
        self.loss = losses.get(loss)
        self.metrics = [metrics_module.get(m, loss=self.loss) for m in (metrics or [])]
        if hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad"):
            self.optimizer, self._optimizer_spec = optimizer, None
        else:  # built now, or at the start of fit once a first batch has created the weights
            self._optimizer_spec, self.optimizer = optimizers.get(optimizer), None
            self._ensure_optimizer()
        return self

    def _ensure_optimizer(self):
        if self.optimizer is None and next(iter(self.parameters()), None) is not None:
            self.optimizer = self._optimizer_spec.build(list(self.parameters()))

    def _ensure_built(self):
        """Build the weights of a model whose input shape is known (a Sequential with input_shape)."""
        shape = getattr(self, "build_input_shape", None)
        if shape is not None and not getattr(self, "_weights_built", False):
            was_training = self.training
            self.eval()
            with no_grad():
                self(Tensor(np.zeros((1,) + tuple(shape), np.float32), device=self.device))
            self.train(was_training)
            self._weights_built = True

    def _check_compiled(self):
        if getattr(self, "loss", None) is None:
            raise RuntimeError("call model.compile(loss=..., optimizer=...) before fit or evaluate")

    # ------------------------------------------------------------------ data
    def _to_input_tensor(self, xb):
        if self.input_format == "channels_last" and xb.ndim == 4:
            xb = xb.transpose(0, 3, 1, 2)
        return Tensor(np.ascontiguousarray(xb), device=self.device)

    def _targets_for_loss(self, yb):
        """Channels-last image targets (N, H, W, C) follow the model's NCHW outputs."""
        if self.input_format == "channels_last" and yb.ndim == 4 and yb.shape[-1] > 1:
            return np.ascontiguousarray(yb.transpose(0, 3, 1, 2))
        return yb

    def _to_user_layout(self, out):
        if self.input_format == "channels_last" and out.ndim == 4:
            return np.ascontiguousarray(out.transpose(0, 2, 3, 1))
        return out

    def _record_input_shape(self, x):
        shape = x.shape[1:]
        if self.input_format == "channels_last" and len(shape) == 3:
            shape = (shape[2], shape[0], shape[1])
        if getattr(self, "build_input_shape", None) is None:
            self.build_input_shape = tuple(int(s) for s in shape)

    # ------------------------------------------------------------------ fit
    def fit(self, x, y, batch_size=32, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, initial_epoch=0, augment=None, distributed=None):
        """Train for `epochs` epochs. `augment(xb, yb) -> (xb, yb)` transforms each training batch (in the
        caller's layout). `distributed` (tinycnn.distributed.auto() under mpiexec) trains data-parallel, with
        `batch_size` the global batch. Returns a History whose `.history` maps metric names to per-epoch values."""
        dist = distributed or SingleProcess()
        self._check_compiled()
        x, y = _check_arrays(x, y, "fit")
        self._record_input_shape(x)
        self._ensure_built()
        self._ensure_optimizer()
        if self.optimizer is None:
            raise RuntimeError("the model has no trainable parameters")
        if validation_data is not None:
            x_val, y_val = _check_arrays(*validation_data, "validation_data")
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            n_val = int(math.ceil(len(x) * validation_split))
            if n_val >= len(x):
                raise ValueError(f"validation_split={validation_split} leaves no training data for {len(x)} samples")
            x, x_val, y, y_val = x[:-n_val], x[-n_val:], y[:-n_val], y[-n_val:]  # Keras: the last part
        else:
            x_val = y_val = None
        callbacks = dist.callbacks_here(callbacks or [])  # under MPI, rank 0 alone writes files
        verbose = verbose if dist.is_root else 0
        history = History()
        self.stop_training = False
        dist.begin_fit(self, len(x), batch_size)
        for cb in callbacks:
            cb.on_train_begin(self)
        try:
            for epoch in range(initial_epoch, epochs):
                dist.collectively(_call_each, callbacks, "on_epoch_begin", epoch)
                logs = self._train_epoch(x, y, batch_size, epoch, epochs, verbose, shuffle, class_weight, augment,
                                         dist)
                dist.end_epoch(self)
                if x_val is not None:
                    val = self.evaluate(x_val, y_val, batch_size=batch_size, verbose=0, return_dict=True,
                                        distributed=distributed)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                history.append(epoch, logs)
                if verbose:
                    print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(_format(k, v) for k, v in logs.items()))
                dist.collectively(_call_each, callbacks, "on_epoch_end", epoch, logs)
                if dist.any(self.stop_training):
                    break
        finally:
            for cb in callbacks:
                cb.on_train_end()
            dist.end_fit()
        self.history = history
        return history

    def _train_epoch(self, x, y, batch_size, epoch, epochs, verbose, shuffle, class_weight, augment, dist):
        self.train()
        order = dist.same_order(generator().permutation(len(x))) if shuffle else np.arange(len(x))
        loss_mean, metric_means = _new_means(self.metrics)
        start = time.perf_counter()
        batches = range(0, len(x), batch_size)
        bar = _progress(batches, epoch, epochs, verbose)
        for batch_number, begin in enumerate(bar):
            index = order[begin:begin + batch_size]  # the global batch; under MPI each rank takes its shard
            shard = dist.shard(index)
            stats = dist.sum_step(lambda: self._local_step(x, y, shard, len(index), class_weight, augment),
                                  2 + len(self.metrics))
            count, value = stats[0], stats[1] / stats[0]
            if not math.isfinite(value):
                raise TrainingError(f"the loss became {value} at epoch {epoch + 1}, batch {batch_number + 1} "
                                    "(learning rate too high, or NaN/inf in the data?); training stopped, "
                                    "checkpoints saved before this batch are intact")
            self.optimizer.step()
            loss_mean.update(value, count)
            for mean, total in zip(metric_means, stats[2:]):
                mean.update(total / count, count)
            if verbose and hasattr(bar, "set_postfix"):
                bar.set_postfix({"loss": f"{loss_mean.result():.4f}",
                                 **{n: f"{m.result():.4f}" for (n, _), m in zip(self.metrics, metric_means)}})
        seconds = time.perf_counter() - start
        logs = {"loss": loss_mean.result()}
        logs.update({name: m.result() for (name, _), m in zip(self.metrics, metric_means)})
        logs["images_per_sec"] = len(x) / seconds if seconds > 0 else float("nan")
        return logs

    def _local_step(self, x, y, index, batch_total, class_weight, augment):
        """Forward and backward on the samples `index` of a batch of `batch_total`, the gradients scaled by
        len(index) / batch_total (1 for one process), so that summing them over the ranks gives the batch's
        gradient. Returns [n, loss·n, metric·n for each metric]."""
        self.optimizer.zero_grad()
        n = len(index)
        if n == 0:  # more ranks than samples in this batch: nothing to add
            return np.zeros(2 + len(self.metrics))
        xb, yb = x[index], y[index]
        if augment is not None:
            xb, yb = augment(xb, yb)
        weights = None if class_weight is None else np.array([class_weight[int(v)] for v in np.ravel(yb)[:len(yb)]],
                                                            np.float32)
        out = self(self._to_input_tensor(xb))
        loss = self.loss(out, self._targets_for_loss(yb), sample_weight=weights) if weights is not None \
            else self.loss(out, self._targets_for_loss(yb))
        value = float(loss.item())
        if not math.isfinite(value):  # no backward: the caller stops training on this loss
            return np.array([n, value * n] + [0.0] * len(self.metrics))
        if n == batch_total:
            loss.backward()
        else:  # d(global batch's mean loss) / d(this shard's mean loss) = n / batch_total
            loss.backward(kernels_for(loss.device).elementwise.full(loss.shape, n / batch_total, loss.dtype))
        return np.array([n, value * n] + [metric * n for metric in _metric_values(self.metrics, yb, out)])

    # ------------------------------------------------------------------ evaluate / predict
    def evaluate(self, x, y, batch_size=32, verbose=0, return_dict=False, distributed=None):
        """Loss and metrics over (x, y) in eval mode; a list [loss, *metrics] or a dict. With `distributed`,
        each rank evaluates its contiguous share of the samples and the sums are reduced."""
        dist = distributed or SingleProcess()
        self._check_compiled()
        x, y = _check_arrays(x, y, "evaluate")
        self._record_input_shape(x)
        self._ensure_built()
        rows = dist.shard(range(len(x)))  # this rank's contiguous share: all of it for one process
        per_rank_batch = max(1, math.ceil(batch_size / dist.size))
        reset_states(self.metrics)  # a Metric counts this evaluation's batches only
        sums = dist.sum_values(lambda: self._evaluation_sums(x[rows.start:rows.stop], y[rows.start:rows.stop],
                                                             per_rank_batch), 2 + len(self.metrics))
        results = {"loss": sums[1] / sums[0]}
        results.update({name: final_value(fn, total / sums[0]) for (name, fn), total in zip(self.metrics, sums[2:])})
        if verbose and dist.is_root:
            print(" - ".join(_format(k, v) for k, v in results.items()))
        return results if return_dict else list(results.values())

    def _evaluation_sums(self, x, y, batch_size):
        """[n, loss·n, metric·n for each metric] over (x, y), in eval mode."""
        sums = np.zeros(2 + len(self.metrics))
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for begin in range(0, len(x), batch_size):
                    xb, yb = x[begin:begin + batch_size], y[begin:begin + batch_size]
                    out = inference_form(self)(self._to_input_tensor(xb))
                    loss = float(self.loss(out, self._targets_for_loss(yb)).item())
                    sums += len(xb) * np.array([1.0, loss] + _metric_values(self.metrics, yb, out))
        finally:
            self.train(was_training)
        return sums

    def predict(self, x, batch_size=32, verbose=0):
        """Model outputs for x as a NumPy array (channels-last image outputs for a Sequential)."""
        x = _check_x(x, "predict")
        self._record_input_shape(x)
        self._ensure_built()
        was_training = self.training
        self.eval()
        outputs = []
        try:
            with no_grad():
                for begin in range(0, len(x), batch_size):
                    out = inference_form(self)(self._to_input_tensor(x[begin:begin + batch_size]))
                    outputs.append(self._to_user_layout(out.numpy()))
        finally:
            self.train(was_training)
        return np.concatenate(outputs, axis=0)

    # ------------------------------------------------------------------ saving
    def save(self, path, include_optimizer=True):
        """Write the architecture, weights (and optimizer state) to one file, atomically."""
        from .saving import save_model
        save_model(self, path, include_optimizer=include_optimizer)


# ---------------------------------------------------------------------- helpers

def _check_x(x, where):
    if isinstance(x, Tensor):
        x = x.numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: inputs must be a NumPy array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{where}: inputs must be a float array, got dtype {x.dtype} "
                        "(scale images to [0, 1], e.g. x.astype('float32') / 255)")
    if x.ndim < 2:
        raise ValueError(f"{where}: inputs need a batch axis and features, got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{where}: empty input (shape {x.shape})")
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{where}: inputs contain NaN or inf in {len(bad)} sample(s), first at index {bad[:5].tolist()}")
    return x.astype(np.float32, copy=False) if x.dtype != np.float64 else x


def _check_arrays(x, y, where):
    x = _check_x(x, where)
    y = y.numpy() if isinstance(y, Tensor) else np.asarray(y)
    if len(y) != len(x):
        raise ValueError(f"{where}: {len(x)} inputs but {len(y)} targets")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{where}: targets contain NaN or inf")
    return x, y


def _new_means(metrics):
    """The loss's running mean and each metric's (a Metric's own counts, reset: tinycnn/metrics.py)."""
    return Mean(), [Mean.of(fn) for _, fn in metrics]


def _metric_values(metrics, yb, out):
    """Each metric's value (a batch mean) on this batch."""
    if not metrics:
        return []
    pred = out.numpy()
    return [batch_value(fn, yb, pred) for _, fn in metrics]


def _call_each(callbacks, method, *args):
    for cb in callbacks:
        getattr(cb, method)(*args)


def _progress(batches, epoch, epochs, verbose):
    if not verbose:
        return batches
    from tqdm import tqdm
    return tqdm(batches, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=False)


def _format(key, value):
    return f"{key}: {value:.1f}" if key == "images_per_sec" else f"{key}: {value:.4f}"

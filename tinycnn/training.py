"""The Keras-style training API every Module has: compile, fit, evaluate, predict, summary, save.

    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, batch_size=32, epochs=10, validation_split=0.1)

`fit` runs, per batch: forward -> loss -> backward -> optimizer step, with a tqdm bar per epoch. Inputs are
channels-last (N, H, W, C) for a Sequential (as the tutorial builds them), channels-first (N, C, H, W) for a
Module subclass (as PyTorch), given as NumPy arrays (any numeric dtype: integers are cast to float32, not
rescaled, as Keras does; a list of arrays is stacked), or as a stream of batches: a tinycnn.data.Dataset, or
any iterable of `(x, y)` / `(x, y, sample_weight)` batches, a generator with `steps_per_epoch` (see
tinycnn/data/adapter.py). `validation_data` takes the same. A loss that becomes NaN or inf stops training
with an error naming the epoch and batch; checkpoints already written are left intact.

`fit(..., distributed=tinycnn.distributed.auto())` trains data-parallel under mpiexec: every step runs
through the context's `sum_step` (a single process's context, `SingleProcess`, runs it as it is). See
tinycnn/distributed.py. A Dataset is sharded at its source (`Dataset.distribute`), so each rank reads and decodes
only its own elements, its batches a 1/size share of the global batch; every other iterable is read whole on
every rank (it must give every rank the same batches), each rank taking its slice of each batch. The ranks
step together, one small all-reduce of the batch sizes per step, until every rank has run out.
"""
import math
import time

import numpy as np

from .device import kernels_for
from .data.adapter import BatchStream, check_arrays, check_x, is_array_input
from .data.dataset import Dataset
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
        if getattr(optimizer, "built", True) and hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad"):
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
    def fit(self, x, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, initial_epoch=0, steps_per_epoch=None,
            validation_steps=None, augment=None, distributed=None):
        """Train for `epochs` epochs on arrays (x, y) or on a Dataset / iterable of batches x (then y is None,
        and batch_size and shuffle are the data's own). `steps_per_epoch` / `validation_steps`: batches per epoch
        (needed for a generator that never ends). `augment(xb, yb) -> (xb, yb)` transforms each training batch
        (in the caller's layout). `distributed` (tinycnn.distributed.auto() under mpiexec) trains data-parallel,
        with `batch_size` the global batch. Returns a History whose `.history` maps metric names to per-epoch
        values."""
        dist = distributed or SingleProcess()
        self._check_compiled()
        stream = None
        if is_array_input(x):
            x, y = check_arrays(x, y, "fit")
            self._record_input_shape(x)
        else:
            stream = _stream(x, y, "fit", steps_per_epoch, dist)
            self._record_input_shape(stream.first()[0])
        self._ensure_built()
        self._ensure_optimizer()
        if self.optimizer is None:
            raise RuntimeError("the model has no trainable parameters")
        if validation_data is not None:
            x_val, y_val = _validation_data(validation_data, validation_steps, dist)
        elif validation_split and stream is not None:
            raise ValueError("fit: validation_split works on arrays only; give a Dataset or iterable its "
                             "validation data as validation_data=")
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
        # a stream's batch sizes are its own: begin_fit checks nothing of them (the steps handle empty shares)
        dist.begin_fit(self, *((len(x), batch_size) if stream is None else (dist.size, dist.size)))
        for cb in callbacks:
            cb.on_train_begin(self)
        try:
            for epoch in range(initial_epoch, epochs):
                dist.collectively(_call_each, callbacks, "on_epoch_begin", epoch)
                if stream is None:
                    logs = self._train_epoch(x, y, batch_size, epoch, epochs, verbose, shuffle, class_weight,
                                             augment, dist, steps_per_epoch)
                else:
                    logs = self._train_stream_epoch(stream, epoch, epochs, verbose, class_weight, augment, dist)
                if logs is None:  # a one-shot iterator ran out before this epoch began
                    stream.warn_ran_out()
                    break
                dist.end_epoch(self)
                if x_val is not None:
                    val = self.evaluate(x_val, y_val, batch_size=batch_size, verbose=0, return_dict=True,
                                        steps=validation_steps, distributed=distributed)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                history.append(epoch, logs)
                if verbose:
                    print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(_format(k, v) for k, v in logs.items()))
                dist.collectively(_call_each, callbacks, "on_epoch_end", epoch, logs)
                if stream is not None and dist.any(stream.exhausted):
                    stream.warn_ran_out()
                    break
                if dist.any(self.stop_training):
                    break
        finally:
            for cb in callbacks:
                cb.on_train_end()
            dist.end_fit()
        self.history = history
        return history

    def _train_epoch(self, x, y, batch_size, epoch, epochs, verbose, shuffle, class_weight, augment, dist,
                     steps=None):
        self.train()
        order = dist.same_order(generator().permutation(len(x))) if shuffle else np.arange(len(x))
        loss_mean, metric_means = _new_means(self.metrics)
        start = time.perf_counter()
        batches = range(0, len(x), batch_size)[:steps]
        bar = _progress(batches, epoch, epochs, verbose)
        for batch_number, begin in enumerate(bar):
            index = order[begin:begin + batch_size]  # the global batch; under MPI each rank takes its shard
            shard = dist.shard(index)
            stats = dist.sum_step(lambda: self._local_step(x, y, shard, len(index), class_weight, augment),
                                  2 + len(self.metrics))
            self._take_step(stats, epoch, batch_number, loss_mean, metric_means, bar, verbose)
        return self._epoch_logs(loss_mean, metric_means, time.perf_counter() - start)

    def _train_stream_epoch(self, stream, epoch, epochs, verbose, class_weight, augment, dist):
        """One epoch over a BatchStream; None if it had no batch at all (a one-shot source that ran out)."""
        self.train()
        loss_mean, metric_means = _new_means(self.metrics)
        start = time.perf_counter()
        bar = _progress(_global_batches(stream, dist), epoch, epochs, verbose, total=stream.steps)
        for batch_number, (xb, yb, weight, total) in enumerate(bar):
            index = np.arange(len(xb))
            stats = dist.sum_step(lambda: self._local_step(xb, yb, index, total, class_weight, augment, weight),
                                  2 + len(self.metrics))
            self._take_step(stats, epoch, batch_number, loss_mean, metric_means, bar, verbose)
        if loss_mean.count == 0:
            return None
        return self._epoch_logs(loss_mean, metric_means, time.perf_counter() - start)

    def _take_step(self, stats, epoch, batch_number, loss_mean, metric_means, bar, verbose):
        """Check the step's global [n, loss·n, metric·n...], take the optimizer step, update the means and bar."""
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

    def _epoch_logs(self, loss_mean, metric_means, seconds):
        logs = {"loss": loss_mean.result()}
        logs.update({name: m.result() for (name, _), m in zip(self.metrics, metric_means)})
        logs["images_per_sec"] = loss_mean.count / seconds if seconds > 0 else float("nan")
        return logs

    def _local_step(self, x, y, index, batch_total, class_weight, augment, sample_weight=None):
        """Forward and backward on the samples `index` of a batch of `batch_total`, the gradients scaled by
        len(index) / batch_total (1 for one process), so that summing them over the ranks gives the batch's
        gradient. `sample_weight` (per sample of x) multiplies the class weights. Returns [n, loss·n,
        metric·n for each metric]."""
        self.optimizer.zero_grad()
        n = len(index)
        if n == 0:  # more ranks than samples in this batch: nothing to add
            return np.zeros(2 + len(self.metrics))
        xb, yb = x[index], y[index]
        if augment is not None:
            xb, yb = augment(xb, yb)
        weights = None if class_weight is None else np.array([class_weight[int(v)] for v in _class_indices(yb)],
                                                            np.float32)
        if sample_weight is not None:
            weights = sample_weight[index] if weights is None else weights * sample_weight[index]
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
    def evaluate(self, x, y=None, batch_size=32, verbose=0, return_dict=False, steps=None, distributed=None):
        """Loss and metrics over arrays (x, y), or over a Dataset / iterable of batches x, in eval mode; a list
        [loss, *metrics] or a dict. `steps`: at most that many batches. With `distributed`, each rank
        evaluates its share of the samples and the sums are reduced."""
        dist = distributed or SingleProcess()
        self._check_compiled()
        if is_array_input(x):
            x, y = check_arrays(x, y, "evaluate")
            self._record_input_shape(x)
            rows = dist.shard(range(len(x)))  # this rank's contiguous share: all of it for one process
            batches = _array_batches(x[rows.start:rows.stop], y[rows.start:rows.stop],
                                     max(1, math.ceil(batch_size / dist.size)), steps)
        else:
            stream = x if isinstance(x, BatchStream) else _stream(x, y, "evaluate", steps, dist)
            self._record_input_shape(stream.first()[0])
            batches = ((xb, yb, weight) for xb, yb, weight, _ in _rank_batches(stream, dist))
        self._ensure_built()
        reset_states(self.metrics)  # a Metric counts this evaluation's batches only
        sums = dist.sum_values(lambda: self._evaluation_sums(batches), 2 + len(self.metrics))
        if sums[0] == 0:
            raise ValueError("evaluate: the data holds no sample (a generator used up by an earlier epoch? give "
                             "validation_steps, or a Dataset, which starts afresh every epoch)")
        results = {"loss": sums[1] / sums[0]}
        results.update({name: final_value(fn, total / sums[0]) for (name, fn), total in zip(self.metrics, sums[2:])})
        if verbose and dist.is_root:
            print(" - ".join(_format(k, v) for k, v in results.items()))
        return results if return_dict else list(results.values())

    def _evaluation_sums(self, batches):
        """[n, loss·n, metric·n for each metric] over (x, y, sample_weight) batches, in eval mode."""
        sums = np.zeros(2 + len(self.metrics))
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for xb, yb, weight in batches:
                    out = inference_form(self)(self._to_input_tensor(xb))
                    loss = float((self.loss(out, self._targets_for_loss(yb)) if weight is None else
                                  self.loss(out, self._targets_for_loss(yb), sample_weight=weight)).item())
                    sums += len(xb) * np.array([1.0, loss] + _metric_values(self.metrics, yb, out))
        finally:
            self.train(was_training)
        return sums

    def predict(self, x, batch_size=32, verbose=0, steps=None):
        """Model outputs for x as a NumPy array (channels-last image outputs for a Sequential). x: arrays, or
        a Dataset / iterable of batches (of their inputs: a batch's y, if any, is not used)."""
        if is_array_input(x):
            x = check_x(x, "predict")
            self._record_input_shape(x)
            batches = (x[begin:begin + batch_size] for begin in range(0, len(x), batch_size)[:steps])
        else:
            stream = BatchStream(x, "predict", steps, targets=False)
            self._record_input_shape(stream.first()[0])
            batches = (xb for xb, _, _ in stream.epoch())
        self._ensure_built()
        was_training = self.training
        self.eval()
        outputs = []
        try:
            with no_grad():
                for xb in batches:
                    out = inference_form(self)(self._to_input_tensor(xb))
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

def _stream(x, y, where, steps, dist):
    """A BatchStream over a Dataset or iterable x; under MPI a Dataset is sharded at its source."""
    if y is not None:
        raise ValueError(f"{where}: y must be None when x is a Dataset or an iterable of batches "
                         "(the batches carry their targets)")
    if dist.size > 1 and isinstance(x, Dataset):
        x = x.distribute(dist.size, dist.rank)
    stream = BatchStream(x, where, steps)
    stream.rank_slices = dist.size > 1 and not isinstance(x, Dataset)
    return stream


def _validation_data(data, steps, dist):
    """(x, y) arrays, or (a BatchStream kept across epochs, None)."""
    if isinstance(data, (tuple, list)) and len(data) in (2, 3) and is_array_input(data[0]):
        if len(data) == 3:
            raise ValueError("validation_data: (x, y, sample_weight) arrays are not supported; give (x, y), "
                             "or a Dataset of (x, y, sample_weight) batches")
        return check_arrays(data[0], data[1], "validation_data")
    return _stream(data, None, "validation_data", steps, dist), None


def _array_batches(x, y, batch_size, steps):
    for begin in range(0, len(x), batch_size)[:steps]:
        yield x[begin:begin + batch_size], y[begin:begin + batch_size], None


def _rank_batches(stream, dist):
    """One epoch of this rank's (x, y, sample_weight, batch size over all ranks). Under MPI an iterable that
    is not a Dataset gives every rank the same batches, and each takes its contiguous slice."""
    for xb, yb, weight in stream.epoch():
        if getattr(stream, "rank_slices", False):
            rows = dist.shard(range(len(xb)))
            total, xb, yb = len(xb), xb[rows.start:rows.stop], yb[rows.start:rows.stop]
            weight = None if weight is None else weight[rows.start:rows.stop]
        else:
            total = len(xb)
        yield xb, yb, weight, total


def _global_batches(stream, dist):
    """The training steps of one epoch: (x, y, sample_weight, global batch size). Under MPI all ranks step
    together (one all-reduce of the batch sizes per step) until every rank has run out; a rank that ran out
    first takes part with an empty share. With sync_bn every rank needs a sample, so the epoch ends there."""
    batches = _rank_batches(stream, dist)
    if dist.size == 1:
        yield from batches
        return
    template = stream.first()
    while True:
        batch = next(batches, None)
        n = 0 if batch is None else len(batch[0])
        total, busy, idle = dist.sum_values(lambda: np.array([n, n > 0, n == 0], np.float64), 3)
        if busy == 0 or (dist.sync_bn and idle > 0):
            return
        if batch is None:
            batch = tuple(None if v is None else v[:0] for v in template) + (0,)
        yield batch[:3] + (int(total),)


def _class_indices(yb):
    """Each sample's class, for class_weight: the argmax of one-hot rows, else the (first) label."""
    if yb.ndim == 2 and yb.shape[1] > 1:
        return yb.argmax(axis=1)
    return np.ravel(yb)[:len(yb)] if yb.ndim == 1 or yb.size == len(yb) else yb.reshape(len(yb), -1)[:, 0]


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


def _progress(batches, epoch, epochs, verbose, total=None):
    if not verbose:
        return batches
    from tqdm import tqdm
    return tqdm(batches, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=False, total=total)


def _format(key, value):
    return f"{key}: {value:.1f}" if key == "images_per_sec" else f"{key}: {value:.4f}"

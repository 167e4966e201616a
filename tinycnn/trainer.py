"""The training engine of every Model (tinycnn.Model: Sequential, functional, subclassed), in Keras 3's shape:
compile, then fit / evaluate / predict built on three public steps that a subclass may override.

    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, batch_size=32, epochs=10, validation_split=0.1)

    train_step(data)   -> logs   one batch: forward, loss, backward, (the gradients summed over the ranks under
                                 MPI), optimizer step; returns the epoch's running {"loss": ..., metric: ...}
    test_step(data)    -> logs   one batch's loss and metrics in inference form, added to the running logs
    predict_step(data) -> out    one batch's outputs (a Tensor, or a list of them)

Both run the model's inference form (tinycnn/fuse.py) through an inference plan (tinycnn/plan.py): the kernel
calls of the pass recorded once per batch shape, then replayed; `tinycnn.plan.plans_off()` switches it off.

`data` is a tuple (x, y, sample_weight): x the model's input Tensor (a list of them for several inputs), already
in the model's layout (NCHW inside: fit transposes a channels-last model's arrays once per batch); y the targets
as NumPy arrays in the caller's layout (a list for several outputs); sample_weight None or one weight per
sample. `compute_loss(x, y, y_pred, sample_weight)` and `compute_metrics(...)` are the pieces a train_step of
one's own calls (Keras' names).

Inputs are channels-last (N, H, W, C) arrays for a Sequential or functional Model (as Keras), channels-first
(N, C, H, W) for a subclassed Model (as PyTorch; `input_format = "channels_last"` in the class says otherwise);
NumPy arrays of any numeric dtype (integers are cast to float32, not rescaled, as Keras does), a list of arrays
(samples, stacked; or, for a model with several inputs, one array per input: tinycnn/nested.py), or a stream of
batches: a tinycnn.data.Dataset or any iterable of `(x, y)` / `(x, y, sample_weight)` batches (a generator with
`steps_per_epoch`; tinycnn/data/adapter.py). A loss that becomes NaN or inf stops training with an error naming
the epoch and batch; checkpoints already written are left intact. Callbacks (tinycnn/callbacks.py) get Keras'
hooks; History and the progress bar are callbacks.

`fit(..., distributed=tinycnn.distributed.auto())` trains data-parallel under mpiexec: each train_step runs its
forward and backward through the context's `sum_step` (a single process's context, `SingleProcess`, runs it as
it is). See tinycnn/distributed.py. A Dataset is sharded at its source (`Dataset.distribute`), so each rank reads
and decodes only its own elements, its batches a 1/size share of the global batch; every other iterable is read
whole on every rank (it must give every rank the same batches), each rank taking its slice of each batch.
"""
import math
import time

import numpy as np

from . import nested
from .callbacks import CallbackList, History, ProgbarLogger, TerminateOnNaN, format_logs
from .data.adapter import BatchStream, check_arrays, check_x, is_array_input
from .data.dataset import Dataset
from .device import kernels_for
from .distributed import SingleProcess
from .fuse import inference_form
from .metrics import batch_value, final_value, reset_states
from .plan import infer
from .random import generator
from .tensor import Tensor, no_grad


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged)."""


DIVERGENCE_FACTOR = 1e3  # fit stops when an epoch's running loss exceeds this many times the first batch's loss


class Trainer:
    """compile / fit / evaluate / predict / save for a Module that is a Model (tinycnn/model.py)."""
    optimizer = None
    loss = None
    stop_training = False
    _distribution = SingleProcess()

    # ------------------------------------------------------------------ compile
    def compile(self, loss, optimizer="adam", metrics=None, loss_weights=None):
        """`loss`: a name, a Loss or a callable (pred, y); for several outputs also a list or a dict by output
        name, weighted by `loss_weights`. `metrics`: Keras' names or callables (y_true, y_pred), applied to every
        output."""
        from . import losses, metrics as metrics_module, optimizers
        self._ensure_built()
        names = self._output_names()
        if len(names) > 1:
            self.loss = nested.output_losses(loss, loss_weights, names, losses.get)
            self.metrics = [(f"{name}_{metric_name}", fn) for name, output_loss in zip(names, self.loss.losses)
                            for metric_name, fn in (metrics_module.get(m, loss=output_loss) for m in metrics or [])]
            self._metric_outputs = [i for i in range(len(names)) for _ in (metrics or [])]
        else:
            self.loss = losses.get(loss)
            self.metrics = [metrics_module.get(m, loss=self.loss) for m in (metrics or [])]
            self._metric_outputs = None
        if getattr(optimizer, "built", True) and hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad"):
            self.optimizer, self._optimizer_spec = optimizer, None
        else:  # built now, or at the start of fit once a first batch has created the weights
            self._optimizer_spec, self.optimizer = optimizers.get(optimizer), None
            self._ensure_optimizer()
        return self

    def _ensure_optimizer(self):
        if self.optimizer is None and next(iter(self.parameters()), None) is not None:
            self.optimizer = self._optimizer_spec.build(list(self.parameters()))

    builds_through_inference_form = False  # see _ensure_built

    def _ensure_built(self, for_inference=False):
        """Build the weights of a model whose input shape is known (a Sequential with input_shape): a forward on
        one zero sample, in eval mode. For predict (for_inference), a model whose `builds_through_inference_form`
        is true (a Sequential of plain layers) runs that forward through its inference form (tinycnn/fuse.py),
        so that a conv → ReLU → 2×2 max-pool runs fused, as predict's plan runs it, and the unfused pool is not
        compiled (timings: benchmarks/RESULTS.md, "Cold start")."""
        shape = getattr(self, "build_input_shape", None)
        if shape is not None and not getattr(self, "_weights_built", False):
            was_training = self.training
            self.eval()
            with no_grad():
                x = Tensor(np.zeros((1,) + tuple(shape), np.float32), device=self.device)
                if for_inference and self.builds_through_inference_form:
                    inference_form(self)(x)
                else:
                    self(x)
            self.train(was_training)
            self._weights_built = True

    def _check_compiled(self):
        if self.loss is None:
            raise RuntimeError("call model.compile(loss=..., optimizer=...) before fit or evaluate")

    # ------------------------------------------------------------------ the three steps
    def train_step(self, data):
        """One optimizer step on a batch (see the module docstring); the epoch's running logs."""
        x, y, sample_weight = data
        stats = self._distribution.sum_step(lambda: self._gradients(x, y, sample_weight), 2 + len(self.metrics))
        value = stats[1] / stats[0]
        if not math.isfinite(value) and getattr(self, "_quiet_nan", False):
            return {"loss": value}  # a TerminateOnNaN callback ends training (no step on this batch)
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} at epoch {self._position[0] + 1}, batch "
                                f"{self._position[1] + 1} (learning rate too high, or NaN/inf in the data?); "
                                "training stopped, checkpoints saved before this batch are intact")
        self.optimizer.step()
        logs = self._tally.add(stats)
        self._check_divergence(value, logs["loss"])
        return logs

    def _check_val_loss(self, val_loss, epoch):
        """TrainingError for a val_loss that is not finite or above the divergence limit (before the epoch's
        checkpoints: those of earlier epochs are kept)."""
        limit = DIVERGENCE_FACTOR * max(abs(self._start_loss if self._start_loss is not None else 1.0), 1e-3)
        if (math.isfinite(val_loss) and val_loss <= limit) or self._quiet_nan:
            return
        raise TrainingError(f"val_loss became {val_loss:.4g} at epoch {epoch + 1}, after its batch "
                            f"{self._position[1] + 1}: the weights diverged (learning rate too high?); training "
                            f"stopped, checkpoints of earlier epochs are intact")

    def _check_divergence(self, batch_loss, running_loss):
        """TrainingError once the epoch's running loss exceeds DIVERGENCE_FACTOR x the first batch's loss of
        this fit (at least 1e-3, so that a loss starting near 0 may still move)."""
        start = getattr(self, "_start_loss", None)
        if start is None:
            self._start_loss = start = batch_loss
        limit = DIVERGENCE_FACTOR * max(abs(start), 1e-3)
        if running_loss > limit:
            raise TrainingError(f"the loss diverged at epoch {self._position[0] + 1}, batch {self._position[1] + 1}: "
                                f"running loss {running_loss:.4g} > {DIVERGENCE_FACTOR:g} x the first batch's "
                                f"{start:.4g} (learning rate too high?); training stopped, checkpoints saved "
                                "before this batch are intact")

    def test_step(self, data):
        """Loss and metrics of one batch in inference form (no gradients), added to the running logs."""
        x, y, sample_weight = data
        y_pred = infer(self, x)
        loss = float(self.compute_loss(x, y, y_pred, sample_weight).item())
        n = nested.length(y)
        return self._tally.add(n * np.array([1.0, loss] + self.compute_metrics(x, y, y_pred, sample_weight)))

    def predict_step(self, data):
        """The outputs of one batch, in inference form (replayed by an inference plan: tinycnn/plan.py)."""
        x = data[0] if isinstance(data, tuple) else data
        return infer(self, x)

    def compute_loss(self, x, y, y_pred, sample_weight=None):
        """The compiled loss of predictions y_pred (model layout) against targets y (the caller's layout)."""
        target = self._targets_for_loss(y)
        return self.loss(y_pred, target) if sample_weight is None else \
            self.loss(y_pred, target, sample_weight=sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Each compiled metric's value on this batch (a stateful Metric adds the batch to its counts)."""
        if not self.metrics:
            return []
        if self._metric_outputs is None:
            pred = y_pred.numpy()
            return [batch_value(fn, y, pred) for _, fn in self.metrics]
        preds = [out.numpy() for out in y_pred]
        return [batch_value(fn, y[i], preds[i]) for (_, fn), i in zip(self.metrics, self._metric_outputs)]

    def _gradients(self, x, y, sample_weight):
        """Forward and backward on this rank's share of a global batch of `self._global_batch` samples, the
        gradients scaled by share / global batch (1 for one process), so that summing them over the ranks gives
        the batch's gradient. Returns [n, loss·n, metric·n for each metric]."""
        if isinstance(x, _Failed):
            raise x.error
        self.optimizer.zero_grad()
        n = nested.length(y)
        if n == 0:  # more ranks than samples in this batch: nothing to add
            return np.zeros(2 + len(self.metrics))
        y_pred = self(x)
        loss = self.compute_loss(x, y, y_pred, sample_weight)
        value = float(loss.item())
        if not math.isfinite(value):  # no backward: train_step stops training on this loss
            return np.array([n, value * n] + [0.0] * len(self.metrics))
        if n == self._global_batch:
            loss.backward()
        else:  # d(global batch's mean loss) / d(this shard's mean loss) = n / global batch
            loss.backward(kernels_for(loss.device).elementwise.full(loss.shape, n / self._global_batch, loss.dtype))
        return np.array([n, value * n] + [m * n for m in self.compute_metrics(x, y, y_pred, sample_weight)])

    # ------------------------------------------------------------------ data
    def _input_names(self):
        inputs = getattr(self, "inputs", None)
        return [t.node.layer.name for t in inputs] if isinstance(inputs, list) else ["input"]

    def _output_names(self):
        outputs = getattr(self, "outputs", None)
        return [t.node.layer.name for t in outputs] if isinstance(outputs, list) else ["output"]

    def _is_array_input(self, x):
        return is_array_input(x) or (len(self._input_names()) > 1 and isinstance(x, (list, tuple, dict)) and
                                     all(is_array_input(v) for v in (x.values() if isinstance(x, dict) else x)))

    def _check_x(self, x, where):
        names = self._input_names()
        return nested.check_inputs(x, names, where) if len(names) > 1 else check_x(x, where)

    def _check_arrays(self, x, y, where):
        names = self._output_names()
        if len(self._input_names()) == 1 and len(names) == 1:
            return check_arrays(x, y, where)
        x = self._check_x(x, where)
        n = nested.length(x)
        if len(names) > 1:
            return x, nested.check_targets(y, names, n, where)
        return x, check_arrays(np.zeros((n, 1), np.float32), y, where)[1]

    def _batch_checks(self):
        """For a stream's batches: this model's (check_x, check_arrays) when it has several inputs or outputs
        (a batch's list of arrays is then one per input), else None (the adapter's own)."""
        if len(self._input_names()) == 1 and len(self._output_names()) == 1:
            return None
        return self._check_x, self._check_arrays

    def _to_input_tensor(self, xb):
        if isinstance(xb, list):
            return [self._to_input_tensor(v) for v in xb]
        if self.input_format == "channels_last" and xb.ndim == 4:
            xb = xb.transpose(0, 3, 1, 2)
        weight = next(iter(self.parameters()), None)
        if weight is not None and xb.dtype != weight.dtype:  # Keras casts to the model's float type: X / 255.0
            xb = xb.astype(weight.dtype)                    # (float64) feeds a float32 model
        return Tensor(np.ascontiguousarray(xb), device=self.device)

    def _targets_for_loss(self, yb):
        """Channels-last image targets (N, H, W, C) follow the model's NCHW outputs."""
        if isinstance(yb, list):
            return [self._targets_for_loss(v) for v in yb]
        if self.input_format == "channels_last" and yb.ndim == 4 and yb.shape[-1] > 1:
            return np.ascontiguousarray(yb.transpose(0, 3, 1, 2))
        return yb

    def _to_user_layout(self, out):
        if isinstance(out, list):
            return [self._to_user_layout(v) for v in out]
        out = out.numpy() if isinstance(out, Tensor) else out
        if self.input_format == "channels_last" and out.ndim == 4:
            return np.ascontiguousarray(out.transpose(0, 2, 3, 1))
        return out

    def _record_input_shape(self, x):
        if isinstance(x, list):
            return
        shape = x.shape[1:]
        if self.input_format == "channels_last" and len(shape) == 3:
            shape = (shape[2], shape[0], shape[1])
        if getattr(self, "build_input_shape", None) is None:
            self.build_input_shape = tuple(int(s) for s in shape)

    # ------------------------------------------------------------------ fit
    def fit(self, x, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, initial_epoch=0, steps_per_epoch=None,
            validation_steps=None, augment=None, distributed=None, sample_weight=None, initial_step=0,
            resume_state=None):
        """Train for `epochs` epochs on arrays (x, y) or on a Dataset / iterable of batches x (then y is None,
        and batch_size and shuffle are the data's own). `steps_per_epoch` / `validation_steps`: batches per epoch
        (needed for a generator that never ends). `augment(xb, yb) -> (xb, yb)` transforms each training batch
        (in the caller's layout). `distributed` (tinycnn.distributed.auto() under mpiexec) trains data-parallel,
        with `batch_size` the global batch. `sample_weight`: one weight per sample of array inputs (multiplying
        class_weight's). `initial_step`: batches of the epoch `initial_epoch` already trained (skipped, without
        training on them). `resume_state`: a `training_state()` taken when an earlier fit was interrupted; fit goes
        on from exactly there (its epoch, batch, running logs and random generator), as if never stopped. A
        non-finite val_loss, or a running loss above DIVERGENCE_FACTOR x the first batch's, raises TrainingError.
        Returns the History callback: `.history` maps metric names to per-epoch values."""
        dist = distributed or SingleProcess()
        self._check_compiled()
        if resume_state is None:
            resume_state = dict(epochs_done=initial_epoch, batches_done=initial_step)
        initial_epoch, initial_step = int(resume_state["epochs_done"]), int(resume_state["batches_done"])
        stream = None
        if self._is_array_input(x):
            x, y = self._check_arrays(x, y, "fit")
            self._record_input_shape(x)
        else:
            stream = _stream(x, y, "fit", steps_per_epoch, dist, self._batch_checks())
            if isinstance(stream.source, Dataset):  # its shuffles go on with the epoch fit starts at
                stream.source.set_epoch(initial_epoch)
            self._record_input_shape(stream.first()[0])
        self._ensure_built()
        self._ensure_optimizer()
        if self.optimizer is None:
            raise RuntimeError("the model has no trainable parameters")
        weights = _checked_sample_weight(sample_weight, x, stream)
        x, y, x_val, y_val = self._split_validation(x, y, stream, validation_data, validation_split,
                                                    validation_steps, dist)
        if stream is None:
            steps = len(range(0, nested.length(x), batch_size)[:steps_per_epoch])
        else:
            steps = stream.steps
        history = History()
        user = dist.callbacks_here(callbacks or [])  # under MPI, rank 0 alone writes files
        shown = [ProgbarLogger()] if verbose and dist.is_root else []
        cbs = CallbackList(shown + user + [history], model=self, epochs=epochs, steps=steps, verbose=verbose)
        self.stop_training = False
        self.history = history
        # a stream's batch sizes are its own: begin_fit checks nothing of them (the steps handle empty shares)
        dist.begin_fit(self, *((nested.length(x), batch_size) if stream is None else (dist.size, dist.size)))
        self._distribution = dist
        self._quiet_nan = any(isinstance(cb, TerminateOnNaN) for cb in user)
        self._start_loss = None
        cbs.on_train_begin()
        try:
            for epoch in range(initial_epoch, epochs):
                skip = initial_step if epoch == initial_epoch else 0
                if skip and "epoch_random_state" in resume_state:  # this epoch's shuffle, as when interrupted
                    generator().bit_generator.state = resume_state["epoch_random_state"]
                elif epoch == initial_epoch and "random_state" in resume_state:
                    generator().bit_generator.state = resume_state["random_state"]
                self._epoch_random_state = generator().bit_generator.state
                dist.collectively(cbs.on_epoch_begin, epoch, None)
                if stream is None:
                    batches = self._array_batches(x, y, weights, batch_size, shuffle, dist, steps_per_epoch)
                else:
                    batches = _global_batches(stream, dist)
                if skip:
                    batches = _skipped(batches, skip, resume_state.get("random_state"))
                logs = self._train_epoch(batches, epoch, cbs, class_weight, augment, skip,
                                         resume_state.get("running_sums") if skip else None)
                if logs is None:  # a one-shot iterator ran out before this epoch began
                    stream.warn_ran_out()
                    break
                dist.end_epoch(self)
                if x_val is not None:
                    val = self.evaluate(x_val, y_val, batch_size=batch_size, verbose=0, return_dict=True,
                                        steps=validation_steps, distributed=distributed, callbacks=user)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                    self._check_val_loss(val["loss"], epoch)
                dist.collectively(cbs.on_epoch_end, epoch, logs)
                if stream is not None and dist.any(stream.exhausted):
                    stream.warn_ran_out()
                    break
                if dist.any(self.stop_training):
                    break
        finally:
            del self._distribution
            cbs.on_train_end()
            dist.end_fit()
        return history

    def _split_validation(self, x, y, stream, validation_data, validation_split, validation_steps, dist):
        """(x, y, x_val, y_val): validation_data as given, or the last validation_split of the arrays (Keras)."""
        if validation_data is not None:
            return (x, y) + self._validation_data(validation_data, validation_steps, dist)
        if validation_split and stream is not None:
            raise ValueError("fit: validation_split works on arrays only; give a Dataset or iterable its "
                             "validation data as validation_data=")
        if not validation_split:
            return x, y, None, None
        if not 0.0 < validation_split < 1.0:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
        n = nested.length(x)
        n_val = int(math.ceil(n * validation_split))
        if n_val >= n:
            raise ValueError(f"validation_split={validation_split} leaves no training data for {n} samples")
        train, val = slice(0, n - n_val), slice(n - n_val, n)
        return nested.take(x, train), nested.take(y, train), nested.take(x, val), nested.take(y, val)

    def _validation_data(self, data, steps, dist):
        """(x, y) arrays, or (a BatchStream kept across epochs, None)."""
        if isinstance(data, (tuple, list)) and len(data) in (2, 3) and self._is_array_input(data[0]):
            if len(data) == 3:
                raise ValueError("validation_data: (x, y, sample_weight) arrays are not supported; give (x, y), "
                                 "or a Dataset of (x, y, sample_weight) batches")
            return self._check_arrays(data[0], data[1], "validation_data")
        return _stream(data, None, "validation_data", steps, dist, self._batch_checks()), None

    def _array_batches(self, x, y, weights, batch_size, shuffle, dist, steps):
        """One epoch of (x, y, sample_weight, global batch size) from arrays; under MPI each rank its shard."""
        n = nested.length(x)
        order = dist.same_order(generator().permutation(n)) if shuffle else np.arange(n)
        for begin in range(0, n, batch_size)[:steps]:
            index = order[begin:begin + batch_size]  # the global batch
            shard = dist.shard(index)
            weight = None if weights is None else weights[shard]
            yield nested.take(x, shard), nested.take(y, shard), weight, len(index)

    def training_state(self):
        """Where the running (or interrupted) fit is, as JSON-ready values for `fit(resume_state=...)`:
        epochs_done (finished epochs), batches_done (trained batches of the epoch under way), that epoch's
        running sums, and the engine generator's state at the epoch's start (its shuffle) and now."""
        in_flight = getattr(self, "_batch_random_state", None)  # stopped inside a batch: it goes again from its start
        return dict(epochs_done=self._position[0], batches_done=self._batches_done,
                    running_sums=[float(v) for v in self._tally.sums], epoch_random_state=self._epoch_random_state,
                    random_state=in_flight if in_flight is not None else generator().bit_generator.state)

    def _train_epoch(self, batches, epoch, cbs, class_weight, augment, skipped=0, running_sums=None):
        """One epoch of train_steps; its logs, or None if it had no batch at all (a one-shot source ran out).
        skipped: batches already trained before an interruption (their running sums are running_sums)."""
        self.train()
        self._tally = _Tally(self.metrics)
        if running_sums is not None:
            self._tally.sums[:] = running_sums
        self._position, self._batches_done = (epoch, skipped), skipped
        start, samples, logs = time.perf_counter(), 0, (self._tally.logs() if skipped else None)
        for batch_number, (xb, yb, weight, total) in enumerate(batches, start=skipped):
            self._batch_random_state = generator().bit_generator.state  # before augment and dropout draw
            cbs.on_train_batch_begin(batch_number, None)
            try:
                if augment is not None and nested.length(yb):
                    xb, yb = augment(xb, yb)
                data = (self._to_input_tensor(xb), yb, _sample_weights(class_weight, yb, weight))
            except Exception as error:  # noqa: BLE001  (under MPI, raised in the step, where all ranks learn of it)
                if self._distribution.size == 1:
                    raise
                data = (_Failed(error), yb, None)
            self._global_batch, self._position = total, (epoch, batch_number)
            logs = self.train_step(data)
            self._batches_done, self._batch_random_state = batch_number + 1, None
            samples += total
            cbs.on_train_batch_end(batch_number, logs)
            if self.stop_training and self._distribution.size == 1:  # under MPI, at the epoch's end (all ranks)
                break
        if logs is None:
            return None
        logs = {k: float(v) for k, v in logs.items()}  # a train_step of one's own may return Tensors or arrays
        seconds = time.perf_counter() - start
        logs["images_per_sec"] = samples / seconds if seconds > 0 else float("nan")
        return logs

    # ------------------------------------------------------------------ evaluate / predict
    def evaluate(self, x, y=None, batch_size=32, verbose=0, return_dict=False, steps=None, distributed=None,
                 callbacks=None):
        """Loss and metrics over arrays (x, y), or over a Dataset / iterable of batches x, in eval mode; a list
        [loss, *metrics] or a dict. `steps`: at most that many batches. With `distributed`, each rank
        evaluates its share of the samples and the sums are reduced."""
        dist = distributed or SingleProcess()
        self._check_compiled()
        if self._is_array_input(x):
            x, y = self._check_arrays(x, y, "evaluate")
            self._record_input_shape(x)
            rows = dist.shard(range(nested.length(x)))  # this rank's contiguous share: all of it for one process
            x, y = nested.take(x, slice(rows.start, rows.stop)), nested.take(y, slice(rows.start, rows.stop))
            size = max(1, math.ceil(batch_size / dist.size))
            batches = ((nested.take(x, slice(b, b + size)), nested.take(y, slice(b, b + size)), None)
                       for b in range(0, nested.length(x), size)[:steps])
        else:
            stream = x if isinstance(x, BatchStream) else \
                _stream(x, y, "evaluate", steps, dist, self._batch_checks())
            self._record_input_shape(stream.first()[0])
            batches = ((xb, yb, weight) for xb, yb, weight, _ in _rank_batches(stream, dist))
        self._ensure_built()
        reset_states(self.metrics)  # a Metric counts this evaluation's batches only
        cbs = CallbackList(callbacks or [], model=self)
        cbs.on_test_begin()
        sums = dist.sum_values(lambda: self._test_sums(batches, cbs), 2 + len(self.metrics))
        if sums[0] == 0:
            raise ValueError("evaluate: the data holds no sample (a generator used up by an earlier epoch? give "
                             "validation_steps, or a Dataset, which starts afresh every epoch)")
        results = {"loss": sums[1] / sums[0]}
        results.update({name: final_value(fn, total / sums[0]) for (name, fn), total in zip(self.metrics, sums[2:])})
        cbs.on_test_end(results)
        if verbose and dist.is_root:
            print(format_logs(results))
        return results if return_dict else list(results.values())

    def _test_sums(self, batches, cbs):
        """test_step over (x, y, sample_weight) batches in eval mode: [n, loss·n, metric·n for each metric]."""
        was_training = self.training
        self.eval()
        self._tally = _Tally(self.metrics, keep_metrics=True)
        try:
            with no_grad():
                for batch_number, (xb, yb, weight) in enumerate(batches):
                    cbs.on_test_batch_begin(batch_number, None)
                    logs = self.test_step((self._to_input_tensor(xb), yb, weight))
                    cbs.on_test_batch_end(batch_number, logs)
        finally:
            self.train(was_training)
        return self._tally.sums

    def predict(self, x, batch_size=32, verbose=0, steps=None, callbacks=None):
        """Model outputs for x as a NumPy array (a list of them for several outputs; channels-last image
        outputs for a channels-last model). x: arrays (a single sample too, as a list holding one array), or a
        Dataset / iterable of batches (of their inputs: a batch's y, if any, is not used)."""
        if self._is_array_input(x):
            x = self._check_x(x, "predict")
            self._record_input_shape(x)
            batches = (nested.take(x, slice(b, b + batch_size)) for b in range(0, nested.length(x), batch_size)[:steps])
        else:
            stream = BatchStream(x, "predict", steps, targets=False, check=self._batch_checks())
            self._record_input_shape(stream.first()[0])
            batches = (xb for xb, _, _ in stream.epoch())
        self._ensure_built(for_inference=True)
        cbs = CallbackList(callbacks or [], model=self)
        was_training = self.training
        self.eval()
        outputs = []
        cbs.on_predict_begin()
        try:
            with no_grad():
                for batch_number, xb in enumerate(batches):
                    cbs.on_predict_batch_begin(batch_number, None)
                    out = self._to_user_layout(self.predict_step((self._to_input_tensor(xb),)))
                    outputs.append(out)
                    cbs.on_predict_batch_end(batch_number, {"outputs": out})
        finally:
            self.train(was_training)
        cbs.on_predict_end()
        if outputs and isinstance(outputs[0], list):
            return [np.concatenate(parts, axis=0) for parts in zip(*outputs)]
        return np.concatenate(outputs, axis=0)

    # ------------------------------------------------------------------ weights, saving
    def get_weights(self):
        self._ensure_built()  # a Sequential given its input_shape has weights before any data, as in Keras
        return super().get_weights()

    def set_weights(self, weights):
        self._ensure_built()
        super().set_weights(weights)

    def save(self, path, include_optimizer=True):
        """Write the architecture, weights (and optimizer state) to one file, atomically."""
        from .saving import save_model
        self._ensure_built()  # a Sequential given its input_shape has weights before any data
        save_model(self, path, include_optimizer=include_optimizer)


# ---------------------------------------------------------------------- helpers

class _Tally:
    """The running sums [n, loss·n, metric·n...] of an epoch or an evaluation, and their logs."""

    def __init__(self, metrics, keep_metrics=False):
        self.metrics, self.sums = metrics, np.zeros(2 + len(metrics))
        if not keep_metrics:
            reset_states(metrics)  # a stateful Metric counts this epoch's batches only

    def add(self, stats):
        self.sums += stats
        return self.logs()

    def logs(self):
        n = max(self.sums[0], 1.0)
        logs = {"loss": float(self.sums[1] / n)}
        logs.update({name: final_value(fn, total / n) for (name, fn), total in zip(self.metrics, self.sums[2:])})
        return logs


def _checked_sample_weight(sample_weight, x, stream):
    """fit's sample_weight as a float32 vector of one weight per sample (the training part of the arrays is
    the front: validation_split takes the last samples, unweighted)."""
    if sample_weight is None:
        return None
    if stream is not None:
        raise ValueError("fit: sample_weight goes with array inputs; a Dataset's batches carry their own "
                         "(x, y, sample_weight)")
    weights = np.asarray(sample_weight, np.float32).reshape(-1)
    if len(weights) != nested.length(x):
        raise ValueError(f"fit: {nested.length(x)} inputs but {len(weights)} sample weights")
    return weights


class _Failed:
    """A batch whose preparation (augment) raised on this rank: its train_step raises the error inside the
    distributed step, so that every rank stops together (tinycnn/distributed.py)."""

    def __init__(self, error):
        self.error = error


def _skipped(batches, count, random_state):
    """`batches` without its first `count` (trained before an interruption), then the engine's generator set to
    `random_state` (where it was when the run was interrupted)."""
    for _ in zip(range(count), batches):
        pass
    if random_state is not None:
        generator().bit_generator.state = random_state
    yield from batches


def _sample_weights(class_weight, yb, weight):
    """Per-sample weights from class_weight (by each sample's class) times the batch's own sample weights."""
    if class_weight is None:
        return weight
    weights = np.array([class_weight[int(v)] for v in _class_indices(yb)], np.float32)
    return weights if weight is None else weights * weight


def _stream(x, y, where, steps, dist, check=None):
    """A BatchStream over a Dataset or iterable x; under MPI a Dataset is sharded at its source."""
    if y is not None:
        raise ValueError(f"{where}: y must be None when x is a Dataset or an iterable of batches "
                         "(the batches carry their targets)")
    if dist.size > 1 and isinstance(x, Dataset):
        x = x.distribute(dist.size, dist.rank)
    stream = BatchStream(x, where, steps, check=check)
    stream.rank_slices = dist.size > 1 and not isinstance(x, Dataset)
    return stream


def _rank_batches(stream, dist):
    """One epoch of this rank's (x, y, sample_weight, batch size over all ranks). Under MPI an iterable that
    is not a Dataset gives every rank the same batches, and each takes its contiguous slice."""
    for xb, yb, weight in stream.epoch():
        if getattr(stream, "rank_slices", False):
            share = dist.shard(range(nested.length(xb)))
            rows = slice(share.start, share.stop)
            total, xb, yb = nested.length(xb), nested.take(xb, rows), nested.take(yb, rows)
            weight = None if weight is None else weight[rows]
        else:
            total = nested.length(xb)
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
        n = 0 if batch is None else nested.length(batch[0])
        total, busy, idle = dist.sum_values(lambda: np.array([n, n > 0, n == 0], np.float64), 3)
        if busy == 0 or (dist.sync_bn and idle > 0):
            return
        if batch is None:
            batch = tuple(None if v is None else nested.take(v, slice(0, 0)) for v in template) + (0,)
        yield batch[:3] + (int(total),)


def _class_indices(yb):
    """Each sample's class, for class_weight: the argmax of one-hot rows, else the (first) label."""
    if yb.ndim == 2 and yb.shape[1] > 1:
        return yb.argmax(axis=1)
    return np.ravel(yb)[:len(yb)] if yb.ndim == 1 or yb.size == len(yb) else yb.reshape(len(yb), -1)[:, 0]

"""Keras' callbacks, with Keras' signatures: hooks that fit, evaluate and predict call as they go.

    class Printer(tinycnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(epoch, logs["loss"])

Hooks (every `logs` is a dict of the running values, or None):
    on_train_begin(logs) / on_train_end(logs)              once per fit
    on_epoch_begin(epoch, logs) / on_epoch_end(epoch, logs)   logs: `loss`, metrics, `val_*` at the end
    on_train_batch_begin(batch, logs) / on_train_batch_end(batch, logs)   logs: the epoch's running means
    on_test_begin / on_test_end, on_test_batch_begin / _end    evaluate (and fit's validation)
    on_predict_begin / on_predict_end, on_predict_batch_begin / _end
Before training, fit calls `set_model(model)` and `set_params({"epochs", "steps", "verbose"})`; a callback
stops training by setting `self.model.stop_training = True`.

fit always runs `History` (returned, and kept as `model.history`) and, with verbose, `ProgbarLogger` (a
tqdm.auto bar: a widget in a notebook). Here: ModelCheckpoint, EarlyStopping, ReduceLROnPlateau,
LearningRateScheduler, TerminateOnNaN, CSVLogger, LambdaCallback and TensorBoard (tinycnn/tensorboard.py).
Under MPI, callbacks that write files run on rank 0 only (tinycnn/distributed.py).
"""
import csv
import math
import os


class Callback:
    model = None
    params = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass

    def on_predict_batch_begin(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass


class CallbackList:
    """Calls a hook on each callback in turn: `callbacks.on_epoch_end(epoch, logs)`."""

    def __init__(self, callbacks, model=None, **params):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks must be tinycnn.callbacks.Callback objects, got {type(callback).__name__}")
            if model is not None:
                callback.set_model(model)
            if params:
                callback.set_params(params)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call_each(*args):
            for callback in self.callbacks:
                getattr(callback, hook)(*args)
        return call_each


class History(Callback):
    """`history` maps each logged name to its per-epoch values; `epoch` lists the epochs run."""

    def __init__(self):
        self.history, self.epoch = {}, []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model.history = self


class ProgbarLogger(Callback):
    """verbose=1: a tqdm.auto bar per epoch (the running loss and metrics beside it), then one line with the
    epoch's logs; verbose=2: the line alone, as Keras."""
    bar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.params.get("verbose") == 2:
            return
        from tqdm.auto import tqdm
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        self.bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in (logs or {}).items()}, refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.on_train_end()
        print(f"Epoch {epoch + 1}/{self.params.get('epochs')} - " + format_logs(logs or {}))

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()  # also when training stopped inside an epoch (an error, Ctrl-C): no half-drawn bar
            self.bar = None


def format_logs(logs):
    return " - ".join(f"{k}: {v:.1f}" if k == "images_per_sec" else f"{k}: {v:.4f}" for k, v in logs.items())


class _Monitor(Callback):
    """Tracks the best value of one logged metric ('min' for losses, 'max' otherwise, or as told)."""

    def __init__(self, monitor, mode, min_delta=0.0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor or "iou" in monitor or "dice" in monitor
                                                  or "auc" in monitor else "min")
        self.min_delta = abs(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def _value(self, logs):
        if self.monitor not in logs:
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r}, but the logged metrics are "
                           f"{sorted(logs)} (val_* needs validation data)")
        return logs[self.monitor]

    def _improved(self, value):
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf


class ModelCheckpoint(_Monitor):
    """Save the model after each epoch, or only when `monitor` improves (`save_best_only`); with
    `save_weights_only`, the weights alone (model.save_weights).

    `filepath` may hold `{epoch}` and metric names (`model-{epoch:02d}-{val_loss:.3f}.tcnn`). Saves are atomic:
    an interrupted save never damages the previous checkpoint."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", verbose=0,
                 save_weights_only=False):
        super().__init__(monitor, mode)
        self.filepath, self.save_best_only, self.verbose = os.fspath(filepath), save_best_only, verbose
        self.save_weights_only = save_weights_only

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = self._value(logs)
            if not self._improved(value):
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {value:.5f}, saving {path}")
            self.best = value
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        (self.model.save_weights if self.save_weights_only else self.model.save)(path)


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved for `patience` epochs; optionally restore the best weights."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False,
                 verbose=0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.restore_best_weights, self.verbose = int(patience), restore_best_weights, verbose
        self.wait, self.best_weights, self.best_epoch, self.stopped_epoch = 0, None, None, None

    def on_train_begin(self, logs=None):
        self.wait, self.best_weights, self.stopped_epoch = 0, None, None
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs or {})
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping ({self.monitor} best {self.best:.5f} at epoch "
                      f"{self.best_epoch + 1 if self.best_epoch is not None else '-'})")

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch is not None:
            self.model.load_state_dict(self.best_weights)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by `factor` when `monitor` has not improved for `patience` epochs, then wait
    `cooldown` epochs before counting again; never below `min_lr`."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0,
                 min_lr=0.0, verbose=0):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown = float(factor), int(patience), int(cooldown)
        self.min_lr, self.verbose = float(min_lr), verbose
        self.wait = self.cooldown_left = 0

    def on_train_begin(self, logs=None):
        self.wait = self.cooldown_left = 0
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(optimizer.lr)
        value = self._value(logs)
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_left == 0:
            self.wait += 1
            if self.wait >= self.patience and optimizer.lr > self.min_lr:
                optimizer.lr = max(float(optimizer.lr) * self.factor, self.min_lr)
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing the learning rate to {optimizer.lr:.4g}")
                self.cooldown_left, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch: `schedule(epoch, lr) -> new lr`."""

    def __init__(self, schedule, verbose=0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        optimizer.lr = float(self.schedule(epoch, optimizer.lr))
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {optimizer.lr:.4g}")


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or infinite. (fit itself stops with a TrainingError
    on a loss that is not finite; this ends training quietly instead, as Keras does.)"""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...). Takes every hook's name."""

    def __init__(self, **hooks):
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


class CSVLogger(Callback):
    """Append each epoch's logs to a CSV file (one row per epoch, header first)."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        if self.keys is None:
            self.keys = sorted(logs)
            if not exists:
                with open(self.filename, "w", newline="") as f:
                    csv.writer(f, delimiter=self.separator).writerow(["epoch"] + self.keys)
        with open(self.filename, "a", newline="") as f:
            csv.writer(f, delimiter=self.separator).writerow([epoch + 1] + [logs.get(k, "") for k in self.keys])


class TensorBoard(Callback):
    """Each epoch's logs as TensorBoard scalars: `log_dir/train` (loss, metrics) and `log_dir/validation`
    (the val_* values without the prefix), as Keras lays them out; `update_freq="batch"` also writes the
    running logs every batch. The event files are written by tinycnn/tensorboard.py (no dependency); view them
    with `tensorboard --logdir log_dir` (pip install tinycnn[tensorboard])."""
    rank_zero_only = True

    def __init__(self, log_dir="logs", update_freq="epoch"):
        if update_freq not in ("epoch", "batch"):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch' or 'batch', got {update_freq!r}")
        self.log_dir, self.update_freq = os.fspath(log_dir), update_freq
        self.writers, self.step = {}, 0

    def _writer(self, name):
        from .tensorboard import EventFileWriter
        if name not in self.writers:
            self.writers[name] = EventFileWriter(os.path.join(self.log_dir, name))
        return self.writers[name]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.update_freq == "batch":
            for key, value in (logs or {}).items():
                self._writer("train").add_scalar(f"batch_{key}", value, self.step)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if key.startswith("val_"):
                self._writer("validation").add_scalar(f"epoch_{key[4:]}", value, epoch)
            else:
                self._writer("train").add_scalar(f"epoch_{key}", value, epoch)
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}

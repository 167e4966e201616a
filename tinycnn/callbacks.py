"""Keras-style callbacks: ModelCheckpoint, EarlyStopping, LearningRateScheduler, CSVLogger.

`fit` calls `on_train_begin(model)`, `on_epoch_end(epoch, logs)` with the epoch's metrics
(`loss`, `accuracy`, `val_loss`, ...), and `on_train_end()`. A callback stops training by setting
`model.stop_training = True`.
"""
import csv
import math
import os


class Callback:
    model = None

    def on_train_begin(self, model):
        self.model = model

    def on_epoch_begin(self, epoch):
        pass

    def on_epoch_end(self, epoch, logs):
        pass

    def on_train_end(self):
        pass


class _Monitor(Callback):
    """Tracks the best value of one logged metric ('min' for losses, 'max' otherwise, or as told)."""

    def __init__(self, monitor, mode, min_delta=0.0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor or "iou" in monitor or "dice" in monitor else "min")
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


class ModelCheckpoint(_Monitor):
    """Save the model after each epoch, or only when `monitor` improves (`save_best_only`).

    `filepath` may hold `{epoch}` and metric names (`model-{epoch:02d}-{val_loss:.3f}.tcnn`). Saves are atomic:
    an interrupted save never damages the previous checkpoint."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto", verbose=0):
        super().__init__(monitor, mode)
        self.filepath, self.save_best_only, self.verbose = str(filepath), save_best_only, verbose

    def on_epoch_end(self, epoch, logs):
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
        self.model.save(path)


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved for `patience` epochs; optionally restore the best weights."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False,
                 verbose=0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.restore_best_weights, self.verbose = int(patience), restore_best_weights, verbose
        self.wait, self.best_weights, self.best_epoch, self.stopped_epoch = 0, None, None, None

    def on_train_begin(self, model):
        super().on_train_begin(model)
        self.wait, self.best_weights = 0, None
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs):
        value = self._value(logs)
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

    def on_train_end(self):
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch is not None:
            self.model.load_state_dict(self.best_weights)


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch: `schedule(epoch, lr) -> new lr`."""

    def __init__(self, schedule):
        self.schedule = schedule

    def on_epoch_begin(self, epoch):
        optimizer = self.model.optimizer
        optimizer.lr = float(self.schedule(epoch, optimizer.lr))


class CSVLogger(Callback):
    """Append each epoch's logs to a CSV file (one row per epoch, header first)."""

    def __init__(self, filename, append=False):
        self.filename, self.append = str(filename), append
        self.keys = None

    def on_epoch_end(self, epoch, logs):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        if self.keys is None:
            self.keys = sorted(logs)
            if not exists:
                with open(self.filename, "w", newline="") as f:
                    csv.writer(f).writerow(["epoch"] + self.keys)
        with open(self.filename, "a", newline="") as f:
            csv.writer(f).writerow([epoch + 1] + [logs.get(k, "") for k in self.keys])

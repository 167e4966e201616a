"""Validation and saving with the averaged weights: the callback for optimizers made with use_ema=True.

    model.compile(loss=..., optimizer=tinycnn.optimizers.AdamW(1e-3, use_ema=True, ema_momentum=0.999))
    model.fit(x, y, validation_data=(xv, yv), callbacks=[SwapEMAWeights(), ModelCheckpoint("best.tcnn")])

The optimizer keeps the moving averages (tinycnn/optimizers.py: `swap_ema_weights()`, `ema_in_model`); this
callback (Keras 3's name) decides when they are in the model:

    epoch's last batch done  -> averages in: validation, ModelCheckpoint and every on_epoch_end see them
    next epoch begins        -> training weights back in
    on_test_begin / on_predict_begin (an evaluate or predict given this callback) -> averages in, back at the end
    training ends            -> the averages stay in for good (Keras' finalize_variable_values)

so a checkpoint written at an epoch's end holds the averaged weights (and the optimizer, with `ema_in_model`
saved, knows the training weights are its averages slot: `--resume` swaps them back at the next epoch).
The epoch's last batch is known from fit's `steps`; if fit could not say (a generator without steps_per_epoch),
validation still gets the averages through on_test_begin, and they go in for good at on_epoch_end.

Batch-norm statistics: the moving mean and variance are buffers, not parameters, so the optimizer does not
average them (as Keras' optimizers do not). With `average_buffers=True` (the default) the callback keeps the
same moving average of every float buffer, updated after each batch, and swaps it in with the weights, so the
averaged weights are validated with statistics that belong to them (TensorFlow's EfficientNet recipe averages
its moving statistics too). Those averages live in the callback: a resumed run starts them again.

fit hands its callbacks to the validation evaluate (as Keras), so on_test_begin alone would put the averages in
for validation; the last-batch rule is there for the checkpoints, which may come before this callback in the
list and still see the averages at on_epoch_end.
"""
import numpy as np

from .callbacks import Callback
from .device import kernels_for


class SwapEMAWeights(Callback):
    """Puts the optimizer's moving averages into the model for validation, checkpoints, evaluate and predict."""

    def __init__(self, average_buffers=True):
        self.average_buffers = bool(average_buffers)
        self._swapped_for = None  # "test" / "predict" while this callback swapped them in around one of those
        self._buffer_averages = {}  # buffer name -> its moving average (or, while swapped, the training value)
        self._buffers_swapped = False

    def _optimizer(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not getattr(optimizer, "use_ema", False):
            raise ValueError("SwapEMAWeights needs a model compiled with an optimizer made with use_ema=True")
        return optimizer

    def _put_averages_in(self, wanted):
        if self._optimizer().ema_in_model != wanted:
            self._swap()

    def _swap(self):
        """Weights and averages exchanged (the optimizer's), then the buffers and theirs, to match."""
        optimizer = self._optimizer()
        optimizer.swap_ema_weights()
        if self._buffer_averages and self._buffers_swapped != optimizer.ema_in_model:
            buffers = dict(self._float_buffers())
            for name, average in self._buffer_averages.items():
                buffers[name].data, self._buffer_averages[name] = average, buffers[name].data
                buffers[name].bump_version()
            self._buffers_swapped = optimizer.ema_in_model

    def _float_buffers(self):
        for name, tensor in self.model.named_buffers():
            if np.issubdtype(np.dtype(tensor.dtype), np.floating):
                yield name, tensor

    def _update_buffer_averages(self):
        """average ← m · average + (1 − m) · buffer, started at the buffer after the first batch."""
        m = self._optimizer().ema_momentum
        for name, tensor in self._float_buffers():
            k = kernels_for(tensor.device).elementwise
            average = self._buffer_averages.get(name)
            if average is None:
                self._buffer_averages[name] = k.copy(tensor.data)
            elif isinstance(average, np.ndarray):
                average *= m
                average += (1.0 - m) * tensor.data
            else:
                self._buffer_averages[name] = k.add(k.mul(average, m), k.mul(tensor.data, 1.0 - m))

    def on_train_begin(self, logs=None):
        self._optimizer()  # a misconfiguration is told before the first epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._put_averages_in(False)

    def on_train_batch_end(self, batch, logs=None):
        if self.average_buffers and not self._optimizer().ema_in_model:
            self._update_buffer_averages()
        steps = (self.params or {}).get("steps")
        if steps is not None and batch + 1 == steps:
            self._put_averages_in(True)

    def on_epoch_end(self, epoch, logs=None):
        self._put_averages_in(True)

    def on_train_end(self, logs=None):
        """Weights and buffers keep their averages for good (Keras' finalize_variable_values)."""
        self._put_averages_in(True)
        self._optimizer().finalize_variable_values()
        self._buffer_averages, self._buffers_swapped = {}, False

    def on_test_begin(self, logs=None):
        self._swap_in_for("test")

    def on_test_end(self, logs=None):
        self._swap_back_after("test")

    def on_predict_begin(self, logs=None):
        self._swap_in_for("predict")

    def on_predict_end(self, logs=None):
        self._swap_back_after("predict")

    def _swap_in_for(self, what):
        optimizer = self._optimizer()
        if not optimizer.ema_in_model:
            self._swap()
            self._swapped_for = what if optimizer.ema_in_model else None

    def _swap_back_after(self, what):
        if self._swapped_for == what:
            self._put_averages_in(False)
            self._swapped_for = None

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
the averages go in at on_epoch_end, after validation (which then uses the training weights).

For the trainer: if fit handed its callbacks to the validation evaluate (Keras does), on_test_begin alone would
put the averages in for validation and the last-batch rule would only be needed for the checkpoints.
"""
from .callbacks import Callback


class SwapEMAWeights(Callback):
    """Puts the optimizer's moving averages into the model for validation, checkpoints, evaluate and predict."""

    def __init__(self):
        self._swapped_for = None  # "test" / "predict" while this callback swapped them in around one of those

    def _optimizer(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not getattr(optimizer, "use_ema", False):
            raise ValueError("SwapEMAWeights needs a model compiled with an optimizer made with use_ema=True")
        return optimizer

    def _put_averages_in(self, wanted):
        optimizer = self._optimizer()
        if optimizer.ema_in_model != wanted:
            optimizer.swap_ema_weights()

    def on_train_begin(self, logs=None):
        self._optimizer()  # a misconfiguration is told before the first epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._put_averages_in(False)

    def on_train_batch_end(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        if steps is not None and batch + 1 == steps:
            self._put_averages_in(True)

    def on_epoch_end(self, epoch, logs=None):
        self._put_averages_in(True)

    def on_train_end(self, logs=None):
        self._optimizer().finalize_variable_values()  # weights and averages both the averages, training off

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
            optimizer.swap_ema_weights()
            self._swapped_for = what if optimizer.ema_in_model else None

    def _swap_back_after(self, what):
        if self._swapped_for == what:
            self._put_averages_in(False)
            self._swapped_for = None

"""Validation and saving with the averaged weights: the callback for optimizers made with use_ema=True.

    model.compile(loss=..., optimizer=tinycnn.optimizers.AdamW(1e-3, use_ema=True, ema_momentum=0.999))
    model.fit(x, y, validation_data=(xv, yv), callbacks=[SwapEMAWeights(bn_data=x), ModelCheckpoint("best.tcnn")])

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
average them (as Keras' optimizers do not). Neither the live model's statistics nor their moving average
belong to the averaged weights: while the weights still move (Adam at 1e-3), a conv with averaged weights
gives each channel a mean that is off by a good part of its standard deviation, compounded layer after
layer, and a global-pooling head then predicts one class for every image (issue 19: catdog's val accuracy
stayed at 0.50 with --ema). So the callback has three modes:

    bn_data=...              the statistics are recomputed for the averaged weights each time they go in
                             (the mode to use for a model with batch norm; PyTorch's
                             torch.optim.swa_utils.update_bn): `bn_batches` batches of bn_data through the
                             model in training mode without gradients, each batch weighing the same
                             (cumulative average), then the live statistics come back with the training
                             weights. Dropout and stochastic depth run as in training; the engine's random
                             generator and a Dataset's shuffles are left as they were, so training draws
                             the same numbers and batches.
    average_buffers=True     (without bn_data) a moving average of every float buffer with the optimizer's
                             momentum, updated after each batch and swapped in with the weights (timm's
                             ModelEmaV2); fine once the weights have settled, chance-level while they move.
    average_buffers=False    (without bn_data) the live model's statistics stay in (Keras 3).

Recomputing costs `bn_batches` forward passes per swap (once per epoch in fit, about as much as a third of
that many training steps); bn_data must be readable again each time (arrays, a Dataset, a list: not a
generator). A checkpoint holds the recomputed statistics, so a `--resume`d run trains on from them (batch
norm's own momentum replaces them within a few dozen steps). `recompute_batch_norm_statistics(model, data)` does it on its own, e.g. on a
model loaded from a file.

fit hands its callbacks to the validation evaluate (as Keras), so on_test_begin alone would put the averages in
for validation; the last-batch rule is there for the checkpoints, which may come before this callback in the
list and still see the averages at on_epoch_end.
"""
import itertools
import warnings

import numpy as np

from .callbacks import Callback
from .device import kernels_for
from .random import generator
from .tensor import no_grad

BN_BATCH_SIZE = 32  # rows per batch when bn_data is arrays


def batch_norm_layers(model):
    """The modules of `model` that keep moving statistics (moving_mean, moving_variance, momentum)."""
    return [module for _, module in model.named_modules()
            if "moving_mean" in module._buffers and "moving_variance" in module._buffers
            and hasattr(module, "momentum")]


def recompute_batch_norm_statistics(model, data, batches=16):
    """Set every batch norm's moving mean and variance of `model` to their averages over `batches` batches of
    `data` run through the model in training mode without gradients (each batch weighs 1/batches; the
    batch-norm layers' momentum is restored after). `data`: an array of inputs (channels-last like fit's; rows
    spread evenly over it, BN_BATCH_SIZE a batch), or a Dataset / iterable of batches x or (x, y, ...).
    Returns the number of batches used. The engine's random generator and a Dataset's shuffle passes are left
    as they were, so a training that reads the same Dataset draws what it would have drawn."""
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    was_training, random_state, passes = model.training, generator().bit_generator.state, _shuffle_passes(data)
    used = 0
    try:
        model.train()
        with no_grad():
            for xb in _input_batches(data, batches):
                for layer in layers:  # running = m·running + (1 − m)·batch with 1 − m = 1/(used + 1)
                    layer.momentum = 1.0 - 1.0 / (used + 1)
                model(model._to_input_tensor(xb))
                used += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
        generator().bit_generator.state = random_state
        for counter, value in passes:  # a Dataset's shuffles: training's next pass is the one it would have been
            counter[0] = value
    if used == 0:
        raise ValueError("recompute_batch_norm_statistics: bn_data gave no batch")
    return used


def _shuffle_passes(data):
    """(counter, value) of every shuffle in a Dataset pipeline: reading it advances them (Dataset.set_epoch)."""
    found = []
    while data is not None and hasattr(data, "set_epoch"):
        if getattr(data, "_passes", None) is not None:
            found.append((data._passes, data._passes[0]))
        data = getattr(data, "_parent", None)
    return found


def _input_batches(data, batches):
    """Up to `batches` input batches of `data` (see recompute_batch_norm_statistics)."""
    if isinstance(data, np.ndarray):
        rows = min(len(data), batches * BN_BATCH_SIZE)
        picked = data[np.linspace(0, len(data) - 1, rows).astype(np.int64)]
        return [picked[i:i + BN_BATCH_SIZE] for i in range(0, rows, BN_BATCH_SIZE)]
    source = data.take(batches) if hasattr(data, "take") and not isinstance(data, (list, tuple)) else data
    return (batch[0] if isinstance(batch, tuple) else batch for batch in itertools.islice(source, batches))


class SwapEMAWeights(Callback):
    """Puts the optimizer's moving averages into the model for validation, checkpoints, evaluate and predict."""

    def __init__(self, average_buffers=True, bn_data=None, bn_batches=16):
        if bn_data is not None and (not isinstance(bn_batches, int) or bn_batches < 1):
            raise ValueError(f"SwapEMAWeights: bn_batches must be an int ≥ 1, got {bn_batches!r}")
        self.average_buffers = bool(average_buffers) and bn_data is None
        self.bn_data, self.bn_batches = bn_data, bn_batches
        self._live_statistics = None  # buffer name -> the training statistics, while recomputed ones are in
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
        if self.bn_data is not None and self._buffers_swapped != optimizer.ema_in_model:
            self._recompute_or_restore_statistics(optimizer.ema_in_model)
            self._buffers_swapped = optimizer.ema_in_model
        elif self._buffer_averages and self._buffers_swapped != optimizer.ema_in_model:
            buffers = dict(self._float_buffers())
            for name, average in self._buffer_averages.items():
                buffers[name].data, self._buffer_averages[name] = average, buffers[name].data
                buffers[name].bump_version()
            self._buffers_swapped = optimizer.ema_in_model

    def _recompute_or_restore_statistics(self, averages_in):
        """Averages in: the live statistics put aside, the averaged weights' own recomputed on bn_data.
        Averages out: the live statistics back (the same arrays)."""
        buffers = dict(self._float_buffers())
        if averages_in:
            self._live_statistics = {name: tensor.data for name, tensor in buffers.items()}
            for tensor in buffers.values():
                tensor.data = kernels_for(tensor.device).elementwise.copy(tensor.data)
                tensor.bump_version()
            recompute_batch_norm_statistics(self.model, self.bn_data, self.bn_batches)
        elif self._live_statistics is not None:
            for name, array in self._live_statistics.items():
                buffers[name].data = array
                buffers[name].bump_version()
            self._live_statistics = None

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
        if self.bn_data is None and _has_batch_norm(self.model):
            warnings.warn("SwapEMAWeights without bn_data on a model with batch norm: the averaged weights run with "
                          "statistics that are not theirs, which can put every prediction in one class; pass "
                          "bn_data=<training inputs> to recompute them (see tinycnn/ema.py)", stacklevel=2)

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
        self._buffer_averages, self._buffers_swapped, self._live_statistics = {}, False, None

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


def _has_batch_norm(model):
    from .layers import BatchNormalization
    return any(isinstance(module, BatchNormalization) for _, module in model.named_modules())

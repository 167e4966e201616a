"""The averaged (EMA) model of a network with batch norm (issue 19): its statistics are recomputed for the
averaged weights (SwapEMAWeights(bn_data=...)), it validates like the live model on a small learnable problem,
swapping it in and out gives back the training weights and statistics exactly, and recomputing leaves the
training itself (its random numbers, a Dataset's shuffles) as it was."""
import warnings

import numpy as np
import pytest

import tinycnn
from tinycnn import layers, optimizers
from tinycnn.data import Dataset
from tinycnn.ema import SwapEMAWeights, recompute_batch_norm_statistics
from tinycnn.tensor import no_grad


def images(n, seed):
    """Noise, with a red square in the images of class 1."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 2, n).astype(np.float32)
    x[y == 1, 2:6, 2:6, 0] += 1.0
    return x, y


def model_with_batch_norm(ema_momentum=0.95, seed=0):
    """Two conv-BN-ReLU blocks, global pooling, dropout, sigmoid (the strong preset's shape, small)."""
    tinycnn.manual_seed(seed)
    model = tinycnn.Sequential([
        layers.Conv2D(8, 3, padding="same", use_bias=False, input_shape=(12, 12, 3)),
        layers.BatchNormalization(momentum=0.9), layers.Activation("relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, padding="same", use_bias=False), layers.BatchNormalization(momentum=0.9),
        layers.Activation("relu"), layers.GlobalAveragePooling2D(), layers.Dropout(0.2),
        layers.Dense(1, activation="sigmoid")])
    optimizer = optimizers.Adam(1e-2, use_ema=ema_momentum is not None, ema_momentum=ema_momentum or 0.99)
    model.compile(loss="binary_crossentropy", metrics=["accuracy"], optimizer=optimizer)
    return model


def snapshot(model):
    return ([p.numpy().copy() for _, p in model.named_parameters()],
            [b.numpy().copy() for _, b in model.named_buffers()])


def assert_same(a, b):
    for got, expected in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(got, expected)


def test_the_averaged_model_validates_like_the_live_model():
    # One epoch (16 steps) at momentum 0.95: the averaged weights still lag the live ones. With the statistics
    # of the live model, or their moving average, the averaged model was at chance (val accuracy 0.445, loss
    # 0.91 here; 0.50 on the catdog photos for 30 epochs); with statistics of its own it validates as the live.
    x, y = images(512, 0)
    xv, yv = images(128, 1)
    live = model_with_batch_norm(ema_momentum=None).fit(x, y, batch_size=32, epochs=1, verbose=0,
                                                        validation_data=(xv, yv)).history
    averaged = model_with_batch_norm().fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(xv, yv),
                                           callbacks=[SwapEMAWeights(bn_data=x)]).history
    assert live["val_accuracy"][0] == 1.0
    assert averaged["val_accuracy"][0] >= 0.97
    assert averaged["val_loss"][0] < 0.4
    assert averaged["loss"] == live["loss"]  # the same training: EMA and recomputing change nothing of it


def test_the_statistics_in_the_model_are_those_of_the_averaged_weights():
    x, y = images(512, 0)
    model = model_with_batch_norm()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[SwapEMAWeights(bn_data=x, bn_batches=16)])
    conv, bn = model.layers[0], model.layers[1]
    with no_grad():  # the averaged conv's outputs over the 16 batches = all 512 images (the batches weigh the same)
        out = conv(model._to_input_tensor(x)).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), out.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    per_batch_var = np.mean([out[i:i + 32].var(axis=(0, 2, 3)) for i in range(0, 512, 32)], axis=0)
    np.testing.assert_allclose(bn.moving_variance.numpy(), per_batch_var, rtol=2e-3)  # biased or not: 1/(32·144)


def test_swapping_in_and_out_gives_back_the_training_weights_and_statistics_exactly():
    x, y = images(128, 0)
    model = model_with_batch_norm(ema_momentum=0.5)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # no callback: the training weights stay in
    before = snapshot(model)
    callback = SwapEMAWeights(bn_data=x)
    callback.set_model(model)
    callback.on_test_begin()
    assert model.optimizer.ema_in_model
    during = snapshot(model)
    assert not np.array_equal(during[0][0], before[0][0])  # the averaged weights are in
    assert not np.array_equal(during[1][0], before[1][0])  # and statistics recomputed for them
    callback.on_test_end()
    assert not model.optimizer.ema_in_model
    assert_same(snapshot(model), before)
    for run_with_callback in (lambda: model.evaluate(x, y, callbacks=[callback]),
                              lambda: model.predict(x, callbacks=[callback])):
        run_with_callback()
        assert not model.optimizer.ema_in_model
        assert_same(snapshot(model), before)
    # and what evaluate saw is the averaged model with its own statistics
    callback.on_test_begin()
    with_statistics = model.evaluate(x, y, return_dict=True)
    callback.on_test_end()
    assert model.evaluate(x, y, callbacks=[callback], return_dict=True) == with_statistics


def test_recomputing_leaves_the_training_draws_and_the_dataset_shuffles_as_they_were():
    x, y = images(256, 0)
    data = Dataset.from_tensor_slices((x, y)).shuffle(256, seed=3).batch(32)
    runs = []
    for callback in (SwapEMAWeights(), SwapEMAWeights(bn_data=data, bn_batches=3)):
        model = model_with_batch_norm()
        history = model.fit(data, epochs=3, verbose=0, callbacks=[callback])
        runs.append((history.history["loss"], [a.copy() for a in model.optimizer.averages]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_recompute_on_its_own_and_bad_arguments_are_one_line():
    x, _ = images(64, 0)
    model = model_with_batch_norm()
    bn = model.layers[1]
    assert recompute_batch_norm_statistics(model, x, batches=2) == 2
    assert not np.allclose(bn.moving_variance.numpy(), 1.0)
    assert bn.momentum == 0.9 and model.training  # the layers' momentum and the model's mode as they were
    with pytest.raises(ValueError, match="bn_data gave no batch"):
        recompute_batch_norm_statistics(model, [], batches=2)
    with pytest.raises(ValueError, match="bn_batches"):
        SwapEMAWeights(bn_data=x, bn_batches=0)


def test_catdog_recipe_recomputes_the_statistics_on_its_training_images():
    from tasks.catdog_models import recipe_callbacks
    [callback] = recipe_callbacks(dict(ema=0.998), bn_data="train set")
    assert callback.bn_data == "train set" and not callback.average_buffers
    assert recipe_callbacks(dict(ema=None), bn_data="train set") == []


def test_a_model_with_batch_norm_and_no_bn_data_is_warned_once_at_the_start():
    x, y = images(32, 7)
    with pytest.warns(UserWarning, match="without bn_data on a model with batch norm"):
        model_with_batch_norm().fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[SwapEMAWeights()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with bn_data: no warning
        model_with_batch_norm().fit(x, y, batch_size=16, epochs=1, verbose=0,
                                    callbacks=[SwapEMAWeights(bn_data=x, bn_batches=2)])

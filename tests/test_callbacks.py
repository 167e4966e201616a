"""Callbacks with Keras' signatures (tinycnn/callbacks.py): the hooks fit, evaluate and predict call and when;
History and the progress bar as callbacks; ReduceLROnPlateau, TerminateOnNaN, LambdaCallback, TensorBoard
(its event files read back, checksums and all: tinycnn/tensorboard.py)."""
import glob
import os

import numpy as np
import pytest

import tinycnn
from tinycnn import callbacks, layers
from tinycnn.tensorboard import crc32c, read_scalars


def _model():
    tinycnn.manual_seed(0)
    model = tinycnn.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)), layers.Dense(1)])
    model.compile(loss="mse", optimizer=tinycnn.optimizers.Adam(0.01), metrics=["mae"])
    return model


def _data(n=12):
    x = np.random.default_rng(0).standard_normal((n, 3)).astype(np.float32)
    return x, x.sum(axis=1, keepdims=True)


class Recorder(callbacks.Callback):
    def __init__(self):
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda *args: self.calls.append((name,) + args)
        return super().__getattribute__(name)


def test_fit_calls_every_hook_in_keras_order_with_keras_arguments():
    model, (x, y), recorder = _model(), _data(), Recorder()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_split=0.25, callbacks=[recorder])
    names = [call[0] for call in recorder.calls]
    validation = ["on_test_begin", "on_test_batch_begin", "on_test_batch_end", "on_test_end"]  # 3 samples: 1 batch
    epoch = ["on_epoch_begin"] + ["on_train_batch_begin", "on_train_batch_end"] * 3 + validation + ["on_epoch_end"]
    assert names == ["on_train_begin"] + epoch * 2 + ["on_train_end"]
    assert recorder.model is model and recorder.params == {"epochs": 2, "steps": 3, "verbose": 0}
    batch_end = [call for call in recorder.calls if call[0] == "on_train_batch_end"]
    assert [call[1] for call in batch_end] == [0, 1, 2, 0, 1, 2]
    assert set(batch_end[0][2]) == {"loss", "mae"}
    epoch_end = [call for call in recorder.calls if call[0] == "on_epoch_end"]
    assert [call[1] for call in epoch_end] == [0, 1]
    assert epoch_end[1][2]["val_loss"] == history.history["val_loss"][1]
    assert model.history is history and history.epoch == [0, 1]


def test_evaluate_and_predict_call_their_hooks():
    model, (x, y), recorder = _model(), _data(), Recorder()
    model.evaluate(x, y, batch_size=5, callbacks=[recorder])
    model.predict(x, batch_size=6, callbacks=[recorder])
    names = [call[0] for call in recorder.calls]
    assert names == (["on_test_begin"] + ["on_test_batch_begin", "on_test_batch_end"] * 3 + ["on_test_end"] +
                     ["on_predict_begin"] + ["on_predict_batch_begin", "on_predict_batch_end"] * 2 +
                     ["on_predict_end"])
    assert recorder.calls[7][1]["loss"] == pytest.approx(model.evaluate(x, y, return_dict=True)["loss"])


def test_the_progress_bar_is_a_callback_that_prints_each_epoch(capsys):
    model, (x, y) = _model(), _data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=1)
    captured = capsys.readouterr()
    out = captured.out
    assert "Epoch 1/2 - loss: " in out and "Epoch 2/2 - loss: " in out and "mae: " in out
    assert "batch" in captured.err  # tqdm's bar, on stderr


def test_verbose_2_prints_one_line_per_epoch_and_no_bar(capsys):
    model, (x, y) = _model(), _data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=2)
    captured = capsys.readouterr()
    assert captured.out.count("Epoch ") == 2 and "batch" not in captured.err


def test_lambda_callback_and_early_stopping_with_keras_signatures():
    model, (x, y) = _model(), _data()
    seen = []
    logger = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, logs["loss"])))
    stop = callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9)  # no epoch improves by 1e9
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[logger, stop])
    assert [epoch for epoch, _ in seen] == [0, 1] and len(history.history["loss"]) == 2
    with pytest.raises(ValueError, match="unknown hook 'on_epoch_finish'"):
        callbacks.LambdaCallback(on_epoch_finish=print)


class _Optimizer:
    lr = 1.0


class _Model:
    optimizer = _Optimizer()


def test_reduce_lr_on_plateau_waits_patience_then_cools_down():
    reduce = callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    reduce.set_model(_Model())
    reduce.on_train_begin()
    rates = []
    for epoch, loss in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]):
        logs = {"val_loss": loss}
        reduce.on_epoch_end(epoch, logs)
        rates.append(_Model.optimizer.lr)
        assert logs["learning_rate"] == (rates[-2] if epoch else 1.0)  # the rate the epoch ran with
    # Keras' rule: epochs 1, 2 stale -> lr halves at epoch 2; the cooldown epoch 3 only resets the count, so 3, 4
    # stale -> halves at 4; 6 improves; 7, 8 stale -> 0.125, held at min_lr 0.2; at min_lr it stays
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]


def test_reduce_lr_on_plateau_in_fit_lowers_the_optimizers_rate():
    model, (x, y) = _model(), _data()
    reduce = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[reduce])
    assert model.optimizer.lr == pytest.approx(0.01 / 4)  # epoch 0 sets the best; 1 and 2 each halve the rate
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.01, 0.005])


def test_terminate_on_nan_ends_training_quietly():
    model, (x, y) = _model(), _data()
    y = y.copy()
    y[5] = 1e30  # finite, but its squared error overflows: the second batch's loss is inf
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False,
                        callbacks=[callbacks.TerminateOnNaN()])
    assert len(history.history["loss"]) == 1 and not np.isfinite(history.history["loss"][0])
    with pytest.raises(tinycnn.TrainingError, match="epoch 1, batch 2"):
        _model().fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720's CRC-32C check value
    assert crc32c(b"") == 0


def test_tensorboard_writes_event_files_that_read_back(tmp_path):
    model, (x, y) = _model(), _data()
    board = callbacks.TensorBoard(log_dir=tmp_path / "logs", update_freq="batch")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_split=0.25, callbacks=[board])
    (train_file,) = glob.glob(os.path.join(tmp_path, "logs", "train", "events.out.tfevents.*"))
    (val_file,) = glob.glob(os.path.join(tmp_path, "logs", "validation", "events.out.tfevents.*"))
    train = read_scalars(train_file)
    epoch_loss = [(step, value) for tag, step, value in train if tag == "epoch_loss"]
    assert epoch_loss == [(0, pytest.approx(history.history["loss"][0], rel=1e-6)),
                          (1, pytest.approx(history.history["loss"][1], rel=1e-6))]
    assert [step for tag, step, _ in train if tag == "batch_loss"] == [1, 2, 3, 4, 5, 6]
    val = {(tag, step): value for tag, step, value in read_scalars(val_file)}
    assert val[("epoch_mae", 1)] == pytest.approx(history.history["val_mae"][1], rel=1e-6)
    with open(train_file, "r+b") as f:  # one flipped byte: the checksum says so
        f.seek(30)
        byte = f.read(1)
        f.seek(30)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="checksum"):
        read_scalars(train_file)


def test_model_checkpoint_can_save_the_weights_alone(tmp_path):
    model, (x, y) = _model(), _data()
    path = tmp_path / "w-{epoch}.safetensors"
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.ModelCheckpoint(path, save_weights_only=True)])
    other = _model()
    other.predict(x)
    other.load_weights(tmp_path / "w-2.safetensors")
    np.testing.assert_array_equal(other.predict(x), model.predict(x))

"""Exact resume (issue 17): Ctrl-C saves interrupted.tcnn with the position inside the epoch and the random
generator's states, never over last.tcnn; going on from it (or from last.tcnn at an epoch boundary) gives the
same weights, bit for bit, as the run that was never interrupted. Also: history.csv never runs ahead of
last.tcnn, and a run stopped before its first epoch leaves no folder."""
import csv
import os

import numpy as np
import pytest

import tinycnn
from tinycnn import layers
from tinycnn.callbacks import Callback
from tinycnn.cli import resume_checkpoint
from tinycnn.data import Dataset

from tinycnn.tasks.common import train_in_folder

EPOCHS, BATCH = 3, 8


class InterruptAt(Callback):
    """Ctrl-C (KeyboardInterrupt) when batch `batch` of epoch `epoch` has been trained (batch None: at the
    epoch's end, after its checkpoint)."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.batch is not None and (self.current, batch) == (self.epoch, self.batch):
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            raise KeyboardInterrupt


def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 6, 6, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.float32)
    return x[:48], y[:48], x[48:], y[48:]


def new_model():
    model = tinycnn.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(6, 6, 1)), layers.Flatten(),
                                layers.Dropout(0.3), layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.metadata = {"task": "toy"}
    return model


def train(model, folder, callbacks=(), source="arrays"):
    """Arrays: shuffled from tinycnn's generator. A Dataset: shuffled from (seed, epoch). Dropout draws from
    tinycnn's generator in both."""
    x, y, x_val, y_val = data()
    fit = dict(x=x, y=y, batch_size=BATCH)
    if source == "dataset":
        fit = dict(x=Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=5).batch(BATCH))
    fit.update(epochs=EPOCHS, verbose=0, validation_data=(x_val, y_val), callbacks=list(callbacks))
    return train_in_folder(model, folder, fit, monitor="val_loss", main_metric="accuracy")


def history(folder):
    with open(os.path.join(folder, "history.csv")) as f:
        return [{k: v for k, v in row.items() if k != "images_per_sec"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run that was never stopped, for each kind of source: (weights, history rows)."""
    runs = {}
    for source in ("arrays", "dataset"):
        folder = str(tmp_path_factory.mktemp("whole"))
        tinycnn.manual_seed(0)
        model = new_model()
        train(model, folder, source=source)
        runs[source] = model.get_weights(), history(folder)
    return runs


@pytest.mark.parametrize("source", ["arrays", "dataset"])
@pytest.mark.parametrize("epoch, batch", [(1, 2), (0, 0), (1, 5), (0, None)],
                         ids=["mid-epoch", "first-batch", "last-batch", "epoch-boundary"])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, uninterrupted, epoch, batch, source, capsys):
    folder = str(tmp_path / "run")
    tinycnn.manual_seed(0)
    model = new_model()
    with pytest.raises(SystemExit) as stop:
        train(model, folder, [InterruptAt(epoch, batch)], source=source)
    assert stop.value.code == 130
    finished = epoch + (batch is None)
    if batch is None:  # Ctrl-C after the epoch's checkpoint: the state of that boundary
        assert os.path.exists(os.path.join(folder, "last.tcnn"))
    else:
        assert os.path.exists(os.path.join(folder, "interrupted.tcnn"))
        assert "interrupted.tcnn after" in capsys.readouterr().out
    if finished == 0 and batch is not None:
        assert not os.path.exists(os.path.join(folder, "last.tcnn"))  # no epoch finished: nothing labelled as one
    else:
        last = tinycnn.load_model(os.path.join(folder, "last.tcnn"))
        assert last.metadata["epochs_done"] == finished  # mid-epoch weights never go into last.tcnn
        assert len(history(folder)) == finished

    tinycnn.manual_seed(12345)  # what a resumed process does first: the checkpoint's states must win
    path = resume_checkpoint(folder, "toy")
    assert os.path.basename(path) == ("last.tcnn" if batch is None else "interrupted.tcnn")
    resumed = tinycnn.load_model(path)
    train(resumed, folder, source=source)  # a new Dataset, as in a new process

    weights, rows = uninterrupted[source]
    for got, want in zip(resumed.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(got, want)
    assert history(folder) == rows  # the interrupted epoch's running loss too
    assert not os.path.exists(os.path.join(folder, "interrupted.tcnn"))  # gone once the run is past it


def test_interrupt_never_replaces_last_checkpoint(tmp_path):
    folder = str(tmp_path / "run")
    tinycnn.manual_seed(0)
    with pytest.raises(SystemExit):
        train(new_model(), folder, [InterruptAt(1, 3)])
    last = tinycnn.load_model(os.path.join(folder, "last.tcnn"))
    interrupted = tinycnn.load_model(os.path.join(folder, "interrupted.tcnn"))
    assert last.metadata["epochs_done"] == 1 and last.metadata["training_state"]["batches_done"] == 0
    state = interrupted.metadata["training_state"]
    assert (state["epochs_done"], state["batches_done"]) == (1, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(last.get_weights(), interrupted.get_weights()))


def test_history_is_rewritten_from_the_checkpoint_on_resume(tmp_path):
    """A history.csv one epoch ahead of last.tcnn (a kill -9 between the two, in older versions) is rewritten
    from the checkpoint's rows when the run goes on."""
    folder = str(tmp_path / "run")
    tinycnn.manual_seed(0)
    with pytest.raises(SystemExit):
        train(new_model(), folder, [InterruptAt(0, None)])
    with open(os.path.join(folder, "history.csv"), "a") as f:
        f.write("2,0.5,0.5,0.5,0.5,0.5\n")
    resumed = tinycnn.load_model(resume_checkpoint(folder, "toy"))
    with pytest.raises(SystemExit):
        train(resumed, folder, [InterruptAt(1, 0)])
    assert [row["epoch"] for row in history(folder)] == ["1"]


def test_catdog_resumed_after_ctrl_c_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """The task end to end (the strong preset: augmentation, batch norm, dropout, AdamW, cosine schedule, the
    images streamed from a cached, reshuffled Dataset): Ctrl-C in the middle of epoch 2, then --resume."""
    from tinycnn import train
    from tinycnn.trainer import Trainer
    argv = ["catdog", "--builtin-size", "12", "--img-size", "16", "--batch-size", "4", "--epochs", "3", "--quiet"]
    assert train.main(argv + ["--out", str(tmp_path / "whole")]) == 0

    step, calls = Trainer.train_step, []

    def interrupted_step(self, data):
        calls.append(1)
        if len(calls) == 8:  # epoch 2 (6 batches an epoch), its 2nd batch
            raise KeyboardInterrupt
        return step(self, data)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    with pytest.raises(SystemExit):
        train.main(argv + ["--out", str(tmp_path / "run")])
    monkeypatch.setattr(Trainer, "train_step", step)
    state = tinycnn.load_model(tmp_path / "run" / "interrupted.tcnn").metadata["training_state"]
    assert (state["epochs_done"], state["batches_done"]) == (1, 1)
    assert train.main(["catdog", "--resume", str(tmp_path / "run"), "--quiet"]) == 0

    whole, resumed = (tinycnn.load_model(tmp_path / name / "last.tcnn") for name in ("whole", "run"))
    assert resumed.metadata["epochs_done"] == 3
    for got, want in zip(resumed.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_plate_task_resume_keeps_the_optimizer_state(monkeypatch, tmp_path):
    """The plate tasks compile a resumed model again (their losses are their own); Adam's moments and step
    count then come back from the checkpoint (tinycnn.saving.load_optimizer_state) instead of restarting."""
    from tinycnn.tasks import plates_pipeline
    from tinycnn import saving, train
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(plates_pipeline, "BUILTIN_SIZE", (64, 48))
    monkeypatch.setattr(plates_pipeline, "BUILTIN_VAL", 2)
    folder = tmp_path / "run"
    argv = ["plates-seg", "--synthetic", "4", "--img-size", "16", "--depth", "2", "--batch-size", "2", "--quiet"]
    assert train.main(argv + ["--epochs", "1", "--out", str(folder)]) == 0
    assert train.main(["plates-seg", "--resume", str(folder), "--epochs", "2", "--batch-size", "2", "--quiet"]) == 0
    header, _ = saving._read(str(folder / "last.tcnn"))
    assert header["metadata"]["epochs_done"] == 2
    assert header["optimizer_state"]["param.0.step"] == 4  # 2 batches an epoch, 2 epochs: not restarted at 2

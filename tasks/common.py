"""What the three tasks share: the task protocol, the train skeleton, the run folder, resuming, Ctrl-C,
history.csv and curves.png.

A task is a module (tasks/catdog.py, plates_box.py, plates_seg.py) that `python -m tinycnn.train TASK`,
`tinycnn.evaluate` and `tinycnn.predict` find by name (tinycnn/train.py TASKS) and call as `TaskModule` says.
Its `train` is `Training.run`: seed, settings (or the resumed run's), run folder, data, model, fit with
checkpoints, report; a task's Training subclass says how it does each step.

A run folder holds:
    last.tcnn      the model after the latest finished epoch (with optimizer state, the epoch count and the
                   random generator's state), written before history.csv
    best.tcnn      the model with the best monitored validation metric
    history.csv    one row per epoch: loss, metrics, val_*, images/s
    curves.png     loss and every metric per epoch (tinycnn.visualize.plot_history)
    report.html    a minimal run report at the end (`python -m tinycnn.report RUN` writes the whole one)
    interrupted.tcnn  after Ctrl-C only: the model where it stopped, mid-epoch (removed once the run goes past)
The folder is made when the first epoch ends (a run failing before leaves none); --out holding another run is
refused unless --overwrite. `--resume RUN_DIR` goes on from interrupted.tcnn if there is one, else last.tcnn,
exactly as the run would have gone on (tests/test_exact_resume.py). A diverging run raises TrainingError
(tinycnn/trainer.py) before the epoch's checkpoints: those of earlier epochs are kept.

Under `mpiexec -n N` (N > 1) the run trains data-parallel (tinycnn/distributed.py, docs/distributed.md):
run_folder sets that up (--sync-bn, each rank's GPU for --device cuda, the other ranks' stdout silenced),
rank 0 alone writes the run folder, and train_in_folder ends the other ranks when training is over, so
what a task does after it (evaluating best.tcnn, printing) runs on rank 0 only.
"""
import csv
import json
import os
import sys
import time
import warnings
from typing import Protocol

import numpy as np

import tinycnn
import tinycnn.distributed
import tinycnn.report
from tinycnn import cli
from tinycnn.callbacks import Callback, ModelCheckpoint
from tinycnn.device import cuda_available
from tinycnn.visualize import plot_history


class TaskModule(Protocol):
    """What a task module provides (each returns the process's exit status)."""
    TASK: str  # its name on the command line: "catdog", "plates-box", "plates-seg"

    def add_train_arguments(self, parser):
        """Add the task's `python -m tinycnn.train TASK` options to an argparse parser."""

    def train(self, args):
        """Train from the parsed options; write the run folder."""

    def evaluate(self, args):
        """`python -m tinycnn.evaluate MODEL`: the saved model's metrics on a split."""

    def predict(self, args):
        """`python -m tinycnn.predict MODEL IMAGE...`: predictions for photos."""


class Training:
    """One task's training run. `run(args)` is the skeleton every task shares; a subclass says how it does
    each step, and what model.fit monitors."""
    task = None          # the task's name: the run folder's prefix
    monitor = None       # the validation value that picks best.tcnn ("val_loss", "val_dice", ...)
    main_metric = None   # the metric drawn in curves.png

    def settings(self, args):
        """(the resumed model or None, the run's settings): kept in the model file for later runs."""
        raise NotImplementedError

    def data(self, settings, args, folder):
        """(training set, validation set); says what it read."""
        raise NotImplementedError

    def model(self, resumed, settings, args, train_set):
        """The model to train (the resumed one, or a new one), on args.device and compiled."""
        raise NotImplementedError

    def fit_arguments(self, settings, args, train_set, val_set):
        """model.fit's keyword arguments (x, y, validation_data, epochs, ...)."""
        raise NotImplementedError

    def report(self, folder, args, rows, val_set):
        """Say how the run went (rows: the history, one dict per epoch)."""
        raise NotImplementedError

    def run(self, args):
        tinycnn.manual_seed(args.seed)
        if args.resume:  # RUN_DIR/interrupted.tcnn or last.tcnn, of this task: one line if not
            args.resume_file = cli.resume_checkpoint(args.resume, self.task)
        resumed, settings = self.settings(args)
        folder = run_folder(args, self.task)
        train_set, val_set = self.data(settings, args, folder)
        model = self.model(resumed, settings, args, train_set)
        rows = train_in_folder(model, folder, self.fit_arguments(settings, args, train_set, val_set),
                               monitor=self.monitor, main_metric=self.main_metric)
        self.report(folder, args, rows, val_set)
        return 0


def add_common_train_arguments(parser, epochs, batch_size):
    parser.add_argument("--data", help="data folder (default: the built-in synthetic data)")
    parser.add_argument("--epochs", type=cli.positive_int, default=epochs)
    parser.add_argument("--batch-size", type=cli.positive_int, default=batch_size)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    parser.add_argument("--out", help="run folder (default: runs/<task>-<time>, or the first free <...>-2, -3, ...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --out replace the run already in that folder (refused without it)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="go on training from RUN_DIR/last.tcnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=cli.device, default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under mpiexec: batch norm uses the statistics of the whole global batch "
                             "(default: each rank normalises with its own shard's)")


def run_folder(args, task):
    """The run's folder; under mpiexec, first sets up data-parallel training. Nothing is created here: rank 0
    makes the folder when the first epoch ends (or Ctrl-C saves), so a run that fails before leaves none.
    --out holding another run is refused unless --overwrite; the default runs/<task>-<time> is never an
    existing folder (-2, -3, ... appended)."""
    dist = setup_distributed(args)
    if args.resume:
        return args.resume
    if args.out:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise cli.UserInputError(f"--out {args.out} is a file, not a folder: name the run folder to write")
        cli.refuse_overwriting_run(args.out, getattr(args, "overwrite", False))
        folder = args.out
    else:
        folder = cli.fresh_folder(os.path.join("runs", f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"))
    if dist is not None:
        folder = dist.broadcast(folder)  # rank 0's clock names it
    return folder


def setup_distributed(args):
    """None for one process. Under mpiexec with several ranks: the data-parallel context, with --sync-bn,
    this rank on the GPU of its local rank for --device cuda/auto, and stdout silenced on ranks other than 0."""
    dist = tinycnn.distributed.auto(sync_bn=getattr(args, "sync_bn", False))
    if dist is None:
        return None
    if str(args.device).lower().startswith(("cuda", "auto")) and cuda_available():
        dist.use_local_gpu()
    if not dist.is_root:
        sys.stdout = open(os.devnull, "w")
    return dist


class EpochRecorder(Callback):
    """After every epoch: the finished-epoch count, the history and the training state (the engine generator's
    state: a resume goes on exactly) into the model's metadata; then last.tcnn, and only then history.csv and
    curves.png (so the history never runs ahead of last.tcnn); an interrupted.tcnn the run has gone past is
    removed."""

    rank_zero_only = True  # under MPI only rank 0 runs it

    def __init__(self, folder, main_metric, previous=None):
        self.folder, self.main_metric = folder, main_metric
        self.rows = list(previous or [])

    def on_epoch_end(self, epoch, logs):
        self.rows.append(dict(epoch=epoch + 1, **{k: float(v) for k, v in logs.items()}))
        self.model.metadata["epochs_done"] = epoch + 1
        self.model.metadata["history"] = self.rows
        self.model.metadata["training_state"] = dict(epochs_done=epoch + 1, batches_done=0,
                                                     random_state=tinycnn.random.generator().bit_generator.state)
        os.makedirs(self.folder, exist_ok=True)  # the run folder is made when the first epoch ends (run_folder)
        self.model.save(os.path.join(self.folder, LAST))
        if os.path.exists(os.path.join(self.folder, INTERRUPTED)):
            os.remove(os.path.join(self.folder, INTERRUPTED))
        write_history(self.folder, self.rows)
        plot_history(self.rows, os.path.join(self.folder, "curves.png"))  # the Pillow picture without matplotlib


LAST, INTERRUPTED = "last.tcnn", "interrupted.tcnn"


def train_in_folder(model, folder, fit_kwargs, monitor, main_metric):
    """model.fit with last/best checkpoints, history files, and a checkpoint on Ctrl-C. Returns the history rows.
    Under mpiexec it trains data-parallel; ranks other than 0 exit (status 0) when training is over.

    Ctrl-C saves interrupted.tcnn (never over last.tcnn, the last finished epoch): the weights, optimizer state
    and `model.training_state()` (epoch, batches done in it, running sums, generator states), from which
    `--resume` (tinycnn.cli.resume_checkpoint prefers it) goes on exactly where the run stopped."""
    dist = tinycnn.distributed.auto()
    model.metadata.setdefault("epochs_done", 0)
    recorder = EpochRecorder(folder, main_metric, model.metadata.get("history"))
    callbacks = [recorder, ModelCheckpoint(os.path.join(folder, "best.tcnn"), monitor=monitor, save_best_only=True)]
    callbacks += list(fit_kwargs.pop("callbacks", []))
    if recorder.rows and monitor in recorder.rows[-1]:  # resuming: the best so far is in the history
        values = [r[monitor] for r in recorder.rows if monitor in r]
        callbacks[1].best = min(values) if callbacks[1].mode == "min" else max(values)
    if recorder.rows:  # resuming: history.csv as the checkpoint has it (never ahead of it)
        write_history(folder, recorder.rows)
    resume_state = model.metadata.get("training_state") or dict(epochs_done=model.metadata["epochs_done"],
                                                                  batches_done=0)
    try:
        model.fit(callbacks=callbacks, resume_state=resume_state, distributed=dist, **fit_kwargs)
    except KeyboardInterrupt:
        if (dist is None or dist.is_root) and getattr(model, "_batches_done", None) is not None:
            save_interrupted(model, folder)
        raise SystemExit(130)
    if dist is not None and not dist.is_root:
        raise SystemExit(0)  # what follows training in a task (evaluating best.tcnn, printing) is rank 0's
    try:
        tinycnn.report.write_report(folder, minimal=True)
    except Exception as error:  # noqa: BLE001 - a report that fails never loses the run
        warnings.warn(f"{folder}/report.html was not written: {error}")
    return recorder.rows


def save_interrupted(model, folder):
    """RUN/interrupted.tcnn: the model where Ctrl-C stopped it, with the position to go on from."""
    state = model.training_state()
    if model.metadata["epochs_done"] > state["epochs_done"]:  # stopped after the epoch's end: last.tcnn has it
        print(f"\ninterrupted after {model.metadata['epochs_done']} finished epoch(s), saved in {LAST}; go on with "
              f"--resume {folder}")
        return
    model.metadata["training_state"] = state
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, INTERRUPTED)
    model.save(path)
    print(f"\ninterrupted: saved {path} after {state['epochs_done']} finished epoch(s) and {state['batches_done']} "
          f"batch(es) of the next ({LAST} keeps the last finished epoch); go on with --resume {folder}")


def write_history(folder, rows):
    keys = sorted({k for row in rows for k in row if k != "epoch"})
    tmp = os.path.join(folder, ".history.csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch"] + keys)
        for row in rows:
            writer.writerow([row["epoch"]] + [row.get(k, "") for k in keys])
    os.replace(tmp, os.path.join(folder, "history.csv"))


def print_json(obj):
    print(json.dumps(obj, indent=None, sort_keys=True, default=_json_default))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

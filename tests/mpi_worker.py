"""What tests/test_distributed.py runs under `mpiexec -n 2` (one scenario per launch), and in-process for the
single-process reference: tiny models on a tiny data set, trained the same way in both.

    mpiexec -n 2 python tests/mpi_worker.py SCENARIO OUT_DIR [DEVICE]

Scenarios:
    equivalence   trains the plain net, the batch-norm net with sync_bn and without; rank 0 writes
                  OUT_DIR/result.npz with every rank's weights, optimizer state and history. With DEVICE
                  cuda each rank trains on the GPU of its local rank (a manual check on a GPU machine)
    folder        tasks.common.run_folder + train_in_folder for one epoch, each rank in OUT_DIR/rank<r>
                  (as if on its own machine): only rank 0 may write there
    raise         rank 1's augmentation raises at its 2nd batch; every rank reports what it caught, exits 3
    callback      a callback raises on rank 0 at the end of epoch 1 (a failed checkpoint write)
    kill          rank 1 kills itself (SIGKILL) at its 2nd batch
    syncbn-raise  as raise, with sync_bn: the job aborts
    uncaught      rank 1 raises before fit, while rank 0 starts fit: the job aborts
"""
import argparse
import os
import signal
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import tinycnn  # noqa: E402
import tinycnn.distributed  # noqa: E402
from tinycnn import layers  # noqa: E402
from tinycnn.callbacks import Callback  # noqa: E402

SEED, N_SAMPLES, SIZE, BATCH, EPOCHS, VALIDATION = 0, 28, 8, 8, 2, 0.25  # 21 training samples: batches 8, 8, 5


def dataset():
    """Bright-left (1) or bright-right (0) 8x8 images with noise, channels last."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 0.5, (N_SAMPLES, SIZE, SIZE, 1)).astype(np.float32)
    y = np.arange(N_SAMPLES) % 2
    x[y == 1, :, :SIZE // 2] += 0.5
    x[y == 0, :, SIZE // 2:] += 0.5
    return x, y.astype(np.int64)


def build(kind):
    """'plain': conv, pool, dense (no dropout, no batch norm); 'bn': the same with batch norm after the conv and
    the first dense layer, which then have no bias (its gradient would be rounding noise, which Adam amplifies)."""
    bn = kind == "bn"
    norm = (lambda: [layers.BatchNormalization(momentum=0.9)]) if bn else (lambda: [])  # noqa: E731
    model = tinycnn.Sequential([layers.Conv2D(4, 3, use_bias=not bn, input_shape=(SIZE, SIZE, 1)), *norm(),
                                layers.Activation("relu"), layers.MaxPooling2D(2), layers.Flatten(),
                                layers.Dense(8, use_bias=not bn), *norm(), layers.Activation("relu"),
                                layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer=tinycnn.optimizers.Adam(learning_rate=1e-2),
                  metrics=["accuracy"])
    return model


def train(kind, distributed, augment=None, callbacks=None, device="cpu"):
    """Seed, build, fit: the same calls whether `distributed` is a DataParallel context or None."""
    tinycnn.manual_seed(SEED)
    x, y = dataset()
    model = build(kind).to(device)
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=VALIDATION, verbose=0,
                        distributed=distributed, augment=augment, callbacks=callbacks)
    return model, history.history


def optimizer_arrays(model):
    return {k: v for k, v in model.optimizer.state_dict().items() if isinstance(v, np.ndarray)}


def equivalence(dist, out, device):
    results = {}
    if device == "cuda":
        results["gpu_of_rank"] = np.array(dist.comm.allgather(dist.use_local_gpu()))
    for name, kind, sync_bn in (("plain", "plain", False), ("bn_sync", "bn", True), ("bn_local", "bn", False)):
        dist.sync_bn = sync_bn
        model, history = train(kind, dist, device=device)
        every_rank = dist.comm.gather((model.state_dict(), optimizer_arrays(model)), root=0) or []
        for rank, (weights, optimizer) in enumerate(every_rank):
            results.update({f"{name}/rank{rank}/weights/{k}": v for k, v in weights.items()})
            results.update({f"{name}/rank{rank}/optimizer/{k}": v for k, v in optimizer.items()})
        results.update({f"{name}/history/{k}": np.array(v) for k, v in history.items() if k != "images_per_sec"})
    if dist.is_root:
        np.savez(os.path.join(out, "result.npz"), **results)


def folder(dist, out):
    from tasks.common import run_folder, train_in_folder
    os.chdir(os.path.join(out, f"rank{dist.rank}"))  # each rank in its own directory, as on its own machine
    args = argparse.Namespace(resume=None, out="run", device="cpu", sync_bn=False)
    path = run_folder(args, "test")
    print(f"run folder from rank {dist.rank}", flush=True)  # silenced on rank 1
    tinycnn.manual_seed(SEED)
    x, y = dataset()
    model = build("plain")
    model.metadata = {}
    train_in_folder(model, path, dict(x=x, y=y, batch_size=BATCH, epochs=1, validation_split=VALIDATION, verbose=1),
                    monitor="val_loss", main_metric="accuracy")
    print(f"rank {dist.rank} after train_in_folder", file=sys.stderr, flush=True)  # rank 1 has exited


class RaiseAtEpochEnd(Callback):
    def on_epoch_end(self, epoch, logs):
        raise OSError("disk full (test)")


def failing(dist, scenario):
    """Train with a fault on one rank; report what each rank caught, then exit 3 (a hang fails the test)."""
    calls = []

    def augment(xb, yb):
        calls.append(1)
        if dist.rank == 1 and len(calls) == 2:
            if scenario == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("rank 1 broke at its 2nd batch (test)")
        return xb, yb

    if scenario == "uncaught" and dist.rank == 1:
        raise ValueError("rank 1 broke before fit (test)")
    dist.sync_bn = scenario == "syncbn-raise"
    callbacks = [RaiseAtEpochEnd()] if scenario == "callback" and dist.is_root else None
    try:
        train("bn" if dist.sync_bn else "plain", dist, augment=None if scenario == "callback" else augment,
              callbacks=callbacks)
    except Exception as error:
        print(f"rank {dist.rank} caught {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(3)
    print(f"rank {dist.rank} finished without an error", file=sys.stderr, flush=True)


def main():
    scenario, out = sys.argv[1], os.path.abspath(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    dist = tinycnn.distributed.auto()
    if dist is None:
        raise SystemExit("run me under mpiexec with at least 2 ranks")
    if scenario == "equivalence":
        equivalence(dist, out, device)
    elif scenario == "folder":
        folder(dist, out)
    else:
        failing(dist, scenario)


if __name__ == "__main__":
    main()

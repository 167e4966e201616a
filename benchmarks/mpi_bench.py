"""Data-parallel training on one machine: throughput of 1 and 2 MPI ranks (1 thread each) against one process
with 2 threads, for the tutorial's cat/dog net; the bytes every step all-reduces for each task model, and
each task model's one-thread step time (what the network must keep up with, benchmarks/RESULTS.md "MPI").

    python benchmarks/mpi_bench.py                  # 3 rounds, 8 timed steps each, prints a Markdown table
    python benchmarks/mpi_bench.py --rounds 5 --steps 12

Each configuration runs in fresh processes (`--worker`), the configurations alternating within a round;
a figure is the median over rounds. A worker trains the tutorial's net (batch 32 global, 1×100×100, Adam)
with model.fit: 2 warm-up steps, then `--steps` timed steps, between two barriers. The plate models
(tasks/plates_models.py) train the same way in one process and one thread: the box regressor at batch 16,
3×128×128, MSE; the segmenter at batch 8, 3×160×160, cross-entropy (random data). Threads are pinned with
NUMBA_NUM_THREADS, OMP_NUM_THREADS and OPENBLAS_NUM_THREADS. The 2-rank job also times the step's Allreduce
alone (the same buffer, 20 times). mpiexec needs `pip install -e ".[mpi]"`; as root it is given
OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

RESULT_TAG = "MPI_BENCH "
CONFIGS = {  # name -> (ranks, threads per rank)
    "1 process, 2 threads": (1, 2),
    "1 rank, 1 thread": (1, 1),
    "2 ranks, 1 thread each": (2, 1),
}


# ====================================================================== worker (one process or one rank)

def worker(model_name, steps):
    import tinycnn
    import tinycnn.distributed

    dist = tinycnn.distributed.auto()
    tinycnn.manual_seed(0)
    model, x, y, batch = _model_and_data(model_name, steps)
    model.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1, verbose=0, shuffle=False,
              distributed=dist)  # warm-up
    _barrier(dist)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, distributed=dist)
    _barrier(dist)
    seconds = time.perf_counter() - start
    result = {"images_per_sec": batch * steps / seconds, "step_ms": 1000 * seconds / steps}
    if dist is not None:
        result["allreduce_ms"] = _time_allreduce(dist, model)
    if dist is None or dist.is_root:
        print(RESULT_TAG + json.dumps(result), flush=True)


def _model_and_data(name, steps):
    """(compiled model, x, y, batch) for 'catdog', 'box' or 'seg', with `steps` batches of random data."""
    import tinycnn
    from benchmarks.models import build_tinycnn, make_batch
    from tasks.plates_models import PlateBoxRegressor, PlateSegmenter
    rng = np.random.default_rng(0)
    if name == "catdog":
        model, loss = build_tinycnn("catdog")
        model.compile(loss=loss, optimizer="adam", metrics=["accuracy"])
        x, y = make_batch("catdog", 32 * steps)
        return model, np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y, 32  # the Sequential takes NHWC
    if name == "box":
        model = PlateBoxRegressor()
        model.compile(loss="mse", optimizer="adam")
        x = rng.uniform(0, 1, (16 * steps, 3, 128, 128)).astype(np.float32)
        return model, x, np.sort(rng.uniform(0, 1, (16 * steps, 4)).astype(np.float32), axis=1), 16
    model = PlateSegmenter()
    model.compile(loss=tinycnn.losses.SparseCategoricalCrossentropy(), optimizer="adam")
    x = rng.uniform(0, 1, (8 * steps, 3, 160, 160)).astype(np.float32)
    return model, x, rng.integers(0, 2, (8 * steps, 160, 160)), 8


def _barrier(dist):
    if dist is not None:
        dist.comm.Barrier()


def _time_allreduce(dist, model, repeats=20):
    """Median milliseconds of one Allreduce of a step's buffer (gradients + bookkeeping), alone."""
    from mpi4py import MPI
    buffer = np.ones(step_buffer_floats(model, n_metrics=1, ranks=dist.size), np.float32)
    times = []
    for _ in range(repeats):
        dist.comm.Barrier()
        start = time.perf_counter()
        dist.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def step_buffer_floats(model, n_metrics, ranks):
    """What one step all-reduces (tinycnn/distributed.py, DataParallel.sum_step): every gradient, one
    has-gradient flag per parameter tensor, [n, loss·n, metric·n...], one failure flag per rank."""
    params = list(model.parameters())
    return sum(p.size for p in params) + len(params) + 2 + n_metrics + ranks


# ====================================================================== driver

def task_models():
    """(name, model, metrics) of each task's model, its weights built by one forward pass."""
    import tinycnn
    from benchmarks.models import build_tinycnn
    from tasks.plates_models import PlateBoxRegressor, PlateSegmenter
    catdog, _ = build_tinycnn("catdog")
    catdog._ensure_built()
    models = [("cat/dog tutorial net (batch 32, 1×100×100)", catdog, 1)]
    for name, model in (("MobileNetV2-style box regressor (batch 16, 3×128×128)", PlateBoxRegressor()),
                        ("U-Net-style FCN segmenter (batch 8, 3×160×160)", PlateSegmenter())):
        model.eval()
        with tinycnn.no_grad():
            model(tinycnn.Tensor(np.zeros((1, 3, 128, 128), np.float32)))
        models.append((name, model, 1))
    return models


def run_config(name, steps, model="catdog"):
    ranks, threads = CONFIGS[name]
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [sys.executable, os.path.abspath(__file__), "--worker", model, "--steps", str(steps)]
    if ranks > 1:
        command = [_mpiexec(), "-n", str(ranks), "--bind-to", "core"] + command
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def _mpiexec():
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("mpiexec not found: pip install -e '.[mpi]'")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per run (batch 32)")
    parser.add_argument("--worker", choices=("catdog", "box", "seg"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.steps)

    runs = {name: [] for name in CONFIGS}
    plate_runs = {"box": [], "seg": []}
    names = list(CONFIGS)
    for round_number in range(args.rounds):
        order = names[round_number % len(names):] + names[:round_number % len(names)]
        for name in order:
            runs[name].append(run_config(name, args.steps))
            print(f"round {round_number + 1}: {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
        for model in plate_runs:
            plate_runs[model].append(run_config("1 rank, 1 thread", max(2, args.steps // 2), model))
            print(f"round {round_number + 1}: {model}: {plate_runs[model][-1]}", file=sys.stderr, flush=True)

    print(f"Cat/dog tutorial net, batch 32 (global), 1×100×100, Adam, {args.steps} timed steps; median of "
          f"{args.rounds} rounds (each run's figures in brackets).\n")
    print("| configuration | images/s | step ms | Allreduce of the step's buffer, ms |")
    print("|---|---|---|---|")
    for name in CONFIGS:
        ips = [r["images_per_sec"] for r in runs[name]]
        step = [r["step_ms"] for r in runs[name]]
        reduce_ms = [r["allreduce_ms"] for r in runs[name] if "allreduce_ms" in r]
        print(f"| {name} | {statistics.median(ips):.1f} ({', '.join(f'{v:.1f}' for v in ips)}) | "
              f"{statistics.median(step):.0f} | {f'{statistics.median(reduce_ms):.2f}' if reduce_ms else '–'} |")

    steps = {"cat/dog": [r["step_ms"] for r in runs["1 rank, 1 thread"]],
             "box": [r["step_ms"] for r in plate_runs["box"]], "seg": [r["step_ms"] for r in plate_runs["seg"]]}
    print("\n| model | parameters | bytes all-reduced per step (float32, 2 ranks) | one-thread step, ms |")
    print("|---|---|---|---|")
    for (name, model, n_metrics), key in zip(task_models(), steps):
        floats = step_buffer_floats(model, n_metrics, ranks=2)
        print(f"| {name} | {model.count_params():,} | {4 * floats:,} | {statistics.median(steps[key]):.0f} "
              f"({', '.join(f'{v:.0f}' for v in steps[key])}) |")


if __name__ == "__main__":
    sys.exit(main())

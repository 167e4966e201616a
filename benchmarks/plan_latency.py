"""Inference latency of the task models with and without the inference plan (tinycnn/plan.py), and PyTorch
channels-last on the benchmark twins (benchmarks/models.py) where there is one.

    python benchmarks/plan_latency.py [--models catdog,mobilenet,fcn,regressor,unet,detector] [--batches 1,32]
                                      [--calls 100] [--seconds 40] [--torch-python PYTHON]

Random weights (latency does not depend on their values). For each model and batch size, one call in turn of:
tinycnn's `model.predict(x, batch_size=n)` with plans off (the inference form run op by op, as before the
plan) and on; the engine's forward alone (`inference_form(model)(x)` against `plan.infer(model, x)`, a Tensor
in, as the peer's `model(x)`); `--calls` calls of each, or fewer (at least 5) when they take more than
`--seconds` in all. Median per call, in ms (`--clock cpu`: this process's CPU time). The PyTorch twin (a
torch venv's Python, `--torch-python`) runs in its own process, one call after each turn of tinycnn's: the
same load for both. Threads: set OMP_NUM_THREADS / NUMBA_NUM_THREADS before running; the torch child takes
the same count (torch.set_num_threads).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (what it is, one sample's shape as predict takes it, the twin's name in benchmarks/models.py or None)
MODELS = {
    "catdog": ("tutorial's Sequential 1×100×100", (100, 100, 1), "catdog"),
    "mobilenet": ("plate regressor, benchmark twin 3×128×128", (3, 128, 128), "mobilenet"),
    "fcn": ("U-Net, benchmark twin 3×128×128", (3, 128, 128), "fcn"),
    "regressor": ("plate regressor, task default 3×128×128", (3, 128, 128), None),
    "unet": ("U-Net, task default 3×256×256", (3, 256, 256), None),
    "detector": ("plate detector, task default 3×256×256", (3, 256, 256), None),
}


CLOCK = time.perf_counter


def build(name):
    import tinycnn
    from benchmarks.models import build_tinycnn
    tinycnn.manual_seed(0)
    if MODELS[name][2] is not None:
        return build_tinycnn(MODELS[name][2])[0]
    if name == "regressor":
        from tasks.plates_models import PlateBoxRegressor
        return PlateBoxRegressor()
    if name == "unet":
        from tasks.plates_models import PlateSegmenter
        return PlateSegmenter(16, 3)
    from tasks.plates_detect import PlateCenterNet
    return PlateCenterNet()


def measure_tinycnn(name, batch, args, threads):
    import tinycnn
    from tinycnn import plan
    from tinycnn.fuse import inference_form
    model = build(name)
    shape = MODELS[name][1]
    x = np.random.default_rng(0).random((batch,) + shape).astype(np.float32)
    model.predict(x[:1])  # builds the weights
    model.eval()
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if model.input_format == "channels_last" else x
    tensor = tinycnn.Tensor(nchw)

    def forward_off():
        with tinycnn.no_grad():
            return inference_form(model)(tensor).numpy()

    def forward_on():
        with tinycnn.no_grad():
            return plan.infer(model, tensor).numpy()

    def predict_off():
        with plan.plans_off():
            return model.predict(x, batch_size=batch)

    runs = {"predict_off": predict_off, "predict_on": lambda: model.predict(x, batch_size=batch),
            "forward_off": forward_off, "forward_on": forward_on}
    assert np.array_equal(predict_off(), model.predict(x, batch_size=batch))
    for run in runs.values():  # warm-up: records the plan, compiles what is not cached
        run(), run()
    twin = MODELS[name][2]
    peer = TorchPeer(args.torch_python, twin, batch, threads, args.clock) if twin and args.torch_python else None
    times = {key: [] for key in list(runs) + (["torch"] if peer else [])}
    start = time.perf_counter()
    while len(times["forward_on"]) < args.calls and (len(times["forward_on"]) < 5 or
                                                      time.perf_counter() - start < args.seconds):
        for key, run in runs.items():  # one call of each in turn, so that a busy moment hits all of them
            begin = CLOCK()
            run()
            times[key].append(CLOCK() - begin)
        if peer:
            times["torch"] += peer.run(1)
    if peer:
        peer.close()
    return {key: (statistics.median(t) * 1e3, len(t)) for key, t in times.items()}


TORCH_CHILD = r"""
import json, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from benchmarks.models import build_torch, make_batch
name, batch, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
clock = time.process_time if sys.argv[5] == "cpu" else time.perf_counter
torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_torch(name)[0].eval().to(memory_format=torch.channels_last)
x = torch.from_numpy(make_batch(name, batch)[0]).contiguous(memory_format=torch.channels_last)
def run():
    with torch.inference_mode():
        return model(x)
for _ in range(3): run()
print(json.dumps(torch.__version__), flush=True)
for line in sys.stdin:  # "n": time n calls, answer their seconds
    times = []
    for _ in range(int(line)):
        begin = clock(); run(); times.append(clock() - begin)
    print(json.dumps(times), flush=True)
"""


class TorchPeer:
    """The PyTorch channels-last twin in its own process (a torch venv's Python), timed on request, so that
    its calls alternate with tinycnn's under the same load."""

    def __init__(self, python, twin, batch, threads, clock):
        root = str(Path(__file__).resolve().parents[1])
        self.child = subprocess.Popen([python, "-c", TORCH_CHILD, root, twin, str(batch), str(threads), clock],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = json.loads(self.child.stdout.readline())

    def run(self, calls):
        self.child.stdin.write(f"{calls}\n")
        self.child.stdin.flush()
        return json.loads(self.child.stdout.readline())

    def close(self):
        self.child.stdin.close()
        self.child.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this process's CPU time per call (time.process_time), less moved by other "
                        "processes' load than wall time; meant for 1 thread")
    p.add_argument("--torch-python", default=os.environ.get("TINYCNN_BENCH_TORCH_PYTHON"))
    args = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    threads = int(os.environ.get("NUMBA_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    print(f"threads {threads}, {args.clock} time, load average at the start {os.getloadavg()[0]:.1f}")
    print("| model | batch | predict before (ms) | predict plan (ms) | forward before (ms) | forward plan (ms) | "
          "PyTorch channels-last (ms) | PyTorch / forward plan | calls |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            ours = measure_tinycnn(name, batch, args, threads)
            theirs = ours.get("torch")
            peer = f"{theirs[0]:.2f}" if theirs else "–"
            ratio = f"{theirs[0] / ours['forward_on'][0]:.2f}" if theirs else "–"
            calls = "/".join(str(ours[k][1]) for k in ("predict_off", "predict_on"))
            print(f"| {MODELS[name][0]} | {batch} | {ours['predict_off'][0]:.2f} | {ours['predict_on'][0]:.2f} | "
                  f"{ours['forward_off'][0]:.2f} | {ours['forward_on'][0]:.2f} | {peer} | {ratio} | {calls} |",
                  flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

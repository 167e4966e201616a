"""Batch-1 latency of each task model: onnxruntime on the exported file next to tinycnn's predict.

    python benchmarks/onnx_latency.py [--models seed strong ...] [--seconds 1.5] [--threads 2]

Each model is built at its task's default size with random weights (latency does not depend on their
values), exported with tinycnn.onnx.export, and timed batch 1: tinycnn's `model.predict(x, batch_size=1)`
and onnxruntime's `session.run` (CPU provider, `--threads` intra-op threads; tinycnn uses Numba's threads),
each after warm-up runs, alternating rounds, median per call. Printed as a Markdown table with the ratio
tinycnn / onnxruntime (above 1: onnxruntime is faster) and the largest output difference.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinycnn  # noqa: E402


def task_models():
    """{name: (builder, one sample's shape as predict takes it)}, the tasks' default sizes."""
    from tasks.catdog import seed_model, strong_model
    from tasks.plates_models import PlateBoxRegressor, PlateSegmenter
    from tinycnn.applications import MobileNetV2
    models = {
        "catdog seed (100×100×1)": (lambda: seed_model(100, 1, 2), (100, 100, 1)),
        "catdog strong (96×96×3)": (lambda: strong_model(96, 3, 2), (96, 96, 3)),
        "plate regressor (3×128×128)": (PlateBoxRegressor, (3, 128, 128)),
        "plate U-Net (3×256×256)": (lambda: PlateSegmenter(16, 3), (3, 256, 256)),
        "MobileNetV2 (224×224×3)": (lambda: MobileNetV2(input_shape=(224, 224, 3)), (224, 224, 3)),
    }
    try:
        from tasks.plates_detect import PlateCenterNet
        models["plate detector (3×256×256)"] = (PlateCenterNet, (3, 256, 256))
    except ImportError:
        pass
    return models


def median_latency(run, seconds):
    """Median seconds per call over about `seconds` of calls (at least 5)."""
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def measure(name, build, sample, args, folder):
    import onnxruntime as ort
    from tinycnn.onnx import export
    model = build()
    model.eval()
    x = np.random.default_rng(0).random((1,) + sample).astype(np.float32)
    with tinycnn.no_grad():  # a first call builds lazily built layers
        model(tinycnn.Tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if len(sample) == 3
                             and model.input_format == "channels_last" else x))
    path = os.path.join(folder, "model.onnx")
    export(model, path, input_shape=sample)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    ours, theirs = model.predict(x, batch_size=1), session.run(None, {"input": x})[0]
    difference = float(np.abs(ours - theirs).max())
    ours_times, ort_times = [], []
    for _ in range(args.rounds):  # alternating, so that a busy moment on the machine hits both
        ours_times.append(median_latency(lambda: model.predict(x, batch_size=1), args.seconds))
        ort_times.append(median_latency(lambda: session.run(None, {"input": x}), args.seconds))
    ours_ms, ort_ms = statistics.median(ours_times) * 1e3, statistics.median(ort_times) * 1e3
    return f"| {name} | {ours_ms:.2f} | {ort_ms:.2f} | {ours_ms / ort_ms:.2f} | {difference:.1e} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="substrings of the model names to run (default: all)")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per model and round (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime intra-op threads")
    args = parser.parse_args()
    import onnxruntime
    print(f"onnxruntime {onnxruntime.__version__}, {args.threads} thread(s); load average "
          f"{os.getloadavg()[0]:.2f} at start; batch 1, median ms per call\n")
    print("| model | tinycnn predict (ms) | onnxruntime (ms) | tinycnn / onnxruntime | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for name, (build, sample) in task_models().items():
            if args.models and not any(m.lower() in name.lower() for m in args.models):
                continue
            print(measure(name, build, sample, args, folder), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

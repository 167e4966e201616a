"""Streaming a photo folder against in-memory arrays: the cat/dog `strong` model trained both ways.

    python -m benchmarks.streaming                     # 25,000 photos, 200 steps per mode
    python -m benchmarks.streaming --count 3000 --steps 120 --folder /tmp/photos    # keep the folder

1. A folder of `count` JPEGs in cat/ and dog/, re-encoded at several sizes (longest side 160, 320 or 500 px,
   like phone and web photos), from `../shared/data/catdog` if it is there, else from the built-in synthetic
   cats and dogs (tinycnn.tasks.synthetic_catdog).
2. Each mode runs in its own process (so that its peak RSS is its own), on the preset's input (RGB 96x96,
   batch 32), the same model and optimizer as `python -m tinycnn.train catdog --model strong`:
   - stream: `image_dataset_from_directory(folder, image_size=(96, 96), batch_size=32, seed=0)`, decoded in
     the map's threads while the model trains;
   - cached: the same folder decoded once into `cache(path)` (uint8 memory map), then shuffled and batched
     from the file (the build time is reported apart);
   - arrays: the folder decoded whole into a float32 array first (what the tasks do today), then fit(x, y).
   Each mode first trains a few steps (Numba compiles, threads start), then times `--steps` steps.
3. `--rounds` rounds, the modes in a rotated order each round (a shared machine's load then falls on every
   mode alike). Printed per mode: peak RSS (the largest of its rounds), training images/s (the median), the
   ratio to arrays (the median of each round's ratio), and the share of the timed steps spent waiting for the
   next batch (time blocked in the data iterator / wall time; the median); and the load average.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

SIDES = (160, 320, 500)
IMG_SIZE, BATCH, WARMUP_STEPS = 96, 32, 5


# ---------------------------------------------------------------------------------------------- the folder

def build_folder(folder, count, seed=0):
    """`count` JPEGs (half cats, half dogs) in folder/cat and folder/dog, each at one of SIDES."""
    from PIL import Image
    sources = _source_photos(count)
    rng = np.random.default_rng(seed)
    for name in ("cat", "dog"):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    start = time.perf_counter()
    for i in range(count):
        label = ("cat", "dog")[i % 2]
        pool = sources[label]
        with Image.open(pool[(i // 2) % len(pool)]) as photo:
            photo = photo.convert("RGB")
            side = int(rng.choice(SIDES))
            scale = side / max(photo.size)
            photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))),
                                 Image.Resampling.BILINEAR)
            photo.save(os.path.join(folder, label, f"{i:06d}.jpg"), quality=90)
    print(f"built {count} photos in {folder} in {time.perf_counter() - start:.0f} s", flush=True)


def _source_photos(count):
    shared = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                          "catdog")
    root = shared if os.path.isdir(shared) else None
    if root is None:
        from tinycnn.tasks.synthetic_catdog import ensure_builtin_catdog
        root = ensure_builtin_catdog(n_per_class=min(1000, max(1, count // 2)), size=256)
    return {label: sorted(os.path.join(root, label, f) for f in os.listdir(os.path.join(root, label)))
            for label in ("cat", "dog")}


# ---------------------------------------------------------------------------------------------- one mode

class TimedBatches:
    """An iterable over `data`'s batches that adds the time spent waiting for each one to `self.waited`."""

    def __init__(self, data):
        self.data, self.waited = data, 0.0

    def __iter__(self):
        batches = iter(self.data)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.waited += time.perf_counter() - start
            yield batch


def model_and_optimizer():
    import tinycnn
    from tinycnn.tasks.catdog import PRESETS, loss_for, strong_model
    tinycnn.manual_seed(0)
    model = strong_model(IMG_SIZE, 3, 2)
    model.compile(loss=loss_for(2), metrics=["accuracy"],
                  optimizer=tinycnn.optimizers.AdamW(learning_rate=PRESETS["strong"]["lr"], weight_decay=1e-4))
    return model


def run_mode(mode, folder, steps, cache_path):
    """Train `steps` steps in this process; returns the measurements as a dict."""
    from tinycnn.data import image_dataset_from_directory
    model = model_and_optimizer()
    result = {"mode": mode}
    if mode == "arrays":
        start = time.perf_counter()
        decoded = image_dataset_from_directory(folder, image_size=(IMG_SIZE, IMG_SIZE), batch_size=256,
                                               shuffle=False)
        parts = list(decoded)
        x = np.concatenate([xb for xb, _ in parts])
        y = np.concatenate([yb for _, yb in parts]).astype(np.int64)
        del parts
        result["prepare_s"] = time.perf_counter() - start
        model.fit(x[:WARMUP_STEPS * BATCH], y[:WARMUP_STEPS * BATCH], batch_size=BATCH, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, steps_per_epoch=steps)
        seconds, waited = time.perf_counter() - start, 0.0
    else:
        if mode == "stream":
            data = image_dataset_from_directory(folder, image_size=(IMG_SIZE, IMG_SIZE), batch_size=BATCH, seed=0)
        else:
            start = time.perf_counter()
            frames = image_dataset_from_directory(folder, image_size=(IMG_SIZE, IMG_SIZE), batch_size=None,
                                                  shuffle=False).cache(cache_path)
            for _ in frames:          # the first pass writes the file
                pass
            result["prepare_s"] = time.perf_counter() - start
            data = frames.shuffle(len(frames), seed=0).batch(BATCH).prefetch(2)
        model.fit(TimedBatches(data), epochs=1, verbose=0, steps_per_epoch=WARMUP_STEPS)
        timed = TimedBatches(data)
        start = time.perf_counter()
        model.fit(timed, epochs=1, verbose=0, steps_per_epoch=steps)
        seconds, waited = time.perf_counter() - start, timed.waited
    result.update(images_per_s=steps * BATCH / seconds, seconds=seconds, wait_share=waited / seconds,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


# ---------------------------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=25_000, help="photos in the folder")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per mode")
    parser.add_argument("--folder", help="the photo folder (built there if missing; default: a temporary one)")
    parser.add_argument("--modes", default="stream,cached,arrays")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode, in rotated orders")
    parser.add_argument("--mode", help=argparse.SUPPRESS)           # a child process: run this mode only
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.folder, args.steps, args.cache)))
        return 0
    scratch = tempfile.mkdtemp(prefix="tinycnn-streaming-")
    folder = args.folder or os.path.join(scratch, "photos")
    try:
        if not os.path.isdir(folder):
            build_folder(folder, args.count)
        modes, loads = args.modes.split(","), [os.getloadavg()[0]]
        results = {mode: [] for mode in modes}
        for round_number in range(args.rounds):
            for mode in modes[round_number % len(modes):] + modes[:round_number % len(modes)]:
                child = subprocess.run([sys.executable, "-m", "benchmarks.streaming", "--mode", mode, "--folder",
                                        folder, "--steps", str(args.steps), "--cache", os.path.join(scratch, "cache")],
                                       capture_output=True, text=True, check=True)
                results[mode].append(json.loads(child.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[mode][-1]), flush=True)
        loads.append(os.getloadavg()[0])
        report(results, args, folder, loads)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def report(results, args, folder, loads):
    count = sum(len(files) for _, _, files in os.walk(folder))
    print(f"\n{count} photos, cat/dog strong model at {IMG_SIZE}x{IMG_SIZE}, batch {BATCH}, {args.steps} timed "
          f"steps x {args.rounds} rounds, {len(os.sched_getaffinity(0))} cores, load average {loads[0]:.1f} at the "
          f"start, {loads[1]:.1f} at the end\n")
    print("| mode | peak RSS (MB) | images/s (median) | vs arrays (median of rounds) | waiting for data | "
          "prepare (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    arrays = results.get("arrays")
    for mode, runs in results.items():
        speed = [r["images_per_s"] for r in runs]
        ratio = f"{np.median([r / a['images_per_s'] for r, a in zip(speed, arrays)]):.2f}x" if arrays else "-"
        prepare = f"{max(r['prepare_s'] for r in runs):.0f}" if "prepare_s" in runs[0] else "-"
        print(f"| {mode} | {max(r['peak_rss_mb'] for r in runs):.0f} | {np.median(speed):.1f} | {ratio} | "
              f"{100 * np.median([r['wait_share'] for r in runs]):.1f} % | {prepare} |")


if __name__ == "__main__":
    sys.exit(main())

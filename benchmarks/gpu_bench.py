"""Training-step throughput of the tutorial's cat/dog net on a GPU: tinycnn on cuda vs PyTorch on the same
GPU, and vs tinycnn on 2 CPU threads of the same machine.

The net (batch 32, 1×100×100 float32 images): Conv 64 3×3 + ReLU, MaxPool 2, Conv 64 3×3 + ReLU, MaxPool 2,
Flatten (64·23·23 = 33,856), Dense 64 + ReLU, Dense 1, BCE with logits, Adam. One training step = forward,
backward, optimizer step, on data already on the device.

    python benchmarks/gpu_bench.py all [--out DIR]      every configuration, each in its own process, then
                                                        a table of medians and ratios
    python benchmarks/gpu_bench.py run CONFIG           one configuration; prints one JSON line
    python benchmarks/gpu_bench.py smoke                a quick check that the cuda kernels run here

Configurations: tinycnn-cuda (numba-cuda's own allocator, TINYCNN_CUDA_POOL=0: the default),
tinycnn-cuda-pool (tinycnn's caching allocator, TINYCNN_CUDA_POOL=1), tinycnn-cuda-profile (per-kernel times,
synchronising after each launch: slower, for reading only), tinycnn-cuda-tile64x128 (another GEMM tile:
64 x 128 outputs per block, 4 x 8 per thread),
torch-fp32 (TF32 off for matmul and cuDNN: the fair float32 number), torch-default (PyTorch's default
flags, printed: they let cuDNN use TF32); cuDNN autotuning on in both, tinycnn-cpu2 (NUMBA/OMP/OPENBLAS threads = 2, pinned to 2 cores).
The allocator is chosen when tinycnn's CUDA kernels are imported, before the first allocation: each
configuration sets its environment (CONFIGS) at the start of its own process, `run CONFIG` included; the
pool configuration fails if the pool is not in use, and reports its counts (driver allocations, reuses).
Each timing is `rounds` rounds of `steps` steps after warm-up steps (compilation, autotuning), the device
synchronised at the end of each round; images/s are reported as the median (and min–max) over rounds.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, IMAGE = 32, (1, 100, 100)
SHAPES = [(64, 1, 3, 3), (64,), (64, 64, 3, 3), (64,), (64, 64 * 23 * 23), (64,), (1, 64), (1,)]
FAN_IN = [9, 9, 576, 576, 64 * 23 * 23, 64 * 23 * 23, 64, 64]


def initial_arrays(small=False):
    """The same starting weights and batch for every implementation (He-normal weights, zero biases)."""
    import numpy as np
    rng = np.random.default_rng(0)
    shapes = SHAPES if not small else [(4, 1, 3, 3), (4,), (4, 4, 3, 3), (4,), (8, 4), (8,), (1, 8), (1,)]
    params = [np.zeros(s, np.float32) if len(s) == 1 else
              (rng.standard_normal(s) * np.sqrt(2.0 / fan)).astype(np.float32) for s, fan in zip(shapes, FAN_IN)]
    batch, image = (BATCH, IMAGE) if not small else (2, (1, 12, 12))
    x = rng.random((batch,) + image).astype(np.float32)
    y = (rng.random((batch, 1)) > 0.5).astype(np.float32)
    return params, x, y


# ------------------------------------------------------------------------------------------ tinycnn


def tinycnn_step(device, small=False):
    import tinycnn
    import tinycnn.functional as F
    from tinycnn.optim import Adam
    arrays, x, y = initial_arrays(small)
    params = [tinycnn.Tensor(a, requires_grad=True, device=device) for a in arrays]
    x, y = tinycnn.Tensor(x, device=device), tinycnn.Tensor(y, device=device)
    opt = Adam(params, lr=1e-3)
    c1w, c1b, c2w, c2b, d1w, d1b, d2w, d2b = params

    def step():
        h = F.max_pool2d(F.relu(F.conv2d(x, c1w, c1b)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, c2w, c2b)), 2)
        h = F.relu(F.linear(h.flatten(1), d1w, d1b))
        loss = F.binary_cross_entropy_with_logits(F.linear(h, d2w, d2b), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    if device == "cuda":
        from numba import cuda
        return step, cuda.synchronize
    return step, lambda: None


# ------------------------------------------------------------------------------------------ PyTorch


def torch_step(fair):
    """fair: TF32 off for matmul and cuDNN (true float32). Otherwise PyTorch's own defaults, untouched.
    cuDNN autotuning (benchmark=True) is on in both: PyTorch at its best on this net."""
    import torch
    import torch.nn.functional as F
    if fair:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    arrays, x, y = initial_arrays()
    dev = torch.device("cuda")
    params = [torch.tensor(a, device=dev, requires_grad=True) for a in arrays]
    x, y = torch.tensor(x, device=dev), torch.tensor(y, device=dev)
    opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7)
    c1w, c1b, c2w, c2b, d1w, d1b, d2w, d2b = params

    def step():
        h = F.max_pool2d(F.relu(F.conv2d(x, c1w, c1b)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, c2w, c2b)), 2)
        h = F.relu(F.linear(h.flatten(1), d1w, d1b))
        loss = F.binary_cross_entropy_with_logits(F.linear(h, d2w, d2b), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    info = {"torch": torch.__version__, "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn": torch.backends.cudnn.version(),
            "gpu": torch.cuda.get_device_name()}
    return step, torch.cuda.synchronize, info


# ------------------------------------------------------------------------------------------ timing


def time_steps(step, sync, warmup, rounds, steps):
    t0 = time.perf_counter()
    losses = []
    for _ in range(warmup):
        losses.append(float(step().item()))
    sync()
    warm_s = time.perf_counter() - t0
    per_round = []
    for _ in range(rounds):
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync()
        per_round.append(time.perf_counter() - t)
    losses.append(float(loss.item()))
    ips = [steps * BATCH / s for s in per_round]
    return {"img_per_s": statistics.median(ips), "min": min(ips), "max": max(ips),
            "ms_per_step": 1000 * statistics.median(per_round) / steps, "warmup_s": warm_s,
            "rounds": rounds, "steps": steps, "losses": [round(v, 5) for v in losses]}


def profile_kernels(step, sync, steps=5):
    """Per-kernel GPU time (launch + run, synchronised around every launch), summed over `steps` steps."""
    from tinycnn.kernels.cuda import _launch as L
    totals, counts = {}, {}
    launch = L.launch

    def timed(kernel, grid, block, *args):
        sync()
        t = time.perf_counter()
        launch(kernel, grid, block, *args)
        sync()
        name = getattr(kernel, "__name__", str(kernel))
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - t
        counts[name] = counts.get(name, 0) + 1

    step()
    sync()
    # the host cost of one launch: a 1-element kernel launched 200 times, asynchronously
    from tinycnn.kernels.cuda import elementwise as E
    one = E.zeros((1,), "float32")
    sync()
    t = time.perf_counter()
    for _ in range(200):
        L.launch1d(E.fill_kernel, 1, one, L.scalar(1, "float32"))
    launch_us = 1e6 * (time.perf_counter() - t) / 200
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    async_ms = 1000 * (time.perf_counter() - t) / steps
    L.launch = timed
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    wall = time.perf_counter() - t
    L.launch = launch
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    return {"launch_us": launch_us, "async_ms_per_step": async_ms,
            "wall_ms_per_step": 1000 * wall / steps, "kernel_ms_per_step": 1000 * sum(totals.values()) / steps,
            "launches_per_step": sum(counts.values()) // steps,
            "kernels": [(name, round(1000 * s / steps, 3), counts[name] // steps) for name, s in rows]}


def run(config, small=False):
    if config.startswith("tinycnn-cuda"):
        step, sync = tinycnn_step("cuda", small)
        from numba import cuda
        from tinycnn.kernels.cuda import _launch as L
        info = {"gpu": cuda.get_current_device().name.decode() if isinstance(cuda.get_current_device().name, bytes)
                else str(cuda.get_current_device().name), "pool": L.pool_active()}
        if os.environ.get("TINYCNN_CUDA_POOL") == "1" and not info["pool"] and not L.SIM:
            raise SystemExit(f"{config}: TINYCNN_CUDA_POOL=1 but the caching allocator is not in use")
        if config == "tinycnn-cuda-profile":
            return dict(info, **profile_kernels(step, sync))
        result = dict(info, **time_steps(step, sync, warmup=3, rounds=5, steps=20))
        if info["pool"]:
            result["pool_stats"] = L.pool_stats()
        return result
    if config.startswith("torch"):
        step, sync, info = torch_step(fair=(config == "torch-fp32"))
        return dict(info, **time_steps(step, sync, warmup=5, rounds=5, steps=20))
    if config == "tinycnn-cpu2":
        step, sync = tinycnn_step("cpu")
        return dict({"threads": 2}, **time_steps(step, sync, warmup=1, rounds=3, steps=1))
    raise SystemExit(f"unknown configuration {config!r}")


def smoke():
    """Three steps of a small version of the net on cuda and on the CPU: the same losses to float32 rounding."""
    import numpy as np
    from tinycnn.kernels.cuda import _launch as L
    step_g, _ = tinycnn_step("cuda", small=True)
    step_c, _ = tinycnn_step("cpu", small=True)
    a = [float(step_g().item()) for _ in range(3)]
    b = [float(step_c().item()) for _ in range(3)]
    ok = bool(np.allclose(a, b, rtol=1e-4))
    pool = L.pool_active()
    if os.environ.get("TINYCNN_CUDA_POOL") == "1" and not pool and not L.SIM:
        ok = False    # asked for the caching allocator, did not get it
    print(json.dumps({"smoke_ok": ok, "cuda": a, "cpu": b, "pool": pool, "pool_stats": L.pool_stats()}))
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------ all


CONFIGS = {   # in the order they run: the most important first. The environment each sets in its process.
    "torch-fp32": {},
    "tinycnn-cuda": {"TINYCNN_CUDA_POOL": "0"},
    "tinycnn-cuda-pool": {"TINYCNN_CUDA_POOL": "1"},
    "tinycnn-cuda-profile": {"TINYCNN_CUDA_POOL": "0"},
    "torch-default": {},
    # other GEMM tiles (BM,BN,BK,RM,RN); a cache folder of their own: numba's cache ignores changed globals
    "tinycnn-cuda-tile64x128": {"TINYCNN_CUDA_POOL": "0", "TINYCNN_CUDA_TILE": "64,128,8,4,8",
                                "NUMBA_CACHE_DIR": "/tmp/tinycnn-nb-64x128"},
    "tinycnn-cpu2": {"NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                     "MKL_NUM_THREADS": "2"},
}


def run_all(out, only, timeout):
    results = {}
    for name in only or CONFIGS:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **CONFIGS[name])
        env.pop("NUMBA_ENABLE_CUDASIM", None)
        cmd = [sys.executable, os.path.abspath(__file__), "run", name]
        if name == "tinycnn-cpu2" and hasattr(os, "sched_getaffinity") and shutil.which("taskset"):
            cores = sorted(os.sched_getaffinity(0))[:2]
            cmd = ["taskset", "-c", ",".join(map(str, cores))] + cmd
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            results[name] = json.loads(lines[-1]) if p.returncode == 0 and lines else \
                {"error": (p.stderr or p.stdout)[-3000:]}
        except subprocess.TimeoutExpired:
            results[name] = {"error": f"timed out after {timeout} s"}
        except Exception as e:  # noqa: BLE001 - one configuration failing must not stop the others
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["wall_s"] = round(time.perf_counter() - t, 1)
        print(f"{name}: {json.dumps(results[name])[:3000]}", flush=True)
        if out:
            with open(os.path.join(out, "bench.json"), "w") as f:
                json.dump(results, f, indent=1)
    report(results)
    return results


def report(results):
    print("\n| configuration | images/s (median) | min–max | ms/step |")
    print("|---|---|---|---|")
    for name, r in results.items():
        if "img_per_s" in r:
            print(f"| {name} | {r['img_per_s']:.0f} | {r['min']:.0f}–{r['max']:.0f} | {r['ms_per_step']:.2f} |")
        elif "error" in r:
            print(f"| {name} | failed: {r['error'].strip().splitlines()[-1][:80] if r['error'].strip() else '?'} | | |")
    ours = results.get("tinycnn-cuda", {}).get("img_per_s")
    for other in ("torch-fp32", "torch-default", "tinycnn-cuda-tile64x128", "tinycnn-cpu2"):
        theirs = results.get(other, {}).get("img_per_s")
        if ours and theirs:
            print(f"tinycnn-cuda / {other} = {ours / theirs:.3f}")
    pooled = results.get("tinycnn-cuda-pool", {})
    if ours and pooled.get("img_per_s"):
        print(f"tinycnn-cuda-pool / tinycnn-cuda = {pooled['img_per_s'] / ours:.3f} (the caching allocator's gain; "
              f"pool counts: {json.dumps(pooled.get('pool_stats'))})")
    prof = results.get("tinycnn-cuda-profile", {})
    if "kernels" in prof:
        print(f"\nprofile: {prof['async_ms_per_step']:.2f} ms/step as timed, {prof['wall_ms_per_step']:.2f} ms/step "
              f"synchronised after every launch ({prof['launches_per_step']} launches, "
              f"{prof['kernel_ms_per_step']:.2f} ms inside them); one launch costs the host "
              f"{prof['launch_us']:.1f} us. Per step:")
        for name, ms, n in prof["kernels"][:20]:
            print(f"  {name:32s} {ms:8.3f} ms  x{n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["all", "run", "smoke"])
    ap.add_argument("config", nargs="?")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--timeout", type=int, default=150)
    ap.add_argument("--small", action="store_true", help="a tiny net (to try the script under the simulator)")
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    if args.what == "run":
        if args.config not in CONFIGS:
            raise SystemExit(f"unknown configuration {args.config!r}")
        # at start-up, before tinycnn or numba is imported: the allocator, the tile and the threads are read then
        os.environ.update(CONFIGS[args.config])
        print(json.dumps(run(args.config, args.small)), flush=True)
    elif args.what == "smoke":
        sys.exit(smoke())
    else:
        run_all(args.out, args.only, args.timeout)


if __name__ == "__main__":
    main()

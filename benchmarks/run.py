"""tinycnn's CPU benchmark: tinycnn against the installed peers, same work, batch and threads.

    python -m benchmarks                       # everything, 3 rounds
    python -m benchmarks --quick               # smoke run: 1 round, few steps
    python -m benchmarks --only catdog,convs --rounds 5 --write --note "idle machine"
    python benchmarks/run.py --torch-python /path/to/venv/bin/python --tf-python /path/to/tfenv/bin/python

Parts (`--only`, comma-separated): catdog, mobilenet, fcn, strong, detector (training step, inference, batch-1
latency, peak memory of a short training run), convs (each conv layer's forward and backward alone, in
GFLOP/s, against a measured NumPy SGEMM peak), compile (first run with an empty Numba cache, and a warm
start with it: `import tinycnn` + first training step, and, from an empty cache of its own, + first
`predict` of one image, each in a fresh process; `--compile-models catdog` for the tutorial's net alone).

How it measures: every configuration (framework × layout × model × mode) runs in a fresh child process
(`run.py --worker SPEC`), the configurations alternating within each round, the order rotated from round
to round, and each figure is the median over rounds of the child's median. Each child warms up first (for
tinycnn that includes loading or compiling the Numba kernels) and is pinned to the same thread count through
NUMBA_NUM_THREADS, OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, torch.set_num_threads and
TensorFlow's intra-op pool (its inter-op pool gets 1 thread: ops run one after the other, as in the others).
The peers run in the Python that has them (`--torch-python` or $TINYCNN_BENCH_TORCH_PYTHON, `--tf-python` or
$TINYCNN_BENCH_TF_PYTHON, else this Python), tinycnn in this one; torch and tensorflow are never imported by
tinycnn's side. TensorFlow runs the Keras twins channels-last (NHWC), each step one tf.function without XLA
(what Keras' model.fit runs per batch on a CPU, where its jit_compile="auto" turns XLA off).
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

RESULT_TAG = "BENCH_RESULT "
PARTS = ("catdog", "mobilenet", "fcn", "strong", "detector", "convs", "compile")
MODEL_PARTS = ("catdog", "mobilenet", "fcn", "strong", "detector")
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
SGEMM_SHAPES = {"sgemm 512×4608 @ 4608×512": (512, 4608, 512),
                "sgemm conv2-shaped 64×576 @ 576×70688": (64, 576, 70688)}
PEAK_SHAPE = "sgemm 512×4608 @ 4608×512"
# Every child runs with glibc's malloc keeping the memory it frees (no per-allocation mmap, no trimming):
# PyTorch frees its activations every step, and by default they go back to the OS and page-fault in again
# (~40 % of its step: ../perf-notes); this gives PyTorch what tcmalloc gives it (cat/dog, channels-last,
# 2 threads: 115 -> 203 img/s), and every framework the same allocator conditions. --default-malloc: off.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


# ====================================================================== worker side (one child process)

def _timed(fn, warmup, reps):
    """Per-call seconds of `reps` calls after `warmup` calls, and the process CPU time / wall time ratio."""
    for _ in range(warmup):
        fn()
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - wall0
    return times, (time.process_time() - cpu0) / wall if wall > 0 else float("nan")


def _rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class _Framework:
    """What a worker needs of a framework: a training step, an inference call, conv kernels."""

    def __init__(self, name, layout, threads):
        self.name, self.layout, self.threads = name, layout, threads
        if name == "torch":
            import torch
            torch.set_num_threads(threads)
            self.torch = torch
        elif name == "tf":
            import tensorflow as tf
            tf.config.threading.set_intra_op_parallelism_threads(threads)  # before any op creates the pools
            tf.config.threading.set_inter_op_parallelism_threads(1)
            self.tf = tf
        else:
            import tinycnn
            self.tinycnn = tinycnn

    def info(self):
        if self.name == "torch":
            return {"version": self.torch.__version__, "threads": self.torch.get_num_threads()}
        if self.name == "tf":
            import keras
            threading = self.tf.config.threading
            return {"version": self.tf.__version__, "keras": keras.__version__,
                    "intra_op_threads": threading.get_intra_op_parallelism_threads(),
                    "inter_op_threads": threading.get_inter_op_parallelism_threads(), "jit_compile": False,
                    "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}
        import numba
        info = {"version": self.tinycnn.__version__, "numba": numba.__version__,
                "numba_threads": numba.config.NUMBA_NUM_THREADS}
        try:
            info["threading_layer"] = numba.threading_layer()
        except Exception:  # no parallel kernel has run yet
            pass
        return info

    # ---------------------------------------------------------------- models
    def model(self, name, batch, seed=0):
        from benchmarks.models import build_tinycnn, build_torch, make_batch
        x, y = make_batch(name, batch, seed)
        if self.name == "tf":
            import keras
            from benchmarks.models import build_keras, count_trainable
            keras.utils.set_random_seed(seed)
            model, loss_fn = build_keras(name)
            xt = self.tf.constant(x.transpose(0, 2, 3, 1))  # NCHW -> NHWC, once, outside the timed calls
            return _KerasModel(self.tf, model, loss_fn, xt, self.tf.constant(y)), count_trainable(model)
        if self.name == "torch":
            torch = self.torch
            torch.manual_seed(seed)
            model, loss_fn = build_torch(name)
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            if self.layout == "cl":
                model = model.to(memory_format=torch.channels_last)
                xt = xt.contiguous(memory_format=torch.channels_last)
            params = sum(p.numel() for p in model.parameters())
            return _TorchModel(torch, model, loss_fn, xt, yt, self.layout == "cl"), params
        tinycnn = self.tinycnn
        tinycnn.manual_seed(seed)
        model, loss_fn = build_tinycnn(name)
        model.eval()
        with tinycnn.no_grad():  # create the lazily built weights before the optimizer takes them
            model(tinycnn.Tensor(x[:1]))
        model.train()
        return _TinycnnModel(tinycnn, model, loss_fn, x, y), model.count_params()


class _TinycnnModel:
    def __init__(self, tinycnn, model, loss_fn, x, y):
        self.tc, self.model, self.loss_fn, self.x, self.y = tinycnn, model, loss_fn, x, y
        from tinycnn import optim
        self.optimizer = optim.Adam(list(model.parameters()), lr=1e-3, eps=1e-7)

    def train_step(self):  # what Module.fit does per batch, without its data checks and progress bar
        out = self.model(self.tc.Tensor(self.x))
        loss = self.loss_fn(out, self.y)
        value = float(loss.item())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return value

    def eval(self):
        self.model.eval()

    def infer(self, x):
        """The path predict and evaluate run: the inference form (batch norm folded), replayed by a plan."""
        from tinycnn.plan import infer
        with self.tc.no_grad():
            return infer(self.model, self.tc.Tensor(x)).numpy()

    def batch(self, n):
        return self.x[:n]


class _TorchModel:
    def __init__(self, torch, model, loss_fn, x, y, channels_last):
        self.torch, self.model, self.loss_fn, self.x, self.y = torch, model, loss_fn, x, y
        self.channels_last = channels_last
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

    def train_step(self):
        out = self.model(self.x)
        loss = self.loss_fn(out, self.y)
        value = float(loss.item())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value

    def eval(self):
        self.model.eval()

    def infer(self, x):
        with self.torch.inference_mode():
            return self.model(x)

    def batch(self, n):
        x = self.x[:n]
        return x.contiguous(memory_format=self.torch.channels_last) if self.channels_last else x.contiguous()


class _KerasModel:
    """Keras' model.fit per batch, without its data adapter, callbacks and loss tracker: one tf.function
    (jit_compile off, as fit's "auto" on a CPU) of forward (training=True: batch statistics, moving averages
    updated), loss, gradients and the Adam update. Inference is one tf.function of model(x, training=False)."""

    def __init__(self, tf, model, loss_fn, x, y):
        import keras
        self.tf, self.model, self.x, self.y = tf, model, x, y
        optimizer = keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7)
        weights = model.trainable_weights
        optimizer.build(weights)  # its slots exist before the step is traced, as fit builds them

        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
            return loss

        self._step = tf.function(step, jit_compile=False)
        self._infer = tf.function(lambda x: model(x, training=False), jit_compile=False)

    def train_step(self):
        return float(self._step(self.x, self.y))

    def eval(self):
        pass  # inference passes training=False

    def infer(self, x):
        return self._infer(x)  # eager execution is synchronous: the output is computed on return

    def batch(self, n):
        return self.x[:n]


def _work_train(fw, spec):
    from benchmarks.models import BATCH
    batch = BATCH[spec["model"]]
    model, params = fw.model(spec["model"], batch)
    rss_built = _rss_mb()
    first = time.perf_counter()
    model.train_step()
    first = time.perf_counter() - first
    times, cpu = _timed(model.train_step, spec["warmup"], spec["steps"])
    return {"step_s": statistics.median(times), "step_times": times, "first_step_s": first, "batch": batch,
            "params": params, "rss_built_mb": rss_built, "rss_peak_mb": _rss_mb(), "cpu_per_wall": cpu}


def _work_infer(fw, spec):
    from benchmarks.models import BATCH
    batch = BATCH[spec["model"]]
    model, params = fw.model(spec["model"], batch)
    model.eval()
    x, x1 = model.batch(batch), model.batch(1)
    times, cpu = _timed(lambda: model.infer(x), spec["warmup"], spec["steps"])
    lat, _ = _timed(lambda: model.infer(x1), spec["warmup"] + 2, spec["latency_reps"])
    return {"infer_s": statistics.median(times), "infer_times": times, "latency_s": statistics.median(lat),
            "latency_times": lat, "batch": batch, "params": params, "cpu_per_wall": cpu}


def _sgemm_rate(np, reps):
    """GFLOP/s of NumPy's SGEMM on the peak shape, now, in this process (the reference for % of peak)."""
    M, K, N = SGEMM_SHAPES[PEAK_SHAPE]
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
    c = np.empty((M, N), np.float32)
    times, _ = _timed(lambda: np.matmul(a, b, out=c), 1, reps)
    return 2.0 * M * K * N / statistics.median(times) / 1e9


def _work_convs(fw, spec):
    import numpy as np
    from benchmarks.models import CONV_CASES, conv_flops, conv_output
    rng = np.random.default_rng(0)
    out = {}
    for name, case in CONV_CASES.items():
        peak_before = _sgemm_rate(np, spec["reps"])
        N, C, H, W, F, K, s, p, g, need_dx = case
        OH, OW = conv_output(H, K, s, p), conv_output(W, K, s, p)
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = (rng.standard_normal((F, C // g, K, K)) * 0.1).astype(np.float32)
        b = np.zeros(F, np.float32)
        dy = rng.standard_normal((N, F, OH, OW)).astype(np.float32)
        if fw.name == "torch":
            torch = fw.torch
            tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
            if fw.layout == "cl":
                tx, tw, tdy = (t.contiguous(memory_format=torch.channels_last) for t in (tx, tw, tdy))

            def forward():
                with torch.inference_mode():
                    return torch.nn.functional.conv2d(tx, tw, tb, s, p, 1, g)

            def backward():
                with torch.no_grad():
                    return torch.ops.aten.convolution_backward(tdy, tx, tw, [F], [s, s], [p, p], [1, 1], False,
                                                               [0, 0], g, [need_dx, True, True])
        elif fw.name == "tf":
            forward, backward = _tf_conv(fw.tf, x, w, b, dy, s, p, g, need_dx)
        else:
            from tinycnn.device import kernels_for
            kc = kernels_for("cpu").conv
            if name.startswith("mobilenet"):  # the regressor runs channels last: time the kernels it uses
                xl, dyl = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, dy))

                def forward():
                    return kc.conv2d_channels_last_forward(xl, w, b, (s, s), (p, p), (1, 1), g)

                def backward():
                    return kc.conv2d_channels_last_backward(dyl, xl, w, (s, s), (p, p), (1, 1), g, need_dx, True, True)
            else:
                def forward():
                    return kc.conv2d_forward(x, w, b, (s, s), (p, p), (1, 1), g)

                def backward():
                    return kc.conv2d_backward(dy, x, w, (s, s), (p, p), (1, 1), g, need_dx, True, True)
        flops = conv_flops(case)
        fwd, _ = _timed(forward, spec["warmup"], spec["reps"])
        bwd, _ = _timed(backward, spec["warmup"], spec["reps"])
        peak = (peak_before + _sgemm_rate(np, spec["reps"])) / 2
        out[name] = {"forward_s": statistics.median(fwd), "backward_s": statistics.median(bwd),
                     "forward_flop": flops, "backward_flop": flops * (2 if need_dx else 1), "need_dx": need_dx,
                     "sgemm_gflops": peak}
    return {"convs": out}


def _tf_conv(tf, x, w, b, dy, s, p, g, need_dx):
    """TensorFlow's conv on NHWC tensors (HWIO filters; depthwise when g is the channel count), explicit
    padding: forward = conv + bias add; backward = the ops its gradient runs (dx when needed, dw, db), eager."""
    C, F = x.shape[1], w.shape[0]
    tx, tdy = tf.constant(x.transpose(0, 2, 3, 1)), tf.constant(dy.transpose(0, 2, 3, 1))
    tb = tf.constant(b)
    strides, pads, flat = [1, s, s, 1], [[0, 0], [p, p], [p, p], [0, 0]], [0, 0, p, p, p, p, 0, 0]
    raw = tf.raw_ops
    if g == 1:
        tw = tf.constant(w.transpose(2, 3, 1, 0))
        conv, back_x, back_w = tf.nn.conv2d, raw.Conv2DBackpropInput, raw.Conv2DBackpropFilter
    elif g == C == F:
        tw = tf.constant(w.transpose(2, 3, 0, 1))  # (K, K, C, multiplier 1)
        conv = tf.nn.depthwise_conv2d
        back_x, back_w = raw.DepthwiseConv2dNativeBackpropInput, raw.DepthwiseConv2dNativeBackpropFilter
    else:
        raise ValueError(f"groups={g}: only dense and depthwise convs are timed in TensorFlow")
    x_shape, w_shape = tf.constant(tx.shape.as_list(), tf.int32), tf.constant(tw.shape.as_list(), tf.int32)
    kw = dict(out_backprop=tdy, strides=strides, padding="EXPLICIT", explicit_paddings=flat)

    def forward():
        return tf.nn.bias_add(conv(tx, tw, strides, pads), tb)

    def backward():
        dx = back_x(input_sizes=x_shape, filter=tw, **kw) if need_dx else None
        return dx, back_w(input=tx, filter_sizes=w_shape, **kw), tf.reduce_sum(tdy, [0, 1, 2])

    return forward, backward


def _work_sgemm(spec):
    import numpy as np
    rng = np.random.default_rng(0)
    out = {}
    for name, (M, K, N) in SGEMM_SHAPES.items():
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        c = np.empty((M, N), np.float32)
        times, _ = _timed(lambda: np.matmul(a, b, out=c), spec["warmup"], spec["reps"])
        out[name] = {"s": statistics.median(times), "flop": 2.0 * M * K * N}
    return {"sgemm": out, "numpy": np.__version__}


def _work_startup(spec, t_start):
    """import + build + first training step (or, spec["phase"] == "predict", first `predict` of one image, as
    `python -m tinycnn.predict` does), from the worker's first line (the process start is timed by the
    parent)."""
    from benchmarks.models import BATCH
    if spec["framework"] == "torch":
        import torch
        torch.set_num_threads(spec["threads"])
    elif spec["framework"] == "tf":
        import tensorflow  # noqa: F401  (threads are set by _Framework, before the first op)
        import keras  # noqa: F401
    else:
        import tinycnn  # noqa: F401
    t_import = time.perf_counter() - t_start
    if spec.get("phase") == "predict":
        return dict(_first_predict(spec["model"]), import_s=t_import, rss_peak_mb=_rss_mb())
    fw = _Framework(spec["framework"], spec["layout"], spec["threads"])
    t0 = time.perf_counter()
    model, _ = fw.model(spec["model"], BATCH[spec["model"]])
    model.train_step()
    t_first = time.perf_counter() - t0
    to_first = time.time() - spec["spawned_at"]
    t1 = time.perf_counter()
    model.train_step()
    return {"import_s": t_import, "first_step_s": t_first, "second_step_s": time.perf_counter() - t1,
            "spawn_to_first_step_s": to_first, "rss_peak_mb": _rss_mb()}


def _first_predict(name):
    """tinycnn's model `name` built, then `model.predict` of one image (channels-last for the Keras-style
    Sequential nets, NCHW for the others): the build, the first call (with its compiles) and a second one."""
    import numpy as np
    from benchmarks.models import build_tinycnn, make_batch
    x, _ = make_batch(name, 1)
    if name in ("catdog", "strong"):  # tinycnn.Sequential nets with a Keras input_shape (H, W, C)
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    t0 = time.perf_counter()
    model, _ = build_tinycnn(name)
    model.predict(x)
    t_first = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.predict(x)
    return {"first_predict_s": t_first, "second_predict_s": time.perf_counter() - t1}


def worker_main(spec_json):
    t_start = time.perf_counter()
    spec = json.loads(spec_json)
    kind = spec["kind"]
    if kind == "sgemm":
        result = _work_sgemm(spec)
    elif kind == "startup":
        result = _work_startup(spec, t_start)
    else:
        fw = _Framework(spec["framework"], spec["layout"], spec["threads"])
        result = {"train": _work_train, "infer": _work_infer, "convs": _work_convs}[kind](fw, spec)
        result["framework_info"] = fw.info()
    result["loadavg_end"] = os.getloadavg()[0]
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ====================================================================== parent side

class Config:
    """One column of a table: a framework, its memory layout and the Python that runs it."""

    def __init__(self, framework, layout, python, label):
        self.framework, self.layout, self.python, self.label = framework, layout, python, label

    def spec(self, **kw):
        return dict(framework=self.framework, layout=self.layout, **kw)


def _probe(python, code):
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, str(error)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"exit code {done.returncode}"
    return done.stdout.strip(), None


def find_configs(args, skipped):
    """tinycnn, and the peers importable in their Pythons; what is skipped goes to `skipped` with a reason."""
    configs = [Config("tinycnn", "nchw", sys.executable, "tinycnn")]
    torch_python = args.torch_python or os.environ.get("TINYCNN_BENCH_TORCH_PYTHON") or sys.executable
    version, error = _probe(torch_python, "import torch; print(torch.__version__)")
    if version is None:
        skipped.append(f"PyTorch: not importable by {torch_python} ({error}); install it with "
                       "`pip install \".[bench]\"` or pass --torch-python")
    else:
        configs.append(Config("torch", "nchw", torch_python, f"torch {version} NCHW"))
        if args.no_channels_last:
            skipped.append("PyTorch channels-last: --no-channels-last")
        else:
            configs.append(Config("torch", "cl", torch_python, f"torch {version} channels-last"))
    tf_python = args.tf_python or os.environ.get("TINYCNN_BENCH_TF_PYTHON") or sys.executable
    version, error = _probe(tf_python, "import os; os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2'); "
                                       "import tensorflow as tf; print(tf.__version__)")
    if version is None:
        skipped.append(f"TensorFlow: not importable by {tf_python} ({error}); install tensorflow-cpu in a "
                       "venv and pass --tf-python")
    else:
        configs.append(Config("tf", "nhwc", tf_python, f"tf {version} NHWC no-XLA"))
    return configs


def child_env(threads, extra=None):
    env = dict(os.environ)
    for name in THREAD_VARS:
        env[name] = str(threads)
    env.pop("NUMBA_DISABLE_JIT", None)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # less of TensorFlow's chatter on stderr (errors shown)
    env.update(extra or {})
    return env


def run_child(python, spec, threads, timeout, env_extra=None):
    """Run one worker; (result dict, None) or (None, error text). The result gets the process wall time."""
    command = [python, os.path.join(HERE, "run.py"), "--worker", json.dumps(dict(spec, spawned_at=time.time()))]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=child_env(threads, env_extra))
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    wall = time.perf_counter() - start
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result["process_s"] = wall
            return result, None
    tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
    return None, f"exit code {done.returncode}: " + " | ".join(tail)


def source_snapshot():
    """{path: hash} of tinycnn's CPU-side Python sources (tinycnn/, kernels/cpu/): a change mid-run is reported."""
    snapshot = {}
    for top in ("tinycnn", os.path.join("kernels", "cpu")):
        for root, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    try:
                        with open(path, "rb") as f:
                            snapshot[os.path.relpath(path, REPO)] = hashlib.sha1(f.read()).hexdigest()
                    except OSError:
                        pass
    return snapshot


def machine_info():
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Flags"):
                info["cpu" if key.strip() == "Model name" else "flags"] = value.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    flags = info.pop("flags", "").split()
    info["simd"] = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "?"
    info["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=REPO, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tinycnn", "kernels"], capture_output=True,
                               text=True, cwd=REPO, timeout=10).stdout.split("\n")
        info["modified"] = sorted(line[3:] for line in dirty if line.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


class Bench:
    def __init__(self, args):
        self.args = args
        self.skipped, self.failures, self.records = [], [], []
        self.loads = [os.getloadavg()[0]]
        self.probes = []
        self.snapshot = source_snapshot()
        self.changed = {}  # file -> labels of the tinycnn children launched after it changed

    def child(self, label, config, spec, python=None, env_extra=None, threads=None):
        threads = threads or self.args.threads
        spec = dict(spec, threads=threads)
        if config is not None and config.framework == "tinycnn":
            now = source_snapshot()
            for path in set(now) | set(self.snapshot):
                if now.get(path) != self.snapshot.get(path):
                    self.changed.setdefault(path, [])
            for path in self.changed:
                self.changed[path].append(label)
        if not self.args.default_malloc:
            env_extra = dict({"GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", MALLOC_TUNABLES)}, **(env_extra or {}))
        result, error = run_child(python or config.python, spec, threads, self.args.timeout, env_extra)
        if result is None:
            self.failures.append(f"{label}: {error}")
            print(f"  {label}: FAILED ({error})", flush=True)
            return None
        self.loads.append(result.get("loadavg_end", float("nan")))
        self.records.append({"label": label, "spec": spec, "result": result})
        return result

    def load_probe(self, when):
        """NumPy SGEMM at --threads and at 1 thread, each in a fresh process. On a machine busy with other
        work, a multi-threaded GEMM waits for all its threads to be scheduled at once and can be slower than
        one thread: then every multi-threaded figure of the run is dominated by the scheduler."""
        rates = {}
        for threads in sorted({self.args.threads, 1}, reverse=True):
            res = self.child(f"load probe ({when}), {threads} thread(s)", None,
                             {"kind": "sgemm", "warmup": 2, "reps": 10}, python=sys.executable, threads=threads)
            if res is not None:
                s = res["sgemm"][PEAK_SHAPE]
                rates[threads] = s["flop"] / s["s"] / 1e9
        text = ", ".join(f"{rates[t]:.1f} GFLOP/s at {t} thread{'s' if t > 1 else ''}" for t in sorted(rates, reverse=True))
        line = f"SGEMM {PEAK_SHAPE.split(' ', 1)[1]} {when}: {text}"
        n = self.args.threads
        if n > 1 and n in rates and 1 in rates and rates[n] < 1.2 * rates[1]:
            line += (f" — **{n} threads run at {rates[n] / rates[1]:.2f}× the 1-thread rate: the machine is "
                     "oversubscribed and multi-threaded timings are dominated by scheduling**")
        print(f"  {line}", flush=True)
        self.probes.append(line)

    # ---------------------------------------------------------------- parts
    def run_models(self, names, configs, rounds):
        a = self.args
        jobs = [(m, c, kind) for m in names for c in configs for kind in ("train", "infer")]
        results = {}
        for r in range(rounds):
            for m, c, kind in _rotate(jobs, r):
                spec = c.spec(kind=kind, model=m, warmup=a.warmup, steps=a.steps, latency_reps=a.latency_reps)
                label = f"[round {r + 1}/{rounds}] {m} {kind} {c.label}"
                res = self.child(label, c, spec)
                if res is None:
                    continue
                results.setdefault((m, c.label, kind), []).append(res)
                if kind == "train":
                    print(f"  {label}: {res['batch'] / res['step_s']:.1f} img/s (step {res['step_s'] * 1e3:.0f} ms,"
                          f" peak RSS {res['rss_peak_mb']:.0f} MB)", flush=True)
                else:
                    print(f"  {label}: {res['batch'] / res['infer_s']:.1f} img/s, batch-1 "
                          f"{res['latency_s'] * 1e3:.2f} ms", flush=True)
        return results

    def run_convs(self, configs, rounds):
        a = self.args
        jobs = [(c, "convs") for c in configs] + [(None, "sgemm")]
        results = {}
        for r in range(rounds):
            for c, kind in _rotate(jobs, r):
                label = f"[round {r + 1}/{rounds}] {kind} {c.label if c else 'numpy'}"
                if kind == "sgemm":
                    res = self.child(label, None, {"kind": "sgemm", "warmup": a.warmup, "reps": a.reps},
                                     python=sys.executable)
                    key = "sgemm"
                else:
                    res = self.child(label, c, c.spec(kind="convs", warmup=a.warmup, reps=a.reps))
                    key = c.label
                if res is not None:
                    results.setdefault(key, []).append(res)
                    if kind == "sgemm":
                        s = res["sgemm"][PEAK_SHAPE]
                        print(f"  {label}: {s['flop'] / s['s'] / 1e9:.1f} GFLOP/s", flush=True)
                    else:
                        print(f"  {label}: " + ", ".join(
                            f"{n.split()[0]} {n.split()[1]} fwd {v['forward_flop'] / v['forward_s'] / 1e9:.1f}"
                            for n, v in res["convs"].items()) + " GFLOP/s", flush=True)
        return results

    def run_compile(self, names, configs, rounds):
        """tinycnn's start-up with an empty Numba cache (cold) and on the cache that run filled (warm): the
        first training step, and, each from its own empty cache, the first predict; then the peers' first
        training step."""
        results = {}
        peer_configs = [c for c in configs if c.framework == "tf" or (c.framework == "torch" and c.layout == "nchw")]
        tinycnn_config = configs[0]
        for r in range(rounds):
            for m in _rotate(list(names), r):
                for task in ("train", "predict"):
                    cache = tempfile.mkdtemp(prefix="tinycnn-numba-cache-")
                    try:
                        for phase in ("cold", "warm"):
                            label = f"[round {r + 1}/{rounds}] {m} startup tinycnn {task} {phase}"
                            spec = tinycnn_config.spec(kind="startup", model=m, phase=task)
                            res = self.child(label, tinycnn_config, spec, env_extra={"NUMBA_CACHE_DIR": cache})
                            if res is None:
                                continue
                            key = f"tinycnn {phase}" if task == "train" else f"tinycnn predict {phase}"
                            results.setdefault((m, key), []).append(res)
                            first = res["first_step_s"] if task == "train" else res["first_predict_s"]
                            print(f"  {label}: import {res['import_s']:.2f} s, first {'step' if task == 'train' else 'predict'} "
                                  f"{first:.2f} s, process {res['process_s']:.2f} s", flush=True)
                    finally:
                        shutil.rmtree(cache, ignore_errors=True)
                for c in peer_configs:
                    label = f"[round {r + 1}/{rounds}] {m} startup {c.label}"
                    res = self.child(label, c, c.spec(kind="startup", model=m))
                    if res is not None:
                        results.setdefault((m, c.label), []).append(res)
                        print(f"  {label}: import {res['import_s']:.2f} s, first step {res['first_step_s']:.2f} s,"
                              f" process {res['process_s']:.2f} s", flush=True)
        return results


def _command_line(argv):
    """The arguments as a shell would take them back (double quotes where that reads better)."""
    words = []
    for arg in argv:
        quoted = shlex.quote(arg)
        if quoted != arg and not any(ch in arg for ch in '"$`\\!'):
            quoted = f'"{arg}"'
        words.append(quoted)
    return " ".join(words)


def _rotate(items, r):
    r %= max(1, len(items))
    return items[r:] + items[:r]


def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value, digits=1, spread=None):
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    if spread and len(spread) > 1:
        text += f" ({min(spread):.{digits}f}–{max(spread):.{digits}f})"
    return text


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"


# ---------------------------------------------------------------------- tables (markdown)

def model_tables(results, names, configs):
    from benchmarks.models import BATCH, INPUT
    lines = []
    tc = configs[0].label
    peers = [c.label for c in configs[1:]]
    for m in names:
        batch = BATCH[m]
        lines.append(f"**{m}** (batch {batch}, {'×'.join(map(str, INPUT[m]))}): median over rounds "
                     "(min–max of the rounds)")
        lines.append("")
        head = ["metric"] + [c.label for c in configs] + [f"tinycnn vs {p}" for p in peers]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))

        def row(title, kind, value_of, better_high, digits):
            medians, cells = {}, []
            for c in configs:
                values = [value_of(res) for res in results.get((m, c.label, kind), [])]
                medians[c.label] = _med(values)
                cells.append(_fmt(medians[c.label], digits, values))
            ratios = [_ratio(medians[tc], medians[p]) if better_high else _ratio(medians[p], medians[tc])
                      for p in peers] if better_high is not None else [""] * len(peers)
            lines.append("| " + " | ".join([title] + cells + ratios) + " |")

        row("train img/s", "train", lambda r: r["batch"] / r["step_s"], True, 1)
        row(f"inference img/s (batch {batch})", "infer", lambda r: r["batch"] / r["infer_s"], True, 1)
        row("latency batch 1 (ms)", "infer", lambda r: r["latency_s"] * 1e3, False, 2)
        row("peak RSS, short training run (MB)", "train", lambda r: r["rss_peak_mb"], False, 0)
        row("CPU time / wall time while training", "train", lambda r: r["cpu_per_wall"], None, 2)
        params = {c.label: _med([r["params"] for r in results.get((m, c.label, "train"), [])]) for c in configs}
        lines.append("")
        lines.append("Parameters: " + ", ".join(f"{k} {int(v):,}" for k, v in params.items() if v) +
                     ("" if len({v for v in params.values() if v}) <= 1 else "  **(differ!)**"))
        lines.append("")
    lines.append("Ratios: > 1 means tinycnn is better (throughput tinycnn/peer; latency and memory peer/tinycnn). "
                 "CPU/wall is the share of the machine the child got (at most the thread count; idle-waiting "
                 "OpenMP threads count as busy): a column far below the others ran under more load." +
                 (" tf: the Keras twins, channels-last (NHWC), each training step and inference call one "
                  "tf.function without XLA (jit_compile off, as Keras' model.fit on a CPU)."
                  if any(c.framework == "tf" for c in configs) else ""))
    lines.append("")
    return lines


def conv_tables(results, configs):
    from benchmarks.models import CONV_CASES
    lines = []
    sgemm = results.get("sgemm", [])
    peak = _med([r["sgemm"][PEAK_SHAPE]["flop"] / r["sgemm"][PEAK_SHAPE]["s"] / 1e9 for r in sgemm])
    for name in SGEMM_SHAPES:
        values = [r["sgemm"][name]["flop"] / r["sgemm"][name]["s"] / 1e9 for r in sgemm]
        lines.append(f"- NumPy {name}: {_fmt(_med(values), 1, values)} GFLOP/s")
    lines.append("")
    tc = configs[0].label
    peers = [c.label for c in configs[1:]]
    head = ["conv layer", "pass", "GFLOP"] + [f"{c.label} GFLOP/s" for c in configs] + \
           ["tinycnn ms", "tinycnn % of SGEMM"] + [f"tinycnn vs {p}" for p in peers]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for name, case in CONV_CASES.items():
        for p in ("forward", "backward"):
            rates, ms, pcts = {}, None, []
            cells = []
            for c in configs:
                values = [r["convs"][name][f"{p}_flop"] / r["convs"][name][f"{p}_s"] / 1e9
                          for r in results.get(c.label, [])]
                rates[c.label] = _med(values)
                cells.append(_fmt(rates[c.label], 1, values))
                if c.label == tc:
                    ms = _med([r["convs"][name][f"{p}_s"] * 1e3 for r in results.get(c.label, [])])
                    pcts = [100 * v / r["convs"][name]["sgemm_gflops"] for v, r in zip(values, results.get(c.label, []))]
            flop = None
            for c in configs:
                for r in results.get(c.label, []):
                    flop = r["convs"][name][f"{p}_flop"]
            pass_name = p if p == "forward" else ("backward dx+dw+db" if case[-1] else "backward dw+db")
            pct = _fmt(_med(pcts), 0, pcts) + " %" if pcts else "–"
            lines.append("| " + " | ".join([name, pass_name, _fmt(flop / 1e9 if flop else None, 2)] + cells +
                                           [_fmt(ms, 1), pct] + [_ratio(rates[tc], rates[q]) for q in peers]) + " |")
    lines.append("")
    lines.append("GFLOP counts 2 per multiply-add; a backward with dx and dw counts twice the forward's FLOPs. "
                 "Ratios > 1: tinycnn faster. % of SGEMM: tinycnn's rate over NumPy's SGEMM "
                 f"({PEAK_SHAPE}) timed in the same process just before and after that layer, so both see "
                 "the same load.")
    lines.append("")
    return lines


def compile_tables(results, names):
    keys = ("import_s", "first_step_s", "spawn_to_first_step_s", "second_step_s", "rss_peak_mb")
    lines = ["| model | configuration | import (s) | build + first training step (s) | process start → first "
             "step done (s) | second step (s) | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
    for m in names:
        labels = sorted({label for (model, label) in results if model == m and "predict" not in label},
                        key=lambda s: (not s.startswith("tinycnn"), s))
        for label in labels:
            rs = results[(m, label)]
            cells = [_fmt(_med([r[k] for r in rs]), 0 if k == "rss_peak_mb" else 2, [r[k] for r in rs]) for k in keys]
            lines.append("| " + " | ".join([m, label] + cells) + " |")
        cold, warm = results.get((m, "tinycnn cold")), results.get((m, "tinycnn warm"))
        if cold and warm:
            jit = _med([r["first_step_s"] for r in cold]) - _med([r["first_step_s"] for r in warm])
            lines.append(f"| {m} | ⇒ Numba compile time (cold − warm first step) | | {jit:.2f} | | | |")
    lines.append("")
    lines.append("cold: a fresh, empty NUMBA_CACHE_DIR (every kernel compiles); warm: a second process on that "
                 "cache. Import is timed from the worker's first line; 'process start → first step done' "
                 "includes the interpreter start. The second step shows the steady state is reached.")
    lines.append("")
    keys = ("import_s", "first_predict_s", "process_s", "second_predict_s", "rss_peak_mb")
    rows = [(m, phase, results[(m, f"tinycnn predict {phase}")]) for m in names for phase in ("cold", "warm")
            if (m, f"tinycnn predict {phase}") in results]
    if rows:
        lines += ["| model | tinycnn predict | import (s) | build + first `predict` of one image (s) | whole process (s) "
                  "| second predict (s) | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
        for m, phase, rs in rows:
            cells = [_fmt(_med([r[k] for r in rs]), 0 if k == "rss_peak_mb" else 2, [r[k] for r in rs]) for k in keys]
            lines.append("| " + " | ".join([m, phase] + cells) + " |")
        lines += ["", "predict: its own empty NUMBA_CACHE_DIR (cold: only what inference compiles), then a second "
                  "process on it (warm); `model.predict` of one image, as `python -m tinycnn.predict` runs it.", ""]
    return lines


# ---------------------------------------------------------------------- RESULTS.md

def write_results(path, block):
    """Append `block` at the end of the '## CPU' section of `path` (created if missing); other sections
    (## GPU) are left as they are."""
    text = open(path).read() if os.path.exists(path) else "# tinycnn benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## CPU"), None)
    if start is None:
        lines += ["", "## CPU", ""] + block
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = [""] + block + ([""] if end < len(lines) and lines[end].strip() else [])
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts among {', '.join(PARTS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, few steps")
    p.add_argument("--rounds", type=int, help="rounds (fresh processes per configuration); default 3, quick 1")
    p.add_argument("--steps", type=int, help="timed training/inference steps per child (default 10, quick 2)")
    p.add_argument("--warmup", type=int, help="untimed calls before timing (default 2, quick 1)")
    p.add_argument("--reps", type=int, help="timed calls per conv/SGEMM (default 10, quick 3)")
    p.add_argument("--latency-reps", type=int, help="timed batch-1 calls (default 30, quick 5)")
    p.add_argument("--threads", type=int, default=2, help="threads for every framework (default 2)")
    p.add_argument("--compile-models", help="models of the compile part, comma-separated (default: the model "
                   "parts chosen, else catdog, mobilenet and fcn)")
    p.add_argument("--torch-python", help="Python with torch (default: $TINYCNN_BENCH_TORCH_PYTHON, or this one)")
    p.add_argument("--tf-python", help="Python with tensorflow (default: $TINYCNN_BENCH_TF_PYTHON, or this one)")
    p.add_argument("--no-channels-last", action="store_true", help="skip the PyTorch channels-last column")
    p.add_argument("--default-malloc", action="store_true",
                   help="run the children with glibc's default malloc settings (default: keep freed memory, "
                        "GLIBC_TUNABLES=" + MALLOC_TUNABLES + ")")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per child process (default 1800)")
    p.add_argument("--write", nargs="?", const=os.path.join(HERE, "RESULTS.md"), metavar="PATH",
                   help="append a dated block to the '## CPU' section of benchmarks/RESULTS.md (or PATH)")
    p.add_argument("--note", default="", help="a line about the conditions (load, power), written with --write")
    p.add_argument("--json", metavar="PATH", help="also dump every child's raw result to PATH")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in parts if s not in PARTS]
    if bad:
        p.error(f"--only: unknown part(s) {bad}; choose among {', '.join(PARTS)}")
    args.parts = [s for s in PARTS if s in parts]
    if args.compile_models:
        from benchmarks.models import BATCH
        unknown = [m for m in args.compile_models.split(",") if m and m not in BATCH]
        if unknown:
            p.error(f"--compile-models: unknown model(s) {unknown}; choose among {', '.join(BATCH)}")
    q = args.quick
    args.rounds = args.rounds or (1 if q else 3)
    args.steps = args.steps or (2 if q else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    args.reps = args.reps or (3 if q else 10)
    args.latency_reps = args.latency_reps or (5 if q else 30)
    if args.rounds < 1 or args.threads < 1:
        p.error("--rounds and --threads must be ≥ 1")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        return worker_main(argv[1])
    args = parse_args(argv)
    started = datetime.datetime.now()
    machine = machine_info()
    bench = Bench(args)
    configs = find_configs(args, bench.skipped)
    print(f"tinycnn CPU benchmark, {started:%Y-%m-%d %H:%M}: {machine.get('cpu', '?')}, {machine['cores']} cores, "
          f"{args.threads} threads, parts {', '.join(args.parts)}, {args.rounds} round(s)")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("configurations: " + "; ".join(f"{c.label} ({c.python})" for c in configs))
    for line in bench.skipped:
        print(f"skipped: {line}")
    print(flush=True)

    bench.load_probe("at the start")
    sections = []
    models = [m for m in MODEL_PARTS if m in args.parts]
    if models:
        results = bench.run_models(models, configs, args.rounds)
        sections += ["#### Models: training step, inference, latency, memory", ""] + model_tables(results, models, configs)
    if "convs" in args.parts:
        results = bench.run_convs(configs, args.rounds)
        sections += ["#### Conv layers alone (GFLOP/s)", ""] + conv_tables(results, configs)
    if "compile" in args.parts:
        names = [m for m in (args.compile_models or "").split(",") if m] or models or list(MODEL_PARTS)
        results = bench.run_compile(names, configs, args.rounds)
        sections += ["#### Start-up: Numba JIT compile (cold cache) and warm start", ""] + compile_tables(results, names)

    bench.load_probe("at the end")
    loads = [v for v in bench.loads + [os.getloadavg()[0]] if v == v]
    infos = {}
    for rec in bench.records:
        fi = rec["result"].get("framework_info")
        if fi:
            infos.setdefault(rec["spec"].get("framework"), fi)
        if "numpy" in rec["result"]:
            infos.setdefault("numpy", {"version": rec["result"]["numpy"]})
    finished = datetime.datetime.now()
    header = [f"### {started:%Y-%m-%d %H:%M} — `python -m benchmarks {_command_line(argv)}`".rstrip(), "",
              f"- machine: {machine.get('cpu', '?')} ({machine['simd']}), {machine['cores']} cores, "
              f"{machine.get('mem_gib', '?')} GiB; Python {machine['python']}; {args.threads} thread{'s' if args.threads > 1 else ''} for every "
              "framework",
              f"- versions: " + "; ".join(f"{k} " + ", ".join(f"{a}={b}" for a, b in v.items())
                                           for k, v in infos.items()),
              f"- tinycnn source: commit {machine.get('commit', '?')}" +
              (f", modified: {', '.join(machine['modified'])}" if machine.get("modified") else ", clean"),
              f"- load: 1-minute load average {min(loads):.1f}–{max(loads):.1f} during the run "
              f"({len(loads)} samples), {(finished - started).total_seconds() / 60:.0f} min"
              + (f"; {args.note}" if args.note else ""),
              *[f"- load probe: {line}" for line in bench.probes],
              f"- rounds: {args.rounds}; per child: {args.warmup} warm-up + {args.steps} timed steps, "
              f"{args.latency_reps} batch-1 calls, {args.reps} conv/SGEMM calls",
              "- malloc: " + ("glibc defaults" if args.default_malloc else
                              f"every child with GLIBC_TUNABLES={MALLOC_TUNABLES} (freed memory kept, as tcmalloc does)")]
    header += [f"- skipped: {s}" for s in bench.skipped]
    final = source_snapshot()
    for path in set(final) | set(bench.snapshot):
        if final.get(path) != bench.snapshot.get(path):
            bench.changed.setdefault(path, [])
    if bench.changed:
        header.append("- **warning: tinycnn's sources changed during the run**: " + ", ".join(
            f"{path} ({len(labels)} tinycnn children ran after the change)" if labels else f"{path} (after the last child)"
            for path, labels in sorted(bench.changed.items())) + "; rounds may have timed different code")
    header += [f"- failed: {f}" for f in bench.failures]
    block = header + [""] + sections
    print()
    print("\n".join(block))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "records": bench.records}, f, indent=1)
    if args.write:
        write_results(args.write, block)
        print(f"\nappended to the '## CPU' section of {args.write}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())

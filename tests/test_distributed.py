"""Data-parallel training over MPI (tinycnn/distributed.py).

The MPI tests launch `mpiexec -n 2 python tests/mpi_worker.py SCENARIO OUT` (oversubscribed, one thread per
rank) and compare with the same training run in this process: two ranks give the weights of one process
that trains on the same global batches, every rank ends with the same weights and optimizer state, only
rank 0 writes files, and a failing or killed rank ends the job with an error instead of a hang. They need
mpi4py and the mpiexec beside it (`pip install -e ".[mpi]"`, which CI does) and skip without them.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinycnn
import tinycnn.distributed as distributed
from tinycnn import Tensor
from tinycnn import functional as F
from tinycnn.ops import batchnorm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mpi_worker  # noqa: E402

WORKER = os.path.abspath(mpi_worker.__file__)
JOB_TIMEOUT = 300  # seconds: a job not done by then hangs (a job takes 2-10 s; more when Numba compiles)


# ---------------------------------------------------------------------- without MPI

def test_auto_is_none_outside_mpiexec(monkeypatch):
    for name in distributed.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched_size() == 1
    assert distributed.auto(sync_bn=True) is None
    assert "mpi4py" not in sys.modules  # single-process training never imports it


def test_mpiexec_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` raises ImportError
    monkeypatch.setattr(distributed, "_context", None)
    with pytest.raises(RuntimeError, match=r"one of 2 ranks.*mpi4py is not installed"):
        distributed.auto()


@pytest.mark.parametrize("n", [0, 1, 5, 8, 23])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shards_cover_every_sample_once(n, size):
    parts = [distributed.shard_bounds(n, rank, size) for rank in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    lengths = [end - begin for begin, end in parts]
    assert max(lengths) - min(lengths) <= 1


def test_batch_size_must_give_every_rank_a_sample():
    context = distributed.DataParallel.__new__(distributed.DataParallel)  # the check only, no communicator
    context.size, context.sync_bn = 4, False
    with pytest.raises(ValueError, match="at least the number of ranks"):
        context._check_batches(100, 3)
    context._check_batches(21, 8)  # a last batch of 5: ranks may get different shares
    context.size, context.sync_bn = 2, True
    context._check_batches(21, 8)
    with pytest.raises(ValueError, match="sync_bn: the last batch has 1 sample"):
        context._check_batches(17, 8)


def _batch_norm_step(sync, shape=(5, 4, 3, 3)):
    """Output, gradients and running statistics of one training-mode batch norm, with the hook set to a sum
    over one process (the identity) or unset."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(3.0, 2.0, shape).astype(np.float32), requires_grad=True)
    gamma = Tensor(rng.normal(1.0, 0.1, shape[1]).astype(np.float32), requires_grad=True)
    beta = Tensor(rng.normal(0.0, 0.1, shape[1]).astype(np.float32), requires_grad=True)
    running_mean, running_var = Tensor(np.full(shape[1], 2.5, np.float32)), Tensor(np.ones(shape[1], np.float32))
    calls = []

    def one_process_sum(array):
        calls.append(array.shape)
        return np.array(array, copy=True)

    previous, batchnorm.sync_sums = batchnorm.sync_sums, (one_process_sum if sync else None)
    try:
        y = F.batch_norm(x, running_mean, running_var, gamma, beta, training=True, momentum=0.1, eps=1e-5)
        (y * Tensor(rng.normal(size=shape).astype(np.float32))).sum().backward()
    finally:
        batchnorm.sync_sums = previous
    return [y.numpy(), x.grad, gamma.grad, beta.grad, running_mean.numpy(), running_var.numpy()], calls


@pytest.mark.parametrize("shape", [(5, 4, 3, 3), (6, 3)])
def test_synced_batch_norm_of_one_process_is_plain_batch_norm(shape):
    plain, no_calls = _batch_norm_step(False, shape)
    synced, calls = _batch_norm_step(True, shape)
    assert no_calls == [] and calls == [(3, shape[1]), (2, shape[1])]  # forward sums, then backward sums
    for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "running_mean", "running_var"], plain, synced):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=2e-6, err_msg=name)


# ---------------------------------------------------------------------- under mpiexec

def _mpiexec():
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")


def _require_mpi():
    try:
        import importlib.util
        found = importlib.util.find_spec("mpi4py") is not None
    except ValueError:
        found = False
    if not found or _mpiexec() is None:
        pytest.skip("needs mpi4py and mpiexec: pip install -e '.[mpi]'")


def run_job(scenario, out, ranks=2, timeout=JOB_TIMEOUT):
    """mpiexec -n ranks python tests/mpi_worker.py scenario out; (exit status, stdout, stderr, seconds).
    Fails the test, after killing the whole job, if it is not done within `timeout`."""
    _require_mpi()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",  # CI runs as root
               NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [_mpiexec(), "--oversubscribe", "-n", str(ranks), sys.executable, WORKER, scenario, str(out)]
    start = time.monotonic()
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        stdout, stderr = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        stdout, stderr = job.communicate()
        pytest.fail(f"mpiexec {scenario} hung for {timeout} s\nstdout:\n{stdout}\nstderr:\n{stderr[-3000:]}")
    return job.returncode, stdout, stderr, time.monotonic() - start


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    status, stdout, stderr, _ = run_job("equivalence", out)
    assert status == 0, stderr[-3000:]
    with np.load(out / "result.npz") as archive:
        return dict(archive)


def _one_process(kind):
    model, history = mpi_worker.train(kind, None)
    return model.state_dict(), history


def _assert_ranks_identical(results, name):
    rank0 = {k.split("/", 2)[2]: v for k, v in results.items() if k.startswith(f"{name}/rank0/")}
    rank1 = {k.split("/", 2)[2]: v for k, v in results.items() if k.startswith(f"{name}/rank1/")}
    assert rank0.keys() == rank1.keys() and any(k.startswith("optimizer/") for k in rank0)
    for key in rank0:
        np.testing.assert_array_equal(rank1[key], rank0[key], err_msg=f"{name}: {key} differs between the ranks")


@pytest.mark.parametrize("name, kind", [("plain", "plain"), ("bn_sync", "bn")])
def test_two_ranks_train_as_one_process(two_rank_results, name, kind):
    """Same seed, same global batches (8, 8, 5: shards 4/4 and 2/3): the weights, running statistics and
    logged global metrics (validation included) of one process, within float32 rounding."""
    _assert_ranks_identical(two_rank_results, name)
    weights, history = _one_process(kind)
    for key, expected in weights.items():
        np.testing.assert_allclose(two_rank_results[f"{name}/rank0/weights/{key}"], expected, rtol=1e-4, atol=1e-5,
                                   err_msg=key)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(two_rank_results[f"{name}/history/{key}"], history[key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)


def test_batch_norm_without_sync_uses_each_ranks_statistics(two_rank_results):
    """Per-rank statistics (the default) train a different model than one process does, but the same one
    on every rank: the running statistics are averaged over the ranks at the end of each epoch."""
    _assert_ranks_identical(two_rank_results, "bn_local")
    weights, _ = _one_process("bn")
    worst = max(float(np.max(np.abs(two_rank_results[f"bn_local/rank0/weights/{k}"] - v))) for k, v in weights.items())
    assert worst > 1e-3


def test_only_rank_zero_writes_and_a_run_resumes_with_another_rank_count(tmp_path):
    from tasks.common import train_in_folder
    out = tmp_path / "job"
    for rank in (0, 1):
        (out / f"rank{rank}").mkdir(parents=True)
    status, stdout, stderr, _ = run_job("folder", out)
    assert status == 0, stderr[-3000:]
    run = out / "rank0" / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.tcnn", "curves.png", "history.csv", "last.tcnn", "report",
                                                     "report.html"]
    assert list((out / "rank1").iterdir()) == []  # rank 1 wrote nothing, not even the folder
    assert "run folder from rank 0" in stdout and "from rank 1" not in stdout  # rank 1's stdout is silenced
    assert "rank 0 after train_in_folder" in stderr and "rank 1 after" not in stderr  # train_in_folder ended it
    assert len(open(run / "history.csv").read().splitlines()) == 2  # header + epoch 1

    def second_epoch(model, folder):  # as a task's --resume: seeded again, then fit from the saved epoch count
        tinycnn.manual_seed(mpi_worker.SEED)
        x, y = mpi_worker.dataset()
        train_in_folder(model, str(folder), dict(x=x, y=y, batch_size=mpi_worker.BATCH, epochs=2, verbose=0,
                                                validation_split=mpi_worker.VALIDATION),
                        monitor="val_loss", main_metric="accuracy")
        return model.state_dict()

    resumed = second_epoch(tinycnn.load_model(run / "last.tcnn"), run)  # 2 ranks, then 1 process
    tinycnn.manual_seed(mpi_worker.SEED)
    x, y = mpi_worker.dataset()
    model = mpi_worker.build("plain")
    model.metadata = {}
    (tmp_path / "alone").mkdir()
    train_in_folder(model, str(tmp_path / "alone"), dict(x=x, y=y, batch_size=mpi_worker.BATCH, epochs=1, verbose=0,
                                                        validation_split=mpi_worker.VALIDATION),
                    monitor="val_loss", main_metric="accuracy")
    alone = second_epoch(tinycnn.load_model(tmp_path / "alone" / "last.tcnn"), tmp_path / "alone")
    for key, expected in alone.items():
        np.testing.assert_allclose(resumed[key], expected, rtol=1e-4, atol=1e-5, err_msg=key)
    assert len(open(run / "history.csv").read().splitlines()) == 3


@pytest.mark.parametrize("scenario, failing, message, other_caught", [
    ("raise", 1, "ValueError: rank 1 broke at its 2nd batch", "rank 0 caught RankFailedError"),
    ("callback", 0, "OSError: disk full", "rank 1 caught RankFailedError"),
])
def test_an_exception_on_one_rank_stops_every_rank(tmp_path, scenario, failing, message, other_caught):
    """Every rank leaves fit at the same point with an error naming the failing rank (no hang)."""
    status, _, stderr, _ = run_job(scenario, tmp_path)
    assert status == 3, stderr[-3000:]
    assert f"rank {failing} caught {message.split(':')[0]}" in stderr
    assert other_caught in stderr and f"rank {failing}: {message}" in stderr
    assert "finished without an error" not in stderr


@pytest.mark.parametrize("scenario, expected", [
    ("kill", "signal 9"),
    ("syncbn-raise", "failed during a step with sync_bn; aborting all 2 ranks"),
    ("uncaught", "uncaught ValueError on rank 1, aborting all 2 ranks"),
])
def test_a_killed_or_aborting_rank_ends_the_job(tmp_path, scenario, expected):
    status, stdout, stderr, seconds = run_job(scenario, tmp_path)
    assert status != 0
    assert expected in stdout + stderr, (stdout + stderr)[-3000:]
    assert "finished without an error" not in stderr
    assert seconds < JOB_TIMEOUT

"""threads.parallel_range (kernels/cpu/threads.py) and the kernels it splits: every index once, and the same
results whether a kernel runs as one range or as many ranges on two threads."""
import threading
import time

import numpy as np
import pytest

from tinycnn.kernels.cpu import batchnorm, conv, optim, pool, threads


def _on_threads(monkeypatch, n):
    monkeypatch.setattr(threads, "num_threads", lambda: n)


@pytest.mark.parametrize("count", [0, 1, 2, 5, 33, 1000])
def test_parallel_range_covers_each_index_once(monkeypatch, count):
    _on_threads(monkeypatch, 2)
    seen, lock = [], threading.Lock()

    def work(start, stop):
        with lock:
            seen.append((start, stop))

    threads.parallel_range(work, count)
    assert sorted(i for start, stop in seen for i in range(start, stop)) == list(range(count))
    assert all(start < stop for start, stop in seen)
    assert len(seen) == (0 if count == 0 else 1 if count == 1 else min(count, 32))


def test_parallel_range_one_thread_is_one_call(monkeypatch):
    _on_threads(monkeypatch, 1)
    seen = []
    threads.parallel_range(lambda start, stop: seen.append((start, stop)), 77)
    assert seen == [(0, 77)]


def _split_kernel_outputs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 11, 13)).astype(np.float32)
    w_dw = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    w_full = rng.standard_normal((5, 6, 3, 2)).astype(np.float32)  # 3×2: im2col (a 3×3 would be Winograd)
    b = rng.standard_normal(6).astype(np.float32)
    out = {}
    y = conv.conv2d_bias_relu_forward(x, w_dw, b, (2, 1), (1, 1), (1, 1), 6).copy()
    out["direct fwd"] = y
    out["direct fwd pool"] = conv.conv2d_bias_relu_maxpool2_forward(x, w_dw, b, (1, 1), (1, 1), (1, 1), 6).copy()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    out["direct bwd"] = [a.copy() for a in conv.conv2d_bias_relu_backward(dy, y, x, w_dw, (2, 1), (1, 1), (1, 1), 6,
                                                                          True, True, True)]
    y2 = conv.conv2d_bias_relu_forward(x, w_full, None, (1, 1), (0, 0), (1, 1), 1).copy()  # im2col + epilogue
    out["im2col fwd"] = y2
    dy2 = rng.standard_normal(y2.shape).astype(np.float32)
    out["im2col bwd"] = [a.copy() for a in conv.conv2d_bias_relu_backward(dy2, y2, x, w_full, (1, 1), (0, 0), (1, 1), 1,
                                                                          True, True, True)]
    yp, argmax = pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    out["max pool"] = [yp.copy(), argmax.copy()]
    out["max unpool"] = pool.max_pool2d_backward(rng.standard_normal(yp.shape).astype(np.float32), argmax.copy(),
                                                 x.shape).copy()
    out["avg pool"] = pool.avg_pool2d_forward(x, (3, 3), (2, 2), (1, 1), False).copy()
    x3 = x.reshape(3, 6, -1)
    gamma, beta = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    y3, mean, invstd, _ = [a.copy() for a in batchnorm.batch_norm_train_forward(x3, gamma, beta, 1e-3, "relu")]
    out["bn train"] = [y3, mean, invstd]
    out["bn bwd"] = [a.copy() for a in batchnorm.batch_norm_backward(rng.standard_normal(x3.shape).astype(np.float32),
                                                                     x3, gamma, mean, invstd, True, True, True, y3,
                                                                     "relu")]
    param = rng.standard_normal(optim.SERIAL_BELOW + 7).astype(np.float32)
    m, v = np.zeros_like(param), np.zeros_like(param)
    optim.adam_step(param, rng.standard_normal(param.size).astype(np.float32), m, v, 1e-2, 0.9, 0.999, 1e-7, 0.0,
                    False, 1)
    out["adam"] = [param, m, v]
    return out


def test_split_kernels_match_one_range(monkeypatch):
    """Each plane (channel, element) is computed by the same code whatever range it falls in: bit for bit."""
    _on_threads(monkeypatch, 1)
    whole = _split_kernel_outputs()
    _on_threads(monkeypatch, 2)
    monkeypatch.setattr(threads, "SERIAL_BELOW", 0)  # these small arrays would otherwise run as one range
    pieces = []
    parallel_for = threads.parallel_for
    monkeypatch.setattr(threads, "parallel_for", lambda work, count: (pieces.append(count), parallel_for(work, count)))
    split = _split_kernel_outputs()
    assert len(pieces) >= 12 and min(pieces) >= 2
    for name, expected in whole.items():
        got = split[name]
        for e, g in zip(expected if isinstance(expected, list) else [expected], got if isinstance(got, list) else [got]):
            np.testing.assert_array_equal(g, e, err_msg=name)


def _channels_last_outputs():
    from tinycnn.kernels.cpu import elementwise
    from tinycnn.kernels.cpu.conv import channels_last as cl
    rng = np.random.default_rng(5)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    x, b = f32(3, 11, 13, 8), f32(8)
    out = {}
    for stride in [(1, 1), (2, 2), (2, 1)]:  # depthwise: the row kernels (unit stride along the rows) and the pixel ones
        w = f32(8, 1, 3, 3)
        y = cl.conv2d_channels_last_forward(x, w, b, stride, (1, 1), (1, 1), 8, "relu6").copy()
        out[f"dw fwd {stride}"] = y
        out[f"dw bwd {stride}"] = [a.copy() for a in cl.conv2d_channels_last_backward(
            f32(*y.shape), x, w, stride, (1, 1), (1, 1), 8, True, True, True)]
    w = f32(5, 8, 3, 3)  # groups = 1: im2col + GEMM, the bias + activation epilogue, the bias gradient's sums
    y = cl.conv2d_channels_last_forward(x, w, b[:5], (2, 2), (1, 0), (1, 1), 1, "relu").copy()
    out["im2col fwd"] = y
    out["im2col bwd"] = [a.copy() for a in cl.conv2d_channels_last_backward(f32(*y.shape), x, w, (2, 2), (1, 0),
                                                                            (1, 1), 1, True, True, True)]
    x3 = x.reshape(-1, 8, 1)  # channels-last batch norm: (M, C, 1)
    gamma, beta = f32(8), f32(8)
    y3, mean, invstd, var = [a.copy() for a in batchnorm.batch_norm_train_forward(x3, gamma, beta, 1e-3, "relu6")]
    out["bn last train"] = [y3, mean, invstd, var]
    out["bn last eval"] = batchnorm.batch_norm_eval_forward(x3, gamma, beta, mean, var, 1e-3, "relu").copy()
    out["bn last bwd"] = [a.copy() for a in batchnorm.batch_norm_backward(f32(*x3.shape), x3, gamma, mean, invstd, True,
                                                                          True, True, y3, "relu6", beta)]
    big = f32(2, 8, 64, 64)  # NCHW <-> NHWC from elementwise.LAYOUT_SWAP_MIN_BYTES up
    out["to last"] = elementwise.transpose(big, (0, 2, 3, 1)).copy()
    out["to first"] = elementwise.transpose(out["to last"], (0, 3, 1, 2)).copy()
    return out


def test_channels_last_kernels_match_one_range(monkeypatch):
    """The channels-last kernels give the same bits as one range when split over two threads (their sums
    have as many shares as Numba has threads, here 3, whichever threads run them)."""
    import numba
    from tinycnn.kernels.cpu import elementwise
    monkeypatch.setattr(numba, "get_num_threads", lambda: 3)
    _on_threads(monkeypatch, 1)
    whole = _channels_last_outputs()
    _on_threads(monkeypatch, 2)
    monkeypatch.setattr(threads, "SERIAL_BELOW", 0)  # these small arrays would otherwise run as one range
    monkeypatch.setattr(elementwise, "LAYOUT_SWAP_THREADS_BYTES", 0)
    pieces = []
    parallel_for = threads.parallel_for
    monkeypatch.setattr(threads, "parallel_for", lambda work, count: (pieces.append(count), parallel_for(work, count)))
    split = _channels_last_outputs()
    assert len(pieces) >= 15 and min(pieces) >= 2
    np.testing.assert_array_equal(whole["to first"], np.ascontiguousarray(whole["to last"].transpose(0, 3, 1, 2)))
    for name, expected in whole.items():
        got = split[name]
        for e, g in zip(expected if isinstance(expected, list) else [expected], got if isinstance(got, list) else [got]):
            np.testing.assert_array_equal(g, e, err_msg=name)


def test_parallel_for_does_not_wait_for_a_worker_that_never_came(monkeypatch):
    """With every pool worker held elsewhere, the caller does each piece itself and returns (it waits only for
    pieces another thread took); the pool's workers, once free, find nothing left of that call."""
    _on_threads(monkeypatch, 2)
    release, holding = threading.Event(), threading.Semaphore(0)

    class Hold:  # a run that keeps its worker until released
        def loop(self):
            holding.release()
            release.wait()

    threads._start_workers(1)
    for _ in threads._workers:
        threads._jobs.put(Hold())
    for _ in threads._workers:
        assert holding.acquire(timeout=10)
    seen, done = [], threading.Event()
    caller = threading.Thread(target=lambda: (threads.parallel_for(seen.append, 7), done.set()))
    caller.start()
    try:
        assert done.wait(10), "parallel_for waited for a worker that was busy elsewhere"
        assert sorted(seen) == list(range(7))
    finally:
        release.set()
        caller.join()


@pytest.mark.parametrize("pauses", [0, threads.SPIN_PAUSES, 10 ** 7])
def test_parallel_for_returns_when_a_worker_finishes_last(monkeypatch, pauses):
    """The caller waits for a piece a worker is still running: by watching the run's finished flag (which
    that worker sets once it has let go of the GIL), then on the lock it releases. With no watch (0), a
    watch that ends first (the default) and one that outlasts the piece, every piece is done on return."""
    _on_threads(monkeypatch, 2)
    monkeypatch.setattr(threads, "SPIN_PAUSES", pauses)
    caller = threading.get_ident()
    worker_started, done_by = threading.Event(), {}

    def work(i):
        if i == 0:  # the caller's piece: hold it until a worker has taken the other one
            assert worker_started.wait(10)
        else:
            worker_started.set()
            time.sleep(0.05)  # the worker finishes last
        done_by[i] = threading.get_ident()

    for _ in range(3):
        worker_started.clear()
        done_by.clear()
        threads.parallel_for(work, 2)
        assert sorted(done_by) == [0, 1] and done_by[0] == caller and done_by[1] != caller


def test_parallel_for_raises_a_pieces_error_after_the_running_pieces(monkeypatch):
    _on_threads(monkeypatch, 2)
    seen, lock = [], threading.Lock()

    def work(i):
        if i == 3:
            raise ValueError("piece 3")
        with lock:
            seen.append(i)

    with pytest.raises(ValueError, match="piece 3"):
        threads.parallel_for(work, 50)
    assert 3 not in seen and len(set(seen)) == len(seen)
    threads.parallel_for(seen.append, 4)  # the pool still works after it
    assert seen[-4:] and set(range(4)) <= set(seen)


def test_small_arrays_run_as_one_range(monkeypatch):
    """A memory-bound kernel on an array below SERIAL_BELOW values is one call on the caller's thread (a
    batch-1 max pool split into 32 Numba calls took 5x as long); from SERIAL_BELOW up it is split."""
    _on_threads(monkeypatch, 2)
    calls = []
    parallel_for = threads.parallel_for
    monkeypatch.setattr(threads, "parallel_for", lambda work, count: (calls.append(count), parallel_for(work, count)))
    x = np.random.default_rng(0).standard_normal((1, 64, 24, 24)).astype(np.float32)
    y, _ = pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    assert calls == []
    monkeypatch.setattr(threads, "SERIAL_BELOW", x.size)
    y_split, _ = pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    assert calls == [32]
    np.testing.assert_array_equal(y_split, y)

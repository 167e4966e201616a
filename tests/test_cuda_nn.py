"""CUDA kernels of the network families (activation, pool, interpolate, softmax, batchnorm, dropout, loss, optim)
against the CPU kernels on the same random inputs, forward and backward. Float32 results are compared with
the CPU kernel run in float64, within a few float32 roundings at the result's scale; the max-pool winners,
the dropout masks and exact copies must be equal. Under the simulator (tests/conftest.py) the sizes cover
several blocks of the tiny simulator grids (kernels/cuda/_launch.py)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba import cuda

from tinycnn.kernels.cpu import (activation as cpu_act, batchnorm as cpu_bn, dropout as cpu_drop,
                                 interpolate as cpu_interp, loss as cpu_loss, optim as cpu_opt, pool as cpu_pool,
                                 softmax as cpu_sm)
from tinycnn.kernels.cuda import (activation as act, batchnorm as bn, dropout as drop, interpolate as interp,
                                  loss, optim, pool, softmax as sm)

pytestmark = [pytest.mark.skipif(not cuda.is_available(), reason="no CUDA device or simulator"),
              pytest.mark.filterwarnings("error::numba.cuda.core.errors.NumbaPerformanceWarning")]

FAST = settings(deadline=None, max_examples=4)
seeds = st.integers(0, 2**31 - 1)


def dev(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return a.copy_to_host()


def f64(a):
    return None if a is None else np.asarray(a, np.float64)


def assert_close(got, want, dtype=np.float32, terms=1):
    eps = np.finfo(dtype).eps
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=8 * eps * terms, atol=8 * eps * terms * scale)


def randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------------------ activation


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations(dtype):
    rng = np.random.default_rng(0)
    x = randn(rng, (3, 5, 7), dtype) * 4
    x[0, 0, :3] = [0, 6, -0.0]
    dy = randn(rng, x.shape, dtype)
    for name in ("relu", "relu6", "sigmoid", "tanh"):
        y = getattr(act, f"{name}_forward")(dev(x))
        assert_close(host(y), getattr(cpu_act, f"{name}_forward")(f64(x)), dtype, terms=2)
        arg = x if name.startswith("relu") else host(y)       # relu' reads x, sigmoid' and tanh' read y
        assert_close(host(getattr(act, f"{name}_backward")(dev(dy), dev(arg))),
                     getattr(cpu_act, f"{name}_backward")(f64(dy), f64(arg)), dtype, terms=2)
    assert_close(host(act.leaky_relu_forward(dev(x), 0.1)), cpu_act.leaky_relu_forward(f64(x), 0.1), dtype)
    assert_close(host(act.leaky_relu_backward(dev(dy), dev(x), 0.1)),
                 cpu_act.leaky_relu_backward(f64(dy), f64(x), 0.1), dtype)
    big = np.array([-1000, 1000, np.nan], dtype)
    np.testing.assert_array_equal(host(act.sigmoid_forward(dev(big))), [0, 1, np.nan])
    assert np.isnan(host(act.relu_forward(dev(big)))[2])


# ------------------------------------------------------------------------------------------ pool


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    hw = tuple(draw(st.integers(max(1, k - 2 * p), k - 2 * p + 5)) for k, p in zip(kernel, padding))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + hw, kernel, stride, padding


@FAST
@given(case=pool_cases(), seed=seeds)
def test_max_pool(case, seed):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(seed)
    x = randn(rng, shape)
    x.reshape(-1)[::5] = 0.5            # ties: the first pixel of the window wins on both devices
    y, argmax = pool.max_pool2d_forward(dev(x), kernel, stride, padding)
    ry, rargmax = cpu_pool.max_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(host(y), ry)
    np.testing.assert_array_equal(host(argmax), rargmax)
    assert host(argmax).dtype == np.int32
    dy = randn(rng, ry.shape)
    assert_close(host(pool.max_pool2d_backward(dev(dy), argmax, shape)),
                 cpu_pool.max_pool2d_backward(f64(dy), rargmax, shape), terms=4)


@FAST
@given(case=pool_cases(), count_include_pad=st.booleans(), seed=seeds)
def test_avg_pool(case, count_include_pad, seed):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(seed)
    x = randn(rng, shape)
    args = kernel, stride, padding, count_include_pad
    want = cpu_pool.avg_pool2d_forward(f64(x), *args)
    assert_close(host(pool.avg_pool2d_forward(dev(x), *args)), want, terms=9)
    dy = randn(rng, want.shape)
    assert_close(host(pool.avg_pool2d_backward(dev(dy), shape, *args)),
                 cpu_pool.avg_pool2d_backward(f64(dy), shape, *args), terms=9)


# ------------------------------------------------------------------------------------------ interpolate


@pytest.mark.parametrize("scale", [(1, 1), (2, 3), (3, 2)])
@pytest.mark.parametrize("kernel, shape", [("upsample_nearest2d", (2, 2, 3, 4)),       # NCHW
                                           ("upsample_nearest2d_last", (2, 3, 4, 5))])  # channels last
def test_upsample_nearest(kernel, shape, scale):
    rng = np.random.default_rng(1)
    x = randn(rng, shape)
    y = getattr(interp, f"{kernel}_forward")(dev(x), scale)
    np.testing.assert_array_equal(host(y), getattr(cpu_interp, f"{kernel}_forward")(x, scale))
    dy = randn(rng, y.shape)
    assert_close(host(getattr(interp, f"{kernel}_backward")(dev(dy), scale)),
                 getattr(cpu_interp, f"{kernel}_backward")(f64(dy), scale), terms=6)


@pytest.mark.parametrize("in_hw, out_hw", [((3, 4), (6, 8)), ((4, 3), (7, 5)), ((5, 5), (3, 2)), ((1, 3), (4, 1))])
@pytest.mark.parametrize("align_corners", [False, True])
def test_upsample_bilinear(in_hw, out_hw, align_corners):
    rng = np.random.default_rng(2)
    x = randn(rng, (2, 2) + in_hw)
    assert_close(host(interp.upsample_bilinear2d_forward(dev(x), out_hw, align_corners)),
                 cpu_interp.upsample_bilinear2d_forward(f64(x), out_hw, align_corners), terms=8)
    dy = randn(rng, (2, 2) + out_hw)
    assert_close(host(interp.upsample_bilinear2d_backward(dev(dy), x.shape, align_corners)),
                 cpu_interp.upsample_bilinear2d_backward(f64(dy), x.shape, align_corners), terms=16)


# ------------------------------------------------------------------------------------------ softmax


@pytest.mark.parametrize("shape", [(5, 7, 1), (2, 3, 10), (1, 40, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax(shape, dtype):
    rng = np.random.default_rng(3)
    x, dy = randn(rng, shape, dtype) * 5, randn(rng, shape, dtype)
    C = shape[1]
    for name in ("softmax", "log_softmax"):
        y = getattr(sm, f"{name}_forward")(dev(x))
        assert_close(host(y), getattr(cpu_sm, f"{name}_forward")(f64(x)), dtype, terms=C)
        assert_close(host(getattr(sm, f"{name}_backward")(dev(dy), y)),
                     getattr(cpu_sm, f"{name}_backward")(f64(dy), f64(host(y))), dtype, terms=C)


# ------------------------------------------------------------------------------------------ batchnorm


@pytest.mark.parametrize("shape", [(4, 3, 1), (2, 3, 25), (3, 2, 40)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm(shape, dtype):
    rng = np.random.default_rng(4)
    x = randn(rng, shape, dtype) * 3 + 1
    C = shape[1]
    gamma, beta = randn(rng, (C,), dtype), randn(rng, (C,), dtype)
    M = shape[0] * shape[2]
    got = bn.batch_norm_train_forward(dev(x), dev(gamma), dev(beta), 1e-5)
    want = cpu_bn.batch_norm_train_forward(f64(x), f64(gamma), f64(beta), 1e-5)
    for g, w in zip(got, want):
        assert_close(host(g), w, dtype, terms=M)
    dy = randn(rng, shape, dtype)
    got = bn.batch_norm_backward(dev(dy), dev(x), dev(gamma), got[1], got[2], True, True, True)
    want = cpu_bn.batch_norm_backward(f64(dy), f64(x), f64(gamma), want[1], want[2], True, True, True)
    for g, w in zip(got, want):
        assert_close(host(g), w, dtype, terms=M)
    rm, rv = np.abs(randn(rng, (C,), dtype)), np.abs(randn(rng, (C,), dtype)) + 0.5
    assert_close(host(bn.batch_norm_eval_forward(dev(x), dev(gamma), dev(beta), dev(rm), dev(rv), 1e-5)),
                 cpu_bn.batch_norm_eval_forward(f64(x), f64(gamma), f64(beta), f64(rm), f64(rv), 1e-5), dtype, 2)
    running, batch = dev(rm), randn(rng, (C,), dtype)
    bn.update_running(running, dev(batch), 0.1)
    expected = f64(rm).copy()
    cpu_bn.update_running(expected, f64(batch), 0.1)
    assert_close(host(running), expected, dtype, 2)


# ------------------------------------------------------------------------------------------ dropout


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")   # the simulator's uint64 wraps, as meant
def test_dropout_makes_the_cpu_mask(p, dtype):
    """Same counter-based random numbers: the GPU mask is the CPU mask, bit for bit."""
    rng = np.random.default_rng(5)
    x = randn(rng, (3, 7, 5), dtype)
    seed = 2**62 + 12345
    y, mask = drop.dropout_forward(dev(x), p, seed)
    ry, rmask = cpu_drop.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(host(mask), rmask)
    np.testing.assert_array_equal(host(y), ry)
    dy = randn(rng, x.shape, dtype)
    np.testing.assert_array_equal(host(drop.dropout_backward(dev(dy), mask)), cpu_drop.dropout_backward(dy, rmask))


# ------------------------------------------------------------------------------------------ losses


@pytest.mark.parametrize("weighted", [None, "full", "channel"])
@pytest.mark.parametrize("upstream", ["number", "device"])
def test_binary_cross_entropies(weighted, upstream):
    rng = np.random.default_rng(6)
    shape = (5, 3, 7)
    z, t = randn(rng, shape) * 3, (rng.random(shape) > 0.5).astype(np.float32)
    p = (1 / (1 + np.exp(-z))).astype(np.float32)
    p.reshape(-1)[:3] = [0.0, 1.0, 1e-9]                     # clipped: no gradient there
    wshape = {None: None, "full": shape, "channel": (3, 1)}[weighted]
    w = None if wshape is None else np.abs(randn(rng, wshape)) + 0.1
    pw = None if weighted != "channel" else np.abs(randn(rng, (7,))) + 0.5
    g = 1.7
    gd = dev(np.array(g, np.float32)) if upstream == "device" else g
    kw = {} if w is None else {"weight": f64(w)}
    kw_dev = {} if w is None else {"weight": dev(w)}
    n = z.size
    assert_close(host(loss.bce_with_logits_forward(dev(z), dev(t), dev(pw), **kw_dev)),
                 cpu_loss.bce_with_logits_forward(f64(z), f64(t), f64(pw), **kw), terms=16)
    assert_close(host(loss.bce_with_logits_backward(dev(z), dev(t), dev(pw), gd, **kw_dev)),
                 cpu_loss.bce_with_logits_backward(f64(z), f64(t), f64(pw), g, **kw), terms=4)
    assert_close(host(loss.bce_forward(dev(p), dev(t), 1e-7, **kw_dev)),
                 cpu_loss.bce_forward(f64(p), f64(t), 1e-7, **kw), terms=16)
    assert_close(host(loss.bce_backward(dev(p), dev(t), 1e-7, gd, **kw_dev)),
                 cpu_loss.bce_backward(f64(p), f64(t), 1e-7, g, **kw), terms=4)
    assert n > 64   # several blocks of the first reduction pass under the simulator


@pytest.mark.parametrize("shape", [(9, 4), (2, 3, 5, 4)])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy(shape, weighted):
    rng = np.random.default_rng(7)
    x = randn(rng, shape) * 2
    N, C = shape[0], shape[1]
    inner = int(np.prod(shape[2:]))
    x3 = x.reshape(N, C, inner)
    target = rng.integers(0, C, (N, inner)).astype(np.int64)
    target[0, 0] = -100                                        # ignored
    weight = np.abs(randn(rng, (C,))) + 0.1 if weighted else None
    loss_g, lp, ws = loss.cross_entropy_forward(dev(x3), dev(target), dev(weight), -100)
    loss_c, lp_c, ws_c = cpu_loss.cross_entropy_forward(f64(x3), target, f64(weight), -100)
    assert_close(host(loss_g), loss_c, terms=N * inner)
    assert_close(host(lp), lp_c, terms=C)
    assert_close(host(ws), np.float64(ws_c), terms=N * inner)
    for g, wsum in ((0.8, ws), (0.8, float(ws_c))):             # weight_sum from the device, or a number
        assert_close(host(loss.cross_entropy_backward(lp, dev(target), dev(weight), -100, wsum, g)),
                     cpu_loss.cross_entropy_backward(lp_c, target, f64(weight), -100, ws_c, g), terms=C)
    all_ignored = np.full_like(target, -100)
    assert np.isnan(host(loss.cross_entropy_forward(dev(x3), dev(all_ignored), None, -100)[0]))


def test_mse():
    rng = np.random.default_rng(8)
    p, t = randn(rng, (6, 17)), randn(rng, (6, 17))
    assert_close(host(loss.mse_forward(dev(p), dev(t))), cpu_loss.mse_forward(f64(p), f64(t)), terms=32)
    assert_close(host(loss.mse_backward(dev(p), dev(t), 0.5)), cpu_loss.mse_backward(f64(p), f64(t), 0.5))


# ------------------------------------------------------------------------------------------ optim


@pytest.mark.parametrize("decoupled, weight_decay", [(False, 0.0), (False, 0.01), (True, 0.1)])
def test_adam_steps(decoupled, weight_decay):
    rng = np.random.default_rng(9)
    param = randn(rng, (5, 13))
    m, v = np.zeros_like(param), np.zeros_like(param)
    dp, dm, dv = dev(param), dev(m), dev(v)
    p64, m64, v64 = f64(param), f64(m), f64(v)
    for step in range(1, 4):
        grad = randn(rng, param.shape)
        optim.adam_step(dp, dev(grad), dm, dv, 1e-2, 0.9, 0.999, 1e-7, weight_decay, decoupled, step)
        cpu_opt.adam_step(p64, f64(grad), m64, v64, 1e-2, 0.9, 0.999, 1e-7, weight_decay, decoupled, step)
        for got, want in ((dp, p64), (dm, m64), (dv, v64)):
            assert_close(host(got), want, terms=8)


@pytest.mark.parametrize("momentum, dampening, nesterov", [(0.0, 0.0, False), (0.9, 0.1, False), (0.9, 0.0, True)])
def test_sgd_steps(momentum, dampening, nesterov):
    rng = np.random.default_rng(10)
    param = randn(rng, (7, 11))
    buf = np.zeros_like(param)
    dp, db = dev(param), dev(buf)
    p64, b64 = f64(param), f64(buf)
    for step in range(1, 4):
        grad = randn(rng, param.shape)
        optim.sgd_step(dp, dev(grad), db if momentum else None, 0.1, momentum, dampening, 0.01, nesterov, step == 1)
        cpu_opt.sgd_step(p64, f64(grad), b64 if momentum else None, 0.1, momentum, dampening, 0.01, nesterov,
                         step == 1)
        assert_close(host(dp), p64, terms=4)

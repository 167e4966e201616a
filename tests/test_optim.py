"""Optimizers against hand-written NumPy updates (PyTorch's documented algorithms) over several steps, the
CPU kernels against the NumPy reference, state_dict round trips, and the learning-rate schedules' values."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinycnn
from tinycnn import Tensor, optim
from tinycnn.functional import linear, mse_loss
from tinycnn.kernels.cpu import optim as cpu
from tinycnn.kernels.reference import optim as ref

FAST = settings(deadline=None, max_examples=20)
seeds = st.integers(0, 2 ** 31 - 1)


def torch_sgd(theta, grads, lr, momentum, dampening, weight_decay, nesterov):
    """torch.optim.SGD's documented algorithm, step by step."""
    b = None
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * theta if weight_decay else g
        if momentum:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        theta = theta - lr * g
    return theta


def torch_adam(theta, grads, lr, beta1, beta2, eps, weight_decay, decoupled):
    """torch.optim.Adam / AdamW's documented algorithm, with bias correction."""
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            theta = theta - lr * weight_decay * theta
        elif weight_decay:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def run_optimizer(optimizer_class, theta, grads, **kwargs):
    p = Tensor(theta.copy(), requires_grad=True)
    opt = optimizer_class([p], **kwargs)
    for g in grads:
        opt.zero_grad()
        p.grad = g.copy()
        opt.step()
    return p.numpy()


def random_problem(seed, shape, steps):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), [rng.standard_normal(shape) for _ in range(steps)]


# ---------------------------------------------------------------------- SGD

@FAST
@given(momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=st.sampled_from([0.0, 0.3]), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.1]), seed=seeds, shape=st.sampled_from([(3,), (2, 3), (2, 1, 3, 3)]))
def test_sgd_matches_torchs_algorithm(momentum, dampening, nesterov, weight_decay, seed, shape):
    if nesterov and (momentum == 0 or dampening != 0):
        with pytest.raises(ValueError, match="nesterov"):
            optim.SGD([Tensor(np.zeros(2))], lr=0.1, momentum=momentum, dampening=dampening, nesterov=True)
        return
    theta, grads = random_problem(seed, shape, steps=4)
    settings_ = dict(lr=0.05, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    got = run_optimizer(optim.SGD, theta, grads, **settings_)
    np.testing.assert_allclose(got, torch_sgd(theta, grads, **settings_), rtol=1e-12, atol=1e-14)


def test_sgd_momentum_by_hand():
    p = Tensor(np.array([1.0]), requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for g in (1.0, 1.0, -2.0):
        p.grad = np.array([g])
        opt.step()
    # buffers 1, 1.9, −0.29: θ = 1 − 0.1 (1 + 1.9 − 0.29)
    np.testing.assert_allclose(p.numpy(), [1 - 0.1 * (1 + 1.9 - 0.29)])
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"], [-0.29])


# ---------------------------------------------------------------------- Adam and AdamW

@FAST
@given(decoupled=st.booleans(), weight_decay=st.sampled_from([0.0, 0.05]), betas=st.sampled_from([(0.9, 0.999),
       (0.5, 0.9)]), eps=st.sampled_from([1e-7, 1e-3]), seed=seeds, shape=st.sampled_from([(4,), (3, 2, 2)]))
def test_adam_and_adamw_match_torchs_algorithm(decoupled, weight_decay, betas, eps, seed, shape):
    theta, grads = random_problem(seed, shape, steps=5)
    optimizer_class = optim.AdamW if decoupled else optim.Adam
    got = run_optimizer(optimizer_class, theta, grads, lr=0.01, betas=betas, eps=eps, weight_decay=weight_decay)
    want = torch_adam(theta, grads, 0.01, *betas, eps, weight_decay, decoupled)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_adam_bias_correction_makes_the_first_step_lr_sized():
    """After one step m̂ = g and v̂ = g², so every parameter moves by lr · g / (|g| + eps) ≈ lr · sign(g)."""
    g = np.array([1e-3, -5.0, 200.0])
    p = Tensor(np.zeros(3), requires_grad=True)
    p.grad = g
    optim.Adam([p], lr=0.01, eps=1e-12).step()
    np.testing.assert_allclose(p.numpy(), -0.01 * np.sign(g), rtol=1e-9)


def test_adamw_decays_the_weights_without_a_gradient_signal():
    p = Tensor(np.array([2.0, -4.0]), requires_grad=True)
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = np.zeros(2)
    opt.step()
    np.testing.assert_allclose(p.numpy(), [2.0 * 0.95, -4.0 * 0.95])  # θ (1 − lr λ), the Adam part is 0
    q = Tensor(np.array([2.0, -4.0]), requires_grad=True)
    q.grad = np.zeros(2)
    optim.Adam([q], lr=0.1, weight_decay=0.5).step()                  # L2: the decay goes through Adam
    np.testing.assert_allclose(q.numpy(), [2.0 - 0.1, -4.0 + 0.1], rtol=1e-6)


def test_defaults():
    p = [Tensor(np.zeros(1), requires_grad=True)]
    adam, adamw = optim.Adam(p), optim.AdamW(p)
    assert (adam.lr, adam.betas, adam.eps, adam.weight_decay) == (1e-3, (0.9, 0.999), 1e-7, 0.0)
    assert (adamw.lr, adamw.weight_decay) == (1e-3, 1e-2)


# ---------------------------------------------------------------------- kernels against the reference

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov,momentum,dampening", [(False, 0.0, 0.0), (False, 0.9, 0.2), (True, 0.9, 0.0)])
def test_sgd_kernel_matches_reference(dtype, nesterov, momentum, dampening):
    rng = np.random.default_rng(0)
    param, grad = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((3, 4)).astype(dtype)
    buf = rng.standard_normal((3, 4)).astype(dtype) if momentum else None
    for first_step in (True, False):
        want_param, want_buf = ref.sgd_step(param.astype(np.float64), grad, buf, 0.1, momentum, dampening, 0.01,
                                            nesterov, first_step)
        got_param, got_buf = param.copy(), None if buf is None else buf.copy()
        cpu.sgd_step(got_param, grad, got_buf, 0.1, momentum, dampening, 0.01, nesterov, first_step)
        assert got_param.dtype == dtype
        np.testing.assert_allclose(got_param, want_param, rtol=1e-6 if dtype == np.float32 else 1e-13)
        if momentum:
            np.testing.assert_allclose(got_buf, want_buf, rtol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("size", [7, cpu.SERIAL_BELOW + 5])  # the one-thread and the parallel kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_kernel_matches_reference(dtype, decoupled, size):
    rng = np.random.default_rng(1)
    param, grad = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
    m, v = rng.standard_normal(size).astype(dtype), rng.uniform(0, 1, size).astype(dtype)
    want = ref.adam_step(param.astype(np.float64), grad, m.astype(np.float64), v.astype(np.float64),
                         0.01, 0.9, 0.99, 1e-7, 0.1, decoupled, 3)
    got = param.copy(), grad, m.copy(), v.copy()
    cpu.adam_step(*got, 0.01, 0.9, 0.99, 1e-7, 0.1, decoupled, 3)
    for g, w in zip((got[0], got[2], got[3]), want):
        assert g.dtype == dtype
        # atol: a result near 0 from parameters near 1 keeps only their absolute rounding (float32: ~1e-7)
        np.testing.assert_allclose(g, w, rtol=1e-5 if dtype == np.float32 else 1e-13,
                                   atol=1e-6 if dtype == np.float32 else 1e-15)


# ---------------------------------------------------------------------- optimizer behaviour

@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps),
                                  lambda ps: optim.AdamW(ps)])
def test_params_without_grad_are_skipped(make):
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    opt = make([a, b])
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(b.numpy(), np.ones(3))
    assert not opt.state[1] and opt.state[0]["step"] == 1
    assert (a.numpy() < 1).all()


def test_zero_grad_and_settable_lr():
    p = Tensor(np.zeros(2), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(2)
    opt.step()
    opt.lr = 0.5
    opt.step()
    np.testing.assert_allclose(p.numpy(), [-0.6, -0.6])
    opt.zero_grad()
    assert p.grad is None


def test_float32_params_and_state_stay_float32():
    p = Tensor(np.ones(4, np.float32), requires_grad=True)
    opt = optim.Adam([p])
    p.grad = np.ones(4, np.float32)
    opt.step()
    assert p.dtype == np.float32 and opt.state[0]["m"].dtype == np.float32


def test_the_update_is_in_place_and_under_no_grad():
    p = Tensor(np.ones(3), requires_grad=True)
    data, grad = p.data, np.ones(3)
    p.grad = grad
    optim.SGD([p], lr=0.1, weight_decay=0.5).step()
    assert p.data is data and p._ctx is None
    np.testing.assert_array_equal(grad, np.ones(3))  # the gradient is only read
    np.testing.assert_allclose(p.numpy(), 1 - 0.1 * 1.5)


def test_bad_arguments():
    p = [Tensor(np.zeros(1), requires_grad=True)]
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="parameter 0"):
        optim.Adam([np.zeros(2)])


def test_a_linear_regression_learns():
    tinycnn.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    w, b = Tensor(np.zeros((1, 3)), requires_grad=True), Tensor(np.zeros(1), requires_grad=True)
    opt = optim.Adam([w, b], lr=0.1)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = mse_loss(linear(Tensor(x), w, b), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]
    np.testing.assert_allclose(w.numpy(), [[1.0, -2.0, 0.5]], atol=0.02)


# ---------------------------------------------------------------------- state_dict

@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
                                  lambda ps: optim.AdamW(ps, lr=0.01)])
def test_state_dict_round_trip_resumes_training_exactly(make, tmp_path):
    theta, grads = random_problem(5, (2, 3), steps=6)
    reference = Tensor(theta.copy(), requires_grad=True)
    uninterrupted = make([reference])
    for g in grads:
        reference.grad = g
        uninterrupted.step()

    first = Tensor(theta.copy(), requires_grad=True)
    opt = make([first, Tensor(np.zeros(2), requires_grad=True)])   # a second param that never gets a grad
    for g in grads[:3]:
        first.grad = g
        opt.step()
    saved = opt.state_dict()
    scalars = {k: v for k, v in saved.items() if not isinstance(v, np.ndarray)}
    json.dumps(scalars)                                              # everything else is JSON-able
    assert all(type(v) is np.ndarray for k, v in saved.items() if k not in scalars)
    np.savez(tmp_path / "opt.npz", **saved)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as archive:
        loaded = {k: archive[k] for k in archive.files}
    for v in saved.values():                                         # copies: the optimizer's own state is safe
        if isinstance(v, np.ndarray):
            v[...] = 1e9

    second = Tensor(first.numpy().copy(), requires_grad=True)
    resumed = make([second, Tensor(np.zeros(2), requires_grad=True)])
    resumed.lr = 123.0
    resumed.load_state_dict(loaded)
    assert resumed.lr == opt.lr
    for g in grads[3:]:
        second.grad = g
        resumed.step()
    np.testing.assert_allclose(second.numpy(), reference.numpy(), rtol=1e-12)


def test_load_state_dict_of_another_optimizer_is_an_error():
    p = [Tensor(np.zeros(2), requires_grad=True)]
    with pytest.raises(ValueError, match="Adam"):
        optim.SGD(p, lr=0.1).load_state_dict(optim.Adam(p).state_dict())


# ---------------------------------------------------------------------- schedules

def make_optimizer(lr):
    return optim.SGD([Tensor(np.zeros(1), requires_grad=True)], lr=lr)


def test_step_lr_values():
    opt = make_optimizer(0.1)
    sched = optim.StepLR(opt, step_size=3, gamma=0.5)
    seen = [opt.lr]
    for _ in range(7):
        sched.step()
        seen.append(opt.lr)
    np.testing.assert_allclose(seen, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert sched.get_lr() == opt.lr


def test_cosine_with_warmup_values():
    opt = make_optimizer(1.0)
    sched = optim.CosineWithWarmup(opt, total_steps=10, warmup_steps=4, min_lr=0.1)
    seen = [opt.lr]
    for _ in range(12):
        sched.step()
        seen.append(opt.lr)
    warmup = [0.25, 0.5, 0.75, 1.0]                                                     # s = 0 … 3
    cosine = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(0, 7)]  # s = 4 … 10
    np.testing.assert_allclose(seen, warmup + cosine + [0.1, 0.1])
    assert seen[4] == 1.0 and seen[10] == pytest.approx(0.1)


def test_cosine_without_warmup_starts_at_the_base_lr():
    opt = make_optimizer(0.2)
    sched = optim.CosineWithWarmup(opt, total_steps=4)
    seen = [opt.lr] + [sched.step() for _ in range(4)]
    np.testing.assert_allclose(seen, [0.2, 0.2 * (1 + math.cos(math.pi / 4)) / 2, 0.1,
                                      0.2 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.0], atol=1e-15)


def test_schedules_drive_the_optimizer_and_save_their_state():
    opt = make_optimizer(0.1)
    sched = optim.StepLR(opt, step_size=1, gamma=0.1)
    p = opt.params[0]
    p.grad = np.ones(1)
    opt.step()
    sched.step()
    opt.step()
    np.testing.assert_allclose(p.numpy(), [-0.1 - 0.01])
    other = optim.StepLR(make_optimizer(0.1), step_size=1, gamma=0.1)
    other.load_state_dict(sched.state_dict())
    assert other.optimizer.lr == pytest.approx(0.01)


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(make_optimizer(0.1), step_size=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.CosineWithWarmup(make_optimizer(0.1), total_steps=5, warmup_steps=6)


# ---------------------------------------------------------------------- one optimizer class, two conventions

def test_optim_and_optimizers_are_one_module():
    from tinycnn import optimizers
    assert optim.Adam is optimizers.Adam and optim.SGD is optimizers.SGD and optim.StepLR is optimizers.StepLR


def test_keras_style_optimizer_is_built_by_compile():
    import tinycnn
    from tinycnn import layers, optimizers
    adam = optimizers.Adam(learning_rate=0.01, beta_1=0.8, epsilon=1e-6)
    assert not adam.built and adam.betas == (0.8, 0.999) and adam.eps == 1e-6 and adam.learning_rate == 0.01
    with pytest.raises(RuntimeError, match="no parameters yet"):
        adam.step()
    model = tinycnn.Sequential([layers.Dense(2, input_shape=(3,))])
    model.compile(loss="mse", optimizer=adam)
    assert model.optimizer is adam and adam.params == list(model.parameters())
    assert optimizers.to_config(adam) == {"name": "adam", "config": dict(learning_rate=0.01, beta_1=0.8,
                                                                          beta_2=0.999, epsilon=1e-6, weight_decay=0)}
    assert optimizers.SGD(0.5).lr == 0.5 and not optimizers.SGD(0.5).built  # Keras' positional learning rate
    with pytest.raises(ValueError, match="learning rate once"):
        optimizers.Adam(lr=0.1, learning_rate=0.1)


def test_pytorch_style_optimizer_is_used_as_given():
    import tinycnn
    from tinycnn import layers
    model = tinycnn.Sequential([layers.Dense(2, input_shape=(3,))])
    model._ensure_built()
    sgd = optim.SGD(model.parameters(), lr=0.1)
    model.compile(loss="mse", optimizer=sgd)
    assert model.optimizer is sgd and sgd.built
    model.fit(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32), epochs=1, batch_size=4, verbose=0)
    assert all(p.version > 0 for p in model.parameters())  # stepped: the inference form's cache sees it

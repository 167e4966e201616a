"""The losses: gradients against finite differences (with weights, pos_weight, class weights, ignore_index,
both reductions), the CPU kernels against the NumPy reference in float32 and float64, stability for huge
logits, and the argument checks."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from tinycnn import Tensor
from tinycnn.functional import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, mse_loss
from tinycnn.kernels.cpu import loss as cpu
from tinycnn.kernels.reference import loss as ref

from gradcheck import check_gradients

FAST = settings(deadline=None, max_examples=15)
GRAD = settings(deadline=None, max_examples=10)  # finite differences: a few hundred loss evaluations each
seeds = st.integers(0, 2 ** 31 - 1)
small_shapes = st.one_of(st.tuples(st.integers(1, 4), st.integers(1, 4)),
                         st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)))
reductions = st.sampled_from(["mean", "sum"])
dtypes = st.sampled_from([np.float32, np.float64])


def close(dtype):
    return dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def weight_shape(draw_kind, shape):
    """A shape that broadcasts to `shape`: the full shape, the channel axis (C, 1, ...) or per sample (N, 1, ...)."""
    if draw_kind == "full":
        return shape
    if draw_kind == "channel":
        return (shape[1],) + (1,) * (len(shape) - 2)
    return (shape[0],) + (1,) * (len(shape) - 1)


# ---------------------------------------------------------------------- BCE with logits

@GRAD
@given(shape=small_shapes, reduction=reductions, weighted=st.sampled_from([None, "full", "channel", "sample"]),
       use_pos_weight=st.booleans(), seed=seeds)
def test_bce_with_logits_gradient(shape, reduction, weighted, use_pos_weight, seed):
    rng = np.random.default_rng(seed)
    z, t = rng.standard_normal(shape) * 3, rng.uniform(0, 1, shape)
    weight = None if weighted is None else rng.uniform(0.2, 2, weight_shape(weighted, shape))
    pos_weight = rng.uniform(0.2, 3, weight_shape("channel", shape)) if use_pos_weight else None
    fn = lambda z: binary_cross_entropy_with_logits(z, t, weight, reduction, pos_weight)  # noqa: E731
    check_gradients(fn, [z])
    count = 1 if reduction == "mean" else z.size
    w = None if weight is None else np.broadcast_to(weight, shape)
    pw = None if pos_weight is None else np.broadcast_to(pos_weight, shape)
    np.testing.assert_allclose(fn(Tensor(z)).item(), count * ref.bce_with_logits_forward(z, t, pw, w), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_stable_for_huge_logits(dtype):
    z = Tensor(np.array([1e4, -1e4, 1e4, -1e4, 5e3, -3e4], dtype), requires_grad=True)
    t = np.array([0.0, 1.0, 1.0, 0.0, 0.5, 1.0], dtype)
    loss = binary_cross_entropy_with_logits(z, t)
    loss.backward()
    # max(z, 0) − z·t + log(1 + e^−|z|), with e^−|z| = 0 here
    expected = np.mean(np.maximum(z.numpy(), 0) - z.numpy().astype(np.float64) * t)
    assert np.isfinite(loss.item()) and np.isfinite(z.grad).all()
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-6)
    np.testing.assert_allclose(z.grad, (np.array([1, 0, 1, 0, 1, 0]) - t) / 6, atol=1e-7)
    pos = binary_cross_entropy_with_logits(Tensor(np.array([-1e4], dtype)), np.array([1.0], dtype),
                                           pos_weight=np.array([2.0], dtype))
    np.testing.assert_allclose(pos.item(), 2e4, rtol=1e-6)


@FAST
@given(shape=small_shapes, dtype=dtypes, weighted=st.booleans(), seed=seeds)
def test_bce_with_logits_kernels_match_reference(shape, dtype, weighted, seed):
    rng = np.random.default_rng(seed)
    z, t = (rng.standard_normal(shape) * 4).astype(dtype), rng.uniform(0, 1, shape).astype(dtype)
    pw = rng.uniform(0.5, 2, shape[1:2] + (1,) * (len(shape) - 2)).astype(dtype)
    w = rng.uniform(0.5, 2, shape).astype(dtype) if weighted else None
    pw_full = np.broadcast_to(pw, shape)
    kwargs = {} if w is None else {"weight": w}
    got = cpu.bce_with_logits_forward(z, t, pw, **kwargs)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref.bce_with_logits_forward(z.astype(np.float64), t, pw_full, w), **close(dtype))
    got = cpu.bce_with_logits_backward(z, t, pw, 0.7, **kwargs)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(got, ref.bce_with_logits_backward(z.astype(np.float64), t, pw_full, 0.7, w),
                               **close(dtype))
    np.testing.assert_allclose(cpu.bce_with_logits_forward(z, t, None), ref.bce_with_logits_forward(z, t, None),
                               **close(dtype))


# ---------------------------------------------------------------------- BCE on probabilities

@GRAD
@given(shape=small_shapes, reduction=reductions, weighted=st.sampled_from([None, "full", "sample"]), seed=seeds)
def test_bce_gradient(shape, reduction, weighted, seed):
    rng = np.random.default_rng(seed)
    p, t = rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape)
    weight = None if weighted is None else rng.uniform(0.2, 2, weight_shape(weighted, shape))
    fn = lambda p: binary_cross_entropy(p, t, weight, reduction)  # noqa: E731
    check_gradients(fn, [p])
    count = 1 if reduction == "mean" else p.size
    w = None if weight is None else np.broadcast_to(weight, shape)
    expected = -np.mean((1.0 if w is None else w) * (t * np.log(p) + (1 - t) * np.log(1 - p)))
    np.testing.assert_allclose(fn(Tensor(p)).item(), count * expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_clips_probabilities(dtype):
    p = Tensor(np.array([0.0, 1.0, 0.0, 1.0, 0.5], dtype), requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0], dtype)
    loss = binary_cross_entropy(p, t, reduction="sum")
    loss.backward()
    eps = 1e-7
    expected = -2 * np.log(eps) - 2 * np.log1p(-eps) - np.log(0.5)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    np.testing.assert_array_equal(p.grad[:4], 0)       # the clipped probabilities pass no gradient
    np.testing.assert_allclose(p.grad[4], -2.0, rtol=1e-6)


@FAST
@given(shape=small_shapes, dtype=dtypes, weighted=st.booleans(), seed=seeds)
def test_bce_kernels_match_reference(shape, dtype, weighted, seed):
    rng = np.random.default_rng(seed)
    p, t = rng.uniform(0, 1, shape).astype(dtype), rng.uniform(0, 1, shape).astype(dtype)
    p.flat[0] = 0.0                     # one clipped value in every example
    w = rng.uniform(0.5, 2, shape).astype(dtype) if weighted else None
    kwargs = {} if w is None else {"weight": w}
    got = cpu.bce_forward(p, t, 1e-7, **kwargs)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref.bce_forward(p.astype(np.float64), t, 1e-7, w), **close(dtype))
    got = cpu.bce_backward(p, t, 1e-7, 1.3, **kwargs)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(got, ref.bce_backward(p.astype(np.float64), t, 1e-7, 1.3, w), rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------------- cross-entropy

def class_targets(rng, N, C, spatial, ignore_some):
    target = rng.integers(0, C, (N,) + spatial)
    if ignore_some:
        target[rng.uniform(size=target.shape) < 0.3] = -100
        target.flat[0] = rng.integers(0, C)       # at least one pixel counts
    return target


@GRAD
@given(N=st.integers(1, 3), C=st.integers(1, 4), spatial=st.sampled_from([(), (1, 1), (2, 3), (3, 1)]),
       weighted=st.booleans(), ignore_some=st.booleans(), reduction=reductions, seed=seeds)
def test_cross_entropy_gradient(N, C, spatial, weighted, ignore_some, reduction, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C) + spatial) * 2
    target = class_targets(rng, N, C, spatial, ignore_some)
    weight = rng.uniform(0.2, 3, C) if weighted else None
    fn = lambda x: cross_entropy(x, target, weight, -100, reduction)  # noqa: E731
    check_gradients(fn, [x])
    # PyTorch's weighted mean: Σ w[t] (−log p[t]) / Σ w[t] over the pixels that are not ignored
    x3, t2 = x.reshape(N, C, -1), target.reshape(N, -1)
    log_p = x3 - np.log(np.exp(x3).sum(axis=1, keepdims=True))
    w = np.ones(C) if weight is None else weight
    kept = t2 != -100
    picked = np.take_along_axis(log_p, np.where(kept, t2, 0)[:, None, :], axis=1)[:, 0, :]
    total, weight_sum = -(w[np.where(kept, t2, 0)] * picked * kept).sum(), (w[np.where(kept, t2, 0)] * kept).sum()
    expected = total / weight_sum if reduction == "mean" else total
    np.testing.assert_allclose(fn(Tensor(x)).item(), expected, rtol=1e-12, atol=1e-15)


def test_cross_entropy_of_a_known_case():
    x = Tensor(np.array([[0.0, 0.0], [np.log(3.0), 0.0]]), requires_grad=True)
    loss = cross_entropy(x, np.array([1, 0]))
    np.testing.assert_allclose(loss.item(), (np.log(2) + np.log(4 / 3)) / 2)
    loss.backward()
    np.testing.assert_allclose(x.grad, [[0.25, -0.25], [-0.125, 0.125]])


@FAST
@given(N=st.integers(1, 3), C=st.integers(1, 5), inner=st.integers(1, 40), dtype=dtypes, weighted=st.booleans(),
       ignore_index=st.sampled_from([-100, 0, 2]), seed=seeds)
def test_cross_entropy_kernels_match_reference(N, C, inner, dtype, weighted, ignore_index, seed):
    assume(not (C == 1 and ignore_index == 0))  # a pixel that counts must exist
    rng = np.random.default_rng(seed)
    x3 = (rng.standard_normal((N, C, inner)) * 3).astype(dtype)
    target2 = rng.integers(0, C, (N, inner))
    target2[rng.uniform(size=target2.shape) < 0.2] = ignore_index
    target2[0, 0] = (ignore_index + 1) % C if 0 <= ignore_index < C else 0
    weight = rng.uniform(0.5, 2, C).astype(dtype) if weighted else None
    loss, log_probs3, weight_sum = cpu.cross_entropy_forward(x3, target2, weight, ignore_index)
    want_loss, want_log_probs3, want_weight_sum = ref.cross_entropy_forward(x3.astype(np.float64), target2,
                                                                            weight, ignore_index)
    assert loss.dtype == dtype and log_probs3.dtype == dtype
    np.testing.assert_allclose(loss, want_loss, **close(dtype))
    np.testing.assert_allclose(log_probs3, want_log_probs3, **close(dtype))
    np.testing.assert_allclose(weight_sum, want_weight_sum, rtol=1e-6)
    dx3 = cpu.cross_entropy_backward(log_probs3, target2, weight, ignore_index, weight_sum, 0.8)
    assert dx3.dtype == dtype
    np.testing.assert_allclose(dx3, ref.cross_entropy_backward(want_log_probs3, target2, weight, ignore_index,
                                                               want_weight_sum, 0.8), **close(dtype))


def test_cross_entropy_ignores_pixels_completely():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 2, 2)), requires_grad=True)
    target = np.array([[[0, 1], [-100, 2]], [[-100, -100], [1, 1]]])
    loss = cross_entropy(x, target)
    loss.backward()
    np.testing.assert_array_equal(x.grad[0, :, 1, 0], 0)
    np.testing.assert_array_equal(x.grad[1, :, 0, :], 0)
    kept = [(0, 0, 0, 0), (0, 1, 0, 1), (0, 2, 1, 1), (1, 1, 1, 0), (1, 1, 1, 1)]
    log_p = x.numpy() - np.log(np.exp(x.numpy()).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(loss.item(), -np.mean([log_p[n, c, h, w] for n, c, h, w in kept]))


def test_cross_entropy_with_every_pixel_ignored():
    x = Tensor(np.zeros((2, 3)), requires_grad=True)
    target = np.array([-100, -100])
    assert np.isnan(cross_entropy(x, target).item())              # 0/0, as PyTorch
    loss = cross_entropy(x, target, reduction="sum")
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(x.grad, 0)


def test_cross_entropy_accepts_tensor_targets_and_float_indices():
    x = np.random.default_rng(2).standard_normal((3, 4))
    target = np.array([3, 0, 2])
    want = cross_entropy(Tensor(x), target).item()
    assert cross_entropy(Tensor(x), Tensor(target)).item() == want
    assert cross_entropy(Tensor(x), Tensor(target.astype(np.float32))).item() == want


def test_cross_entropy_errors_name_the_problem():
    x = Tensor(np.zeros((2, 3, 4, 4)))
    target = np.zeros((2, 4, 4), np.int64)
    target[1, 2, 3] = 7
    with pytest.raises(ValueError, match="target value 7"):
        cross_entropy(x, target)
    target[1, 2, 3] = -1
    with pytest.raises(ValueError, match="target value -1"):
        cross_entropy(x, target)
    with pytest.raises(ValueError, match=r"\(2, 4, 3\).*\(2, 3, 4, 4\)"):
        cross_entropy(x, np.zeros((2, 4, 3), np.int64))
    with pytest.raises(ValueError, match=r"weight has shape \(2,\)"):
        cross_entropy(x, np.zeros((2, 4, 4), np.int64), weight=np.ones(2))
    with pytest.raises(TypeError, match="class indices"):
        cross_entropy(x, np.full((2, 4, 4), 0.5))
    with pytest.raises(ValueError, match="input"):
        cross_entropy(Tensor(np.zeros(3)), np.array([0]))


# ---------------------------------------------------------------------- MSE

@GRAD
@given(shape=small_shapes, reduction=reductions, seed=seeds)
def test_mse_gradient(shape, reduction, seed):
    rng = np.random.default_rng(seed)
    p, t = rng.standard_normal(shape), rng.standard_normal(shape)
    fn = lambda p: mse_loss(p, t, reduction)  # noqa: E731
    check_gradients(fn, [p])
    expected = ((p - t) ** 2).mean() if reduction == "mean" else ((p - t) ** 2).sum()
    np.testing.assert_allclose(fn(Tensor(p)).item(), expected, rtol=1e-12)


@FAST
@given(shape=small_shapes, dtype=dtypes, seed=seeds)
def test_mse_kernels_match_reference(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    p, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    got = cpu.mse_forward(p, t)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref.mse_forward(p.astype(np.float64), t), **close(dtype))
    got = cpu.mse_backward(p, t, 1.5)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref.mse_backward(p.astype(np.float64), t, 1.5), **close(dtype))


def test_mse_dot_runs_with_blas_held_at_one_thread(monkeypatch):
    """The forward's dot runs inside tinycnn's `one_blas_thread` (NumPy's BLAS at one thread: on its own
    threads, OpenBLAS would leave one spinning after the call, taking a core from the kernels that follow)."""
    from tinycnn.kernels.cpu import threads
    held, real_dot = [], np.dot

    def spy(*args, **kwargs):
        held.append(getattr(threads._local, "blas_held", False))
        return real_dot(*args, **kwargs)

    p, t = np.ones((8, 5, 64, 64), np.float32), np.zeros((8, 5, 64, 64), np.float32)
    monkeypatch.setattr(np, "dot", spy)
    assert cpu.mse_forward(p, t) == 1.0
    assert held == [True]


# ---------------------------------------------------------------------- shared behaviour

LOSSES = {
    "bce_with_logits": (binary_cross_entropy_with_logits, lambda rng, s: rng.uniform(0, 1, s)),
    "bce": (binary_cross_entropy, lambda rng, s: rng.uniform(0, 1, s)),
    "mse": (mse_loss, lambda rng, s: rng.standard_normal(s)),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_sum_is_mean_times_count_and_float32_is_kept(name):
    fn, make_target = LOSSES[name]
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 0.9, (3, 4)).astype(np.float32)
    t = make_target(rng, (3, 4)).astype(np.float32)
    mean, total = fn(Tensor(x), t), fn(Tensor(x), t, reduction="sum")
    assert mean.dtype == np.float32 and mean.shape == ()
    np.testing.assert_allclose(total.item(), 12 * mean.item(), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_target_may_be_a_tensor_and_gets_no_gradient(name):
    fn, make_target = LOSSES[name]
    rng = np.random.default_rng(4)
    x = Tensor(rng.uniform(0.1, 0.9, (2, 3)), requires_grad=True)
    t = Tensor(make_target(rng, (2, 3)), requires_grad=True)
    loss = fn(x, t)
    assert loss.item() == fn(x, t.numpy()).item()
    loss.backward()
    assert x.grad is not None and t.grad is None


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_shape_mismatch_and_reduction_errors(name):
    fn, _ = LOSSES[name]
    x = Tensor(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        fn(x, np.zeros((3, 2)))
    with pytest.raises(NotImplementedError, match="none"):
        fn(x, np.zeros((2, 3)), reduction="none")
    with pytest.raises(ValueError, match="reduction"):
        fn(x, np.zeros((2, 3)), reduction="avg")
    with pytest.raises(NotImplementedError, match="none"):
        cross_entropy(x, np.zeros(2, np.int64), reduction="none")


def test_bce_weight_that_does_not_broadcast_is_an_error():
    with pytest.raises(ValueError, match=r"weight of shape \(3, 1\)"):
        binary_cross_entropy(Tensor(np.full((2, 3), 0.5)), np.zeros((2, 3)), weight=np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\)"):
        binary_cross_entropy_with_logits(Tensor(np.zeros((2, 3))), np.zeros((2, 3)), pos_weight=np.ones(2))

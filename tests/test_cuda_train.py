"""Whole computations on cuda against the same on the CPU: autograd through the basic tensor ops, and a few
training steps of a small version of the tutorial's cat/dog net built from tinycnn.functional
(conv2d+relu, max_pool2d, conv2d+relu, max_pool2d, flatten, linear+relu, linear, BCE with logits, Adam).

In float64 the two devices agree to rounding (1e-10). In float32 each device rounds its own way at every
op, forward and backward, and Adam divides by √v: the float32 losses are compared to a few hundred float32
roundings (rtol 1e-4) after 3 steps."""
import numpy as np
import pytest
from numba import cuda

import tinycnn
import tinycnn.functional as F

pytestmark = [pytest.mark.skipif(not cuda.is_available(), reason="no CUDA device or simulator"),
              pytest.mark.filterwarnings("error::numba.cuda.core.errors.NumbaPerformanceWarning")]

Adam = pytest.importorskip("tinycnn.optim").Adam


def _basic_ops(device, arrays):
    x, w, b = (tinycnn.Tensor(a, requires_grad=True, device=device) for a in arrays)
    h = (x @ w + b) * 0.5 - 1.0                 # matmul, broadcast add, scalar mul/sub
    h = h / (h * h + 2.0)                        # div, mul of the same tensor
    s = h.sum(axis=1, keepdims=True)             # reduce
    m = (h - s.mean()).max(axis=0)               # broadcast sub, mean, max
    loss = (m ** 2).sum() + h[1:, ::2].exp().mean() + h.T.reshape(-1)[3:5].sum() * 2
    loss.backward()
    return [loss.numpy()] + [t.grad if device == "cpu" else t.grad.copy_to_host() for t in (x, w, b)]


def test_autograd_through_basic_ops_matches_cpu():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in ((5, 4), (4, 6), (6,))]
    for got, want in zip(_basic_ops("cuda", arrays), _basic_ops("cpu", arrays)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _tiny_catdog(device, dtype, steps=3):
    """The tutorial's net, small: batch 2 of 1×12×12 images, 4 and 4 filters, 8 hidden units."""
    rng = np.random.default_rng(1)
    shapes = [(4, 1, 3, 3), (4,), (4, 4, 3, 3), (4,), (8, 4), (8,), (1, 8), (1,)]
    params = [tinycnn.Tensor((rng.standard_normal(s) * 0.5).astype(dtype), requires_grad=True, device=device)
              for s in shapes]
    images = rng.standard_normal((2, 1, 12, 12)).astype(dtype)
    labels = np.array([[1.0], [0.0]], dtype)
    x = tinycnn.Tensor(images, device=device)
    y = tinycnn.Tensor(labels, device=device)
    opt = Adam(params, lr=1e-2)
    losses = []
    for _ in range(steps):
        c1w, c1b, c2w, c2b, d1w, d1b, d2w, d2b = params
        h = F.max_pool2d(F.relu(F.conv2d(x, c1w, c1b)), 2)       # 4 × 5 × 5
        h = F.max_pool2d(F.relu(F.conv2d(h, c2w, c2b)), 2)       # 4 × 1 × 1
        h = F.relu(F.linear(h.flatten(1), d1w, d1b))
        logits = F.linear(h, d2w, d2b)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses), [p.numpy() for p in params]


def test_training_steps_float64_match_cpu():
    got_losses, got_params = _tiny_catdog("cuda", np.float64)
    want_losses, want_params = _tiny_catdog("cpu", np.float64)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-10)
    for got, want in zip(got_params, want_params):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    assert got_losses[-1] < got_losses[0]


def test_training_steps_float32_match_cpu():
    got_losses, _ = _tiny_catdog("cuda", np.float32)
    want_losses, _ = _tiny_catdog("cpu", np.float32)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-4)


def test_tensors_stay_on_the_device():
    """A cuda tensor's data and gradients are device arrays; only .numpy()/.item() copy to the host."""
    w = tinycnn.Tensor(np.ones((2, 3), np.float32), requires_grad=True, device="cuda")
    out = F.relu(F.linear(tinycnn.Tensor(np.ones((4, 3), np.float32), device="cuda"), w)).sum()
    out.backward()
    assert out.device == "cuda" and hasattr(out.data, "copy_to_host") and hasattr(w.grad, "copy_to_host")
    assert out.item() == 24.0


def _conv_batch_norm_block(device, state, x, data_format="channels_first", depthwise=False):
    """A conv (3×3, stride 2, Keras 'same' on an even size: padded (0, 1)) + batch norm + ReLU6 block on
    `device`: its eval-mode output without gradients (the batch norm folded into the conv), then one
    training-mode forward and backward -> (folded output, training output, gradients)."""
    from tasks.plates_models import ConvBNReLU6
    tinycnn.manual_seed(0)
    block = ConvBNReLU6(4, 3, strides=2, depthwise=depthwise, data_format=data_format)
    block(tinycnn.Tensor(x))  # builds it on the CPU
    block.load_state_dict(state)
    block.to(device)
    xt = tinycnn.Tensor(x, device=device)
    block.eval()
    with tinycnn.no_grad():
        folded = block(xt).numpy()
    block.train()
    out = block(xt)
    (out * out).sum().backward()
    return folded, out.numpy(), [p.grad if device == "cpu" else p.grad.copy_to_host() for p in block.parameters()]


def test_conv_batch_norm_block_matches_cpu():
    """Uneven conv padding (padded first on cuda, read in place on the CPU) and the batch norm folded into the
    conv at inference (conv2d + relu6 on cuda, the fused conv + ReLU6 kernel on the CPU): the same values, to
    float32 rounding (each device rounds its own way)."""
    from tasks.plates_models import ConvBNReLU6
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)  # the layers build float32 weights
    block = ConvBNReLU6(4, 3, strides=2)
    block(tinycnn.Tensor(x))
    state = {name: value * 4.0 if name.endswith("kernel") else value for name, value in block.state_dict().items()}
    state.update({"bn.moving_mean": rng.standard_normal(4), "bn.moving_variance": rng.uniform(0.5, 2.0, 4),
                  "bn.gamma": rng.uniform(0.5, 2.0, 4), "bn.beta": rng.standard_normal(4)})
    got, want = _conv_batch_norm_block("cuda", state, x), _conv_batch_norm_block("cpu", state, x)
    assert (want[0] == 6).any() and (want[0] == 0).any() and ((want[0] > 0) & (want[0] < 6)).any()
    for g, w in zip(got[:2] + tuple(got[2]), want[:2] + tuple(want[2])):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("depthwise", [False, True])
def test_channels_last_block_matches_cpu(depthwise):
    """The same block on (N, H, W, C) maps: the CPU's channels-last kernels (conv and (N·H·W, C) batch
    norm) against cuda, which runs the NCHW conv between two transposes and the (M, C) batch norm."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
    state = {"conv.kernel": rng.standard_normal((4, 1 if depthwise else 4, 3, 3)).astype(np.float32) * 2,
             "bn.moving_mean": rng.standard_normal(4), "bn.moving_variance": rng.uniform(0.5, 2.0, 4),
             "bn.gamma": rng.uniform(0.5, 2.0, 4), "bn.beta": rng.standard_normal(4)}
    got = _conv_batch_norm_block("cuda", state, x, "channels_last", depthwise)
    want = _conv_batch_norm_block("cpu", state, x, "channels_last", depthwise)
    assert want[0].shape == (2, 3, 3, 4) and (want[1] == 0).any() and (want[1] > 0).any()
    for g, w in zip(got[:2] + tuple(got[2]), want[:2] + tuple(want[2])):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)

"""The fused conv + bias + ReLU op, the Winograd conv, the fast paths of the CPU kernels and their workspace:
gradients against finite differences (float64), kernels against the NumPy reference (float32 and float64)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
import tinycnn.functional as F
from gradcheck import check_gradients
from test_conv import TOL, conv_cases, randn
from tinycnn import fuse, layers
from tinycnn.kernels.cpu import conv as cpu
from tinycnn.kernels.cpu import pool as cpu_pool
from tinycnn.kernels.cpu import workspace
from tinycnn.kernels.reference import conv as ref
from tinycnn.kernels.reference import pool as ref_pool
from tinycnn.ops.conv import Conv2dBiasReLU, conv2d_relu, conv2d_relu_maxpool2

DTYPES = [np.float32, np.float64]

# One problem per algorithm (and the awkward geometries of the direct and Winograd kernels).
CASES = {
    "few_channels, one input channel": dict(x_shape=(2, 1, 7, 6), w_shape=(5, 1, 3, 3)),
    "few_channels, two channels, padded": dict(x_shape=(2, 2, 7, 6), w_shape=(4, 2, 3, 3), padding=(1, 2)),
    "winograd, RGB, few filters": dict(x_shape=(2, 3, 7, 6), w_shape=(4, 3, 3, 3), padding=(1, 2)),
    "direct, one input channel, strided": dict(x_shape=(2, 1, 7, 6), w_shape=(5, 1, 3, 3), stride=(2, 1)),
    "direct, depthwise, strided, padded": dict(x_shape=(2, 3, 7, 6), w_shape=(3, 1, 3, 3), stride=(2, 2),
                                               padding=(1, 1), groups=3),
    "direct, multiplier 2, dilated, 2x3": dict(x_shape=(1, 2, 6, 7), w_shape=(4, 1, 2, 3), padding=(1, 0),
                                               dilation=(2, 1), groups=2),
    "matmul (1x1)": dict(x_shape=(2, 3, 4, 3), w_shape=(4, 3, 1, 1)),
    "im2col, strided": dict(x_shape=(2, 3, 7, 6), w_shape=(4, 3, 3, 3), stride=(2, 1), padding=(1, 0)),
    "winograd, odd output": dict(x_shape=(2, 16, 7, 6), w_shape=(16, 16, 3, 3)),
    "winograd, padded": dict(x_shape=(1, 16, 4, 5), w_shape=(17, 16, 3, 3), padding=(1, 2)),
}
EXPECTED = {"few_channels, one input channel": "few_channels", "few_channels, two channels, padded": "few_channels",
            "winograd, RGB, few filters": "winograd",
            "direct, one input channel, strided": "direct", "direct, depthwise, strided, padded": "direct",
            "direct, multiplier 2, dilated, 2x3": "direct", "matmul (1x1)": "matmul",
            "im2col, strided": "im2col", "winograd, odd output": "winograd", "winograd, padded": "winograd"}


def _case(name):
    case = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    case.update(CASES[name])
    return case


def _geometry(case):
    return case["stride"], case["padding"], case["dilation"], case["groups"]


def _arrays(case, rng, dtype=np.float64):
    return (randn(rng, *case["x_shape"]).astype(dtype), (randn(rng, *case["w_shape"]) / 3).astype(dtype),
            randn(rng, case["w_shape"][0]).astype(dtype))


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_runs_its_algorithm(name):
    case = _case(name)
    x, w, _ = _arrays(case, np.random.default_rng(0))
    y_shape = ref.conv2d_forward(x, w, None, *_geometry(case)).shape
    assert cpu.choose(x.shape, w.shape, y_shape, case["stride"], case["padding"], case["groups"],
                      case["dilation"]).name == EXPECTED[name]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_conv2d_relu_gradients(name, bias):
    case = _case(name)
    x, w, b = _arrays(case, np.random.default_rng(1))

    def fn(x, w, b=None):
        return conv2d_relu(x, w, b, *_geometry(case))
    check_gradients(fn, [x, w, b] if bias else [x, w])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_kernels_match_reference(name, dtype):
    """relu(conv2d(x, w) + b) and its gradients (dz = dy · [z > 0]) against the reference's conv."""
    case = _case(name)
    rng = np.random.default_rng(2)
    x, w, b = _arrays(case, rng, dtype)
    geometry = _geometry(case)
    z = ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), *geometry)
    y = cpu.conv2d_bias_relu_forward(x, w, b, *geometry)
    assert y.dtype == dtype and y.shape == z.shape
    np.testing.assert_allclose(y, np.maximum(z, 0), **TOL[dtype])
    dy = randn(rng, *y.shape)
    got = cpu.conv2d_bias_relu_backward(dy.astype(dtype), y, x, w, *geometry, True, True, True)
    expected = ref.conv2d_backward(dy * (z > 0), x.astype(np.float64), w.astype(np.float64), *geometry,
                                   True, True, True)
    for label, g, e in zip(("dx", "dw", "db"), got, expected):
        assert g.dtype == dtype and g.shape == e.shape, label
        np.testing.assert_allclose(g, e, err_msg=label, **TOL[dtype])
    dx, dw, db = cpu.conv2d_bias_relu_backward(dy.astype(dtype), y, x, w, *geometry, False, True, False)
    assert dx is None and db is None and dw.shape == w.shape


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None, max_examples=20)
@given(case=conv_cases(string_padding=False), seed=st.integers(0, 2**16))
def test_fused_kernels_match_reference_random(dtype, case, seed):
    rng = np.random.default_rng(seed)
    x, w, b = randn(rng, *case["x_shape"]), randn(rng, *case["w_shape"]), randn(rng, case["w_shape"][0])
    geometry = _geometry(case)
    z = ref.conv2d_forward(x, w, b, *geometry)
    y = cpu.conv2d_bias_relu_forward(x.astype(dtype), w.astype(dtype), b.astype(dtype), *geometry)
    np.testing.assert_allclose(y, np.maximum(z, 0), **TOL[dtype])
    dy = randn(rng, *y.shape)
    got = cpu.conv2d_bias_relu_backward(dy.astype(dtype), y, x.astype(dtype), w.astype(dtype), *geometry,
                                        True, True, True)
    want = ref.conv2d_backward(dy * (z > 0), x, w, *geometry, True, True, True)
    for label, g, e in zip(("dx", "dw", "db"), got, want):
        np.testing.assert_allclose(g, e, err_msg=label, **TOL[dtype])


# ---------------------------------------------------------------------- Winograd

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw, padding", [((5, 5), (0, 0)), ((6, 9), (1, 1)), ((3, 4), (2, 1)), ((12, 11), (0, 2))])
def test_winograd_matches_reference(hw, padding, dtype):
    rng = np.random.default_rng(3)
    x, w, b = randn(rng, 3, 16, *hw), randn(rng, 20, 16, 3, 3) / 12, randn(rng, 20)
    geometry = (1, 1), padding, (1, 1), 1
    expected_y = ref.conv2d_forward(x, w, b, *geometry)
    assert cpu.choose(x.shape, w.shape, expected_y.shape, *geometry[:2], 1, (1, 1)).name == "winograd"
    y = cpu.conv2d_forward(x.astype(dtype), w.astype(dtype), b.astype(dtype), *geometry)
    scale = np.abs(expected_y).max()
    np.testing.assert_allclose(y, expected_y, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)
    dy = randn(rng, *y.shape)
    got = cpu.conv2d_backward(dy.astype(dtype), x.astype(dtype), w.astype(dtype), *geometry, True, True, True)
    for label, g, e in zip(("dx", "dw", "db"), got, ref.conv2d_backward(dy, x, w, *geometry, True, True, True)):
        assert g.dtype == dtype, label
        np.testing.assert_allclose(g, e, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * np.abs(e).max(),
                                   err_msg=label)


def test_winograd_in_chunks_of_images(monkeypatch):
    """With a tiny budget the Winograd path handles one image at a time; the results must not change."""
    rng = np.random.default_rng(4)
    x, w, dy = randn(rng, 3, 16, 6, 6), randn(rng, 16, 16, 3, 3), randn(rng, 3, 16, 6, 6)
    geometry = (1, 1), (1, 1), (1, 1), 1
    whole = cpu.conv2d_forward(x, w, None, *geometry), cpu.conv2d_backward(dy, x, w, *geometry, True, True, True)
    monkeypatch.setattr(cpu.im2col, "COLS_BUDGET_BYTES", 1)
    np.testing.assert_allclose(cpu.conv2d_forward(x, w, None, *geometry), whole[0], rtol=1e-12, atol=1e-12)
    for g, e in zip(cpu.conv2d_backward(dy, x, w, *geometry, True, True, True), whole[1]):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("piece_bytes", [1, 36 * 36 * 4 * 4 * 3])  # 36 · (C + F) · (TW + 1) · 4 bytes a row
@pytest.mark.parametrize("relu", [False, True])
def test_winograd_in_small_pieces(piece_bytes, relu, monkeypatch):
    """Pieces of one row of tiles, and of three (which cross from one image into the next, and end on an odd
    output row), and backward tasks of one image in pieces of a row, or of several whole images: the same
    values as the whole batch in one piece, forward (also pooled) and backward."""
    rng = np.random.default_rng(6)
    x, w, b, dy = randn(rng, 3, 16, 5, 9), randn(rng, 20, 16, 3, 3), randn(rng, 20), randn(rng, 3, 20, 5, 9)
    geometry = (1, 1), (1, 1), (1, 1), 1
    forward = cpu.conv2d_bias_relu_forward if relu else cpu.conv2d_forward

    def run():
        y = forward(x, w, b, *geometry).copy()
        pooled = cpu.conv2d_bias_relu_maxpool2_forward(x, w, b, *geometry).copy()
        grads = (cpu.conv2d_bias_relu_backward(dy, y, x, w, *geometry, True, True, True) if relu
                 else cpu.conv2d_backward(dy, x, w, *geometry, True, True, True))
        return (y, pooled) + tuple(g.copy() for g in grads)

    whole = run()
    monkeypatch.setattr(cpu.winograd, "WINOGRAD_PIECE_BYTES", piece_bytes)
    monkeypatch.setattr(cpu.winograd, "WINOGRAD_BACKWARD_PIECE_BYTES", piece_bytes)
    monkeypatch.setattr(cpu.winograd, "MIN_DU_SLOTS", 1000)  # small images: as many as a thread may take
    assert cpu.winograd._piece_rows(16, 20, 3, 4, total_rows=6) == (1 if piece_bytes == 1 else 3)
    for label, got, want in zip(("y", "pooled", "dx", "dw", "db"), run(), whole):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=label)
    expected = ref.conv2d_forward(x, w, b, *geometry)
    np.testing.assert_allclose(whole[0], np.maximum(expected, 0) if relu else expected, rtol=1e-10, atol=1e-10)


def test_winograd_forward_gives_every_thread_a_piece_of_one_big_image(monkeypatch):
    """One image whose GEMMs are worth two threads is cut into two pieces at 2 threads (one piece by the
    byte budget alone), one at 1 thread; a tiny product stays one piece; the values are the same."""
    winograd = cpu.winograd
    monkeypatch.setattr(winograd.threads, "num_threads", lambda: 1)
    assert winograd._piece_rows(128, 256, 3, 4, total_rows=3) >= 3           # one piece by bytes alone
    monkeypatch.setattr(winograd.threads, "num_threads", lambda: 2)
    assert winograd._piece_rows(128, 256, 3, 4, total_rows=3) == 2           # 2 pieces (12×12: 3 rows of tiles)
    assert winograd._piece_rows(2, 2, 2, 4, total_rows=2) >= 2               # a tiny product: one piece
    rng = np.random.default_rng(7)
    x, w, b = randn(rng, 1, 128, 12, 12), randn(rng, 256, 128, 3, 3) / 32, randn(rng, 256)
    geometry = (1, 1), (1, 1), (1, 1), 1
    two = cpu.conv2d_bias_relu_forward(x, w, b, *geometry).copy()
    monkeypatch.setattr(winograd.threads, "num_threads", lambda: 1)
    assert winograd._piece_rows(128, 256, 3, 4, total_rows=3) >= 3           # 1 piece
    np.testing.assert_allclose(two, cpu.conv2d_bias_relu_forward(x, w, b, *geometry), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(two, np.maximum(ref.conv2d_forward(x, w, b, *geometry), 0), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- the layer and the fallback

def test_conv2d_layer_with_relu_uses_the_fused_op():
    tinycnn.manual_seed(5)
    layer = layers.Conv2D(4, 3, padding="same", activation="relu")
    x = tinycnn.Tensor(randn(np.random.default_rng(5), 2, 3, 6, 5).astype(np.float32))
    y = layer(x)
    assert isinstance(y._ctx, Conv2dBiasReLU)
    expected = F.relu(F.conv2d(x, layer.kernel, layer.bias, padding=1))
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)


def test_conv2d_relu_runs_the_composition_when_the_device_has_no_fused_kernel(monkeypatch):
    """A backend that does not declare "fused_relu" (the CUDA kernels) gets kernels/compose.py's relu(conv2d(...))
    under the same op: the same values and gradients as the CPU's fused kernels."""
    from tinycnn.device import kernels_for
    from tinycnn.kernels import compose
    k = kernels_for("cpu")
    rng = np.random.default_rng(6)
    x = tinycnn.Tensor(randn(rng, 1, 2, 5, 5))
    w = tinycnn.Tensor(randn(rng, 3, 2, 3, 3), requires_grad=True)
    fused = conv2d_relu(x, w)
    fused.sum().backward()
    fused_dw, w.grad = np.array(w.grad), None
    kept = k.capabilities["conv"] - {"fused_relu", "fused_relu_maxpool2"}
    monkeypatch.setattr(k, "capabilities", dict(k.capabilities, conv=kept))
    monkeypatch.setattr(k, "conv", compose.with_defaults(k, "conv", cpu, kept))
    calls = []
    monkeypatch.setattr(cpu, "conv2d_bias_relu_forward", lambda *a: calls.append(a))  # must not be called
    composed = conv2d_relu(x, w)
    assert isinstance(composed._ctx, Conv2dBiasReLU) and calls == []
    assert k.conv.conv2d_bias_relu_forward.func is compose.conv2d_bias_relu_forward
    composed.sum().backward()
    np.testing.assert_allclose(composed.numpy(), fused.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad, fused_dw, rtol=1e-12)
    pooled = conv2d_relu_maxpool2(x, w)
    np.testing.assert_allclose(pooled.numpy(), F.max_pool2d(fused, 2).numpy(), rtol=1e-12)


def test_conv2d_relu_checks_its_arguments_as_conv2d():
    with pytest.raises(ValueError, match=r"conv2d: input has 3 channels .* expects 2"):
        conv2d_relu(tinycnn.Tensor(np.zeros((1, 3, 5, 5), np.float32)),
                    tinycnn.Tensor(np.zeros((4, 2, 3, 3), np.float32)))


# ---------------------------------------------------------------------- pooling's 2×2 fast path

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(4, 6), (5, 7), (2, 2)])
def test_max_pool_2x2_fast_path_matches_reference(hw, dtype):
    rng = np.random.default_rng(7)
    x = randn(rng, 2, 3, *hw).astype(dtype)
    x[0, 0, 0, :2] = x[0, 0, 1, :2] = 1.5  # a tie: the first pixel of the window wins
    y, argmax = cpu_pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    expected_y, expected_argmax = ref_pool.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(argmax, expected_argmax)
    assert argmax[0, 0, 0, 0] == 0
    dy = randn(rng, *y.shape).astype(dtype)
    np.testing.assert_array_equal(cpu_pool.max_pool2d_backward(dy, argmax, x.shape),
                                  ref_pool.max_pool2d_backward(dy, expected_argmax, x.shape))


# ---------------------------------------------------------------------- the workspace

def test_recycled_outputs_are_never_in_use():
    workspace.clear()
    shape = (workspace.OUTPUT_MIN_BYTES // 4 + 1,)
    a = workspace.output(shape, np.float32)
    a_id = id(a)
    view = a[1:]
    del a
    b = workspace.output(shape, np.float32)
    assert id(b) != a_id and view.base is not b  # still seen through a view: not reused
    del view
    c = workspace.output(shape, np.float32)
    assert id(c) == a_id  # nothing refers to it any more: recycled
    assert workspace.output((3,), np.float32) is not workspace.output((3,), np.float32)  # small: not kept
    workspace.clear()


def test_outputs_kept_by_the_graph_survive_the_next_step():
    """Run a layer twice while the first output is kept: the first output must not change."""
    tinycnn.manual_seed(8)
    layer = layers.Conv2D(8, 3, activation="relu")
    rng = np.random.default_rng(8)
    x1, x2 = (tinycnn.Tensor(rng.standard_normal((8, 16, 70, 70)).astype(np.float32)) for _ in range(2))
    y1 = layer(x1)  # (8, 8, 68, 68) float32: 1.2 MB, big enough to be recycled
    kept = y1.numpy().copy()
    ids = [id(layer(x2).data) for _ in range(3)]
    np.testing.assert_array_equal(y1.numpy(), kept)
    assert id(y1.data) not in ids and ids[0] == ids[1] == ids[2]  # the later ones were recycled


def test_scratch_reuses_one_buffer_per_role():
    workspace.clear()
    a = workspace.scratch("test.role", (10, 10), np.float32)
    b = workspace.scratch("test.role", (5, 4), np.float32)
    assert b.base is a.base and b.shape == (5, 4)
    assert workspace.scratch("test.other", (5, 4), np.float32).base is not a.base
    assert workspace.scratch("test.role", (5, 4), np.float64).dtype == np.float64
    workspace.clear()


# ---------------------------------------------------------------------- conv + ReLU + 2×2 max pool (inference)

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_relu_maxpool_kernel_matches_reference(name, dtype):
    """max_pool2d(relu(conv2d(x, w) + b), 2) from the fused kernel against the reference conv and pool
    (odd output sizes drop their last row/column, as pooling does)."""
    case = _case(name)
    x, w, b = _arrays(case, np.random.default_rng(5), dtype)
    z = ref.conv2d_forward(x, w, b, *_geometry(case))
    expected = ref_pool.max_pool2d_forward(np.maximum(z, 0), (2, 2), (2, 2), (0, 0))[0]
    got = cpu.conv2d_bias_relu_maxpool2_forward(x, w, b, *_geometry(case))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOL[dtype])


@pytest.mark.parametrize("name", ["few_channels, one input channel", "few_channels, two channels, padded",
                                  "direct, one input channel, strided", "winograd, odd output", "im2col, strided"])
def test_conv_relu_maxpool_gradients(name):
    """The fused op's backward (which recomputes the conv) against finite differences."""
    case = _case(name)
    x, w, b = _arrays(case, np.random.default_rng(6))

    def fn(x, w, b):
        return conv2d_relu_maxpool2(x, w, b, *_geometry(case))
    check_gradients(fn, [x, w, b])


def test_inference_form_fuses_conv_and_pool(monkeypatch):
    """The inference pass (tinycnn/fuse.py) runs Conv2D(relu) + MaxPooling2D(2) as the fused kernel, with the
    same output as the layers one by one; the model itself runs the layers (the fused kernel is not called)."""
    calls = []
    original = cpu.conv2d_bias_relu_maxpool2_forward
    monkeypatch.setattr(cpu, "conv2d_bias_relu_maxpool2_forward", lambda *a: calls.append(1) or original(*a))
    model = tinycnn.Sequential([layers.Conv2D(16, 3, activation="relu", input_shape=(14, 13, 1)),  # few_channels
                                layers.MaxPooling2D(2), layers.Conv2D(16, 3, activation="relu"),  # Winograd
                                layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(1)])
    x = np.random.default_rng(7).uniform(size=(3, 1, 14, 13)).astype(np.float32)
    layered = model(tinycnn.Tensor(x)).numpy()
    assert calls == []
    with tinycnn.no_grad():
        fused = fuse.inference_form(model)(tinycnn.Tensor(x)).numpy()
    assert len(calls) == 2
    np.testing.assert_allclose(fused, layered, rtol=1e-5, atol=1e-6)

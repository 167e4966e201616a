"""The fused inverted residual block ([1×1 →] depthwise → 1×1, channels last; kernels/cpu/conv/separable.py,
ops/conv.py conv2d_channels_last_separable): the kernel against the NumPy reference convs, cut into bands of
every size; gradients against finite differences (float64); the inference pass (tinycnn/fuse.py) fusing the
declared blocks of the plate models, with the eval forward's outputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
from gradcheck import check_gradients
from test_conv import TOL
from test_conv_fold import _padded
from tinycnn import fuse, layers
from tinycnn.kernels.cpu import conv as cpu
from tinycnn.kernels.cpu.conv import separable
from tinycnn.kernels.reference import conv as ref
from tinycnn.ops.conv import conv2d_channels_last, conv2d_channels_last_separable

ACTIVATIONS = {None: lambda z: z, "relu": lambda z: np.maximum(z, 0), "relu6": lambda z: np.clip(z, 0, 6)}
activations = st.sampled_from([None, "relu", "relu6"])


@st.composite
def blocks(draw):
    """An inverted residual block's shapes: input (N, H, W, C), expand to E (or none), a depthwise KH×KW with its
    stride, dilation and (top, bottom, left, right) padding, project to F."""
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    E = draw(st.sampled_from([None, 2 * C, 3 * C + 1]))
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    H = max(draw(st.integers(1, 14)), dilation[0] * (KH - 1) + 1 - padding[0] - padding[1])
    W = max(draw(st.integers(1, 9)), dilation[1] * (KW - 1) + 1 - padding[2] - padding[3])
    return dict(x_shape=(N, H, W, C), E=E, kernel=(KH, KW), stride=stride, dilation=dilation, padding=padding, F=F,
                acts=tuple(draw(activations) for _ in range(3)), biases=tuple(draw(st.booleans()) for _ in range(3)))


def _weights(rng, case):
    """(we, be, wd, bd, wp, bp) for a case (float64; we/be None without an expand, a bias None when left out)."""
    C = case["x_shape"][3]
    E = case["E"] or C
    shapes = ((E, C, 1, 1) if case["E"] else None, (E, 1) + case["kernel"], (case["F"], E, 1, 1))
    weights = []
    for shape, with_bias in zip(shapes, case["biases"]):
        w = None if shape is None else rng.standard_normal(shape) * 0.5
        weights += [w, rng.standard_normal(shape[0]) if w is not None and with_bias else None]
    return weights


def _reference(x, we, be, wd, bd, wp, bp, case):
    """The three convs with the NumPy reference kernels (NCHW, explicitly padded)."""
    act_e, act_d, act_p = (ACTIVATIONS[a] for a in case["acts"])
    e = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if we is not None:
        e = act_e(ref.conv2d_forward(e, we, be, (1, 1), (0, 0), (1, 1), 1))
    d = act_d(ref.conv2d_forward(_padded(e, case["padding"]), wd, bd, case["stride"], (0, 0), case["dilation"],
                                 wd.shape[0]))
    y = act_p(ref.conv2d_forward(d, wp, bp, (1, 1), (0, 0), (1, 1), 1))
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1))


def _fused(x, weights, case, dtype):
    cast = [None if a is None else a.astype(dtype) for a in weights]
    return cpu.conv2d_channels_last_separable_forward(x.astype(dtype), *cast, case["stride"], case["padding"],
                                                      case["dilation"], case["acts"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(deadline=None, max_examples=40)
@given(case=blocks(), band_bytes=st.sampled_from([1, 300, 1 << 20]), seed=st.integers(0, 2**16))
def test_kernel_matches_reference(dtype, case, band_bytes, seed):
    """The fused kernel = the reference's three convs, for bands of one output row up to whole images."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"]) * 2
    weights = _weights(rng, case)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(separable, "BAND_BYTES", band_bytes)
        y = _fused(x, weights, case, dtype)
    expected = _reference(x, *weights, case)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **TOL[dtype])


@pytest.mark.parametrize("N, H, stride", [(1, 40, 1), (3, 17, 2), (2, 33, (2, 1))])
def test_bands_give_the_whole_image_result_whatever_the_threads(N, H, stride, monkeypatch):
    """Bands (cut from the shapes alone) give the same values as one band per image, and the same bits with
    one thread or two."""
    case = dict(x_shape=(N, H, H + 3, 8), E=48, kernel=(3, 3), stride=(stride,) * 2 if isinstance(stride, int) else stride,
                dilation=(1, 1), padding=(1, 1, 1, 1), F=16, acts=("relu6", "relu6", None), biases=(True, True, True))
    rng = np.random.default_rng(0)
    x, weights = rng.standard_normal(case["x_shape"]), _weights(rng, case)
    monkeypatch.setattr(separable, "BAND_BYTES", 1 << 30)
    monkeypatch.setattr(separable, "MIN_BANDS", 1)
    whole = _fused(x, weights, case, np.float32).copy()
    monkeypatch.setattr(separable, "BAND_BYTES", 4 * (H + 3) * 48 * 5)  # a few rows a band
    monkeypatch.setattr(separable, "MIN_BANDS", 4)
    assert len(separable._bands(x.shape, 48, whole.shape[1], 3, case["stride"][0], 4)) > N
    previous = tinycnn.get_num_threads()
    try:
        tinycnn.set_num_threads(1)
        one = _fused(x, weights, case, np.float32).copy()
        tinycnn.set_num_threads(2)
        two = _fused(x, weights, case, np.float32).copy()
    finally:
        tinycnn.set_num_threads(previous)
    np.testing.assert_allclose(one, whole, **TOL[np.float32])
    assert np.array_equal(one, two)


@settings(deadline=None, max_examples=12)
@given(case=blocks(), seed=st.integers(0, 2**16))
def test_gradients_match_finite_differences(case, seed):
    """The op's backward (the three convs recomputed, their backward kernels) against finite differences."""
    case = dict(case, x_shape=(1,) + tuple(min(s, 6) for s in case["x_shape"][1:3]) + case["x_shape"][3:])
    kh, kw = case["kernel"]
    H, W = case["x_shape"][1:3]
    (dh, dw), (top, bottom, left, right) = case["dilation"], case["padding"]
    case["x_shape"] = (1, max(H, dh * (kh - 1) + 1 - top - bottom), max(W, dw * (kw - 1) + 1 - left - right),
                       case["x_shape"][3])
    rng = np.random.default_rng(seed)
    # activations' kinks (0, 6) are where finite differences disagree: values kept in the linear range
    case["acts"] = tuple(None if a is None else "relu" for a in case["acts"])
    weights = _weights(rng, case)
    present = [i for i, a in enumerate(weights) if a is not None]
    arrays = [rng.standard_normal(case["x_shape"])] + [weights[i] for i in present]
    (top, bottom, left, right) = case["padding"]

    def block(x, *given):
        full = [None] * 6
        for i, t in zip(present, given):
            full[i] = t
        we, be, wd, bd, wp, bp = full
        expand = (we, be, case["acts"][0]) if we is not None else None
        return conv2d_channels_last_separable(x, (wd, bd, case["acts"][1]), (wp, bp, case["acts"][2]), expand,
                                              case["stride"], ((top, bottom), (left, right)), case["dilation"])

    check_gradients(block, arrays, rtol=1e-4, atol=1e-5)


def test_op_matches_the_three_convs_and_names_bad_weights():
    rng = np.random.default_rng(0)
    x = tinycnn.Tensor(rng.standard_normal((2, 9, 7, 4)).astype(np.float32))
    we, wd, wp = (tinycnn.Tensor((rng.standard_normal(s) * 0.5).astype(np.float32))
                  for s in ((12, 4, 1, 1), (12, 1, 3, 3), (5, 12, 1, 1)))
    b = tinycnn.Tensor(rng.standard_normal(12).astype(np.float32))
    with tinycnn.no_grad():
        y = conv2d_channels_last_separable(x, (wd, b, "relu6"), (wp, None, None), (we, b, "relu"), 2, ((0, 1), (0, 1)))
        e = conv2d_channels_last(x, we, b, activation="relu")
        d = conv2d_channels_last(e, wd, b, 2, ((0, 1), (0, 1)), groups=12, activation="relu6")
        expected = conv2d_channels_last(d, wp, None)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not chain on an input of 4 channels"):
        conv2d_channels_last_separable(x, (wd, None, None), (wp, None, None), (wp, None, None))
    with pytest.raises(ValueError, match="activation must be None, 'relu' or 'relu6'"):
        conv2d_channels_last_separable(x, (wd, None, "tanh"), (wp, None, None), (we, None, None))
    with pytest.raises(ValueError, match="bias shape"):
        conv2d_channels_last_separable(x, (wd, None, None), (wp, b, None), (we, None, None))


# ---------------------------------------------------------------------- the inference pass

def _separable_steps(form):
    """The SeparableConvs steps anywhere in an inference form."""
    found, stack = [], [form]
    while stack:
        item = stack.pop()
        if isinstance(item, fuse.SeparableConvs):
            found.append(item)
        elif isinstance(item, fuse.Steps):
            stack.extend(item.steps)
        elif isinstance(item, list):
            stack.extend(item)
        elif hasattr(item, "_modules"):
            stack.extend(v for k, v in vars(item).items() if k == "_steps" or not k.startswith("_"))
    return found


def _eval_outputs(model, x):
    model.eval()
    with tinycnn.no_grad():
        return model(tinycnn.Tensor(x)).numpy()


def test_plate_regressor_blocks_fuse_and_predict_as_the_eval_forward():
    from tasks.plates_models import PlateBoxRegressor
    from test_inference_plan import _random_statistics
    tinycnn.manual_seed(0)
    model = PlateBoxRegressor(width=0.5)
    x = np.random.default_rng(1).random((2, 3, 64, 64)).astype(np.float32)
    model.predict(x)
    _random_statistics(model)
    form = fuse.inference_form(model)
    assert len(_separable_steps(form)) == len(model.features)  # every block, the expand-less first one too
    np.testing.assert_allclose(model.predict(x), _eval_outputs(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["light", "separable", "conv"])
def test_detector_neck_and_heads_fuse_by_their_declared_groups(head):
    from tasks.plates_detect import PlateCenterNet
    tinycnn.manual_seed(0)
    model = PlateCenterNet(width=0.5, neck=16, stem=8, expansion=4, head=head)
    x = np.random.default_rng(1).random((1, 3, 64, 64)).astype(np.float32)
    model.predict(x)
    blocks = sum(len(stage) for stage in (model.stage4, model.stage8, model.stage16))
    heads = 0 if head == "conv" else 2  # a full 3×3 conv does not fuse with its 1×1
    assert len(_separable_steps(fuse.inference_form(model))) == blocks + 2 + heads  # + the two neck steps
    np.testing.assert_allclose(model.predict(x), _eval_outputs(model, x), rtol=1e-4, atol=1e-4)


def test_a_group_of_keras_layers_fuses_and_a_channels_first_one_does_not():
    """A declared group of plain layers (depthwise, batch norm, ReLU(6), 1×1 with a bias) fuses when channels
    last; the same group channels first runs as folded convs."""
    class Separable(tinycnn.Module):
        fusable = (("depthwise", "norm", "act", "pointwise"),)

        def __init__(self, data_format):
            super().__init__()
            axis = -1 if data_format == "channels_last" else 1
            self.depthwise = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                                    data_format=data_format)
            self.norm, self.act = layers.BatchNormalization(axis=axis), layers.ReLU(6.0)
            self.pointwise = layers.Conv2D(5, 1, data_format=data_format)

        def forward(self, x):
            return self.pointwise(self.act(self.norm(self.depthwise(x))))

    for data_format, fused in (("channels_last", 1), ("channels_first", 0)):
        tinycnn.manual_seed(0)
        model = Separable(data_format)
        shape = (2, 9, 9, 4) if data_format == "channels_last" else (2, 4, 9, 9)
        x = tinycnn.Tensor(np.random.default_rng(1).random(shape).astype(np.float32))
        model.eval()
        with tinycnn.no_grad():
            expected = model(x).numpy()
            form = fuse.inference_form(model)
            assert len(_separable_steps(form)) == fused
            np.testing.assert_allclose(form(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_a_group_member_without_a_chain_is_not_fused_whole():
    """A module whose forward is not declared a plain chain keeps its own forward: its group does not fuse
    across it (its layers still fold inside it)."""
    from tasks.plates_models import ConvBNReLU6

    class Doubled(ConvBNReLU6):
        chain = ()

        def forward(self, x):
            return super().forward(x) * 2.0

    class Block(tinycnn.Module):
        fusable = (("first", "second"),)

        def __init__(self):
            super().__init__()
            self.first = Doubled(8, 3, depthwise=True, data_format="channels_last")
            self.second = ConvBNReLU6(4, 1, data_format="channels_last")

        def forward(self, x):
            return self.second(self.first(x))

    tinycnn.manual_seed(0)
    model = Block()
    x = tinycnn.Tensor(np.random.default_rng(1).random((1, 6, 6, 8)).astype(np.float32))
    model.eval()
    with tinycnn.no_grad():
        expected = model(x).numpy()
        form = fuse.inference_form(model)
        assert not _separable_steps(form)
        np.testing.assert_allclose(form(x).numpy(), expected, rtol=1e-5, atol=1e-5)

"""Convolution, transposed convolution and constant padding, as in torch.nn.functional (NCHW).

    conv2d:   y[n, f, oh, ow] = b[f] + Σ_{c, i, j} w[f, c, i, j] · x[n, g·C/G + c, oh·s + i·d − p, ow·s + j·d − p]
              x (N, C, H, W), w (F, C/G, KH, KW), g = f // (F/G);  OH = (H + 2p − d·(KH − 1) − 1) // s + 1
    conv_transpose2d: the adjoint of conv2d (each input pixel scatters a copy of its filter);
              x (N, C, H, W), w (C, F/G, KH, KW);  OH = (H − 1)·s − 2p + d·(KH − 1) + output_padding + 1
    pad:      constant padding of the last two axes, (left, right, top, bottom)
    conv2d_channels_last: conv2d on (N, H, W, C) inputs, Keras' data_format="channels_last" (MobileNet's
              blocks run faster so: kernels/cpu/conv/channels_last.py)

Each Function's forward calls the kernels (`self.k.conv`) and its backward sits right beside it. The public
functions check their arguments first, so that a mistake reads as an error naming the op and the shapes.
"""
from ..device import kernels_for
from ..tensor import Function, Tensor
from ._util import check_nchw, pair


class Conv2d(Function):
    def forward(self, x, w, b=None, *, stride, padding, dilation, groups):
        self.x, self.w, self.has_bias = x, w, b is not None
        self.geometry = stride, padding, dilation, groups
        return self.k.conv.conv2d_forward(x, w, b, stride, padding, dilation, groups)

    def backward(self, dy):
        need_x, need_w, need_b = self.needs_grad + (False,) * (3 - len(self.needs_grad))
        dx, dw, db = self.k.conv.conv2d_backward(dy, self.x, self.w, *self.geometry, need_x, need_w, need_b)
        return (dx, dw, db) if self.has_bias else (dx, dw)


class Conv2dConcat(Function):
    """conv2d of the channel concatenation of the first `parts` inputs (a U-Net decoder's [upsampled, skip]),
    the concatenation never built where the device's kernels read the parts (the conv capability
    "concatenated_input"; kernels/compose.py builds it for the others): y = conv2d(cat(xs, 1), w, b), and each
    part's gradient is its channels of conv2d's dx."""

    def forward(self, *arrays, parts, stride, padding, dilation, groups):
        self.parts, self.has_bias = parts, len(arrays) == parts + 2
        self.xs, self.w = arrays[:parts], arrays[parts]
        self.geometry = stride, padding, dilation, groups
        b = arrays[parts + 1] if self.has_bias else None
        return self.k.conv.conv2d_concat_forward(self.xs, self.w, b, stride, padding, dilation, groups)

    def backward(self, dy):
        needs = self.needs_grad + (False,) * (self.parts + 2 - len(self.needs_grad))
        dxs, dw, db = self.k.conv.conv2d_concat_backward(dy, self.xs, self.w, *self.geometry, needs[:self.parts],
                                                         needs[self.parts], needs[self.parts + 1])
        return (*(dxs or (None,) * self.parts), dw) + ((db,) if self.has_bias else ())


class Conv2dBiasReLU(Function):
    """relu(conv2d(x, w) + b) as one op, for the Conv2D layer with activation="relu": the kernels apply the
    bias and the ReLU while each piece of the output is still in cache, instead of two more passes over it
    (and two more big arrays), and the backward takes the ReLU's mask from the output y, so the
    pre-activation is never kept. Exactly the gradients of relu(conv2d(x, w, b))."""

    def forward(self, x, w, b=None, *, stride, padding, dilation, groups):
        self.x, self.w, self.has_bias = x, w, b is not None
        self.geometry = stride, padding, dilation, groups
        self.y = self.k.conv.conv2d_bias_relu_forward(x, w, b, stride, padding, dilation, groups)
        return self.y

    def backward(self, dy):
        need_x, need_w, need_b = self.needs_grad + (False,) * (3 - len(self.needs_grad))
        dx, dw, db = self.k.conv.conv2d_bias_relu_backward(dy, self.y, self.x, self.w, *self.geometry,
                                                           need_x, need_w, need_b)
        return (dx, dw, db) if self.has_bias else (dx, dw)


class Conv2dBiasReLU6(Function):
    """relu6(conv2d(x, w) + b) as one op: the kernels clip each piece of the output while it is in cache.
    It is what a conv followed by a batch norm with ReLU6 (MobileNetV2's blocks) becomes at inference, the
    batch norm folded into w and b (layers.Conv2D.forward_folded). Backward: dz = dy · [0 < y < 6] (relu6's
    backward kernel, given the output: the same mask as on the pre-activation), then conv2d's gradients."""

    def forward(self, x, w, b=None, *, stride, padding, dilation, groups):
        self.x, self.w, self.has_bias = x, w, b is not None
        self.geometry = stride, padding, dilation, groups
        self.y = self.k.conv.conv2d_bias_act_forward(x, w, b, stride, padding, dilation, groups, "relu6")
        return self.y

    def backward(self, dy):
        need_x, need_w, need_b = self.needs_grad + (False,) * (3 - len(self.needs_grad))
        dz = self.k.activation.relu6_backward(dy, self.y)
        dx, dw, db = self.k.conv.conv2d_backward(dz, self.x, self.w, *self.geometry, need_x, need_w, need_b)
        return (dx, dw, db) if self.has_bias else (dx, dw)


class Conv2dBiasReLUMaxPool2(Function):
    """max_pool2d(relu(conv2d(x, w) + b), 2) as one op, for inference (the Sequential model uses it for a
    Conv2D(activation="relu") followed by MaxPooling2D(2) when no gradient is being recorded): the kernels
    pool each piece of the conv's output as it is made, so the full-size output is never written. Its
    backward, for completeness, recomputes the conv's output and runs the two ops' backward kernels."""

    def forward(self, x, w, b=None, *, stride, padding, dilation, groups):
        self.x, self.w, self.b, self.has_bias = x, w, b, b is not None
        self.geometry = stride, padding, dilation, groups
        return self.k.conv.conv2d_bias_relu_maxpool2_forward(x, w, b, stride, padding, dilation, groups)

    def backward(self, dy):
        need_x, need_w, need_b = self.needs_grad + (False,) * (3 - len(self.needs_grad))
        conv, pool = self.k.conv, self.k.pool
        y = conv.conv2d_bias_relu_forward(self.x, self.w, self.b, *self.geometry)
        _, argmax = pool.max_pool2d_forward(y, (2, 2), (2, 2), (0, 0))
        dy_full = pool.max_pool2d_backward(dy, argmax, tuple(y.shape))
        dx, dw, db = conv.conv2d_bias_relu_backward(dy_full, y, self.x, self.w, *self.geometry,
                                                    need_x, need_w, need_b)
        return (dx, dw, db) if self.has_bias else (dx, dw)


class Conv2dChannelsLast(Function):
    """act(conv2d(x, w) + b) with the channels last: x (N, H, W, C) -> (N, OH, OW, F), act None, "relu" or
    "relu6" applied in the conv's own pass. Backward: dz = dy · act'(from y), then the conv's gradients."""

    def forward(self, x, w, b=None, *, stride, padding, dilation, groups, activation):
        self.x, self.w, self.has_bias, self.activation = x, w, b is not None, activation
        self.geometry = stride, padding, dilation, groups
        y = self.k.conv.conv2d_channels_last_forward(x, w, b, stride, padding, dilation, groups, activation)
        self.y = y if activation is not None else None  # the activation's mask comes from its output
        return y

    def backward(self, dy):
        need_x, need_w, need_b = self.needs_grad + (False,) * (3 - len(self.needs_grad))
        if self.activation is not None:  # relu: [y > 0], relu6: [0 < y < 6], the masks of the pre-activation
            dy = getattr(self.k.activation, f"{self.activation}_backward")(dy, self.y)
        dx, dw, db = self.k.conv.conv2d_channels_last_backward(dy, self.x, self.w, *self.geometry,
                                                               need_x, need_w, need_b)
        return (dx, dw, db) if self.has_bias else (dx, dw)


class Conv2dChannelsLastSeparable(Function):
    """act_p(1×1 conv(act_d(depthwise(act_e(1×1 conv(x)))))) with the channels last, as one op: MobileNetV2's
    inverted residual block without its residual add (the expand optional), for inference. The kernels run it
    band by band of output rows, so the expanded map never goes to memory whole. Its backward, for
    completeness, recomputes the intermediate maps with the separate convs and runs their backward kernels."""

    def forward(self, x, we, be, wd, bd, wp, bp, *, stride, padding, dilation, activations):
        self.arrays, self.geometry, self.activations = (x, we, be, wd, bd, wp, bp), (stride, padding, dilation), activations
        return self.k.conv.conv2d_channels_last_separable_forward(x, we, be, wd, bd, wp, bp, stride, padding,
                                                                  dilation, activations)

    def backward(self, dy):
        x, we, be, wd, bd, wp, bp = self.arrays
        act_e, act_d, act_p = self.activations
        depthwise = self.geometry + (wd.shape[0],)
        e = x if we is None else self._conv(x, we, be, _POINTWISE, act_e)
        d = self._conv(e, wd, bd, depthwise, act_d)
        y = self._conv(d, wp, bp, _POINTWISE, act_p) if act_p is not None else None
        dd, dwp, dbp = self._conv_grads(dy, y, act_p, d, wp, bp, _POINTWISE)
        de, dwd, dbd = self._conv_grads(dd, d, act_d, e, wd, bd, depthwise)
        if we is None:
            return self.tensor_grads(de, None, None, dwd, dbd, dwp, dbp)
        dx, dwe, dbe = self._conv_grads(de, e, act_e, x, we, be, _POINTWISE)
        return self.tensor_grads(dx, dwe, dbe, dwd, dbd, dwp, dbp)

    def _conv(self, x, w, b, geometry, activation):
        return self.k.conv.conv2d_channels_last_forward(x, w, b, *geometry, activation)

    def _conv_grads(self, dy, y, activation, x, w, b, geometry):
        """(dx, dw, db) of y = activation(conv(x, w) + b) given dy (db None without a bias)."""
        if activation is not None:  # the activation's mask, from its output
            dy = getattr(self.k.activation, f"{activation}_backward")(dy, y)
        return self.k.conv.conv2d_channels_last_backward(dy, x, w, *geometry, True, True, b is not None)


_POINTWISE = ((1, 1), (0, 0), (1, 1), 1)  # a 1×1 conv's stride, padding, dilation, groups


class ConvTranspose2d(Function):
    def forward(self, x, w, b=None, *, stride, padding, output_padding, dilation, groups):
        self.x, self.w, self.has_bias = x, w, b is not None
        self.geometry = stride, padding, output_padding, dilation, groups
        return self.k.conv.conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups)

    def backward(self, dy):
        need_x, need_w, need_b = self.needs_grad + (False,) * (3 - len(self.needs_grad))
        dx, dw, db = self.k.conv.conv_transpose2d_backward(dy, self.x, self.w, *self.geometry,
                                                           need_x, need_w, need_b)
        return (dx, dw, db) if self.has_bias else (dx, dw)


class Pad(Function):
    def forward(self, x, *, pad, value):
        self.pad = pad
        return self.k.conv.pad2d_forward(x, pad, value)

    def backward(self, dy):  # the padding's border gets no gradient: keep the middle
        return self.k.conv.pad2d_backward(dy, self.pad)


# ---------------------------------------------------------------------- public functions

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution, as torch.nn.functional.conv2d.

    input (N, C, H, W), weight (F, C/groups, KH, KW), bias (F,) or None -> (N, F, OH, OW).
    padding: an int, a pair, ((top, bottom), (left, right)), "valid" (no padding) or "same" (stride 1 only:
    the output keeps H×W; when d·(K − 1) is odd the extra row/column goes to the bottom/right, as in
    PyTorch). groups = C with weight (m·C, 1, KH, KW) is a depthwise convolution (MobileNet).

    input may also be a list of (N, C_i, H, W) tensors: the conv of their channel concatenation,
    conv2d(cat(input, 1), ...), computed without building it where the device's kernels can (groups 1)."""
    if isinstance(input, (list, tuple)):
        return _conv2d_concat(list(input), weight, bias, stride, padding, dilation, groups)
    input, args, geometry = _conv2d_arguments("conv2d", input, weight, bias, stride, padding, dilation, groups)
    return Conv2d.apply(input, *args, **geometry)


def _conv2d_concat(inputs, weight, bias, stride, padding, dilation, groups):
    """conv2d of the channel concatenation of `inputs` (checked like one input: the parts must agree in N, H,
    W, dtype and device)."""
    from .basic import cat
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise TypeError("conv2d: a list input must be a non-empty list of Tensors (the parts of a channel "
                        "concatenation)")
    shapes = [t.shape for t in inputs]
    if any(len(s) != 4 for s in shapes) or len({(s[0], s[2], s[3]) for s in shapes}) > 1 \
            or len({t.dtype for t in inputs}) > 1:
        raise ValueError(f"conv2d: the parts of a concatenated input must be (N, C_i, H, W) tensors of one dtype "
                         f"with the same N, H, W, got {[tuple(s) for s in shapes]} "
                         f"({sorted({str(t.dtype) for t in inputs})})")
    if len(inputs) == 1 or groups != 1:
        return conv2d(cat(inputs, axis=1) if len(inputs) > 1 else inputs[0], weight, bias, stride, padding,
                      dilation, groups)
    whole = _ConcatenatedShape(inputs)
    (top, bottom), (left, right) = _padding_of("conv2d", padding, tuple(weight.shape[2:]),
                                               _positive_pair(stride, "conv2d", "stride"),
                                               _positive_pair(dilation, "conv2d", "dilation"))
    uneven = (top, left) != (bottom, right)
    if uneven and not kernels_for(whole.device).has("conv", "asymmetric_padding"):  # padded first: built
        return conv2d(cat(inputs, axis=1), weight, bias, stride, padding, dilation, groups)
    _, args, geometry = _conv2d_arguments("conv2d", whole, weight, bias, stride, padding, dilation, groups)
    return Conv2dConcat.apply(*inputs, *args, parts=len(inputs), **geometry)


class _ConcatenatedShape:
    """Stands for the concatenation of `parts` in _conv2d_arguments' checks (its shape, dtype and device)."""

    def __init__(self, parts):
        N, _, H, W = parts[0].shape
        self.shape = (N, sum(t.shape[1] for t in parts), H, W)
        self.dtype, self.device, self.ndim = parts[0].dtype, parts[0].device, 4


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """relu(conv2d(input, weight, bias, ...)), the same arguments as conv2d, computed as one fused op.

    A device whose kernels have no fused conv (the capability "fused_relu", kernels/contract.py) runs the
    composition of kernels/compose.py, relu(conv2d(...)): the same values and gradients."""
    input, args, geometry = _conv2d_arguments("conv2d", input, weight, bias, stride, padding, dilation, groups)
    return Conv2dBiasReLU.apply(input, *args, **geometry)


def conv2d_activation(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """activation(conv2d(input, weight, bias, ...)) for activation None, "relu" or "relu6", as one fused op
    (the device's fused kernels, or their composition from kernels/compose.py: the same values and gradients)."""
    if activation is None:
        return conv2d(input, weight, bias, stride, padding, dilation, groups)
    if activation == "relu":
        return conv2d_relu(input, weight, bias, stride, padding, dilation, groups)
    if activation != "relu6":
        raise ValueError(f"conv2d_activation: activation must be None, 'relu' or 'relu6', got {activation!r}")
    input, args, geometry = _conv2d_arguments("conv2d", input, weight, bias, stride, padding, dilation, groups)
    return Conv2dBiasReLU6.apply(input, *args, **geometry)


def conv2d_relu_maxpool2(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """max_pool2d(relu(conv2d(input, weight, bias, ...)), 2) as one op: the device's fused kernel, or its
    composition (kernels/compose.py), the two ops' kernels one after the other: the same values either way."""
    input, args, geometry = _conv2d_arguments("conv2d", input, weight, bias, stride, padding, dilation, groups)
    return Conv2dBiasReLUMaxPool2.apply(input, *args, **geometry)


def conv2d_channels_last(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """activation(conv2d(...)) with the channels last, as Keras' data_format="channels_last":
    input (N, H, W, C) -> (N, OH, OW, F); weight (F, C/groups, KH, KW) and the other arguments as in conv2d;
    activation None, "relu" or "relu6".

    Where the device's kernels have it (the capability "channels_last", kernels/contract.py: groups = 1 and
    depthwise convs) it is one op on the NHWC arrays; otherwise the NCHW conv between two transposes: the same
    values and gradients either way."""
    if activation not in (None, "relu", "relu6"):
        raise ValueError(f"conv2d_channels_last: activation must be None, 'relu' or 'relu6', got {activation!r}")
    kernels_take_it = isinstance(input, Tensor) and kernels_for(input.device).has("conv", "channels_last")
    checked, args, geometry = _conv2d_arguments("conv2d_channels_last", input, weight, bias, stride, padding,
                                                dilation, groups, channels_last=True)  # errors name this op
    C, F, per_group = input.shape[3], weight.shape[0], weight.shape[1]
    if not (kernels_take_it and (groups == 1 or (groups == C == F and per_group == 1))):
        y = conv2d_activation(input.transpose(0, 3, 1, 2), weight, bias, stride, padding, dilation, groups, activation)
        return y.transpose(0, 2, 3, 1)
    return Conv2dChannelsLast.apply(checked, *args, **geometry, activation=activation)


def conv2d_channels_last_separable(input, depthwise, project, expand=None, stride=1, padding=0, dilation=1):
    """MobileNetV2's inverted residual block without its residual add, channels last, as one op (inference):
    expand (optional) → depthwise → project, each a triple (weight, bias or None, activation None, "relu" or
    "relu6") of a conv2d_channels_last:

        expand     (E, C, 1, 1), a 1×1 conv         input (N, H, W, C) -> (N, H, W, E)   (no expand: E = C)
        depthwise  (E, 1, KH, KW), groups = E, with stride, padding and dilation as in conv2d_channels_last
        project    (F, E, 1, 1), a 1×1 conv         -> (N, OH, OW, F)

    Where the device's kernels have it (the capability "fused_separable", kernels/contract.py), one pass band
    by band of output rows; otherwise the three convs one after another: the same values up to rounding."""
    op = "conv2d_channels_last_separable"
    for name, triple in (("expand", expand), ("depthwise", depthwise), ("project", project)):
        if triple is None and name == "expand":
            continue
        if not (isinstance(triple, (tuple, list)) and len(triple) == 3):
            raise TypeError(f"{op}: {name} must be (weight, bias or None, activation), got {triple!r}")
        if triple[2] not in (None, "relu", "relu6"):
            raise ValueError(f"{op}: {name}'s activation must be None, 'relu' or 'relu6', got {triple[2]!r}")
    if not (isinstance(input, Tensor) and kernels_for(input.device).has("conv", "fused_separable")):
        x = input if expand is None else conv2d_channels_last(input, *expand[:2], activation=expand[2])
        x = conv2d_channels_last(x, *depthwise[:2], stride, padding, dilation, x.shape[3], activation=depthwise[2])
        return conv2d_channels_last(x, *project[:2], activation=project[2])
    we, be, act_e = expand if expand is not None else (None, None, None)
    wd, bd, act_d = depthwise
    wp, bp, act_p = project
    for name, t in (("expand", we), ("expand's bias", be), ("depthwise", wd), ("depthwise's bias", bd),
                    ("project", wp), ("project's bias", bp)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    check_nchw(input, op, "(N, H, W, C)")
    N, H, W, C = input.shape
    E = C if we is None else we.shape[0]
    weights_fit = ((we is None or we.shape[1:] == (C, 1, 1)) and wd.ndim == 4 and wd.shape[:2] == (E, 1)
                   and wp.ndim == 4 and wp.shape[1:] == (E, 1, 1))
    if not weights_fit:
        raise ValueError(f"{op}: weights expand {None if we is None else we.shape}, depthwise {wd.shape}, project "
                         f"{wp.shape} do not chain on an input of {C} channels ((E, {C}, 1, 1), (E, 1, KH, KW), "
                         f"(F, E, 1, 1))")
    for name, b, channels in (("expand", be, E), ("depthwise", bd, E), ("project", bp, wp.shape[0])):
        _check_bias(f"{op} ({name})", b, channels)
    if any(t is not None and t.dtype != input.dtype for t in (we, be, wd, bd, wp, bp)):
        raise TypeError(f"{op}: the weights' dtypes differ from the input's {input.dtype}")
    stride, dilation = _positive_pair(stride, op, "stride"), _positive_pair(dilation, op, "dilation")
    (top, bottom), (left, right) = _padding_of(op, padding, wd.shape[2:], stride, dilation)
    if dilation[0] * (wd.shape[2] - 1) + 1 > H + top + bottom or dilation[1] * (wd.shape[3] - 1) + 1 > W + left + right:
        raise ValueError(f"{op}: the depthwise kernel {wd.shape[2:]} is larger than the padded input {input.shape}")
    return Conv2dChannelsLastSeparable.apply(input, we, be, wd, bd, wp, bp, stride=stride,
                                             padding=(top, bottom, left, right), dilation=dilation,
                                             activations=(act_e, act_d, act_p))


def _padding_of(op, padding, kernel, stride, dilation):
    """A conv's padding argument (an int, a pair, ((top, bottom), (left, right)), "same" or "valid") ->
    ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        return _string_padding(op, padding, kernel, stride, dilation)
    return _padding_amounts(padding, op)


def _conv2d_arguments(op, input, weight, bias, stride, padding, dilation, groups, channels_last=False):
    """Check conv2d's arguments; -> (input, padded first where the padding is uneven and the device's kernels
    take only a symmetric one), the weight and bias to pass, and the normalised geometry (stride, padding,
    dilation, groups as keywords): padding (ph, pw), or (top, bottom, left, right) when uneven. With
    `channels_last` the input is (N, H, W, C), and the device's kernels take any padding as it is."""
    _check_operands(op, input, weight, bias, "(N, H, W, C)" if channels_last else "(N, C, H, W)")
    stride, dilation = _positive_pair(stride, op, "stride"), _positive_pair(dilation, op, "dilation")
    if channels_last:
        N, H, W, C = input.shape
    else:
        N, C, H, W = input.shape
    groups = _check_groups(op, groups, C, weight.shape[0], "filters")
    F, Cg, KH, KW = weight.shape
    if Cg * groups != C:
        raise ValueError(f"{op}: input has {C} channels but weight {weight.shape} with groups={groups} "
                         f"expects {Cg * groups} (weight.shape[1] · groups)")
    _check_bias(op, bias, F)
    (top, bottom), (left, right) = _padding_of(op, padding, (KH, KW), stride, dilation)
    span_h, span_w = dilation[0] * (KH - 1) + 1, dilation[1] * (KW - 1) + 1
    if span_h > H + top + bottom or span_w > W + left + right:
        raise ValueError(f"{op}: kernel {KH}×{KW} (dilation {dilation}, spanning {span_h}×{span_w}) is larger "
                         f"than the padded input {H + top + bottom}×{W + left + right} "
                         f"(input {input.shape}, padding {padding})")
    if top == bottom and left == right:
        padding = (top, left)
    elif channels_last or kernels_for(input.device).has("conv", "asymmetric_padding"):
        padding = (top, bottom, left, right)  # the kernels take it as it is (kernels/README.md; channels last:
        # conv2d_channels_last gives it only to kernels that take it)
    else:  # a device whose kernels take only a symmetric padding: pad first
        input, padding = pad(input, (left, right, top, bottom)), (0, 0)
    args = (weight,) if bias is None else (weight, bias)
    return input, args, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution, as torch.nn.functional.conv_transpose2d (the gradient of conv2d wrt its input).

    input (N, C, H, W), weight (C, F/groups, KH, KW), bias (F,) or None -> (N, F, OH, OW),
    OH = (H − 1)·stride − 2·padding + dilation·(KH − 1) + output_padding + 1. output_padding (added at the
    bottom/right) must be smaller than the stride or the dilation."""
    op = "conv_transpose2d"
    _check_operands(op, input, weight, bias)
    stride, dilation = _positive_pair(stride, op, "stride"), _positive_pair(dilation, op, "dilation")
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a pair of ints, got {padding!r}")
    padding = _non_negative_pair(padding, op, "padding")
    output_padding = _non_negative_pair(output_padding, op, "output_padding")
    N, C, H, W = input.shape
    C_w, Fg, KH, KW = weight.shape
    if C_w != C:
        raise ValueError(f"{op}: input has {C} channels but weight {weight.shape} expects {C_w} (weight.shape[0])")
    groups = _check_groups(op, groups, C, None, None)
    _check_bias(op, bias, Fg * groups)
    for extra, s, d in zip(output_padding, stride, dilation):
        if extra >= s and extra >= d:
            raise ValueError(f"{op}: output_padding {output_padding} must be smaller than the stride {stride} "
                             f"or the dilation {dilation}")
    out_h = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (KH - 1) + output_padding[0] + 1
    out_w = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (KW - 1) + output_padding[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{op}: the output would be {out_h}×{out_w} (input {input.shape}, weight {weight.shape}, "
                         f"stride {stride}, padding {padding}): the padding is too large")
    args = (input, weight) if bias is None else (input, weight, bias)
    return ConvTranspose2d.apply(*args, stride=stride, padding=padding, output_padding=output_padding,
                                 dilation=dilation, groups=groups)


def pad(input, pad, value=0.0):
    """Constant padding of the last two axes of an (N, C, H, W) input, as torch.nn.functional.pad:
    pad = (left, right) or (left, right, top, bottom), non-negative ints."""
    op = "pad"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op} expects a Tensor input, got {type(input).__name__}")
    check_nchw(input, op)
    if not isinstance(pad, (tuple, list)) or len(pad) not in (2, 4) or not all(isinstance(p, int) for p in pad):
        raise ValueError(f"{op}: pad must be (left, right) or (left, right, top, bottom) ints, got {pad!r}")
    if any(p < 0 for p in pad):
        raise ValueError(f"{op}: negative padding (cropping) is not supported, got {tuple(pad)}")
    if not isinstance(value, (int, float)):
        raise TypeError(f"{op}: value must be a number, got {type(value).__name__}")
    pad = tuple(int(p) for p in pad) + (0, 0) * (len(pad) == 2)
    return Pad.apply(input, pad=pad, value=float(value))


# ---------------------------------------------------------------------- argument checks

def _check_operands(op, input, weight, bias, layout="(N, C, H, W)"):
    for name, t in (("input", input), ("weight", weight)) + ((("bias", bias),) if bias is not None else ()):
        if not isinstance(t, (Tensor, _ConcatenatedShape)):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    check_nchw(input, op, layout)
    if weight.ndim != 4:
        raise ValueError(f"{op} expects a 4-D weight, got shape {weight.shape}")
    if 0 in input.shape or 0 in weight.shape:
        raise ValueError(f"{op}: empty input {input.shape} or weight {weight.shape}")
    for name, t in (("weight", weight),) + ((("bias", bias),) if bias is not None else ()):
        if t.dtype != input.dtype:
            raise TypeError(f"{op}: input is {input.dtype} but {name} is {t.dtype}; convert one with .astype()")


def _check_groups(op, groups, channels, filters, filters_name):
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if channels % groups:
        raise ValueError(f"{op}: {channels} input channels are not divisible by groups={groups}")
    if filters is not None and filters % groups:
        raise ValueError(f"{op}: {filters} {filters_name} (weight.shape[0]) are not divisible by groups={groups}")
    return groups


def _check_bias(op, bias, out_channels):
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{op}: bias shape {bias.shape} does not match the {out_channels} output channels")


def _positive_pair(value, op, name):
    value = pair(value, f"{op}: {name}")
    if min(value) < 1:
        raise ValueError(f"{op}: {name} must be positive, got {value}")
    return value


def _non_negative_pair(value, op, name):
    value = pair(value, f"{op}: {name}")
    if min(value) < 0:
        raise ValueError(f"{op}: {name} must not be negative, got {value}")
    return value


def _padding_amounts(padding, op):
    """An int, a pair (ph, pw) or ((top, bottom), (left, right)) -> ((top, bottom), (left, right))."""
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        (top, bottom), (left, right) = (_non_negative_pair(p, op, "padding") for p in padding)
        return (top, bottom), (left, right)
    ph, pw = _non_negative_pair(padding, op, "padding")
    return (ph, ph), (pw, pw)


def _string_padding(op, padding, kernel, stride, dilation):
    """Padding "valid" -> no padding. "same" -> the padding that keeps H×W at stride 1: d·(K − 1) per axis,
    half on each side; when that is odd, the extra row/column goes at the bottom/right, as in PyTorch.
    -> ((top, bottom), (left, right))."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding != "same":
        raise ValueError(f"{op}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    if stride != (1, 1):
        raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    half = (total[0] // 2, total[1] // 2)
    return (half[0], total[0] - half[0]), (half[1], total[1] - half[1])

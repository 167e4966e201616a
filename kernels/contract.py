"""The kernel contract in code: what every backend (reference/, cpu/, cuda/) provides, family by family.

A backend is a package with one module per family (`<backend>/conv.py`, ...) and, in its `__init__.py`, a
declaration of what it has:

    CAPABILITIES = {"conv": {"asymmetric_padding", "fused_relu", ...}, "pool": set(), ...}

Its keys are the families the backend provides (the reference has no `elementwise` or `reduce`: NumPy
itself is their oracle); each value is the set of optional capabilities of that family it implements.
Nothing is probed: the op layer asks `has(kernels, family, capability)` (tinycnn/device.py gives the
declaration of a device's kernel set), and `tests/test_kernel_contract.py` checks every backend against the
tables below with `inspect.signature`.

- `REQUIRED[family]`: function name -> its signature. Every backend that lists the family has them all.
- `OPTIONAL[family][capability]`: the functions a backend with that capability has, or the wider
  signatures of required functions it takes then (batch norm's fused activation adds keyword arguments).
  A capability may have no functions at all: `asymmetric_padding` says what the conv functions accept.
- `IMPLIES`: capabilities that need another one.

The meaning of every function (shapes, dtypes, what is None) is in kernels/README.md; the conventions: arrays
are the device's, C-contiguous, float32 or float64 (kept); `stride`-like arguments are (h, w) tuples
normalised by the op layer; a backward with `need_*` flags returns None for what is not needed. The fused
functions that a backend lacks are built from primitives by kernels/compose.py.

Not a device family: connected-component labelling of masks (kernels/{reference,cpu}/label.py) works on host
NumPy masks whatever device made them; tinycnn/ops/detection.py calls the CPU kernel, tests/test_detect_label.py
checks it against the reference.
"""
import ast
import inspect

_P = inspect.Parameter


def signature(params):
    """"a, b, c=None" -> the inspect.Signature of def f(a, b, c=None)."""
    parameters = []
    for item in (p.strip() for p in params.split(",") if p.strip()):
        name, _, default = item.partition("=")
        parameters.append(_P(name, _P.POSITIONAL_OR_KEYWORD,
                             default=_P.empty if not default else ast.literal_eval(default)))
    return inspect.Signature(parameters)


def _table(functions):
    return {name: signature(params) for name, params in functions.items()}


_GEOMETRY = "stride, padding, dilation, groups"
_NEEDS = "need_dx, need_dw, need_db"

REQUIRED = {
    "elementwise": _table({
        "asarray": "a, dtype", "to_numpy": "a", "zeros": "shape, dtype", "ones": "shape, dtype",
        "full": "shape, value, dtype", "zeros_like": "a", "copy": "a", "astype": "a, dtype",
        "reshape": "a, shape", "transpose": "a, axes", "concatenate": "arrays, axis",
        "slice_axis": "a, axis, start, stop", "getitem": "a, index", "getitem_backward": "g, in_shape, index",
        "add": "a, b", "sub": "a, b", "mul": "a, b", "div": "a, b", "maximum": "a, b",
        "neg": "a", "exp": "a", "log": "a", "sqrt": "a", "abs": "a", "pow_scalar": "a, p",
        "where_positive": "cond, a, b", "sum_to_shape": "g, shape", "isfinite_all": "a",
    }),
    "reduce": _table({"sum": "a, axis, keepdims", "max": "a, axis, keepdims", "argmax": "a, axis"}),
    "linear": _table({
        "matmul": "a, b",
        "linear_forward": "x, w, b",
        "linear_backward": f"dy, x, w, {_NEEDS}",
    }),
    "conv": _table({
        "conv2d_forward": f"x, w, b, {_GEOMETRY}",
        "conv2d_backward": f"dy, x, w, {_GEOMETRY}, {_NEEDS}",
        "conv_transpose2d_forward": "x, w, b, stride, padding, output_padding, dilation, groups",
        "conv_transpose2d_backward": f"dy, x, w, stride, padding, output_padding, dilation, groups, {_NEEDS}",
        "pad2d_forward": "x, pad, value",
        "pad2d_backward": "dy, pad",
    }),
    "pool": _table({
        "max_pool2d_forward": "x, kernel, stride, padding",
        "max_pool2d_backward": "dy, argmax, x_shape",
        "avg_pool2d_forward": "x, kernel, stride, padding, count_include_pad",
        "avg_pool2d_backward": "dy, x_shape, kernel, stride, padding, count_include_pad",
    }),
    "interpolate": _table({
        "upsample_nearest2d_forward": "x, scale",
        "upsample_nearest2d_backward": "dy, scale",
        "upsample_nearest2d_last_forward": "x, scale",  # the same with the channels last: (N, H, W, C)
        "upsample_nearest2d_last_backward": "dy, scale",
        "upsample_bilinear2d_forward": "x, out_hw, align_corners",
        "upsample_bilinear2d_backward": "dy, x_shape, align_corners",
    }),
    "activation": _table({
        "relu_forward": "x", "relu_backward": "dy, x", "relu6_forward": "x", "relu6_backward": "dy, x",
        "leaky_relu_forward": "x, slope", "leaky_relu_backward": "dy, x, slope",
        "sigmoid_forward": "x", "sigmoid_backward": "dy, y", "tanh_forward": "x", "tanh_backward": "dy, y",
    }),
    "softmax": _table({
        "softmax_forward": "x3", "softmax_backward": "dy3, y3",
        "log_softmax_forward": "x3", "log_softmax_backward": "dy3, y3",
    }),
    "batchnorm": _table({
        "batch_norm_train_forward": "x3, gamma, beta, eps",
        "batch_norm_eval_forward": "x3, gamma, beta, running_mean, running_var, eps",
        "batch_norm_backward": "dy3, x3, gamma, mean, invstd, need_dx, need_dgamma, need_dbeta",
        "update_running": "running, batch_value, momentum",
    }),
    "dropout": _table({"dropout_forward": "x, p, seed", "dropout_backward": "dy, mask"}),
    "loss": _table({
        "bce_with_logits_forward": "z, t, pos_weight, weight=None",
        "bce_with_logits_backward": "z, t, pos_weight, g, weight=None",
        "bce_forward": "p, t, eps, weight=None",
        "bce_backward": "p, t, eps, g, weight=None",
        "cross_entropy_forward": "x3, target2, weight, ignore_index",
        "cross_entropy_backward": "log_probs3, target2, weight, ignore_index, weight_sum, g",
        "mse_forward": "p, t",
        "mse_backward": "p, t, g",
    }),
    # the CenterNet focal loss of a heat-map (kernels/reference/detection.py): forward Σ l / max(1, positives)
    "detection": _table({
        "focal_loss_forward": "z, t, alpha, beta",
        "focal_loss_backward": "z, t, alpha, beta, g",
    }),
    "optim": _table({
        "sgd_step": "param, grad, momentum_buf, lr, momentum, dampening, weight_decay, nesterov, first_step",
        "adam_step": "param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step",
    }),
}

OPTIONAL = {
    "conv": {
        # the conv2d functions also take padding (top, bottom, left, right); without it the op layer pads an
        # uneven padding first (pad2d_forward) and passes (0, 0)
        "asymmetric_padding": {},
        # y = relu(conv2d + b) in the conv's own pass; the backward takes the output y for the ReLU's mask
        "fused_relu": _table({
            "conv2d_bias_relu_forward": f"x, w, b, {_GEOMETRY}",
            "conv2d_bias_relu_backward": f"dy, y, x, w, {_GEOMETRY}, {_NEEDS}",
        }),
        # y = act(conv2d + b), act None, "relu" or "relu6" (its backward: the activation's, then conv2d's)
        "fused_activation": _table({"conv2d_bias_act_forward": f"x, w, b, {_GEOMETRY}, activation"}),
        # max_pool2d(relu(conv2d + b), 2), the pooling taken as the output is made (inference)
        "fused_relu_maxpool2": _table({"conv2d_bias_relu_maxpool2_forward": f"x, w, b, {_GEOMETRY}"}),
        # the conv on (N, H, W, C) arrays, for groups = 1 and depthwise convs
        "channels_last": _table({
            "conv2d_channels_last_forward": f"x, w, b, {_GEOMETRY}, activation=None",
            "conv2d_channels_last_backward": f"dy, x, w, {_GEOMETRY}, {_NEEDS}",
        }),
        # act_p(1×1 conv(act_d(depthwise(act_e(1×1 conv(x) + be)) + bd)) + bp) on (N, H, W, C) arrays, one pass
        # (inference; MobileNet's inverted residual block): we/be None for no expand, a bias may be None,
        # activations (act_e, act_d, act_p) each None, "relu" or "relu6"; stride, padding, dilation the depthwise's
        "fused_separable": _table({
            "conv2d_channels_last_separable_forward": "x, we, be, wd, bd, wp, bp, stride, padding, dilation, "
                                                      "activations",
        }),
        # conv2d of the channel concatenation of xs (a tuple of (N, C_i, H, W) arrays), groups = 1; the backward
        # returns dxs, a tuple of the parts' gradients (None where need_dxs, a tuple of bools, says False), or None
        "concatenated_input": _table({
            "conv2d_concat_forward": f"xs, w, b, {_GEOMETRY}",
            "conv2d_concat_backward": f"dy, xs, w, {_GEOMETRY}, need_dxs, need_dw, need_db",
        }),
        # a context manager: inside it the given arrays (an inference plan's weights) stay the same, so what the
        # kernels derive from them (transformed filters) may be kept in `memo` across calls
        "constant_weights": _table({"constant_weights": "arrays, memo"}),
    },
    "batchnorm": {
        # activation=None | "relu" | "relu6" applied in the batch norm's pass; the backward gets the output y3
        # (or beta, to recompute the pre-activation) and the activation
        "fused_activation": _table({
            "batch_norm_train_forward": "x3, gamma, beta, eps, activation=None",
            "batch_norm_eval_forward": "x3, gamma, beta, running_mean, running_var, eps, activation=None",
            "batch_norm_backward": "dy3, x3, gamma, mean, invstd, need_dx, need_dgamma, need_dbeta, "
                                   "y3=None, activation=None, beta=None",
        }),
    },
}

IMPLIES = {("conv", "channels_last"): ("conv", "asymmetric_padding"),
           ("conv", "fused_separable"): ("conv", "channels_last")}



def has(capabilities, family, capability):
    """Whether a backend's CAPABILITIES declare `capability` for `family`."""
    return capability in capabilities.get(family, ())


def problems(backend_module, family_modules):
    """What is wrong with a backend against the contract, as a list of one-line messages (empty: it keeps it).
    backend_module: the backend package (with CAPABILITIES); family_modules: family name -> its module."""
    found = []
    declared = getattr(backend_module, "CAPABILITIES", None)
    if not isinstance(declared, dict):
        return [f"{backend_module.__name__}: no CAPABILITIES dict"]
    for family, capabilities in declared.items():
        if family not in REQUIRED:
            found.append(f"{backend_module.__name__}: unknown family {family!r}")
            continue
        unknown = set(capabilities) - set(OPTIONAL.get(family, {}))
        if unknown:
            found.append(f"{backend_module.__name__}: unknown {family} capabilities {sorted(unknown)}")
        module = family_modules[family]
        expected = dict(REQUIRED[family])
        for capability in capabilities:
            expected.update(OPTIONAL.get(family, {}).get(capability, {}))
            needed = IMPLIES.get((family, capability))
            if needed and not has(declared, *needed):
                found.append(f"{module.__name__}: {capability} needs {needed[0]} {needed[1]}")
        for name, wanted in expected.items():
            function = getattr(module, name, None)
            if not callable(function):
                found.append(f"{module.__name__}: missing {name}{wanted}")
                continue
            mismatch = signature_mismatch(function, wanted)
            if mismatch:
                found.append(f"{module.__name__}.{name}: {mismatch}")
    return found


def signature_mismatch(function, wanted):
    """None when `function` takes exactly the parameters of `wanted` (names, order, defaults); extra parameters
    must have defaults. A NumPy ufunc (positional-only x1, x2) is checked by its number of inputs."""
    got = inspect.signature(function)
    positional_only = [p for p in got.parameters.values() if p.kind == _P.POSITIONAL_ONLY]
    if positional_only:
        if len(positional_only) != len(wanted.parameters):
            return f"takes {len(positional_only)} positional inputs, the contract {len(wanted.parameters)}"
        return None
    names = [p.name for p in got.parameters.values() if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)]
    want = list(wanted.parameters)
    if names[:len(want)] != want:
        return f"signature {got}, the contract's {wanted}"
    for name in want:
        if got.parameters[name].default != wanted.parameters[name].default:
            return f"default of {name} is {got.parameters[name].default!r}, the contract's " \
                   f"{wanted.parameters[name].default!r}"
    extra = [p for p in list(got.parameters.values())[len(want):] if p.default is _P.empty
             and p.kind not in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)]
    if extra:
        return f"extra parameters without defaults: {[p.name for p in extra]}"
    return None

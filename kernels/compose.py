"""The fused kernels' default compositions from the contract's primitives, in one place.

A backend that does not declare an optional capability of kernels/contract.py (say the CUDA kernels, without
a fused conv + ReLU) still serves every fused op: `with_defaults` gives its family module the functions
below for the capabilities it lacks, so the op layer calls `k.conv.conv2d_bias_relu_forward(...)` on every
device and never asks whether a kernel exists. A backend overrides a default by implementing the functions
and declaring the capability (the CPU does, for all of them). The values and gradients are the same either
way; only the passes over memory differ.

Each default takes `kernels` (the device's kernel set, for the other families: `kernels.activation`,
`kernels.pool`) and `native` (the backend's own module of this family: batch norm's defaults widen its
required functions, so they call the originals), then the contract's arguments.

Not composed here: `asymmetric_padding` and `channels_last` (conv) are about what the conv functions accept
and which layout they take; the op layer (tinycnn/ops/conv.py) asks for them and pads or transposes itself.
"""
import functools


def _activate(kernels, y, activation):
    """activation(y) for None, "relu" or "relu6"."""
    return y if activation is None else getattr(kernels.activation, f"{activation}_forward")(y)


def _activation_grad(kernels, dy, y, activation):
    """dy · act'(z) from the activation's output y (relu: [y > 0], relu6: [0 < y < 6], the same masks as on z)."""
    return dy if activation is None else getattr(kernels.activation, f"{activation}_backward")(dy, y)


# ---------------------------------------------------------------------- conv

def conv2d_bias_relu_forward(kernels, native, x, w, b, stride, padding, dilation, groups):
    """relu(conv2d(x, w) + b)."""
    return _activate(kernels, native.conv2d_forward(x, w, b, stride, padding, dilation, groups), "relu")


def conv2d_bias_relu_backward(kernels, native, dy, y, x, w, stride, padding, dilation, groups,
                              need_dx, need_dw, need_db):
    """dz = dy · [y > 0], then conv2d's gradients of dz."""
    dz = _activation_grad(kernels, dy, y, "relu")
    return native.conv2d_backward(dz, x, w, stride, padding, dilation, groups, need_dx, need_dw, need_db)


def conv2d_bias_act_forward(kernels, native, x, w, b, stride, padding, dilation, groups, activation):
    """act(conv2d(x, w) + b), act None, "relu" or "relu6"."""
    return _activate(kernels, native.conv2d_forward(x, w, b, stride, padding, dilation, groups), activation)


def conv2d_concat_forward(kernels, native, xs, w, b, stride, padding, dilation, groups):
    """conv2d of the channel concatenation of xs, built first."""
    return native.conv2d_forward(kernels.elementwise.concatenate(xs, 1), w, b, stride, padding, dilation, groups)


def conv2d_concat_backward(kernels, native, dy, xs, w, stride, padding, dilation, groups, need_dxs, need_dw, need_db):
    """conv2d's gradients for the concatenation, dx split into the parts' channels."""
    x = kernels.elementwise.concatenate(xs, 1)
    dx, dw, db = native.conv2d_backward(dy, x, w, stride, padding, dilation, groups, any(need_dxs), need_dw, need_db)
    if dx is None:
        return None, dw, db
    firsts = [0]
    for part in xs:
        firsts.append(firsts[-1] + part.shape[1])
    dxs = tuple(kernels.elementwise.slice_axis(dx, 1, c0, c1) if need else None
                for c0, c1, need in zip(firsts[:-1], firsts[1:], need_dxs))
    return dxs, dw, db


def conv2d_bias_relu_maxpool2_forward(kernels, native, x, w, b, stride, padding, dilation, groups):
    """max_pool2d(relu(conv2d(x, w) + b), 2): the conv (fused with its ReLU where the backend has that), then
    the pooling kernel."""
    y = kernels.conv.conv2d_bias_relu_forward(x, w, b, stride, padding, dilation, groups)
    return kernels.pool.max_pool2d_forward(y, (2, 2), (2, 2), (0, 0))[0]


# ---------------------------------------------------------------------- batch norm

def batch_norm_train_forward(kernels, native, x3, gamma, beta, eps, activation=None):
    """act(batch norm) with the batch's statistics -> (y3, mean, invstd, var_unbiased)."""
    y3, mean, invstd, var_unbiased = native.batch_norm_train_forward(x3, gamma, beta, eps)
    return _activate(kernels, y3, activation), mean, invstd, var_unbiased


def batch_norm_eval_forward(kernels, native, x3, gamma, beta, running_mean, running_var, eps, activation=None):
    """act(batch norm) with the running statistics."""
    return _activate(kernels, native.batch_norm_eval_forward(x3, gamma, beta, running_mean, running_var, eps),
                     activation)


def batch_norm_backward(kernels, native, dy3, x3, gamma, mean, invstd, need_dx, need_dgamma, need_dbeta,
                        y3=None, activation=None, beta=None):
    """dy3 masked by act' (read from the output y3, which the composition needs), then batch norm's gradients."""
    dy3 = _activation_grad(kernels, dy3, y3, activation)
    return native.batch_norm_backward(dy3, x3, gamma, mean, invstd, need_dx, need_dgamma, need_dbeta)


# family -> capability -> its default functions (the names of kernels/contract.py's OPTIONAL tables)
DEFAULTS = {
    "conv": {
        "fused_relu": (conv2d_bias_relu_forward, conv2d_bias_relu_backward),
        "fused_activation": (conv2d_bias_act_forward,),
        "fused_relu_maxpool2": (conv2d_bias_relu_maxpool2_forward,),
        "concatenated_input": (conv2d_concat_forward, conv2d_concat_backward),
    },
    "batchnorm": {
        "fused_activation": (batch_norm_train_forward, batch_norm_eval_forward, batch_norm_backward),
    },
}
NOT_COMPOSED = {("conv", "asymmetric_padding"), ("conv", "channels_last"),  # the op layer handles these,
                ("conv", "fused_separable"),
                ("conv", "constant_weights")}  # and the inference plan this one


class FamilyWithDefaults:
    """A backend's family module, seen through the composed defaults of the capabilities it lacks: an
    attribute is the default where there is one, else the module's own (looked up on each access)."""

    def __init__(self, module, defaults):
        self.module, self.defaults = module, defaults

    def __getattr__(self, name):
        if name in self.defaults:
            return self.defaults[name]
        return getattr(self.module, name)

    def __dir__(self):
        return sorted(set(dir(self.module)) | set(self.defaults))


def with_defaults(kernels, family, module, capabilities):
    """`module` itself when it declares every capability with a default (the CPU: no indirection), else the
    module with the defaults of the missing ones, bound to the kernel set `kernels` and to `module`."""
    missing = {name: functions for name, functions in DEFAULTS.get(family, {}).items() if name not in capabilities}
    if not missing:
        return module
    defaults = {function.__name__: functools.partial(function, kernels, module)
                for functions in missing.values() for function in functions}
    return FamilyWithDefaults(module, defaults)

"""2-D pooling (NCHW), as torch.nn.functional: max, average, and adaptive average for the usual cases.

    OH = (H + 2·ph − kh) // sh + 1          (ceil_mode=False; padding ≤ kernel/2)
    max:  y = max of the window; backward: the gradient goes to the winner (kept as `argmax`)
    avg:  y = mean of the window; backward: the gradient is shared equally by the window's pixels
"""
from ..tensor import Function
from ._util import check_nchw, pair


class MaxPool2d(Function):
    def forward(self, x, kernel, stride, padding):
        self.x_shape = tuple(x.shape)
        y, self.argmax = self.k.pool.max_pool2d_forward(x, kernel, stride, padding)
        return y

    def backward(self, dy):
        return self.k.pool.max_pool2d_backward(dy, self.argmax, self.x_shape)


class AvgPool2d(Function):
    def forward(self, x, kernel, stride, padding, count_include_pad):
        self.x_shape = tuple(x.shape)
        self.args = kernel, stride, padding, count_include_pad
        return self.k.pool.avg_pool2d_forward(x, *self.args)

    def backward(self, dy):
        return self.k.pool.avg_pool2d_backward(dy, self.x_shape, *self.args)


def _pool_arguments(op, input, kernel_size, stride, padding, ceil_mode):
    """Check the input and normalise the arguments to (h, w) pairs; clear errors for what is not supported."""
    check_nchw(input, op)
    if ceil_mode:
        raise NotImplementedError(f"{op}: ceil_mode=True is not supported (output sizes round down)")
    kernel = pair(kernel_size, f"{op} kernel_size")
    stride = kernel if stride is None else pair(stride, f"{op} stride")
    padding = pair(padding, f"{op} padding")
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: kernel_size {kernel} and stride {stride} must be positive, "
                         f"padding {padding} non-negative")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    H, W = input.shape[2], input.shape[3]
    if H + 2 * padding[0] < kernel[0] or W + 2 * padding[1] < kernel[1]:
        raise ValueError(f"{op}: input of shape {input.shape} (padding {padding}) is smaller than "
                         f"kernel_size {kernel}")
    return kernel, stride, padding


def max_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max over each kernel_size window, moved by stride (default: kernel_size); input (N, C, H, W)."""
    args = _pool_arguments("max_pool2d", input, kernel_size, stride, padding, ceil_mode)
    return MaxPool2d.apply(input, *args)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over each window; with count_include_pad the padding counts as zeros, else only real pixels."""
    args = _pool_arguments("avg_pool2d", input, kernel_size, stride, padding, ceil_mode)
    return AvgPool2d.apply(input, *args, bool(count_include_pad))


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size (OH, OW); None keeps that input size.

    Supported: (1, 1), global average pooling (a mean over H and W), and sizes that divide the input,
    which are avg_pool2d with kernel = stride = (H/OH, W/OW). Other sizes (overlapping, uneven windows)
    raise a ValueError.
    """
    check_nchw(input, "adaptive_avg_pool2d")
    H, W = input.shape[2], input.shape[3]
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = (H if output_size[0] is None else output_size[0],
                       W if output_size[1] is None else output_size[1])
    OH, OW = pair(output_size, "adaptive_avg_pool2d output_size")
    if OH < 1 or OW < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size {(OH, OW)} must be positive")
    if (OH, OW) == (1, 1):
        return input.mean(axis=(2, 3), keepdims=True)
    if H % OH or W % OW:
        raise ValueError(f"adaptive_avg_pool2d: output_size {(OH, OW)} must divide the input size {(H, W)} "
                         f"(input shape {input.shape}); uneven adaptive windows are not supported")
    kernel = (H // OH, W // OW)
    return AvgPool2d.apply(input, kernel, kernel, (0, 0), True)

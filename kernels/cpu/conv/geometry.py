"""Output sizes and the two forms of padding (symmetric (ph, pw), or (top, bottom, left, right))."""


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation):
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _geometry(x_shape, w_shape, stride, padding, dilation):
    """-> the (top, left) padding the kernels take, and the output's shape (N, F, OH, OW)."""
    N, _, H, W = x_shape
    F, _, KH, KW = w_shape
    top, bottom, left, right = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    OH = (H + top + bottom - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + left + right - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    return (top, left), (N, F, OH, OW)


def _top_left(padding):
    return (padding[0], padding[2]) if len(padding) == 4 else padding

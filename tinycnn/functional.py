"""tinycnn.functional: the ops, with the names, argument order and NCHW layout of torch.nn.functional.

Each name comes from its op family in tinycnn/ops/, where the forward and its backward sit side by side.
"""
from .ops.activation import leaky_relu, relu, relu6, sigmoid, tanh
from .ops.basic import cat
from .ops.batchnorm import batch_norm
from .ops.conv import conv2d, conv_transpose2d, pad
from .ops.dropout import dropout
from .ops.interpolate import interpolate
from .ops.linear import linear
from .ops.loss import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, mse_loss
from .ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .ops.softmax import log_softmax, softmax

__all__ = [
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cat", "conv2d", "conv_transpose2d", "cross_entropy", "dropout",
    "interpolate", "leaky_relu", "linear", "log_softmax", "max_pool2d", "mse_loss", "pad", "relu", "relu6",
    "sigmoid", "softmax", "tanh",
]

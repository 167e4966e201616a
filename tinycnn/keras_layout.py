"""Keras' channels-last view of tinycnn's channels-first tensors.

Keras layers speak channels last: an image batch is (N, H, W, C), `axis=-1` is the channels, `Reshape` and
`Permute` walk the elements in (H, W, C) order. Inside, tinycnn keeps image maps (4-D tensors) NCHW, the
layout its kernels serve best; tensors of any other rank are in Keras' own order. So a layer whose meaning
depends on an axis translates:

    Keras axis of (N, H, W, C):   0  1  2  3      (-1 = 3, the channels)
    tensor axis of (N, C, H, W):  0  2  3  1

and a layer that reorders elements (Reshape, Permute) views a 4-D tensor as NHWC first (`to_keras_order`),
then turns a 4-D result back into NCHW (`from_keras_order`).
"""

_KERAS_TO_NCHW = (0, 2, 3, 1)


def tensor_axis(axis, ndim):
    """The axis of the tinycnn tensor (rank `ndim`, batch included) that Keras' `axis` names."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D input (batch axis included)")
    axis %= ndim
    return _KERAS_TO_NCHW[axis] if ndim == 4 else axis


def keras_shape(shape):
    """Keras' shape of a tensor of tinycnn shape `shape` (batch excluded): (C, H, W) -> (H, W, C)."""
    shape = tuple(shape)
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape


def tensor_shape(shape):
    """tinycnn's shape of a tensor of Keras shape `shape` (batch excluded): (H, W, C) -> (C, H, W)."""
    shape = tuple(shape)
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape


def to_keras_order(x):
    """A 4-D NCHW tensor viewed as NHWC (a transpose); other ranks as they are."""
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def from_keras_order(x):
    """An NHWC 4-D tensor back to NCHW; other ranks as they are."""
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x

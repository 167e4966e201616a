"""Argument normalisation shared by the ops: ints or pairs -> (h, w) tuples, with clear errors."""


def pair(value, name):
    """3 -> (3, 3); (2, 3) -> (2, 3); anything else is a clear error."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def check_nchw(x, op, layout="(N, C, H, W)"):
    """A clear error unless x is a 4-D (N, C, H, W) (or `layout`) float tensor with N ≥ 1."""
    if x.ndim != 4:
        raise ValueError(f"{op} expects a 4-D input {layout}, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{op}: empty batch (input shape {x.shape})")
    if x.dtype.kind != "f":
        raise TypeError(f"{op} expects a float tensor, got {x.dtype}")

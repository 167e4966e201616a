"""Hypothesis strategies shared by the kernel tests (tests/test_conv.py, tests/test_cuda_conv.py, ...)."""
from hypothesis import assume
from hypothesis import strategies as st

from tinycnn.kernels.reference import conv as ref


@st.composite
def conv_cases(draw, string_padding=True):
    """A small conv2d problem: shapes, stride, padding (ints, or "same"/"valid"), dilation, groups."""
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "dense":
        groups, C, Fo = 1, draw(st.integers(1, 3)), draw(st.integers(1, 3))
    elif kind == "grouped":
        groups = 2
        C, Fo = 2 * draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2))
    else:  # groups = C, each filter reads one channel (with a channel multiplier of 1 or 2)
        C = draw(st.integers(1, 3))
        groups, Fo = C, C * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    strings = ["same", "valid"] if string_padding else []
    padding = draw(st.sampled_from(strings + ["ints"]))
    if padding == "ints":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = padding if isinstance(padding, tuple) else (0, 0)
    hw = []
    for k, d, p in zip(kernel, dilation, pads):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)  # the kernel must fit in the padded input
        hw.append(draw(st.integers(smallest, smallest + 3)))
    return dict(x_shape=(draw(st.integers(1, 2)), C) + tuple(hw), w_shape=(Fo, C // groups) + kernel,
                bias=draw(st.booleans()), stride=stride, padding=padding, dilation=dilation, groups=groups)


@st.composite
def conv_transpose_cases(draw, max_filters_per_group=2):
    """A small conv_transpose2d problem: shapes (weight (C, F/groups, KH, KW)), stride, padding, output_padding
    (below the stride or the dilation), dilation, groups; every output size at least 1."""
    groups = draw(st.sampled_from([1, 2]))
    C, Fg = groups * draw(st.integers(1, 2)), draw(st.integers(1, max_filters_per_group))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    hw = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    out = [ref.conv_transpose_output_size(*a) for a in zip(hw, kernel, stride, padding, output_padding, dilation)]
    assume(min(out) >= 1)
    return dict(x_shape=(draw(st.integers(1, 2)), C) + hw, w_shape=(C, Fg) + kernel, bias=draw(st.booleans()),
                stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups)

"""Activations on the GPU: one grid-stride kernel per function, over the flat elements (any shape).

    relu(x) = max(x, 0)                  relu'(x) = [x > 0]
    relu6(x) = min(max(x, 0), 6)         relu6'(x) = [0 < x < 6]
    leaky_relu(x) = x if x > 0 else a·x  leaky_relu'(x) = 1 if x > 0 else a
    sigmoid(x) = 1 / (1 + e⁻ˣ)           sigmoid' = y (1 − y)   (from the output y)
    tanh(x)                              tanh' = 1 − y²         (from the output y)

Thread t of T handles elements t, t + T, ... (neighbouring threads, neighbouring addresses: coalesced).
Sigmoid uses e = e^−|x| ∈ (0, 1] so it never overflows; a NaN input gives a NaN output, as on the CPU.
"""
import math

from numba import cuda

from . import _launch as gpu

# Constants are made in the array's dtype (`y.dtype.type(1)`): a bare 1 is an int64, and an int64 or a
# Python float next to a float32 value makes the arithmetic float64, slow on a GPU.


@cuda.jit(cache=True)
def relu_forward_kernel(x, y):
    zero = y.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = zero if v < zero else v    # NaN < 0 is false: NaN passes through


@cuda.jit(cache=True)
def relu_backward_kernel(dy, x, dx):
    zero = dx.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = dy[i] if x[i] > zero else zero


@cuda.jit(cache=True)
def relu6_forward_kernel(x, y):
    zero, six = y.dtype.type(0), y.dtype.type(6)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = zero if v < zero else (six if v > six else v)


@cuda.jit(cache=True)
def relu6_backward_kernel(dy, x, dx):
    zero, six = dx.dtype.type(0), dx.dtype.type(6)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = dy[i] if zero < x[i] < six else zero


@cuda.jit(cache=True)
def leaky_relu_forward_kernel(x, slope, y):
    zero = y.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = v if v > zero else slope * v


@cuda.jit(cache=True)
def leaky_relu_backward_kernel(dy, x, slope, dx):
    zero = dx.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = dy[i] if x[i] > zero else slope * dy[i]


@cuda.jit(cache=True)
def sigmoid_forward_kernel(x, y):
    zero, one = y.dtype.type(0), y.dtype.type(1)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        e = math.exp(-abs(v))                 # in (0, 1]
        if v >= zero:
            y[i] = one / (one + e)
        else:
            y[i] = e / (one + e)


@cuda.jit(cache=True)
def sigmoid_backward_kernel(dy, y, dx):
    one = dx.dtype.type(1)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = dy[i] * y[i] * (one - y[i])


@cuda.jit(cache=True)
def tanh_forward_kernel(x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = math.tanh(x[i])


@cuda.jit(cache=True)
def tanh_backward_kernel(dy, y, dx):
    one = dx.dtype.type(1)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = dy[i] * (one - y[i] * y[i])


def _map(kernel, *arrays, scalar=None):
    """out = kernel(*arrays[, scalar]), out shaped like arrays[0]."""
    out = gpu.empty(arrays[0].shape, arrays[0].dtype)
    if out.size:
        args = [gpu.flat(a) for a in arrays]
        if scalar is not None:
            args.append(gpu.scalar(scalar, out.dtype))
        gpu.launch1d(kernel, out.size, *args, gpu.flat(out))
    return out


def relu_forward(x):
    return _map(relu_forward_kernel, x)


def relu_backward(dy, x):
    return _map(relu_backward_kernel, dy, x)


def relu6_forward(x):
    return _map(relu6_forward_kernel, x)


def relu6_backward(dy, x):
    return _map(relu6_backward_kernel, dy, x)


def leaky_relu_forward(x, slope):
    return _map(leaky_relu_forward_kernel, x, scalar=slope)


def leaky_relu_backward(dy, x, slope):
    return _map(leaky_relu_backward_kernel, dy, x, scalar=slope)


def sigmoid_forward(x):
    return _map(sigmoid_forward_kernel, x)


def sigmoid_backward(dy, y):
    return _map(sigmoid_backward_kernel, dy, y)


def tanh_forward(x):
    return _map(tanh_forward_kernel, x)


def tanh_backward(dy, y):
    return _map(tanh_backward_kernel, dy, y)

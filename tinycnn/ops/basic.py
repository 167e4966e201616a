"""Tensor arithmetic, shapes and reductions: each op's forward with its local backward beside it.

Broadcasting follows NumPy; the backward of a broadcast operand sums the gradient back to its shape
(`sum_to_shape`). Python numbers may stand on either side of `+ - * /`.
"""
import numpy as np

from ..tensor import Function, Tensor


def _shape(a):
    return tuple(a.shape) if hasattr(a, "shape") else ()


class Add(Function):
    def forward(self, a, b):
        self.shapes = _shape(a), _shape(b)
        return self.k.elementwise.add(a, b)

    def backward(self, g):
        e = self.k.elementwise
        return self.tensor_grads(*(e.sum_to_shape(g, s) for s in self.shapes))


class Sub(Function):
    def forward(self, a, b):
        self.shapes = _shape(a), _shape(b)
        return self.k.elementwise.sub(a, b)

    def backward(self, g):
        e = self.k.elementwise
        return self.tensor_grads(e.sum_to_shape(g, self.shapes[0]), e.sum_to_shape(e.neg(g), self.shapes[1]))


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return self.k.elementwise.mul(a, b)

    def backward(self, g):  # d(ab) = b da + a db
        e = self.k.elementwise
        return self.tensor_grads(e.sum_to_shape(e.mul(g, self.b), _shape(self.a)),
                                 e.sum_to_shape(e.mul(g, self.a), _shape(self.b)))


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return self.k.elementwise.div(a, b)

    def backward(self, g):  # d(a/b) = da/b − a db/b²
        e = self.k.elementwise
        da = e.div(g, self.b)
        db = e.neg(e.div(e.mul(da, self.a), self.b))
        return self.tensor_grads(e.sum_to_shape(da, _shape(self.a)), e.sum_to_shape(db, _shape(self.b)))


class Neg(Function):
    def forward(self, a):
        return self.k.elementwise.neg(a)

    def backward(self, g):
        return self.k.elementwise.neg(g)


class Pow(Function):
    def forward(self, a, p):
        self.a, self.p = a, p
        return self.k.elementwise.pow_scalar(a, p)

    def backward(self, g):  # d(aᵖ) = p aᵖ⁻¹ da
        e = self.k.elementwise
        return e.mul(g, e.mul(e.pow_scalar(self.a, self.p - 1), self.p))


class Exp(Function):
    def forward(self, a):
        self.y = self.k.elementwise.exp(a)
        return self.y

    def backward(self, g):
        return self.k.elementwise.mul(g, self.y)


class Log(Function):
    def forward(self, a):
        self.a = a
        return self.k.elementwise.log(a)

    def backward(self, g):
        return self.k.elementwise.div(g, self.a)


class Sqrt(Function):
    def forward(self, a):
        self.y = self.k.elementwise.sqrt(a)
        return self.y

    def backward(self, g):  # d√a = da / (2√a)
        e = self.k.elementwise
        return e.div(g, e.mul(self.y, 2.0))


class MatMul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return self.k.linear.matmul(a, b)

    def backward(self, g):  # C = AB: dA = dC Bᵀ, dB = Aᵀ dC
        e, lin = self.k.elementwise, self.k.linear
        da = lin.matmul(g, e.transpose(self.b, (1, 0))) if self.needs_grad[0] else None
        db = lin.matmul(e.transpose(self.a, (1, 0)), g) if self.needs_grad[-1] else None
        return da, db


class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = _shape(a)
        return self.k.elementwise.reshape(a, shape)

    def backward(self, g):
        return self.k.elementwise.reshape(g, self.in_shape)


class Transpose(Function):
    def forward(self, a, axes):
        self.axes = axes
        return self.k.elementwise.transpose(a, axes)

    def backward(self, g):
        return self.k.elementwise.transpose(g, tuple(np.argsort(self.axes)))


class Sum(Function):
    def forward(self, a, axis, keepdims):
        self.in_shape, self.axis, self.keepdims = _shape(a), axis, keepdims
        return self.k.reduce.sum(a, axis, keepdims)

    def backward(self, g):  # every input element gets the gradient of its sum
        e = self.k.elementwise
        if not self.keepdims:
            g = e.reshape(g, _kept_shape(self.in_shape, self.axis))
        return e.add(e.zeros(self.in_shape, g.dtype), g)


class Max(Function):
    def forward(self, a, axis, keepdims):
        self.a, self.axis, self.keepdims = a, axis, keepdims
        self.y = self.k.reduce.max(a, axis, True)
        return self.y if keepdims else self.k.elementwise.reshape(self.y, _reduced_shape(_shape(a), axis))

    def backward(self, g):  # the gradient goes to the maxima (split evenly between ties)
        e, r = self.k.elementwise, self.k.reduce
        if not self.keepdims:
            g = e.reshape(g, _kept_shape(_shape(self.a), self.axis))
        is_max = e.where_positive(e.abs(e.sub(self.a, self.y)), 0.0, 1.0)  # 1 where a == max
        count = r.sum(is_max, self.axis, True)
        return e.mul(e.div(is_max, count), g)


class Concatenate(Function):
    def forward(self, *arrays, axis):
        self.axis, self.sizes = axis, [a.shape[axis] for a in arrays]
        return self.k.elementwise.concatenate(arrays, axis)

    def backward(self, g):
        starts = np.cumsum([0] + self.sizes)
        return tuple(self.k.elementwise.slice_axis(g, self.axis, int(starts[i]), int(starts[i + 1]))
                     for i in range(len(self.sizes)))


class GetItem(Function):
    def forward(self, a, index):
        self.in_shape, self.index = _shape(a), index
        return self.k.elementwise.getitem(a, index)

    def backward(self, g):
        return self.k.elementwise.getitem_backward(g, self.in_shape, self.index)


# ---------------------------------------------------------------------- public functions

def _wrap(x, like):
    """Python numbers stay numbers; arrays become constant tensors on `like`'s device."""
    if isinstance(x, Tensor) or isinstance(x, (int, float)):
        return x
    return Tensor(np.asarray(x, dtype=like.dtype if isinstance(like, Tensor) else None),
                  device=like.device if isinstance(like, Tensor) else None)


def add(a, b): return Add.apply(_wrap(a, b), _wrap(b, a))
def sub(a, b): return Sub.apply(_wrap(a, b), _wrap(b, a))
def mul(a, b): return Mul.apply(_wrap(a, b), _wrap(b, a))
def div(a, b): return Div.apply(_wrap(a, b), _wrap(b, a))
def neg(a): return Neg.apply(a)
def exp(a): return Exp.apply(a)
def log(a): return Log.apply(a)
def sqrt(a): return Sqrt.apply(a)


def pow(a, p):
    if not isinstance(p, (int, float)):
        raise TypeError("only a Python number may be an exponent")
    return Pow.apply(a, p)


def matmul(a, b):
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul takes 2-D tensors, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: inner sizes differ, {a.shape} @ {b.shape}")
    return MatMul.apply(a, b)


def reshape(a, shape):
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if known == 0 or a.size % known:
            raise ValueError(f"cannot reshape {a.shape} into {shape}")
        shape = tuple(a.size // known if s == -1 else s for s in shape)
    if int(np.prod(shape)) != a.size:
        raise ValueError(f"cannot reshape {a.shape} ({a.size} elements) into {shape}")
    return Reshape.apply(a, shape)


def flatten(a, start_dim=1):
    return reshape(a, a.shape[:start_dim] + (-1,))


def transpose(a, axes=None):
    axes = tuple(reversed(range(a.ndim))) if axes is None else tuple(int(x) % a.ndim for x in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"transpose: {axes} is not a permutation of the {a.ndim} axes")
    return Transpose.apply(a, axes)


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(int(x) % ndim for x in axis))


def _kept_shape(shape, axis):
    return tuple(1 if i in axis else s for i, s in enumerate(shape))


def _reduced_shape(shape, axis):
    return tuple(s for i, s in enumerate(shape) if i not in axis)


def sum(a, axis=None, keepdims=False):
    return Sum.apply(a, _axes(axis, a.ndim), keepdims)


def mean(a, axis=None, keepdims=False):
    axes = _axes(axis, a.ndim)
    count = int(np.prod([a.shape[i] for i in axes])) if axes else 1
    return Sum.apply(a, axes, keepdims) * (1.0 / count if count else float("nan"))


def max(a, axis=None, keepdims=False):
    return Max.apply(a, _axes(axis, a.ndim), keepdims)


def cat(tensors, axis=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    ndim = tensors[0].ndim
    axis = int(axis) % ndim
    for t in tensors[1:]:
        if t.ndim != ndim or any(t.shape[i] != tensors[0].shape[i] for i in range(ndim) if i != axis):
            raise ValueError(f"cat along axis {axis}: shapes {[x.shape for x in tensors]} do not match")
    return Concatenate.apply(*tensors, axis=axis)


def getitem(a, index):
    return GetItem.apply(a, index)


# ---------------------------------------------------------------------- Tensor's operators and methods
# tensor.py defines the Tensor and its autograd and imports no op: the arithmetic on it is attached here, so
# that the two modules do not import each other.

TENSOR_METHODS = {
    "__add__": lambda self, other: add(self, other),
    "__radd__": lambda self, other: add(other, self),
    "__sub__": lambda self, other: sub(self, other),
    "__rsub__": lambda self, other: sub(other, self),
    "__mul__": lambda self, other: mul(self, other),
    "__rmul__": lambda self, other: mul(other, self),
    "__truediv__": lambda self, other: div(self, other),
    "__rtruediv__": lambda self, other: div(other, self),
    "__neg__": neg,
    "__pow__": pow,
    "__matmul__": matmul,
    "__getitem__": getitem,
    "exp": exp,
    "log": log,
    "sqrt": sqrt,
    "reshape": lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape),
    "flatten": flatten,
    "transpose": lambda self, *axes: transpose(self, axes[0] if len(axes) == 1 else (axes or None)),
    "sum": sum,
    "mean": mean,
    "max": max,
}
for _name, _method in TENSOR_METHODS.items():
    setattr(Tensor, _name, _method)

"""Detection ops: the sigmoid focal loss of a centre heat-map, and connected-component labelling of masks.

    sigmoid_focal_loss(logits, target, alpha=2, beta=4) -> 0-d tensor
        CenterNet's focal loss (formulas in kernels/reference/detection.py): logits and target of one shape,
        the target 1 at each object's centre and a Gaussian bump around it; the sum over the elements
        divided by the number of centres (at least 1). The target is a constant (no gradient).
    label_components(mask (H, W), connectivity=8) -> (labels (H, W) int32, count)   regions numbered 1..count
    component_stats(labels, count) -> (boxes (count, 4) int64 (x0, y0, x1, y1) pixel edges, sizes (count,))

Labelling works on host (NumPy) masks, the output of a model mapped back to a photo; it runs the CPU kernel
(kernels/cpu/label.py, two-pass union-find), whatever device the model ran on.
"""
import numpy as np

from ..kernels.cpu import label as _label_kernels
from ..tensor import Function
from .loss import _check_input, _host_float, _loss_array, _same_shape_target


class SigmoidFocalLoss(Function):
    replayable = False  # its target is one batch's (tinycnn/plan.py)

    def forward(self, z, *, target, alpha, beta):
        self.z, self.t, self.alpha, self.beta = z, target, alpha, beta
        loss = self.k.detection.focal_loss_forward(z, target, alpha, beta)
        return _loss_array(self.k, _host_float(self.k, loss), z.dtype)

    def backward(self, g):
        return self.k.detection.focal_loss_backward(self.z, self.t, self.alpha, self.beta,
                                                              _host_float(self.k, g))


def sigmoid_focal_loss(input, target, alpha=2.0, beta=4.0):
    op = "sigmoid_focal_loss"
    _check_input(input, op)
    if alpha < 0 or beta < 0:
        raise ValueError(f"{op}: alpha and beta must be >= 0, got {alpha} and {beta}")
    target = _same_shape_target(input, target, op)
    return SigmoidFocalLoss.apply(input, target=target, alpha=float(alpha), beta=float(beta))


def label_components(mask, connectivity=8):
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"label_components expects a 2-D mask (H, W), got shape {mask.shape}")
    return _label_kernels.connected_components(mask, connectivity)


def component_stats(labels, count):
    return _label_kernels.component_stats(labels, count)

"""Detection ops: connected-component labelling of masks, and the sigmoid focal loss of a centre heat-map.

    label_components(mask (H, W), connectivity=8) -> (labels (H, W) int32, count)   regions numbered 1..count
    component_stats(labels, count) -> (boxes (count, 4) int64 (x0, y0, x1, y1) pixel edges, sizes (count,))

Labelling works on host (NumPy) masks, the output of a model mapped back to a photo; it runs the CPU kernel
(kernels/cpu/label.py, two-pass union-find), whatever device the model ran on.
"""
import numpy as np

from ..kernels.cpu import label as _label_kernels


def label_components(mask, connectivity=8):
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"label_components expects a 2-D mask (H, W), got shape {mask.shape}")
    return _label_kernels.connected_components(mask, connectivity)


def component_stats(labels, count):
    return _label_kernels.component_stats(labels, count)

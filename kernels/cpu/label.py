"""Connected-component labelling on the CPU: two passes with union-find (Wu, Otoo & Suzuki's scheme, serial).

    connected_components(mask (H, W), connectivity 8 or 4) -> (labels (H, W) int32, count)
    component_stats(labels, count) -> (boxes (count, 4) int64 (x0, y0, x1, y1), pixel edges; sizes (count,) int64)

Pass 1 walks the pixels in raster order. A foreground pixel looks at its already visited neighbours (west,
and north-west, north, north-east for 8-connectivity; west and north for 4): none -> a new provisional
label; else it takes the smallest of their roots and unites the others with it. `parent` is the union-find
forest over provisional labels (a root is its own parent; union links the larger root under the smaller, so
a root is always its set's smallest provisional label, which is the one met first in raster order).
Pass 2 gives each root a final number in the order the roots were created — i.e. by each region's first
pixel in raster order, the numbering of a flood fill started from each unlabelled pixel in raster order
(kernels/reference/label.py) — and writes it to every pixel.

component_stats is one raster pass over the labels: each region's bounding box and pixel count.
Both are O(H·W) (union-find with path halving is near-linear), whatever the number of regions.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]  # path halving
        a = parent[a]
    return a


@njit(cache=True)
def _union(parent, a, b):
    """Unite the sets of a and b; returns the common root (the smaller of the two roots)."""
    ra, rb = _find(parent, a), _find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    parent[ra] = rb
    return rb


@njit(cache=True)
def _label(mask, eight):
    height, width = mask.shape
    labels = np.zeros((height, width), np.int32)
    # a new provisional label needs a foreground pixel with no labelled neighbour before it: at most one per
    # two pixels of a row and one row in two, but the simple bound is the pixel count + 1
    parent = np.empty(height * width + 1, np.int32)
    next_label = 1
    for r in range(height):
        for c in range(width):
            if not mask[r, c]:
                continue
            found = 0
            # visited neighbours: west, then the row above (north-west, north, north-east)
            if c > 0 and labels[r, c - 1]:
                found = _find(parent, labels[r, c - 1])
            if r > 0:
                for dc in (-1, 0, 1):
                    cc = c + dc
                    if cc < 0 or cc >= width or (dc != 0 and not eight):
                        continue
                    other = labels[r - 1, cc]
                    if other:
                        found = _find(parent, other) if found == 0 else _union(parent, found, other)
            if found == 0:
                parent[next_label] = next_label
                found = next_label
                next_label += 1
            labels[r, c] = found
    # pass 2: final numbers by creation order of the roots
    final = np.zeros(next_label, np.int32)
    count = 0
    for provisional in range(1, next_label):
        root = _find(parent, provisional)
        if root == provisional:
            count += 1
            final[provisional] = count
    for r in range(height):
        for c in range(width):
            if labels[r, c]:
                labels[r, c] = final[_find(parent, labels[r, c])]
    return labels, count


def connected_components(mask, connectivity=8):
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    mask = np.ascontiguousarray(np.asarray(mask) > 0)
    if mask.ndim != 2:
        raise ValueError(f"connected_components expects a 2-D mask, got shape {mask.shape}")
    labels, count = _label(mask, connectivity == 8)
    return labels, int(count)


@njit(cache=True)
def _stats(labels, count):
    boxes = np.empty((count, 4), np.int64)
    boxes[:, 0] = labels.shape[1]
    boxes[:, 1] = labels.shape[0]
    boxes[:, 2] = 0
    boxes[:, 3] = 0
    sizes = np.zeros(count, np.int64)
    for r in range(labels.shape[0]):
        for c in range(labels.shape[1]):
            label = labels[r, c]
            if label == 0:
                continue
            i = label - 1
            sizes[i] += 1
            boxes[i, 0] = min(boxes[i, 0], c)
            boxes[i, 1] = min(boxes[i, 1], r)
            boxes[i, 2] = max(boxes[i, 2], c + 1)
            boxes[i, 3] = max(boxes[i, 3], r + 1)
    return boxes, sizes


def component_stats(labels, count):
    return _stats(np.ascontiguousarray(labels, dtype=np.int32), int(count))

"""NumPy/Python reference of connected-component labelling: a breadth-first flood fill from each unlabelled
foreground pixel, in raster order (the plate tasks' original code).

    connected_components(mask (H, W) bool, connectivity 8 or 4) -> (labels (H, W) int32, count)
        labels 0 = background, 1..count numbered by each region's first pixel in raster order
    component_stats(labels, count) -> (boxes (count, 4) int64 (x0, y0, x1, y1), pixel edges; sizes (count,) int64)
"""
from collections import deque

import numpy as np


def neighbour_offsets(connectivity):
    """The (dr, dc) steps to a pixel's neighbours: 8 (with the diagonals) or 4."""
    if connectivity == 8:
        return [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    if connectivity == 4:
        return [(-1, 0), (0, -1), (0, 1), (1, 0)]
    raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")


def connected_components(mask, connectivity=8):
    mask = np.asarray(mask) > 0
    steps = neighbour_offsets(connectivity)
    labels = np.zeros(mask.shape, np.int32)
    height, width = mask.shape
    count = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = deque([start])
        while queue:
            row, col = queue.popleft()
            for dr, dc in steps:
                r, c = row + dr, col + dc
                if 0 <= r < height and 0 <= c < width and mask[r, c] and not labels[r, c]:
                    labels[r, c] = count
                    queue.append((r, c))
    return labels, count


def component_stats(labels, count):
    boxes = np.zeros((count, 4), np.int64)
    sizes = np.zeros(count, np.int64)
    for label in range(1, count + 1):
        rows, cols = np.nonzero(labels == label)
        boxes[label - 1] = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        sizes[label - 1] = rows.size
    return boxes, sizes

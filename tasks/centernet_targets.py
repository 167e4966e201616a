"""CenterNet-style targets of the plate detector, in NumPy alone (tasks/plates_detect.py trains on them; the
PyTorch twin, benchmarks/torch_plates_detect.py, loads this file too).

    heat, regression, centres = encode_targets(boxes, grid)   # one picture's (K, 4) canvas-pixel boxes
    heat, regression, mask = encode_batch(padded, size)      # (N, M, 4) normalised boxes, −1 rows padding
    boxes = boxes_at(output, rows, cols)                     # the boxes a (5, g, g) output gives at its peaks

Each plate's centre c = box centre / STRIDE lies in cell (⌊c_y⌋, ⌊c_x⌋); the heat-map target is
exp(−dx²/2σx² − dy²/2σy²) around it (exactly 1 in the centre cell, the maximum over plates),
σ = max(MIN_SIGMA, GAUSSIAN_ALPHA · box side in cells / 6) per axis (TTFNet's elliptical Gaussian).

Box regression is dense, as in TTFNet: every cell under a plate's bump (bump ≥ REGRESSION_FLOOR, the cell's
centre inside the box; the centre cell always) gets the plate's box as its target,
(log(w / STRIDE), log(h / STRIDE), c_x − col, c_y − row) — the offsets reach past the cell — with the weight
bump / (sum of the plate's bumps over its cells), so each plate weighs 1 in all and its centre cell most. A
cell under two plates belongs to the one whose bump is higher there. An off-centre peak of a wide plate
then still gives the plate's whole box.
"""
import numpy as np

STRIDE = 4
GAUSSIAN_ALPHA = 0.54       # TTFNet's σ = α · side / 6
MIN_SIGMA = 0.5             # cells
REGRESSION_FLOOR = 0.1      # the lowest bump whose cell still learns the plate's box


def valid_boxes(padded):
    """The real boxes of a padded (M, 4) row set: those with a positive width and height."""
    padded = np.asarray(padded, np.float32).reshape(-1, 4)
    return padded[(padded[:, 2] > padded[:, 0]) & (padded[:, 3] > padded[:, 1])]


def pad_boxes(box_sets, rows=None):
    """A list of (K_i, 4) arrays -> (N, rows, 4) float32, padded with −1 (rows: at least the largest K_i)."""
    rows = max([len(b) for b in box_sets] + [1, rows or 0])
    out = np.full((len(box_sets), rows, 4), -1.0, np.float32)
    for i, boxes in enumerate(box_sets):
        out[i, :len(boxes)] = boxes
    return out


def encode_targets(boxes, grid):
    """One picture's boxes (K, 4) in canvas pixels -> (heat (grid, grid), regression (4, grid, grid),
    regression weights (grid, grid) float32: each plate's sum to 1) on the stride-4 grid."""
    heat = np.zeros((grid, grid), np.float32)
    regression = np.zeros((4, grid, grid), np.float32)
    weights = np.zeros((grid, grid), np.float32)
    owner_bump = np.zeros((grid, grid), np.float32)   # the bump of the plate that owns each cell so far
    rows, cols = np.arange(grid, dtype=np.float32)[:, None], np.arange(grid, dtype=np.float32)[None, :]
    owners = np.full((grid, grid), -1)
    plates = []
    for k, (x0, y0, x1, y1) in enumerate(valid_boxes(boxes) / STRIDE):
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        col, row = min(int(cx), grid - 1), min(int(cy), grid - 1)
        sx, sy = max(MIN_SIGMA, GAUSSIAN_ALPHA * w / 6), max(MIN_SIGMA, GAUSSIAN_ALPHA * h / 6)
        bump = np.exp(-((cols - col) ** 2 / (2 * sx * sx) + (rows - row) ** 2 / (2 * sy * sy))).astype(np.float32)
        np.maximum(heat, bump, out=heat)
        inside = (cols + 0.5 >= x0) & (cols + 0.5 <= x1) & (rows + 0.5 >= y0) & (rows + 0.5 <= y1)
        region = (bump >= REGRESSION_FLOOR) & inside
        region[row, col] = True
        takes = region & (bump > owner_bump)
        owners[takes], owner_bump[takes] = k, bump[takes]
        plates.append((cx, cy, w, h))
    for k, (cx, cy, w, h) in enumerate(plates):
        r, c = np.nonzero(owners == k)
        if len(r):
            weights[r, c] = owner_bump[r, c] / owner_bump[r, c].sum()
            regression[:, r, c] = np.stack(np.broadcast_arrays(np.log(w), np.log(h), cx - c, cy - r))
    return heat, regression, weights


def encode_batch(padded, size):
    """(N, M, 4) normalised padded boxes on an S-pixel canvas -> (heat (N, 1, g, g), regression (N, 4, g, g),
    regression weights (N, 4, g, g) float32, summing to the number of plates per channel) with g = S / 4."""
    grid = size // STRIDE
    encoded = [encode_targets(boxes * size, grid) for boxes in np.asarray(padded, np.float32)]
    heat = np.stack([e[0] for e in encoded])[:, None]
    regression = np.stack([e[1] for e in encoded])
    mask = np.repeat(np.stack([e[2] for e in encoded])[:, None], 4, axis=1)
    return heat, regression, mask



def boxes_at(output, rows, cols):
    """The boxes (K, 4) float32, canvas pixels, that a (5, g, g) output gives at cells (rows[k], cols[k]):
    centre (cell + offset) · STRIDE, size exp(log size) · STRIDE."""
    log_w, log_h, off_x, off_y = np.asarray(output)[1:, rows, cols].astype(np.float64)
    cx, cy = (cols + off_x) * STRIDE, (rows + off_y) * STRIDE
    w, h = np.exp(np.clip(log_w, -10, 10)) * STRIDE, np.exp(np.clip(log_h, -10, 10)) * STRIDE
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32).reshape(-1, 4)

"""Boxes and masks for the plate tasks: letterbox, box mapping, IoU / Dice, box- and mask-aware augmentation.

Conventions shared by every function here (and by tasks.plates_data and tasks.synthetic_plates):

- Coordinates are continuous pixel coordinates: pixel (row i, column j) covers [j, j+1] x [i, i+1] and its
  centre is (j + 0.5, i + 0.5); (0, 0, W, H) is the whole image. Pillow's affine transforms use the same frame.
- A box is (xmin, ymin, xmax, ymax) in that frame; K boxes are a (K, 4) float32 array. A normalised box divides
  x by the width and y by the height, so it lies in [0, 1].
- A mask is (H, W) uint8, nonzero = plate. `fill_mask_from_boxes` marks the pixels whose CENTRE lies inside a
  box, so a box and the bounding box of its mask (`mask_to_box`) agree within half a pixel.

    canvas, scale, pad = letterbox(image, 224)                 # grey (0.5) borders, aspect kept
    target = boxes_to_letterbox(boxes, scale, pad, size=224)   # normalised [0, 1], what Dense(4)+sigmoid learns
    boxes = boxes_from_letterbox(prediction, scale, pad, size=224)   # back to the photo's pixels
    image, boxes, mask = augment_sample(image, boxes, mask, rng)     # flip, scale/shift, rotate, colours
"""
import math

import numpy as np
from PIL import Image

LETTERBOX_GREY = 0.5


# --------------------------------------------------------------------------------------------- boxes in general

def as_boxes(boxes):
    """`boxes` as a (K, 4) float32 array; a single box (4,) becomes (1, 4). Raises ValueError for other shapes."""
    array = np.asarray(boxes, dtype=np.float32)
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None, :]
    if array.ndim == 1 and array.shape[0] == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4) as (xmin, ymin, xmax, ymax), got {np.shape(boxes)}")
    return array


def box_areas(boxes):
    """Area of each box (K,); a box with xmax < xmin or ymax < ymin has area 0."""
    boxes = np.asarray(boxes, dtype=np.float64)
    widths = np.clip(boxes[..., 2] - boxes[..., 0], 0, None)
    heights = np.clip(boxes[..., 3] - boxes[..., 1], 0, None)
    return widths * heights


def clip_boxes(boxes, width, height):
    """Boxes clipped to the image [0, width] x [0, height] (a copy, float32)."""
    boxes = as_boxes(boxes).copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes


def normalise_boxes(boxes, width, height):
    """Pixel boxes -> [0, 1] boxes: x divided by `width`, y by `height`."""
    return as_boxes(boxes) / np.array([width, height, width, height], dtype=np.float32)


def denormalise_boxes(boxes, width, height):
    """[0, 1] boxes -> pixel boxes: the inverse of `normalise_boxes`."""
    return as_boxes(boxes) * np.array([width, height, width, height], dtype=np.float32)


# --------------------------------------------------------------------------------------------------- metrics

def box_iou(a, b):
    """Intersection over union of boxes a[i] and b[i], pairwise aligned: (N, 4) and (N, 4) -> (N,) float64.

    Also takes single boxes (4,) -> a scalar. Two boxes whose union has zero area score 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1] != 4:
        raise ValueError(f"box_iou needs two arrays of the same shape (..., 4), got {a.shape} and {b.shape}")
    overlap_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    overlap_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    intersection = overlap_w * overlap_h
    union = box_areas(a) + box_areas(b) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def centre_error(a, b):
    """Distance between the centres of boxes a[i] and b[i] (N,), in the boxes' own units (pixels or [0, 1])."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1] != 4:
        raise ValueError(f"centre_error needs two arrays of the same shape (..., 4), got {a.shape} and {b.shape}")
    dx = (a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) / 2
    dy = (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) / 2
    return np.hypot(dx, dy)


def _binary_pair(pred, true, threshold):
    pred = np.asarray(pred)
    true = np.asarray(true)
    if pred.shape != true.shape or pred.ndim < 2:
        raise ValueError(f"masks must have the same shape (..., H, W), got {pred.shape} and {true.shape}")
    return pred > threshold, true > threshold


def mask_dice(pred, true, threshold=0.5):
    """Dice = 2|P n T| / (|P| + |T|) over the last two axes: (H, W) -> scalar, (N, H, W) -> (N,).

    Pixels above `threshold` count as plate (so 0/1, 0/255, bool and probabilities all work). When both masks
    are empty the masks agree perfectly: Dice 1.
    """
    pred, true = _binary_pair(pred, true, threshold)
    both = np.sum(pred & true, axis=(-2, -1), dtype=np.float64)
    total = np.sum(pred, axis=(-2, -1), dtype=np.float64) + np.sum(true, axis=(-2, -1), dtype=np.float64)
    return np.where(total > 0, 2 * both / np.where(total > 0, total, 1.0), 1.0)


def mask_iou(pred, true, threshold=0.5):
    """IoU = |P n T| / |P u T| over the last two axes, like `mask_dice`; both masks empty -> 1."""
    pred, true = _binary_pair(pred, true, threshold)
    both = np.sum(pred & true, axis=(-2, -1), dtype=np.float64)
    either = np.sum(pred | true, axis=(-2, -1), dtype=np.float64)
    return np.where(either > 0, both / np.where(either > 0, either, 1.0), 1.0)


# ------------------------------------------------------------------------------------------ boxes <-> masks

def _pixel_span(low, high, limit):
    """Indices of the pixels whose centre lies in [low, high), clipped to [0, limit); never empty."""
    first = max(math.ceil(low - 0.5), 0)
    stop = min(math.ceil(high - 0.5), limit)
    if first >= stop:  # thinner than a pixel: keep the pixel under the box's middle, so the plate still shows
        middle = min(max(int(math.floor((low + high) / 2)), 0), limit - 1)
        return middle, middle + 1
    return first, stop


def fill_mask_from_boxes(boxes, height, width):
    """A (height, width) uint8 mask with 1 on every pixel whose centre lies inside one of `boxes` (pixels).

    A box thinner than a pixel still marks the pixel under its middle; a box wholly outside marks nothing.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    for xmin, ymin, xmax, ymax in as_boxes(boxes):
        if xmax <= 0 or ymax <= 0 or xmin >= width or ymin >= height:
            continue
        rows = _pixel_span(ymin, ymax, height)
        cols = _pixel_span(xmin, xmax, width)
        mask[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return mask


def mask_to_box(mask):
    """The bounding box (4,) float32 of a mask's nonzero pixels, pixel edges included; None if it is empty."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    cols = np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


# ------------------------------------------------------------------------------------------------ letterbox

def _letterbox_geometry(height, width, size):
    """Scale so the longer side becomes `size`, the rounded resized shape, and the centring pad."""
    scale = size / max(height, width)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    return scale, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def _resize_float(image, new_w, new_h):
    """Bilinear resize of an (H, W, C) float32 image, channel by channel in Pillow's float mode."""
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c]), "F")
                           .resize((new_w, new_h), Image.Resampling.BILINEAR)) for c in range(image.shape[2])]
    return np.stack(channels, axis=2)


def letterbox(image, size, fill=LETTERBOX_GREY):
    """Fit an (H, W, C) float image into a (size, size, C) float32 square, aspect ratio kept.

    The image is scaled (bilinear) so its longer side is `size` and centred; the borders are grey 0.5 (`fill`).
    Returns (canvas, scale, (pad_x, pad_y)): a point (x, y) of the image lands on (x*scale + pad_x,
    y*scale + pad_y) of the canvas. The shorter side is rounded to whole pixels, so on that axis the mapping is
    exact to within half a canvas pixel.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"letterbox wants an (H, W, C) image, got shape {image.shape}; masks: letterbox_mask")
    scale, new_w, new_h, pad_x, pad_y = _letterbox_geometry(image.shape[0], image.shape[1], size)
    canvas = np.full((size, size, image.shape[2]), fill, dtype=np.float32)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = _resize_float(image, new_w, new_h)
    return canvas, scale, (pad_x, pad_y)


def letterbox_mask(mask, size):
    """The (size, size) uint8 mask matching `letterbox(image, size)`: nearest-neighbour, borders 0."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"letterbox_mask wants an (H, W) mask, got shape {mask.shape}")
    _, new_w, new_h, pad_x, pad_y = _letterbox_geometry(mask.shape[0], mask.shape[1], size)
    resized = Image.fromarray((mask > 0).astype(np.uint8), "L").resize((new_w, new_h), Image.Resampling.NEAREST)
    canvas = np.zeros((size, size), dtype=np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = np.asarray(resized)
    return canvas


def boxes_to_letterbox(boxes, scale, pad, size=None):
    """Map pixel boxes of the original image onto the letterbox canvas.

    Returns canvas pixels, or normalised [0, 1] canvas coordinates when `size` (the canvas side) is given.
    """
    pad_x, pad_y = pad
    moved = as_boxes(boxes) * np.float32(scale) + np.array([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)
    return moved / np.float32(size) if size is not None else moved


def boxes_from_letterbox(boxes, scale, pad, size=None):
    """The inverse of `boxes_to_letterbox`: canvas boxes (normalised when `size` is given) -> image pixels."""
    pad_x, pad_y = pad
    boxes = as_boxes(boxes)
    if size is not None:
        boxes = boxes * np.float32(size)
    return (boxes - np.array([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)) / np.float32(scale)


# ------------------------------------------------------------------------------------------------ augmentation

def _affine(scale=1.0, angle_deg=0.0, flip=False, shift=(0.0, 0.0), centre=(0.0, 0.0), stretch=1.0):
    """3x3 matrix: about `centre`, mirror x (if flip), scale x by scale·stretch and y by scale / stretch
    (stretch 1: the aspect kept), rotate by `angle_deg`, then shift by `shift`."""
    cx, cy = centre
    angle = math.radians(angle_deg)
    sx, sy = scale * stretch * (-1.0 if flip else 1.0), scale / stretch
    cos, sin = math.cos(angle), math.sin(angle)
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    turn = np.array([[cos * sx, -sin * sy, 0], [sin * sx, cos * sy, 0], [0, 0, 1]], dtype=np.float64)
    back = np.array([[1, 0, cx + shift[0]], [0, 1, cy + shift[1]], [0, 0, 1]], dtype=np.float64)
    return back @ turn @ to_origin


def transform_boxes(boxes, matrix):
    """Boxes moved by a 3x3 affine `matrix`: the bounding box of each box's four moved corners (not clipped)."""
    boxes = as_boxes(boxes).astype(np.float64)
    xs = boxes[:, [0, 2, 2, 0]]
    ys = boxes[:, [1, 1, 3, 3]]
    new_x = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    new_y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return np.stack([new_x.min(1), new_y.min(1), new_x.max(1), new_y.max(1)], axis=1).astype(np.float32)


def warp_image(image, matrix, fill=LETTERBOX_GREY):
    """Apply a 3x3 affine `matrix` (input -> output pixels) to an (H, W, C) float image, bilinear, same size."""
    height, width = image.shape[:2]
    inverse = np.linalg.inv(matrix)[:2].ravel()
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c]), "F").transform(
        (width, height), Image.Transform.AFFINE, tuple(inverse), resample=Image.Resampling.BILINEAR,
        fillcolor=fill)) for c in range(image.shape[2])]
    return np.stack(channels, axis=2)


def warp_mask(mask, matrix):
    """Apply a 3x3 affine `matrix` to an (H, W) mask, nearest neighbour, outside = 0; returns uint8 0/1."""
    height, width = mask.shape
    inverse = np.linalg.inv(matrix)[:2].ravel()
    moved = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8), "L").transform(
        (width, height), Image.Transform.AFFINE, tuple(inverse), resample=Image.Resampling.NEAREST, fillcolor=0)
    return np.asarray(moved).copy()


def jitter_colours(image, rng, strength):
    """Random brightness, contrast and saturation, each a factor in [1 - strength, 1 + strength]; clipped to [0, 1].

    Brightness b scales the pixels; contrast c pulls them towards their mean m (of the brightened image);
    saturation s pulls each pixel towards its own grey (ITU-R 601 luma). All three are linear, so they are folded
    into one colour matrix and one offset: out = pixel @ matrix.T + (1 - c) m.
    """
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    channels = image.shape[2]
    towards_grey = np.eye(channels)
    if channels == 3:
        luma = np.array([0.299, 0.587, 0.114])
        towards_grey = saturation * towards_grey + (1 - saturation) * np.outer(np.ones(3), luma)
    matrix = (towards_grey * brightness * contrast).astype(np.float32)
    offset = np.float32((1 - contrast) * brightness * image.mean(dtype=np.float64))
    out = image @ matrix.T
    out += offset
    return np.clip(out, 0, 1, out=out)


def _random_geometry(width, height, rng, flip, scale_translate, max_rotation_deg, max_stretch=1.0):
    """One random affine matrix about the image centre (flip is decided by the caller, once); the stretch is
    log-uniform in [1 / max_stretch, max_stretch] (drawn only when max_stretch > 1, so the other draws stay
    those of a run without it)."""
    scale, shift = 1.0, (0.0, 0.0)
    if scale_translate is not None:
        low, high, max_shift = scale_translate
        scale = rng.uniform(low, high)
        shift = tuple(rng.uniform(-max_shift, max_shift, size=2) * (width, height))
    angle = rng.uniform(-max_rotation_deg, max_rotation_deg) if max_rotation_deg else 0.0
    stretch = math.exp(rng.uniform(-math.log(max_stretch), math.log(max_stretch))) if max_stretch > 1 else 1.0
    return _affine(scale, angle, flip, shift, centre=(width / 2, height / 2), stretch=stretch)


def _visible_fractions(moved, width, height):
    """For each moved box, the share of its area that stays inside the image."""
    area = box_areas(moved)
    return np.where(area > 0, box_areas(clip_boxes(moved, width, height)) / np.where(area > 0, area, 1), 0.0)


def augment_sample(image, boxes, mask, rng, flip=True, scale_translate=(0.85, 1.15, 0.1), max_rotation_deg=5.0,
                   colour_jitter=0.2, min_visible=0.5, max_tries=10, fill=LETTERBOX_GREY, max_stretch=1.0):
    """Randomly flip, scale, shift and rotate an image with its plate boxes and mask; then jitter its colours.

    image: (H, W, C) float32 in [0, 1]; boxes: (K, 4) pixels; mask: (H, W) or None; rng: np.random.Generator.
    - flip: mirror left-right with probability 1/2.
    - scale_translate: (min scale, max scale, max shift as a fraction of width/height), about the image centre;
      None switches it off. max_rotation_deg: a rotation drawn from [-max, max] degrees; 0 switches it off.
    - max_stretch: widen x and narrow y by a factor log-uniform in [1 / max_stretch, max_stretch] (a plate's
      aspect ratio times its square); 1 switches it off.
    - colour_jitter: brightness, contrast, saturation factors in [1 - j, 1 + j]; 0 or None switches it off.
    One affine transform moves the pixels (bilinear, uncovered border filled with grey `fill`), the mask
    (nearest, border 0) and the boxes together. A moved box is the bounding box of its four moved corners,
    clipped to the image. If any plate would keep less than `min_visible` of its box inside the image, the
    scale/shift/rotation is drawn again, up to `max_tries` times; if every try fails the sample keeps its
    geometry (only the flip is applied), so a plate never leaves the image.
    Returns (image, boxes, mask) — new arrays; mask is None when none was given.
    """
    image = np.asarray(image, dtype=np.float32)
    boxes = as_boxes(boxes)
    height, width = image.shape[:2]
    if mask is not None and np.shape(mask) != (height, width):
        raise ValueError(f"mask shape {np.shape(mask)} does not match the image's {(height, width)}")
    flipped = bool(flip) and rng.random() < 0.5
    matrix = _affine(flip=flipped, centre=(width / 2, height / 2))
    if scale_translate is not None or max_rotation_deg or max_stretch > 1:
        for _ in range(max_tries):
            candidate = _random_geometry(width, height, rng, flipped, scale_translate, max_rotation_deg, max_stretch)
            if np.all(_visible_fractions(transform_boxes(boxes, candidate), width, height) >= min_visible):
                matrix = candidate
                break
    if not np.allclose(matrix, np.eye(3)):
        image = warp_image(image, matrix, fill)
        mask = warp_mask(mask, matrix) if mask is not None else None
    else:
        image = image.copy()
        mask = (np.asarray(mask) > 0).astype(np.uint8) if mask is not None else None
    boxes = clip_boxes(transform_boxes(boxes, matrix), width, height)
    if colour_jitter:
        image = jitter_colours(image, rng, colour_jitter)
    return image.astype(np.float32, copy=False), boxes, mask

"""The tutorial's twist: replace a licence plate with another number, drawn to look like the plate it covers.

    corners = min_area_rectangle(plate_pixels)       # (4, 2) TL, TR, BR, BL: the plate's quadrilateral
    out = replace_plate(pixels, corners, "ABC 1234", region)

1. The quadrilateral: the minimum-area rectangle of the plate's pixels (a segmenter's mask, or a detector's
   filled box, whose rectangle is the box itself), found by rotating calipers: the smallest rectangle around a
   convex polygon has a side on one of the polygon's edges, so each edge of the pixels' convex hull is tried.
2. The look, from the plate's own pixels inside it: luminance split in two by Otsu's threshold; the larger
   class is the plate's background, the smaller the ink; their median colours are the new plate's colours,
   and the ink's share of the area picks the stroke weight (a plate with bold letters gets bold letters).
3. The new plate: the text in Pillow's built-in scalable font, fitted to the plate's aspect (88 % of its
   width, 62 % of its height at most), on the background colour, drawn large then reduced with antialiasing.
4. Warped onto the quadrilateral by a perspective transform; its alpha is feathered by a small Gaussian blur so
   the edges blend, and the result is kept only inside `region` (the grown plate region): no other pixel changes.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .synthetic_plates import _perspective_coefficients, _scalable_font

DESIGN_HEIGHT = 96           # px: the new plate is drawn at this height, then shrunk onto the photo
TEXT_WIDTH_SHARE = 0.88
TEXT_HEIGHT_SHARE = 0.62
FEATHER = 0.6                # px: Gaussian blur of the pasted plate's alpha, so its edges blend


# ------------------------------------------------------------------------------------------ geometry

def convex_hull(points):
    """The convex hull of (K, 2) points, counter-clockwise (Andrew's monotone chain), (M, 2)."""
    points = np.unique(np.asarray(points, np.float64).reshape(-1, 2), axis=0)
    if len(points) < 3:
        return points

    def turn(o, a, b):  # > 0: o -> a -> b turns counter-clockwise
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(sequence):
        chain = []
        for p in sequence:
            while len(chain) >= 2 and turn(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(points), half(points[::-1])
    return np.array(lower[:-1] + upper[:-1])


def order_corners(corners):
    """Four rectangle corners -> TL, TR, BR, BL in the image (y down), the top edge being a long side when
    the rectangle is wider than tall (a plate), else the edge nearest to horizontal."""
    corners = np.asarray(corners, np.float64)
    centre = corners.mean(axis=0)
    angles = np.arctan2(corners[:, 1] - centre[1], corners[:, 0] - centre[0])
    ring = corners[np.argsort(angles)]           # clockwise on screen (y down), starting anywhere
    edges = [np.linalg.norm(ring[(i + 1) % 4] - ring[i]) for i in range(4)]
    start = 0 if edges[0] >= edges[1] else 1     # ring[start] -> ring[start + 1] is a long side
    candidates = [start, start + 2]              # the two long sides: take the upper one as the top edge
    top = min(candidates, key=lambda i: ring[i % 4][1] + ring[(i + 1) % 4][1])
    ring = np.roll(ring, -top, axis=0)
    if ring[0][0] > ring[1][0]:                  # the top edge runs left to right
        ring = ring[[1, 0, 3, 2]]
    return ring


def min_area_rectangle(mask):
    """The smallest rectangle around a (H, W) mask's pixels (their corner points): (4, 2) TL, TR, BR, BL."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("min_area_rectangle: the mask is empty")
    corners = np.concatenate([np.stack([cols + dx, rows + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    hull = convex_hull(corners)
    best = None
    for i in range(len(hull)):
        edge = hull[(i + 1) % len(hull)] - hull[i]
        length = np.hypot(*edge)
        if length == 0:
            continue
        u = edge / length
        v = np.array([-u[1], u[0]])
        along, across = hull @ u, hull @ v
        area = (along.max() - along.min()) * (across.max() - across.min())
        if best is None or area < best[0] - 1e-9:
            best = (area, u, v, along.min(), along.max(), across.min(), across.max())
    _, u, v, a0, a1, b0, b1 = best
    rectangle = np.array([a * u + b * v for a, b in ((a0, b0), (a1, b0), (a1, b1), (a0, b1))])
    return order_corners(rectangle)


def box_corners(box):
    """(xmin, ymin, xmax, ymax) -> its four corners TL, TR, BR, BL (4, 2)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def quad_size(corners):
    """(width, height) of a quadrilateral: the mean lengths of its top/bottom and left/right sides."""
    tl, tr, br, bl = corners
    width = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    return width, height


# ------------------------------------------------------------------------------------------ the plate's look

def otsu_threshold(values):
    """Otsu's threshold of uint8-range values: the split that maximises the between-class variance."""
    histogram = np.bincount(np.clip(np.rint(values), 0, 255).astype(np.int64).ravel(), minlength=256)
    total = histogram.sum()
    weight = np.cumsum(histogram)
    mean = np.cumsum(histogram * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight))
    return int(np.nanargmax(np.where(np.isfinite(between), between, np.nan))) if total else 128


def plate_look(pixels):
    """(background colour, ink colour, ink share) of a plate's (K, 3) uint8 pixels."""
    pixels = np.asarray(pixels, np.float64).reshape(-1, 3)
    luminance = np.clip(np.rint(pixels @ np.array([0.299, 0.587, 0.114])), 0, 255)
    if len(pixels) < 2 or np.ptp(luminance) < 1:
        colour = tuple(int(c) for c in np.median(pixels, axis=0)) if len(pixels) else (255, 255, 255)
        ink = (0, 0, 0) if np.mean(colour) > 127 else (255, 255, 255)
        return colour, ink, 0.2
    dark = luminance <= otsu_threshold(luminance)
    background, ink = (~dark, dark) if dark.mean() <= 0.5 else (dark, ~dark)
    as_colour = lambda chosen: tuple(int(round(c)) for c in np.median(pixels[chosen], axis=0))  # noqa: E731
    return as_colour(background), as_colour(ink), float(ink.mean())


def render_new_plate(text, aspect, background, ink, ink_share):
    """An RGB plate DESIGN_HEIGHT high and `aspect` times as wide: `text` centred in `ink` on `background`."""
    height = DESIGN_HEIGHT
    width = max(height, round(height * aspect))
    plate = Image.new("RGB", (width, height), background)
    stroke = 0 if ink_share < 0.22 else 1 if ink_share < 0.32 else 2
    font = _scalable_font(int(height * TEXT_HEIGHT_SHARE))
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    glyphs = Image.new("L", (max(1, right - left + 2), max(1, bottom - top + 2)), 0)
    ImageDraw.Draw(glyphs).text((1 - left, 1 - top), text, fill=255, font=font, stroke_width=stroke,
                                stroke_fill=255)
    scale = min(width * TEXT_WIDTH_SHARE / glyphs.width, height * TEXT_HEIGHT_SHARE / glyphs.height)
    fitted = glyphs.resize((max(1, round(glyphs.width * scale)), max(1, round(glyphs.height * scale))),
                           Image.Resampling.LANCZOS)
    plate.paste(ink, ((width - fitted.width) // 2, (height - fitted.height) // 2), fitted)
    return plate


# ------------------------------------------------------------------------------------------ replacing

def warp_onto(plate, corners, height, width):
    """The plate (RGB) warped so its corners land on `corners`: (colours (H, W, 3) float, alpha (H, W) float),
    over the whole photo, alpha 0 outside the quadrilateral and feathered at its edges."""
    plate_w, plate_h = quad_size(corners)
    factor = min(1.0, 2.0 * max(plate_w, 1.0) / plate.width)      # shrink with antialiasing first
    small = plate.resize((max(2, round(plate.width * factor)), max(2, round(plate.height * factor))),
                         Image.Resampling.LANCZOS)
    source = [(0, 0), (small.width, 0), (small.width, small.height), (0, small.height)]
    data = _perspective_coefficients(source, corners)
    colours = small.transform((width, height), Image.Transform.PERSPECTIVE, data, resample=Image.Resampling.BICUBIC)
    opaque = Image.new("L", small.size, 255)
    alpha = opaque.transform((width, height), Image.Transform.PERSPECTIVE, data, resample=Image.Resampling.BILINEAR)
    alpha = alpha.filter(ImageFilter.GaussianBlur(FEATHER))
    return np.asarray(colours, np.float64), np.asarray(alpha, np.float64) / 255.0


def replace_plate(pixels, corners, text, region):
    """A copy of `pixels` (H, W, 3) uint8 with a new plate reading `text` on the quadrilateral `corners`
    (TL, TR, BR, BL), coloured like the plate now there; pixels outside `region` (H, W) bool never change."""
    pixels = np.asarray(pixels)
    height, width = pixels.shape[:2]
    corners = order_corners(corners)
    polygon = Image.new("L", (width, height), 0)
    ImageDraw.Draw(polygon).polygon([tuple(p) for p in corners], fill=1)
    inside = np.asarray(polygon, bool)
    plate_w, plate_h = quad_size(corners)
    background, ink, share = plate_look(pixels[inside])
    plate = render_new_plate(text, plate_w / max(plate_h, 1e-6), background, ink, share)
    colours, alpha = warp_onto(plate, corners, height, width)
    alpha = np.where(region, alpha, 0.0)[..., None]
    blended = np.rint(alpha * colours + (1 - alpha) * pixels)
    return np.where(region[..., None], blended, pixels).astype(pixels.dtype)

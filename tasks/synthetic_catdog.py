"""A built-in cats-vs-dogs dataset, drawn procedurally, for running task 1 without downloading anything.

    from tinycnn.tasks.synthetic_catdog import ensure_builtin_catdog
    root = ensure_builtin_catdog(n_per_class=1000)    # ~/.cache/tinycnn/catdog-v2-0-1000/{cat,dog}/*.jpg

or from a shell: `python -m tinycnn.tasks.synthetic_catdog OUT_DIR --n-per-class 500 --report`.

Each picture is a head, drawn with Pillow's ImageDraw, on a cluttered background:
- cats: pointed triangular ears (often pink inside), a small nose, whiskers, almond eyes with slit pupils;
- dogs: floppy hanging ears, rounded upright ones or (one in five) pointed ones like a husky's, a longer muzzle
  with a big dark nose, round dark eyes;
- both: the same fur colours and patterns (solid, tabby stripes, spots, patches), head size, rotation and
  position; a background of gradients, blotchy texture and random shapes (triangles and ellipses too, so
  "a triangle somewhere" is not a cat); then lighting, blur, sensor noise and JPEG compression.
Where a real photo of the wrong class would look alike, so do these: some cats have round (dilated) pupils,
some dogs amber eyes or pointed ears, 15 % of cats show no whiskers. The classes differ in shapes, not in
colour or brightness. On 2 x 1000 images (seed 0): no single global statistic (mean, per-channel mean,
standard deviation) does better than 54 % with its best threshold (`best_threshold_accuracy`); logistic
regression on 32x32 gray pixels reaches 65 % (`logistic_regression_accuracy`; on 4,000 real Kaggle photos it
does no better than chance), so pixels in fixed places carry only part of the answer and a CNN has shapes
to learn: 48 random 5x5 filters with ReLU and max-pooling under the same logistic regression reach 94 %.

Image i of class c is drawn from np.random.default_rng([seed, c, i]) alone, so the same seed gives
byte-identical files (with the same Pillow/libjpeg), and a larger n_per_class only adds images.
"""
import argparse
import os
import shutil
import tempfile
import time
import warnings

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from tinycnn.data.folder import load_image_folder, user_cache_dir

CLASSES = ("cat", "dog")
GENERATOR_VERSION = 2      # part of the cached folder's name: bump it whenever the drawing changes

# Fur colours, shared by both classes (RGB): black, white, grey, dark grey, ginger, brown, cream, tan, fawn.
FUR = [(32, 30, 30), (236, 232, 224), (128, 128, 132), (82, 80, 86), (208, 122, 52),
       (112, 76, 48), (226, 204, 164), (178, 138, 92), (196, 160, 116)]
CAT_IRIS = [(112, 168, 64), (214, 192, 64), (204, 142, 40), (96, 146, 204)]
DOG_IRIS = [(64, 42, 26), (40, 30, 24), (90, 60, 32), (204, 142, 40)]     # the last one: amber, like a cat's
PINK, DARK = (224, 150, 150), (40, 30, 30)
DOG_EARS, DOG_EAR_ODDS = ("floppy", "rounded", "pointed"), (0.5, 0.3, 0.2)    # pointed: like a husky's
TILT = 15              # head rotation: normal, this standard deviation in degrees, cut at 2.5 of them
SHIFT = 0.03           # head offset from the centre: normal, this std as a fraction of the picture, cut at 2.5
HEAD_RADIUS = (0.24, 0.34)    # range of the head radius, fraction of the picture


# ---------------------------------------------------------------------------------------------- the dataset

def generate_catdog(out_dir, n_per_class=1000, size=128, seed=0):
    """Write n_per_class RGB JPEGs of size x size into out_dir/cat/ and out_dir/dog/; returns out_dir."""
    if n_per_class < 1 or size < 32:
        raise ValueError(f"need n_per_class >= 1 and size >= 32, got {n_per_class} and {size}")
    for label, name in enumerate(CLASSES):
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, label, i])
            picture = draw_pet(rng, name, size)
            picture.save(os.path.join(folder, f"{name}.{i:05d}.jpg"), quality=int(rng.integers(70, 96)))
    return out_dir


def ensure_builtin_catdog(cache_root=None, n_per_class=1000, seed=0, size=128):
    """The path of a generated dataset in `cache_root` (default: the user cache), generating it the first time.

    It is drawn into a temporary folder beside its final place and renamed, so a half-written dataset is never
    found; a folder found with the wrong number of images is reported (warning) and drawn again.
    """
    cache_root = cache_root or user_cache_dir()
    name = f"catdog-v{GENERATOR_VERSION}-{seed}-{n_per_class}" + ("" if size == 128 else f"-{size}px")
    final = os.path.join(cache_root, name)
    if os.path.isdir(final):
        if _is_complete(final, n_per_class):
            return final
        warnings.warn(f"{final} is incomplete (not {n_per_class} images per class): drawing it again")
        shutil.rmtree(final)
    os.makedirs(cache_root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=cache_root, prefix=f".{name}-tmp-")
    try:
        generate_catdog(tmp, n_per_class, size, seed)
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(final, n_per_class):    # not just another process that finished first
            raise
    return final


def _is_complete(folder, n_per_class):
    """Whether folder/cat and folder/dog hold n_per_class files each."""
    return all(os.path.isdir(os.path.join(folder, name)) and
               len(os.listdir(os.path.join(folder, name))) == n_per_class for name in CLASSES)


# ------------------------------------------------------------------------------------------------ drawing

def draw_pet(rng, kind, size=128):
    """One RGB picture of a "cat" or "dog" head on a background; all randomness from `rng`."""
    if kind not in CLASSES:
        raise ValueError(f"kind must be one of {CLASSES}, got {kind!r}")
    picture = _background(rng, size)
    head, silhouette = _draw_head(rng, kind, size)
    angle = float(np.clip(rng.normal(0, TILT), -2.5 * TILT, 2.5 * TILT))
    shift = tuple(float(v) for v in np.clip(rng.normal(0, SHIFT, 2), -2.5 * SHIFT, 2.5 * SHIFT) * size)
    head = head.rotate(angle, Image.Resampling.BILINEAR, translate=shift)
    silhouette = silhouette.rotate(angle, Image.Resampling.BILINEAR, translate=shift)
    picture.paste(head, (0, 0), silhouette)
    return _camera(rng, picture)


def _jitter(rng, colour, amount=18):
    """The colour with each channel moved by up to `amount` at random."""
    return tuple(int(v) for v in np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255))


def _mix(colour, other, t):
    """The colour a fraction t of the way to `other`."""
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(colour, other))


def _background(rng, size):
    """A soft two-colour gradient with blotches (drawn at 6x6 and smoothly enlarged) and 2 to 8 random shapes."""
    ramp = np.linspace(-0.5, 0.5, 6, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None] + 0.5)[:, :, None]
    start, end = _muted(rng), _muted(rng)
    blotches = rng.normal(0, rng.uniform(5, 35), (6, 6, 1)) + rng.normal(0, rng.uniform(2, 12), (6, 6, 3))
    pixels = start + (end - start) * t + blotches
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC)
    pen = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(2, 9))):
        _random_shape(rng, pen, size)
    return picture


def _muted(rng):
    """A random colour, partly washed towards its gray (rooms and gardens are rarely pure colours)."""
    colour = rng.uniform(15, 240, 3)
    return colour + (colour.mean() - colour) * rng.uniform(0.3, 0.9)


def _random_shape(rng, pen, size):
    """A rectangle, ellipse, triangle, thick line or arc in a random colour (a fur colour one time in three)."""
    colour = _jitter(rng, FUR[rng.integers(len(FUR))]) if rng.random() < 0.33 else tuple(
        int(v) for v in _muted(rng))
    x, y = rng.uniform(-0.1, 1.1, 2) * size
    w, h = rng.uniform(0.05, 0.4, 2) * size
    box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
    kind = rng.integers(5)
    if kind == 0:
        pen.rectangle(box, fill=colour)
    elif kind == 1:
        pen.ellipse(box, fill=colour)
    elif kind == 2:
        pen.polygon([tuple(p) for p in rng.uniform(-0.5, 0.5, (3, 2)) * (w, h) + (x, y)], fill=colour)
    elif kind == 3:
        pen.line([(x, y), (x + w, y + h * rng.choice([-1, 1]))], fill=colour, width=int(rng.integers(1, 6)))
    else:
        pen.arc(box, float(rng.uniform(0, 360)), float(rng.uniform(0, 360)), fill=colour,
                width=int(rng.integers(1, 5)))


def _camera(rng, picture):
    """Lens blur, exposure and colour cast, sensor noise."""
    radius = rng.uniform(0, 1.3)
    if radius > 0.3:
        picture = picture.filter(ImageFilter.GaussianBlur(radius))
    pixels = np.asarray(picture, np.float32)
    gain = (rng.uniform(0.75, 1.2) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(2, 10))
    noise += np.float32(rng.uniform(-15, 15))
    pixels = pixels * gain + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------- the head

class _Head:
    """Pens for one head: `paint` colours the head layer, `shape` marks its silhouette (what gets pasted)."""

    def __init__(self, rng, size):
        self.cx, self.cy = size / 2, size / 2
        self.r = size * rng.uniform(*HEAD_RADIUS)               # head radius: the unit of every feature
        self.fur = _jitter(rng, FUR[rng.integers(len(FUR))])
        self.layer = Image.new("RGB", (size, size), self.fur)
        self.silhouette = Image.new("L", (size, size), 0)
        self.paint = ImageDraw.Draw(self.layer)
        self.shape = ImageDraw.Draw(self.silhouette)

    def at(self, dx, dy):
        """The point (dx, dy) head radii away from the centre."""
        return self.cx + dx * self.r, self.cy + dy * self.r

    def box(self, dx, dy, half_w, half_h):
        """The bounding box of an ellipse centred at (dx, dy), half-axes in head radii."""
        x, y = self.at(dx, dy)
        return [x - half_w * self.r, y - half_h * self.r, x + half_w * self.r, y + half_h * self.r]


def _draw_head(rng, kind, size):
    """(head layer RGB, silhouette L) centred in a size x size square."""
    head = _Head(rng, size)
    half_w, half_h = (rng.uniform(0.95, 1.12), rng.uniform(0.85, 1.0)) if kind == "cat" else (
        rng.uniform(0.85, 1.02), rng.uniform(0.92, 1.1))
    marks = _fur_pattern(rng, head)
    ears = "pointed" if kind == "cat" else DOG_EARS[_pick(rng, DOG_EAR_ODDS)]
    ear_colour = head.fur if kind == "cat" or rng.random() < 0.5 else marks
    if ears == "pointed":                                   # behind the face
        _pointed_ears(rng, head, kind, ear_colour)
    head.shape.ellipse(head.box(0, 0, half_w, half_h), fill=255)
    head.paint.ellipse(head.box(0, 0, half_w, half_h), outline=_mix(head.fur, DARK, 0.35), width=1)
    if kind == "cat":
        _cat_face(rng, head)
    else:
        if ears != "pointed":                               # in front of the face
            _soft_ears(rng, head, ear_colour, floppy=ears == "floppy")
        _dog_face(rng, head)
    return ImageChops.multiply(head.layer, _shading(rng, head, size)), head.silhouette


def _pick(rng, odds):
    """An index drawn with the given probabilities."""
    return int(np.searchsorted(np.cumsum(odds), rng.random() * sum(odds), side="right"))


def _shading(rng, head, size):
    """Light from a random upper side: the head darkens towards its rim and away from the light (RGB, 0..255)."""
    grid = (np.arange(16, dtype=np.float32) + 0.5) * (size / 16)           # a coarse grid, enlarged below
    dx, dy = (grid[None, :] - head.cx) / head.r, (grid[:, None] - head.cy) / head.r
    light_x, light_y = rng.uniform(-0.6, 0.6), -rng.uniform(0.3, 0.8)
    shade = 1 - 0.15 * np.clip(np.hypot(dx, dy) - 0.6, 0, None) ** 2 + 0.08 * (dx * light_x + dy * light_y)
    shade = np.clip(shade * 0.95, 0.6, 1.0)
    shade = Image.fromarray((shade * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    return shade.convert("RGB")


def _fur_pattern(rng, head):
    """Solid, tabby stripes, spots or patches (same odds for both classes); returns the marks' colour."""
    other = FUR[rng.integers(len(FUR))]
    marks = _jitter(rng, other if rng.random() < 0.5 else _mix(head.fur, DARK, 0.5))
    pattern = rng.integers(4)
    if pattern == 1:                                   # tabby: wavy stripes across head and ears
        for y in np.linspace(-1.6, 1.0, int(rng.integers(4, 8))):
            points = [head.at(x, y + rng.uniform(-0.12, 0.12)) for x in np.linspace(-1.3, 1.3, 6)]
            head.paint.line(points, fill=marks, width=max(1, int(head.r * rng.uniform(0.07, 0.14))))
    elif pattern == 2:                                 # spots
        for dx, dy in rng.uniform(-1.2, 1.2, (int(rng.integers(5, 14)), 2)):
            radius = rng.uniform(0.07, 0.2)
            head.paint.ellipse(head.box(dx, dy, radius, radius * rng.uniform(0.7, 1.3)), fill=marks)
    elif pattern == 3:                                 # one or two large patches
        for dx, dy in rng.uniform(-1.0, 1.0, (int(rng.integers(1, 3)), 2)):
            head.paint.ellipse(head.box(dx, dy, rng.uniform(0.35, 0.75), rng.uniform(0.35, 0.75)), fill=marks)
    return marks


def _ellipse_points(centre, half_length, half_width, angle, count=18):
    """Polygon points of an ellipse whose long axis points at `angle` (radians; 0 = right, pi/2 = down)."""
    t = np.linspace(0, 2 * np.pi, count, endpoint=False)
    along, across = half_length * np.cos(t), half_width * np.sin(t)
    x = centre[0] + along * np.cos(angle) - across * np.sin(angle)
    y = centre[1] + along * np.sin(angle) + across * np.cos(angle)
    return list(zip(x.tolist(), y.tolist()))


def _pointed_ears(rng, head, kind, colour):
    """Two triangles on top of the head, tilted outwards, often pink inside: every cat, some dogs (bigger)."""
    if kind == "cat":
        tilt, height, half_base, pink = rng.uniform(25, 48), rng.uniform(0.6, 0.95), rng.uniform(0.28, 0.4), 0.7
    else:
        tilt, height, half_base, pink = rng.uniform(18, 40), rng.uniform(0.75, 1.1), rng.uniform(0.3, 0.42), 0.3
    inner = _jitter(rng, PINK) if rng.random() < pink else colour
    for side in (-1, 1):
        direction = np.array([side * np.sin(np.radians(tilt)), -np.cos(np.radians(tilt))])  # centre outwards
        across = np.array([-direction[1], direction[0]])
        base = np.array(head.at(*(0.8 * direction)))
        tip = base + direction * height * head.r
        corners = base + np.outer([1, -1], across) * half_base * head.r
        triangle = [tuple(tip), tuple(corners[0]), tuple(corners[1])]
        head.shape.polygon(triangle, fill=255)
        if colour != head.fur:
            head.paint.polygon(triangle, fill=colour)
        inside = [tuple(base + (np.array(p) - base) * 0.6 + direction * 0.08 * head.r) for p in triangle]
        head.paint.polygon(inside, fill=inner)


def _soft_ears(rng, head, colour, floppy):
    """Dog ears in front of the face: floppy ones hanging at the sides, or rounded ones standing up."""
    length, width = (rng.uniform(0.5, 0.75), rng.uniform(0.2, 0.32)) if floppy else (
        rng.uniform(0.4, 0.6), rng.uniform(0.25, 0.36))
    for side in (-1, 1):
        if floppy:    # attached at the top of the head's side, hanging down and a little out
            angle = np.pi / 2 - side * np.radians(rng.uniform(5, 35))
            top = np.array(head.at(side * 0.7, -0.6))
            centre = top + length * head.r * np.array([np.cos(angle), np.sin(angle)])
        else:         # standing up and out, wide and round-tipped
            angle = -np.pi / 2 + side * np.radians(rng.uniform(15, 40))
            base = np.array(head.at(side * 0.55, -0.65))
            centre = base + length * 0.8 * head.r * np.array([np.cos(angle), np.sin(angle)])
        points = _ellipse_points(centre, length * head.r, width * head.r, angle)
        head.shape.polygon(points, fill=255)
        head.paint.polygon(points, fill=colour, outline=_mix(colour, DARK, 0.3))


def _eyes(rng, head, iris, half_w, half_h, pupil_w, dy, dx):
    """Two eyes at (+-dx, dy): an iris ellipse, a pupil ellipse, a small highlight."""
    for side in (-1, 1):
        head.paint.ellipse(head.box(side * dx, dy, half_w, half_h), fill=iris, outline=DARK)
        head.paint.ellipse(head.box(side * dx, dy, pupil_w, half_h * 0.9), fill=(12, 10, 10))
        head.paint.ellipse(head.box(side * dx - half_w * 0.3, dy - half_h * 0.35, 0.03, 0.03), fill=(250,) * 3)


def _cat_face(rng, head):
    """Almond eyes with slit (sometimes round) pupils, a small triangular nose, a mouth, whiskers."""
    half_w = rng.uniform(0.13, 0.18)
    half_h = half_w * rng.uniform(0.6, 0.9)
    pupil = half_w * (rng.uniform(0.15, 0.3) if rng.random() < 0.7 else rng.uniform(0.6, 0.8))
    _eyes(rng, head, _jitter(rng, CAT_IRIS[rng.integers(len(CAT_IRIS))]), half_w, half_h, pupil,
          dy=rng.uniform(-0.2, -0.05), dx=rng.uniform(0.32, 0.42))
    nose_y, nose_w = rng.uniform(0.15, 0.3), rng.uniform(0.07, 0.11)
    nose = _jitter(rng, PINK if rng.random() < 0.6 else DARK)
    head.paint.polygon([head.at(-nose_w, nose_y), head.at(nose_w, nose_y), head.at(0, nose_y + nose_w)], fill=nose)
    mouth_y = nose_y + nose_w
    head.paint.line([head.at(0, mouth_y), head.at(0, mouth_y + 0.1)], fill=DARK, width=1)
    for side in (-1, 1):
        head.paint.line([head.at(0, mouth_y + 0.1), head.at(side * 0.12, mouth_y + 0.16)], fill=DARK, width=1)
    if rng.random() < 0.85:
        whisker = (235, 235, 230) if rng.random() < 0.6 else DARK
        for side in (-1, 1):
            for k in range(3):
                start = head.at(side * 0.18, mouth_y + 0.02 * k)
                end = head.at(side * rng.uniform(1.0, 1.4), mouth_y + rng.uniform(-0.3, 0.3) + 0.1 * k)
                head.paint.line([start, end], fill=whisker, width=1)
                head.shape.line([start, end], fill=255, width=1)


def _dog_face(rng, head):
    """Round dark eyes, a long muzzle (often lighter) reaching below the head, a big nose, a mouth."""
    radius = rng.uniform(0.08, 0.13)
    _eyes(rng, head, _jitter(rng, DOG_IRIS[rng.integers(len(DOG_IRIS))], 10), radius, radius,
          radius * rng.uniform(0.45, 0.6), dy=rng.uniform(-0.25, -0.1), dx=rng.uniform(0.3, 0.4))
    muzzle_y, muzzle_w, muzzle_h = rng.uniform(0.4, 0.55), rng.uniform(0.3, 0.42), rng.uniform(0.32, 0.48)
    muzzle = _mix(head.fur, (240, 236, 228), rng.uniform(0.3, 0.7)) if rng.random() < 0.55 else head.fur
    head.shape.ellipse(head.box(0, muzzle_y, muzzle_w, muzzle_h), fill=255)
    head.paint.ellipse(head.box(0, muzzle_y, muzzle_w, muzzle_h), fill=muzzle, outline=_mix(muzzle, DARK, 0.3))
    nose_y, nose_w = muzzle_y - muzzle_h * 0.45, rng.uniform(0.13, 0.2)
    head.paint.ellipse(head.box(0, nose_y, nose_w, nose_w * 0.7), fill=_jitter(rng, DARK, 12))
    bottom = muzzle_y + muzzle_h * 0.6
    head.paint.line([head.at(0, nose_y), head.at(0, bottom)], fill=DARK, width=1)
    head.paint.arc(head.box(0, bottom - 0.1, muzzle_w * 0.6, 0.1), 20, 160, fill=DARK, width=1)
    if rng.random() < 0.3:
        head.paint.ellipse(head.box(0, bottom + 0.08, 0.1, 0.1), fill=_jitter(rng, (220, 100, 110)))


# ------------------------------------------------------------------------------------- how hard is it?

def best_threshold_accuracy(values, labels):
    """The accuracy of the best rule "class 1 if value > t" (or "< t") over all thresholds t.

    Measured on the same samples it is fitted to, so a little above the accuracy on new ones.
    """
    order = np.argsort(values, kind="stable")
    sorted_values, sorted_labels = np.asarray(values)[order], np.asarray(labels)[order]
    ones_below = np.concatenate([[0], np.cumsum(sorted_labels)])          # class-1 samples among the first k
    zeros_below = np.arange(len(values) + 1) - ones_below
    correct = zeros_below + (ones_below[-1] - ones_below)                 # "class 1 if above the k-th value"
    between_values = np.concatenate([[True], sorted_values[1:] > sorted_values[:-1], [True]])
    correct = correct[between_values]                                     # a threshold cannot split equal values
    return float(max(correct.max(), (len(values) - correct).max()) / len(values))


def logistic_regression_accuracy(x_train, y_train, x_test, y_test, steps=1000, learning_rate=0.5, l2=1e-3):
    """Test accuracy of a logistic regression on standardised features, fitted by full-batch gradient descent."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    weights, bias = np.zeros(x_train.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x_train @ weights + bias)))
        error = p - y_train
        weights -= learning_rate * (x_train.T @ error / len(y_train) + l2 * weights)
        bias -= learning_rate * error.mean()
    return float((((x_test @ weights + bias) > 0) == (y_test == 1)).mean())


def difficulty_report(folder, size=128, test_fraction=0.3, seed=0):
    """{name: accuracy}: each single global statistic with its best threshold, and the 32x32 logistic baseline."""
    rgb = load_image_folder(folder, size, grayscale=False, cache_dir=False)
    gray = rgb.images @ np.array([0.299, 0.587, 0.114], np.float32)
    labels = rgb.labels
    statistics = {"mean intensity": gray.mean(axis=(1, 2)), "std intensity": gray.std(axis=(1, 2))}
    for channel, name in enumerate("RGB"):
        statistics[f"mean {name}"] = rgb.images[..., channel].mean(axis=(1, 2))
        statistics[f"std {name}"] = rgb.images[..., channel].std(axis=(1, 2))
    report = {name: best_threshold_accuracy(values, labels) for name, values in statistics.items()}
    small = load_image_folder(folder, 32, grayscale=True, cache_dir=False).images.reshape(len(labels), -1)
    test = np.random.default_rng(seed).random(len(labels)) < test_fraction
    report["logistic regression, 32x32 gray"] = logistic_regression_accuracy(
        small[~test], labels[~test], small[test], labels[test])
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description="Draw the built-in cats-vs-dogs dataset.")
    parser.add_argument("out_dir", help="the folder to write cat/ and dog/ into")
    parser.add_argument("--n-per-class", type=int, default=1000, help="images per class (default 1000)")
    parser.add_argument("--size", type=int, default=128, help="width and height in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed draws the same files (default 0)")
    parser.add_argument("--report", action="store_true", help="print how separable simple baselines find it")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    generate_catdog(args.out_dir, args.n_per_class, args.size, args.seed)
    elapsed = time.perf_counter() - start
    print(f"{2 * args.n_per_class} images in {elapsed:.1f} s ({2 * args.n_per_class / elapsed:.0f} images/s)")
    if args.report:
        for name, accuracy in difficulty_report(args.out_dir, args.size).items():
            print(f"{name:>34}: {accuracy:.3f}")


if __name__ == "__main__":
    main()

"""Train-time augmentation of a batch of images: random flips, crops and lighting, a new variant each epoch.

    from tinycnn.data.augment import Augment
    augment = Augment(flip=True, crop_scale=(0.8, 1.0), brightness=0.2, contrast=0.2, seed=0)
    x_batch = augment(x_batch)          # (N, H, W, C) float32 in [0, 1] -> same shape, new pixels

Each image of the batch draws its own:
- horizontal flip, with probability 1/2 (`flip=True`);
- random resized crop: a window covering a fraction in `crop_scale` of the image's area, with the image's
  aspect ratio, at a random place, stretched back to (H, W) by bilinear interpolation (NumPy, the whole batch
  at once, rows then columns). `crop_scale=None` or (1, 1) turns it off;
- contrast: pixels move away from (or towards) the image's mean by a factor in [1 - contrast, 1 + contrast];
- brightness: a shift in [-brightness, +brightness] is added to every pixel;
then the result is clipped to [0, 1]. The images keep their order, so the labels of the batch still apply.

Randomness comes from `rng` (a np.random.Generator), else a new one seeded with `seed`, else the engine's
generator (tinycnn.manual_seed makes it repeatable). The same seed and the same batches give the same output;
every call moves the generator on, so two epochs see different variants.
"""
import numpy as np

from .. import random as engine_random


class Augment:
    """Random flip, resized crop, contrast and brightness for a batch (N, H, W, C); see the module docstring."""

    def __init__(self, flip=True, crop_scale=(0.8, 1.0), brightness=0.2, contrast=0.2, seed=None, rng=None):
        if crop_scale is not None:
            low, high = crop_scale
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {crop_scale}")
        if brightness < 0 or contrast < 0 or contrast > 1:
            raise ValueError(f"need brightness >= 0 and 0 <= contrast <= 1, got {brightness}, {contrast}")
        self.flip = bool(flip)
        self.crop_scale = None if crop_scale is None or tuple(crop_scale) == (1.0, 1.0) else tuple(crop_scale)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        if rng is None:
            rng = engine_random.generator() if seed is None else np.random.default_rng(seed)
        self.rng = rng

    def __call__(self, images):
        """A new float32 batch, augmented; `images` itself is left unchanged."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"Augment expects a batch (N, H, W, C), got shape {images.shape}")
        out = images.astype(np.float32, copy=True)
        if len(out) == 0:
            return out
        if self.crop_scale is not None:
            out = self._random_resized_crop(out)
        if self.flip:
            self._random_flip(out)
        if self.contrast > 0:
            self._random_contrast(out)
        if self.brightness > 0:
            self._random_brightness(out)
        return np.clip(out, 0.0, 1.0, out=out)

    def _random_flip(self, images):
        """Mirror each image left-right with probability 1/2, in place."""
        flipped = self.rng.random(len(images)) < 0.5
        images[flipped] = images[flipped, :, ::-1]

    def _random_contrast(self, images):
        """Spread each image's pixels from its mean by a random factor, in place: mean + (x - mean) * factor."""
        factor = self.rng.uniform(1 - self.contrast, 1 + self.contrast, len(images)).astype(np.float32)
        mean = images.mean(axis=(1, 2, 3), keepdims=True)
        images -= mean
        images *= factor[:, None, None, None]
        images += mean

    def _random_brightness(self, images):
        """Add a random shift to each image, in place."""
        shift = self.rng.uniform(-self.brightness, self.brightness, len(images)).astype(np.float32)
        images += shift[:, None, None, None]

    def _random_resized_crop(self, images):
        """Per image, a window of random area fraction and place, stretched back to (H, W)."""
        n, height, width, _ = images.shape
        side = np.sqrt(self.rng.uniform(self.crop_scale[0], self.crop_scale[1], n))   # window side / image side
        top = self.rng.random(n) * (1 - side) * height
        left = self.rng.random(n) * (1 - side) * width
        rows = _sample_positions(top, side * height, height)      # (N, H) source row of each output row
        cols = _sample_positions(left, side * width, width)       # (N, W)
        stretched = _interpolate_rows(images, rows)
        stretched = _interpolate_rows(stretched.swapaxes(1, 2), cols).swapaxes(1, 2)   # columns: rows transposed
        return np.ascontiguousarray(stretched)


def _sample_positions(start, length, count):
    """Source coordinates of `count` output pixel centres spread over [start, start + length) (N, count)."""
    centres = (np.arange(count) + 0.5) / count                       # in (0, 1)
    return start[:, None] + centres[None, :] * length[:, None] - 0.5


def _interpolate_rows(images, positions):
    """Linear interpolation of images (N, H, W, C) along the rows, at per-image positions (N, H_out)."""
    positions = np.clip(positions, 0, images.shape[1] - 1)
    below = np.floor(positions).astype(np.int64)
    above = np.minimum(below + 1, images.shape[1] - 1)
    weight = (positions - below).astype(np.float32)[:, :, None, None]
    batch = np.arange(len(images))[:, None]
    low, high = images[batch, below], images[batch, above]             # (N, H_out, W, C) each
    high -= low                                                         # low + (high - low) * weight, in place
    high *= weight
    high += low
    return high

"""Per-image augmentation policies for the data workers: random resized crop with aspect jitter, colour jitter
in HSV, random erasing, and RandAugment.

    from tinycnn.data.policies import Compose, RandomResizedCrop, ColorJitterHSV, RandAugment, RandomErasing
    policy = Compose([RandomResizedCrop(scale=(0.35, 1)), RandAugment(2, 9), RandomErasing(0.25)], seed=0)
    ds = ds.map(lambda image, label: (policy(image), label))    # one image (H, W, C), in worker threads
    ds = ds.batch(32).map(policy.on_batch)                       # or a batch (images, labels), image by image

Every policy takes one image (H, W, C) — uint8 in 0..255, or float in [0, 1] — and gives back the same shape
and dtype, values in the same range. They draw from `rng` (a numpy Generator), else `seed`, else the engine's
generator; one policy object may serve several worker threads (numpy Generators are thread-safe, the draws'
interleaving then varies run to run).

- RandomResizedCrop(scale, ratio): a window of area fraction s ~ U(scale) and aspect ratio r (log-uniform in
  `ratio`, width / height), at a uniform place, stretched back to (H, W) by bilinear interpolation (ten tries at
  a window that fits, then the whole image), as torchvision's.
- ColorJitterHSV(hue, saturation, value): h += U(−hue, hue) (in turns), s ·= U(1 − saturation, 1 + saturation),
  v ·= U(1 − value, 1 + value), in HSV; grayscale images get the value factor only.
- RandomErasing(p, scale, ratio): with probability p, a box of area fraction in `scale` and aspect in `ratio`
  filled with uniform noise over the image's range (Zhong et al.).
- RandAugment(num_ops, magnitude): `num_ops` ops drawn uniformly (with replacement) from identity,
  autocontrast, equalize, rotate, solarize, color, posterize, contrast, brightness, sharpness, shear x/y,
  translate x/y, each at strength magnitude / 10 of its range (magnitude 0..10, as the paper's N, M; signs
  drawn at random). Pillow's ops on uint8; a float image goes through uint8 (pixels that came from 0..255
  come back exactly).
"""
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .. import random as engine_random
from .augment import _interpolate_rows, _sample_positions


def _generator(seed, rng):
    if rng is not None:
        return rng
    return engine_random.generator() if seed is None else np.random.default_rng(seed)


def _check_image(image, owner):
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"{owner} expects one image (H, W, C), got shape {image.shape}")
    return image


def _value_range(image):
    return 255.0 if image.dtype == np.uint8 else 1.0


def _restore(values, like):
    """float values back to the dtype of `like`, clipped to its range."""
    if like.dtype == np.uint8:
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.clip(values, 0.0, 1.0).astype(like.dtype, copy=False)


class Policy:
    """One image in, one image out (same shape, dtype and range); `on_batch(images, labels)` for batches."""

    def __init__(self, seed=None, rng=None):
        self.rng = _generator(seed, rng)

    def __call__(self, image):
        raise NotImplementedError

    def on_batch(self, images, labels=None):
        """Each image of a batch (N, H, W, C) through the policy; labels pass unchanged (for Dataset.map / fit's
        augment on batches)."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"{type(self).__name__}.on_batch expects (N, H, W, C), got shape {images.shape}")
        out = np.stack([self(image) for image in images]) if len(images) else images.copy()
        return out if labels is None else (out, labels)


class Compose(Policy):
    """The policies in turn."""

    def __init__(self, policies, seed=None, rng=None):
        super().__init__(seed, rng)
        self.policies = list(policies)

    def __call__(self, image):
        for policy in self.policies:
            image = policy(image)
        return image


class RandomResizedCrop(Policy):
    def __init__(self, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None, rng=None):
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"RandomResizedCrop: scale must be (low, high) with 0 < low <= high <= 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop: ratio must be (low, high) with 0 < low <= high, got {ratio}")
        super().__init__(seed, rng)
        self.scale, self.log_ratio = tuple(scale), (math.log(ratio[0]), math.log(ratio[1]))

    def window(self, height, width):
        """(top, left, window height, window width) in pixels (floats)."""
        for _ in range(10):
            area = height * width * self.rng.uniform(*self.scale)
            aspect = math.exp(self.rng.uniform(*self.log_ratio))
            h, w = math.sqrt(area / aspect), math.sqrt(area * aspect)
            if h <= height and w <= width:
                return self.rng.uniform(0, height - h), self.rng.uniform(0, width - w), h, w
        return 0.0, 0.0, float(height), float(width)

    def __call__(self, image):
        image = _check_image(image, "RandomResizedCrop")
        height, width, _ = image.shape
        top, left, h, w = self.window(height, width)
        rows = _sample_positions(np.array([top]), np.array([h]), height)
        cols = _sample_positions(np.array([left]), np.array([w]), width)
        out = _interpolate_rows(image[None].astype(np.float32), rows)
        out = _interpolate_rows(out.swapaxes(1, 2), cols).swapaxes(1, 2)[0]
        return _restore(out, image)


class ColorJitterHSV(Policy):
    def __init__(self, hue=0.02, saturation=0.3, value=0.3, seed=None, rng=None):
        if not (0 <= hue <= 0.5 and 0 <= saturation <= 1 and 0 <= value <= 1):
            raise ValueError(f"ColorJitterHSV: need 0 <= hue <= 0.5, 0 <= saturation, value <= 1; "
                             f"got {hue}, {saturation}, {value}")
        super().__init__(seed, rng)
        self.hue, self.saturation, self.value = float(hue), float(saturation), float(value)

    def __call__(self, image):
        image = _check_image(image, "ColorJitterHSV")
        scale = _value_range(image)
        shift = self.rng.uniform(-self.hue, self.hue)
        s_factor = self.rng.uniform(1 - self.saturation, 1 + self.saturation)
        v_factor = self.rng.uniform(1 - self.value, 1 + self.value)
        x = image.astype(np.float32) / scale
        if image.shape[2] != 3:
            return _restore(x * v_factor * scale, image)
        h, s, v = rgb_to_hsv(x)
        rgb = hsv_to_rgb((h + shift) % 1.0, np.clip(s * s_factor, 0, 1), np.clip(v * v_factor, 0, 1))
        return _restore(rgb * scale, image)


def rgb_to_hsv(rgb):
    """(H, W, 3) in [0, 1] -> h (turns, [0, 1)), s, v, each (H, W)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    s = np.where(v > 0, delta / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return h, s, v


def hsv_to_rgb(h, s, v):
    """The inverse of rgb_to_hsv: (H, W, 3) in [0, 1]. Channel n ∈ (5, 3, 1) for (r, g, b):
    v − v s · clip(min(k, 4 − k), 0, 1) with k = (n + 6h) mod 6."""
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + 6.0 * h) % 6.0
        channels.append(v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.stack(channels, axis=-1)


class RandomErasing(Policy):
    def __init__(self, p=0.25, scale=(0.02, 0.33), ratio=(0.3, 3.3), seed=None, rng=None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomErasing: p must be in [0, 1], got {p}")
        super().__init__(seed, rng)
        self.p = float(p)
        self.crop = RandomResizedCrop(scale, ratio, rng=self.rng)

    def __call__(self, image):
        image = _check_image(image, "RandomErasing")
        if self.rng.random() >= self.p:
            return image.copy()
        height, width, channels = image.shape
        top, left, h, w = self.crop.window(height, width)
        top, left = int(top), int(left)
        h, w = max(1, int(round(h))), max(1, int(round(w)))
        out = image.copy()
        noise = self.rng.uniform(0, _value_range(image), (min(h, height - top), min(w, width - left), channels))
        out[top:top + h, left:left + w] = _restore(noise, image)
        return out


# RandAugment's ops: name -> (function of (PIL image, strength in [0, 1], sign ±1, fill), signed?)
def _affine(image, matrix, fill):
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=fill)


_OPS = {
    "identity": lambda im, m, sign, fill: im,
    "autocontrast": lambda im, m, sign, fill: ImageOps.autocontrast(im),
    "equalize": lambda im, m, sign, fill: ImageOps.equalize(im),
    "rotate": lambda im, m, sign, fill: im.rotate(sign * 30.0 * m, resample=Image.BILINEAR, fillcolor=fill),
    "solarize": lambda im, m, sign, fill: ImageOps.solarize(im, int(round(256 - 256 * m))),
    "color": lambda im, m, sign, fill: ImageEnhance.Color(im).enhance(1 + sign * 0.9 * m),
    "posterize": lambda im, m, sign, fill: ImageOps.posterize(im, int(round(8 - 4 * m))),
    "contrast": lambda im, m, sign, fill: ImageEnhance.Contrast(im).enhance(1 + sign * 0.9 * m),
    "brightness": lambda im, m, sign, fill: ImageEnhance.Brightness(im).enhance(1 + sign * 0.9 * m),
    "sharpness": lambda im, m, sign, fill: ImageEnhance.Sharpness(im).enhance(1 + sign * 0.9 * m),
    "shear_x": lambda im, m, sign, fill: _affine(im, (1, sign * 0.3 * m, 0, 0, 1, 0), fill),
    "shear_y": lambda im, m, sign, fill: _affine(im, (1, 0, 0, sign * 0.3 * m, 1, 0), fill),
    "translate_x": lambda im, m, sign, fill: _affine(im, (1, 0, sign * 0.45 * m * im.size[0], 0, 1, 0), fill),
    "translate_y": lambda im, m, sign, fill: _affine(im, (1, 0, 0, 0, 1, sign * 0.45 * m * im.size[1]), fill),
}


class RandAugment(Policy):
    ops = tuple(_OPS)

    def __init__(self, num_ops=2, magnitude=9, seed=None, rng=None):
        if not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"RandAugment: num_ops must be an int ≥ 0, got {num_ops!r}")
        if not 0 <= magnitude <= 10:
            raise ValueError(f"RandAugment: magnitude must be in [0, 10], got {magnitude!r}")
        super().__init__(seed, rng)
        self.num_ops, self.magnitude = num_ops, float(magnitude)

    def __call__(self, image):
        image = _check_image(image, "RandAugment")
        channels = image.shape[2]
        if channels not in (1, 3):
            raise ValueError(f"RandAugment works on grayscale or RGB images, got {channels} channels")
        as_uint8 = image if image.dtype == np.uint8 else np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        pil = Image.fromarray(as_uint8[..., 0] if channels == 1 else as_uint8)
        fill = 128 if channels == 1 else (128, 128, 128)
        strength = self.magnitude / 10.0
        for name in self.rng.choice(self.ops, self.num_ops):
            sign = 1.0 if self.rng.random() < 0.5 else -1.0
            pil = _OPS[name](pil, strength, sign, fill)
        out = np.asarray(pil, np.uint8).reshape(image.shape)
        return out if image.dtype == np.uint8 else (out / np.float32(255)).astype(image.dtype)

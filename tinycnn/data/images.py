"""Decode one image file into the array a model eats: (H, W, C) float32 in [0, 1].

    from tinycnn.data.images import load_image
    x = load_image("cat/1.jpg", img_size=100, grayscale=True)      # (100, 100, 1) float32

The steps, each a small function below:

1. `open_image`: Pillow reads the file (JPEG, PNG, BMP, GIF, WebP, TIFF, ... anything Pillow knows; of an
   animated GIF/WebP the first frame), and the EXIF orientation tag is applied, so a phone photo taken sideways
   comes out upright. A file Pillow cannot read (not an image, truncated, empty, a decompression bomb) raises
   `ImageDecodeError` naming the file. Pillow's decompression-bomb guard is left on.
2. `to_gray_or_rgb`: whatever Pillow's mode, the result is 8-bit "L" (1 channel) or "RGB" (3 channels):
   - transparency (RGBA, LA, PA, P or L or RGB with a transparent colour) is composited on WHITE, the way a
     browser shows a transparent PNG on a white page (dropping the alpha would instead reveal whatever colour
     happens to hide under the transparent pixels, often black);
   - 16-bit gray (I;16*, and I, read as 16-bit) is scaled 0..65535 -> 0..255 (Pillow's own convert would
     clip everything above 255 to white);
   - 32-bit float (F) is read as [0, 1] if all values lie there, else as [0, 255] if they lie there, else
     stretched from its min..max;
   - CMYK, YCbCr, bilevel "1", palette "P" ... go through Pillow's convert to RGB;
   - colour -> gray uses Pillow's ITU-R 601 luma, L = 0.299 R + 0.587 G + 0.114 B (the same as OpenCV's).
3. `resize_image` to `img_size` (an int for a square, or (height, width)), bilinear, one of three ways:
   - "stretch": straight to the size, ignoring aspect ratio (the tutorial's cv2.resize);
   - "crop": keep aspect ratio, scale to cover the size, cut the overflow evenly from both sides;
   - "pad": keep aspect ratio, scale to fit inside, fill the rest with black evenly on both sides.
   Pillow's bilinear filter widens when it shrinks (it averages every source pixel under an output pixel),
   so a big photo shrunk to 100x100 is smoother than cv2.INTER_LINEAR's, which samples only 2x2 pixels.
4. To NumPy: uint8 (H, W, C) (`load_image_uint8`, what the folder cache stores), or float32 / 255 (`load_image`).
"""
import numpy as np
from PIL import Image, ImageOps

from ..checks import UserInputError

RESIZE_MODES = ("stretch", "crop", "pad")
_BILINEAR = Image.Resampling.BILINEAR
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WHITE = (255, 255, 255, 255)


class ImageDecodeError(UserInputError):
    """A file could not be read as an image; the message names the file and Pillow's reason."""


def parse_size(img_size):
    """`img_size` as (height, width): an int n means (n, n)."""
    if isinstance(img_size, (int, np.integer)) and not isinstance(img_size, bool):
        size = (int(img_size), int(img_size))
    elif isinstance(img_size, (tuple, list)) and len(img_size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in img_size):
        size = (int(img_size[0]), int(img_size[1]))
    else:
        raise UserInputError(f"img_size must be an int or a (height, width) pair of ints, got {img_size!r}")
    if min(size) < 1:
        raise UserInputError(f"img_size must be positive, got {img_size!r}")
    return size


def open_image(path, draft_size=None):
    """Read `path` with Pillow: first frame, pixels loaded, EXIF orientation applied. Raises ImageDecodeError.
    draft_size=(width, height): a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale still at least that
    big (Image.draft), much faster when the picture will be shrunk anyway; other formats ignore it."""
    try:
        with Image.open(path) as img:
            if draft_size is not None and img.format == "JPEG":
                img.draft(None, tuple(draft_size))
            img.load()                               # decode now: a truncated file fails here, not later
            upright = ImageOps.exif_transpose(img)   # a copy, rotated/flipped as the EXIF tag says
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{path}: refused as a possible decompression bomb ({exc})") from exc
    except (OSError, ValueError, EOFError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise ImageDecodeError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    return upright


def to_gray_or_rgb(img, grayscale):
    """Any Pillow image -> an 8-bit "L" image (grayscale=True) or an "RGB" one; see the module docstring."""
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _sixteen_bit_to_l(img)
    elif img.mode == "F":
        img = _float_to_l(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        img = _composite_on_white(img)
    if img.mode not in ("L", "RGB"):
        try:
            img = img.convert("RGB")
        except ValueError as exc:
            raise ImageDecodeError(f"cannot convert Pillow mode {img.mode!r} to RGB: {exc}") from exc
    target = "L" if grayscale else "RGB"
    return img if img.mode == target else img.convert(target)


def _sixteen_bit_to_l(img):
    """16-bit gray -> 8-bit "L", scaling 0..65535 to 0..255 (65535 / 257 = 255)."""
    values = np.clip(np.asarray(img).astype(np.float32), 0, 65535)
    return Image.fromarray(np.rint(values / 257.0).astype(np.uint8))


def _float_to_l(img):
    """32-bit float gray -> 8-bit "L": read as [0, 1], else as [0, 255], else stretched from min..max."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float32))
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        values = values * 255.0
    elif low < 0.0 or high > 255.0:
        values = (values - low) * (255.0 / max(high - low, 1e-12))
    return Image.fromarray(np.rint(values).astype(np.uint8))


def _composite_on_white(img):
    """Blend an image with transparency over a white background (the result is RGB)."""
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")


def resize_image(img, size, resize="stretch", resample=_BILINEAR):
    """Resize a Pillow image to size=(height, width), by "stretch", "crop" or "pad" (bilinear unless resample
    names another Pillow filter)."""
    height, width = size
    if resize == "stretch":
        return img.resize((width, height), resample)
    if resize == "crop":
        return ImageOps.fit(img, (width, height), method=resample)
    if resize == "pad":
        return ImageOps.pad(img, (width, height), method=resample, color=0)
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")


def image_to_uint8(img, img_size, grayscale=True, resize="stretch"):
    """A Pillow image (already opened) -> uint8 array (H, W, C), C = 1 if grayscale else 3."""
    size = parse_size(img_size)
    pixels = np.asarray(resize_image(to_gray_or_rgb(img, grayscale), size, resize), dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def load_image_uint8(path, img_size, grayscale=True, resize="stretch"):
    """Decode the file at `path` to uint8 (H, W, C). Raises ImageDecodeError naming the file."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    img = open_image(path)
    try:
        return image_to_uint8(img, img_size, grayscale, resize)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{path}: {exc}") from exc


def load_image(path, img_size, grayscale=True, resize="stretch"):
    """Decode the file at `path` to the model's input: float32 (H, W, C) in [0, 1]."""
    return np.divide(load_image_uint8(path, img_size, grayscale, resize), np.float32(255.0), dtype=np.float32)

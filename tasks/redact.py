"""python -m tinycnn.redact MODEL IMAGE... --mode pixelate|blur|fill|replace --out DIR: hide licence plates.

MODEL is a plates-seg model (its mask finds every plate) or a plates-box model (the detector, --head center:
every plate it finds above its score threshold; the regressor, --head global: its one box, the largest plate).
Each found plate region is grown by --margin pixels and filled out to its bounding rectangle (plates
are rectangles; a mask with holes would leave letters showing). Inside those rectangles:
- pixelate: each block of about half the plate's height becomes its mean colour (at most 2 blocks high:
  no letter survives);
- blur: a Gaussian blur with a radius of 0.6 plate heights, then pixelated in blocks of a sixth of the plate
  height, so that the blur cannot be undone;
- fill: the region's mean colour, solid.
- replace --text "ABC 1234" (the tutorial's twist): a new plate reading the text, in colours and a stroke
  weight taken from the plate's own pixels, warped onto the plate's quadrilateral (the minimum-area rectangle
  of each plate region: a mask's rotated rectangle, or the box) with feathered edges (tasks/plate_replace.py);
  only pixels inside the plate region grown by --margin change.
Every other pixel is written back exactly as decoded (the output is a PNG, lossless): OUT/<image stem>.png.
A photo where the model finds no plate is reported and NOT written, so that nobody mistakes an untouched
photo for a redacted one; a photo that cannot be read gets a one-line error; the others still run.
Exit status 0, or 1 if any photo was not written.
"""
import argparse
import math
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tinycnn.cli import refuse_overwriting_inputs
from tinycnn.data.images import open_image, to_gray_or_rgb
from tinycnn.saving import load_model, read_metadata
from tinycnn.train import task_module

from .plate_replace import min_area_rectangle, replace_plate
from .plates_pipeline import component_boxes, connected_components, output_path, predict_photos

MODES = ("pixelate", "blur", "fill", "replace")
DONE = {"pixelate": "pixelated", "blur": "blurred", "fill": "filled", "replace": "replaced"}


# ------------------------------------------------------------------------------------------ regions

def grow(mask, margin):
    """The mask dilated by `margin` pixels (a square neighbourhood)."""
    if margin <= 0:
        return mask.copy()
    image = Image.fromarray(mask.astype(np.uint8) * 255, "L")
    return np.asarray(image.filter(ImageFilter.MaxFilter(2 * margin + 1))) > 0


def redaction_rectangles(mask, margin=2):
    """The rectangles (K, 4) int (x0, y0, x1, y1), pixel edges, to redact: the bounding rectangle of each
    8-connected region of `mask` grown by `margin` pixels, clipped to the image."""
    boxes, _ = component_boxes(grow(np.asarray(mask) > 0, margin))
    return boxes.astype(np.int64)


def region_of(rectangles, height, width):
    """The (H, W) bool mask covered by the rectangles."""
    region = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in rectangles:
        region[y0:y1, x0:x1] = True
    return region


# ------------------------------------------------------------------------------------------ the three modes

def _block_means(patch, block):
    """Every block x block tile of an (h, w, 3) patch replaced by its mean colour (the last tiles may be smaller)."""
    out = np.empty_like(patch)
    for top in range(0, patch.shape[0], block):
        for left in range(0, patch.shape[1], block):
            tile = patch[top:top + block, left:left + block]
            out[top:top + block, left:left + block] = tile.reshape(-1, 3).mean(axis=0).round()
    return out


def pixelate(patch):
    """Coarse blocks: about half the rectangle's height (never under 4 px), so it is at most ~2 blocks high."""
    return _block_means(patch, max(4, math.ceil(patch.shape[0] / 2)))


def blur(patch, surroundings, offset):
    """A strong Gaussian blur (radius 0.6 heights) of the patch within its surroundings, then small blocks.

    `surroundings` is a larger crop of the photo holding the patch at `offset` (x, y), so the blur
    reads real neighbours instead of a hard edge."""
    height = patch.shape[0]
    radius = max(3.0, 0.6 * height)
    blurred = np.asarray(Image.fromarray(surroundings).filter(ImageFilter.GaussianBlur(radius)))
    x, y = offset
    blurred = blurred[y:y + patch.shape[0], x:x + patch.shape[1]]
    return _block_means(blurred, max(2, math.ceil(height / 6)))


def fill(patch):
    """One solid colour: the mean of the patch."""
    return np.broadcast_to(patch.reshape(-1, 3).mean(axis=0).round(), patch.shape).astype(patch.dtype)


def redact(pixels, rectangles, mode):
    """A copy of `pixels` (H, W, 3) uint8 with each rectangle redacted by `mode`; other pixels untouched."""
    if mode not in MODES[:3]:
        raise ValueError(f"mode must be one of {', '.join(MODES[:3])} (replace: replace_all), got {mode!r}")
    out = pixels.copy()
    height, width = pixels.shape[:2]
    for x0, y0, x1, y1 in rectangles:
        patch = pixels[y0:y1, x0:x1]
        if mode == "pixelate":
            out[y0:y1, x0:x1] = pixelate(patch)
        elif mode == "fill":
            out[y0:y1, x0:x1] = fill(patch)
        else:
            reach = math.ceil(3 * max(3.0, 0.6 * (y1 - y0)))
            sx0, sy0 = max(0, x0 - reach), max(0, y0 - reach)
            surroundings = np.ascontiguousarray(pixels[sy0:min(height, y1 + reach), sx0:min(width, x1 + reach)])
            out[y0:y1, x0:x1] = blur(patch, surroundings, (x0 - sx0, y0 - sy0))
    return out


def replace_all(pixels, mask, text, margin=2):
    """(a copy of pixels with every plate region of `mask` replaced by a plate reading `text`, the (H, W) bool
    region that may have changed: each region's minimum-area rectangle grown by `margin`, within the region's
    bounding rectangle grown by `margin` (what the other modes change: a perspective plate's rectangle pokes
    out of it at the corners))."""
    labels, count = connected_components(np.asarray(mask) > 0)
    out, changed = pixels.copy(), np.zeros(mask.shape, bool)
    height, width = mask.shape
    for label in range(1, count + 1):
        plate = labels == label
        corners = min_area_rectangle(plate)
        quad = Image.new("L", (width, height), 0)
        ImageDraw.Draw(quad).polygon([tuple(p) for p in corners], fill=1)
        bounds = region_of(redaction_rectangles(plate, margin), height, width)
        region = grow(np.asarray(quad) > 0, margin) & bounds
        out = replace_plate(out, corners, text, region)
        changed |= region
    return out, changed


def plate_mask_of(module, model, photo, output):
    """The photo's plate pixels (H, W) bool by a plates-box model (which reads its head from the metadata)
    or a plates-seg model."""
    if model.metadata.get("task") == "plates-box":
        return module.plate_mask(photo, output, model.metadata)
    return module.plate_mask(photo, output)


# ------------------------------------------------------------------------------------------ CLI

def photo_pixels(path):
    """The photo's decoded RGB pixels (H, W, 3) uint8, EXIF orientation applied (what the model sees, x 255)."""
    return np.asarray(to_gray_or_rgb(open_image(path), grayscale=False), dtype=np.uint8)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinycnn.redact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a plates-seg or plates-box model file written by tinycnn.train")
    parser.add_argument("images", nargs="+", help="photos to redact")
    parser.add_argument("--mode", choices=MODES, default="pixelate")
    parser.add_argument("--out", required=True, help="folder for the redacted PNGs")
    parser.add_argument("--margin", type=int, default=2, help="grow each plate region by this many pixels (default 2)")
    parser.add_argument("--text", default=None, help='--mode replace: the new plate\'s text, e.g. "ABC 1234"')
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --out be a folder of the input photos (their redacted copies may replace them)")
    args = parser.parse_args(argv)
    refuse_overwriting_inputs(args.images, [args.out], args.overwrite)  # never the originals, unless asked
    if (args.mode == "replace") != (args.text is not None):
        parser.error("--mode replace needs --text \"NEW TEXT\"" if args.mode == "replace"
                     else "--text goes with --mode replace")
    if args.text is not None and not args.text.strip():
        parser.error("--text is empty: give the new plate's characters")
    task = read_metadata(args.model).get("task")
    if task not in ("plates-seg", "plates-box"):
        parser.error(f"{args.model} is a {task or 'unknown'} model; redact needs a plates-seg or plates-box model")
    module = task_module(task)
    model = load_model(args.model, device=args.device, compile=False)
    used, unwritten = set(), []

    def redact_one(path, image, photo, output):
        mask = plate_mask_of(module, model, photo, output)
        rectangles = redaction_rectangles(mask, args.margin)
        if len(rectangles) == 0:
            unwritten.append(path)
            print(f"error: {path}: no plate found, nothing written", file=sys.stderr)
            return
        pixels = photo_pixels(path)
        target = output_path(args.out, path, used)
        if args.mode == "replace":
            redacted, region = replace_all(pixels, mask, args.text, args.margin)
        else:
            redacted, region = redact(pixels, rectangles, args.mode), region_of(rectangles, *pixels.shape[:2])
        Image.fromarray(redacted).save(target)
        print(f"{path} -> {target}: {len(rectangles)} plate region(s), {int(region.sum())} pixels "
              f"{DONE[args.mode]}")

    status = predict_photos(model, args.images, model.metadata["img_size"], redact_one)
    return 1 if status or unwritten else 0


if __name__ == "__main__":
    sys.exit(main())

"""Built-in synthetic licence-plate photos: car scenes drawn with Pillow, with exact boxes and masks.

    from tinycnn.tasks.synthetic_plates import ensure_builtin_plates
    from tinycnn.tasks.plates_data import read_plates
    root = ensure_builtin_plates()        # drawn once into ~/.cache/tinycnn/plates-v1-... (the user cache), then reused
    splits = read_plates(root)            # the tutorial's layout: read exactly like the real photos

Each picture is drawn from its own random generator, seeded by (seed, split, index), so the same seed gives
byte-identical files (with the same Pillow and libjpeg) and one split does not change when another grows:
1. background: a sky gradient, buildings with windows, trees and poles, a road with lane marks, and clutter
   (shapes, lines and coloured signs with letters on them, so that "text" alone does not mean "plate");
2. one car seen from the front or the back (a body, a cabin with a windscreen, lights, bumper, grille, wheels,
   a shadow), or, in `two_plate_fraction` of the pictures, two smaller cars side by side;
3. a plate on each car's bumper, in one of three styles: "eu" (white with a blue band, 4.7:1), "us" (pale
   colours, coloured letters, a state name, 2:1), "yellow" (UK rear, 4.7:1); random letters and digits in
   Pillow's built-in fonts (the scalable one at three weights, or the bitmap one enlarged), plate heights from
   7 px up to a sixth of the picture; the plate is warped by a perspective (yaw, pitch, a small rotation);
4. the photo: uneven light and a colour cast, sometimes blur, sensor noise, JPEG quality 30-95.
The box of a plate is the bounding box of its warped corners (exact, before rounding to 0.01 px in the CSV);
its mask is the warped plate polygon (pixels whose centre lies inside it), so the two agree within a pixel.
Nothing is drawn over a plate. Written in the tutorial's layout:
`{train,val,test}/<split>_NNNNN.jpg`, `annotations/<split>_annotations.csv`, `masks/<split>/<name>.png` (0/255).
"""
import csv
import functools
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tinycnn.data.folder import user_cache_dir

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")

# style: (probability, aspect width/height, real width in metres)
PLATE_STYLES = {"eu": (0.45, 4.73, 0.52), "us": (0.35, 2.0, 0.305), "yellow": (0.20, 4.73, 0.52)}
PLATE_DESIGN_HEIGHT = 64
TEXT_PATTERNS = {
    "eu": ["LL-NNN-LL", "L LL NNNN", "LL NNNN", "NNN LLL", "LLL NNNN", "LL NN LLL"],
    "us": ["NLLLNNN", "LLL NNNN", "NNN LLL", "LLLNNN", "NLLNNN"],
    "yellow": ["LLNN LLL", "LNNN LLL"],
}
LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q, as on many real plates
STATE_NAMES = ["CALIFORNIA", "TEXAS", "OHIO", "NEVADA", "OREGON", "FLORIDA", "MAINE", "IOWA", "UTAH", "GEORGIA"]
CAR_COLOURS = [(235, 235, 235), (190, 192, 196), (120, 122, 128), (25, 25, 28), (170, 25, 30), (25, 60, 140),
               (30, 80, 50), (210, 170, 40), (110, 70, 40), (230, 120, 30), (90, 30, 90), (200, 210, 225)]
CAR_WIDTH_M = 1.8
BODY_HEIGHT = 0.42    # of the car's width
WHEEL_DROP = 0.07     # how far the wheels reach below the body, of the car's width
PLATE_ON_BODY = 0.66  # the plate's centre, down from the body's top, as a share of the body's height
MIN_PLATE_HEIGHT_PX = 7.0
SCENES = ("cars", "street")
STREET_PLATE_WIDTH_PX = (10.0, 200.0)   # draw_street_scene: plate widths, log-uniform
STREET_MAX_PLATES = 4
NIGHT_FRACTION = 0.25


# ----------------------------------------------------------------------------------------------- the data set

def generate_plates(out_dir, n_train, n_val, n_test, size=(320, 240), seed=0, two_plate_fraction=0.15,
                    progress=False, scene="cars"):
    """Draw n_train / n_val / n_test pictures of `size` (width, height) into `out_dir`; returns its Path.

    Writes the tutorial's layout (see the module docstring) plus a README.md saying how it was made.
    The folder may exist but must not already hold split folders, annotations or masks.
    scene "cars" (default): draw_scene's one or two cars; "street": draw_street_scene's 1-4 plates of
    10-200 px, more blur, a quarter at night (two_plate_fraction is then not used).
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
    out_dir = Path(out_dir)
    width, height = size
    if width < 64 or height < 48:
        raise ValueError(f"size must be at least (64, 48) pixels, got {size}")
    if seed < 0 or min(n_train, n_val, n_test) < 0:
        raise ValueError(f"seed and counts must not be negative, got seed={seed}, counts {n_train}, {n_val}, {n_test}")
    for part in (*SPLITS, "annotations", "masks"):
        if (out_dir / part).exists():
            raise FileExistsError(f"{out_dir / part} already exists: generate into an empty folder")
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    counts = dict(zip(SPLITS, (n_train, n_val, n_test)))
    bar = _progress_bar(sum(counts.values()), progress)
    for split_index, (split, count) in enumerate(counts.items()):
        (out_dir / split).mkdir()
        (out_dir / "masks" / split).mkdir(parents=True)
        rows = []
        for index in range(count):
            name = f"{split}_{index:05d}.jpg"
            rng = np.random.default_rng([seed, split_index, index])
            rows += _write_picture(out_dir, split, name, rng, size, two_plate_fraction, scene)
            bar.update(1)
        _write_csv(out_dir / "annotations" / f"{split}_annotations.csv", rows)
    bar.close()
    _write_readme(out_dir, counts, size, seed, two_plate_fraction, scene)
    return out_dir


def ensure_builtin_plates(cache_root=None, n_train=2000, n_val=250, n_test=250, size=(320, 240), seed=0,
                          two_plate_fraction=0.15, progress=True, scene="cars"):
    """The folder of the built-in synthetic plates with these settings, generated on first use; returns its Path.

    cache_root defaults to tinycnn's user cache (tinycnn.data.folder.user_cache_dir(), e.g. ~/.cache/tinycnn).

    The folder, `<cache_root>/plates-v<version>-<w>x<h>-<n_train>-<n_val>-<n_test>-p<two-plate %>-seed<seed>`,
    is generated into a temporary folder beside it and renamed into place when complete, so an interrupted run
    leaves no half data set, and two processes racing both end up with one complete folder.
    """
    cache_root = Path(cache_root if cache_root is not None else user_cache_dir())
    name = (f"plates-v{GENERATOR_VERSION}-{size[0]}x{size[1]}-{n_train}-{n_val}-{n_test}"
            f"-p{round(two_plate_fraction * 100)}-seed{seed}" + ("" if scene == "cars" else f"-{scene}"))
    final = cache_root / name
    if final.is_dir():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root))
    try:
        generate_plates(temporary, n_train, n_val, n_test, size=size, seed=seed,
                        two_plate_fraction=two_plate_fraction, progress=progress, scene=scene)
        os.rename(temporary, final)
    except OSError:
        if not final.is_dir():  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return final


def _progress_bar(total, enabled):
    """A tqdm bar counting pictures, or a silent stand-in."""
    if enabled:
        from tqdm import tqdm
        return tqdm(total=total, desc="synthetic plates", unit="img")
    return _NoBar()


class _NoBar:
    """What generate_plates calls on a progress bar, doing nothing."""

    def update(self, _count):
        pass

    def close(self):
        pass


def _write_picture(out_dir, split, name, rng, size, two_plate_fraction, scene="cars"):
    """Draw one picture, save it, its mask, and return its CSV rows."""
    if scene == "street":
        photo, corners = draw_street_scene(rng, size, min_plates=1)
    else:
        photo, corners = draw_scene(rng, size, two_plate_fraction)
    quality = int(rng.integers(30, 96))
    photo.save(out_dir / split / name, quality=quality)
    mask = polygons_mask(corners, size[1], size[0])
    Image.fromarray(mask * 255, "L").save((out_dir / "masks" / split / name).with_suffix(".png"))
    return [(name, *plate_box(quad, size)) for quad in corners]


def _write_csv(path, rows):
    """The tutorial's annotation file: a header, then one row per plate, coordinates to 0.01 px."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["filename", "xmin", "ymin", "xmax", "ymax"])
        for name, *box in rows:
            writer.writerow([name, *(f"{value:.2f}" for value in box)])


def _write_readme(out_dir, counts, size, seed, two_plate_fraction, scene="cars"):
    """A README.md saying what made the folder."""
    (out_dir / "README.md").write_text(
        f"# Synthetic licence plates (tinycnn generator v{GENERATOR_VERSION})\n\n"
        f"Drawn by tinycnn.tasks.synthetic_plates.generate_plates(seed={seed}, size={size}, "
        f"two_plate_fraction={two_plate_fraction}" + ("" if scene == "cars" else f", scene={scene!r}") + "): train {counts['train']}, val {counts['val']}, "
        f"test {counts['test']} pictures.\nBoxes: annotations/<split>_annotations.csv "
        f"(filename,xmin,ymin,xmax,ymax in pixels); masks: masks/<split>/<name>.png (255 = plate).\n")


# ----------------------------------------------------------------------------------------------- geometry

def plate_box(corners, size):
    """The bounding box (xmin, ymin, xmax, ymax) of a plate's four corners, clipped to the picture."""
    xs, ys = corners[:, 0], corners[:, 1]
    return (max(xs.min(), 0.0), max(ys.min(), 0.0), min(xs.max(), size[0]), min(ys.max(), size[1]))


def polygons_mask(polygons, height, width):
    """(height, width) uint8: 1 where a pixel's centre lies inside one of the convex `polygons` ((N, 2) each)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for polygon in polygons:
        x0, y0 = (max(int(math.floor(v)), 0) for v in polygon.min(axis=0))
        x1, y1 = int(math.ceil(polygon[:, 0].max())), int(math.ceil(polygon[:, 1].max()))
        x1, y1 = min(x1, width), min(y1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        px, py = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
        sides = []
        for (ax, ay), (bx, by) in zip(polygon, np.roll(polygon, -1, axis=0)):
            sides.append((bx - ax) * (py - ay) - (by - ay) * (px - ax))  # > 0: left of edge a->b
        sides = np.stack(sides)
        inside = np.all(sides >= 0, axis=0) | np.all(sides <= 0, axis=0)
        mask[y0:y1, x0:x1] |= inside.astype(np.uint8)
    return mask


def _plate_corners(rng, centre, width, height):
    """The four corners (TL, TR, BR, BL) of a plate seen in perspective: yaw, pitch, roll and a little jitter."""
    yaw = rng.uniform(-0.22, 0.22)     # one side taller than the other
    pitch = rng.uniform(-0.08, 0.08)   # top edge wider or narrower than the bottom
    roll = math.radians(float(np.clip(rng.normal(0, 3.5), -9, 9)))
    half_w, half_h = width / 2, height / 2
    corners = np.array([[-half_w * (1 + pitch), -half_h * (1 + yaw)], [half_w * (1 + pitch), -half_h * (1 - yaw)],
                        [half_w * (1 - pitch), half_h * (1 - yaw)], [-half_w * (1 - pitch), half_h * (1 + yaw)]])
    corners += rng.uniform(-0.04, 0.04, size=(4, 2)) * height
    cos, sin = math.cos(roll), math.sin(roll)
    turned = corners @ np.array([[cos, sin], [-sin, cos]])
    return turned + np.asarray(centre, dtype=np.float64)


def _perspective_coefficients(source, target):
    """Pillow's PERSPECTIVE data (a..h) mapping each `target` corner (output) back onto its `source` corner."""
    matrix, values = [], []
    for (x, y), (u, v) in zip(target, source):
        matrix.append([x, y, 1, 0, 0, 0, -x * u, -y * u])
        matrix.append([0, 0, 0, x, y, 1, -x * v, -y * v])
        values += [u, v]
    return tuple(np.linalg.solve(np.array(matrix, dtype=np.float64), np.array(values, dtype=np.float64)))


def _paste_plate(scene, plate, corners):
    """Warp the RGBA `plate` onto `scene` so its corners land on `corners` (TL, TR, BR, BL)."""
    left, top = (int(math.floor(v)) for v in corners.min(axis=0))
    right, bottom = (int(math.ceil(v)) for v in corners.max(axis=0))
    # shrink the design first (with Pillow's antialiasing resize): the perspective warp itself does not filter
    longest = max(np.linalg.norm(corners[1] - corners[0]), np.linalg.norm(corners[2] - corners[3]))
    factor = min(1.0, 1.5 * longest / plate.width)
    small = plate.resize((max(2, round(plate.width * factor)), max(2, round(plate.height * factor))),
                         Image.Resampling.BOX if factor < 1 else Image.Resampling.NEAREST)
    source = [(0, 0), (small.width, 0), (small.width, small.height), (0, small.height)]
    data = _perspective_coefficients(source, corners - (left, top))
    warped = small.transform((right - left, bottom - top), Image.Transform.PERSPECTIVE, data,
                             resample=Image.Resampling.BICUBIC)
    scene.paste(warped, (left, top), warped)


# ----------------------------------------------------------------------------------------------- the plate

@functools.lru_cache(maxsize=4)
def _scalable_font(pixels):
    """Pillow's built-in scalable font (Aileron) at `pixels` size, loaded once."""
    return ImageFont.load_default(size=pixels)


def _plate_text(rng, style):
    """Random letters and digits in one of the style's patterns (L letter, N digit)."""
    pattern = TEXT_PATTERNS[style][rng.integers(len(TEXT_PATTERNS[style]))]
    return "".join(LETTERS[rng.integers(len(LETTERS))] if c == "L" else str(rng.integers(10)) if c == "N" else c
                   for c in pattern)


def _text_mask(text, rng, bitmap=None, stroke=None):
    """An "L" image of `text` cropped to its ink: the scalable font at a random weight, or the bitmap font."""
    bitmap = rng.random() < 0.25 if bitmap is None else bitmap
    if bitmap:
        font, stroke = ImageFont.load_default_imagefont(), 0
    else:
        font, stroke = _scalable_font(40), int(rng.integers(0, 3)) if stroke is None else stroke
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    image = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(image).text((1 - left, 1 - top), text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return image


def _paste_text(plate, text_image, area, colour, rng):
    """Fit `text_image` into `area` (x0, y0, x1, y1) of the plate, stretched a little, centred, in `colour`."""
    x0, y0, x1, y1 = area
    height = y1 - y0
    width = min(x1 - x0, round(height * text_image.width / text_image.height * rng.uniform(0.8, 1.25)))
    fitted = text_image.resize((max(1, width), max(1, height)), Image.Resampling.BILINEAR)
    left = x0 + (x1 - x0 - width) // 2
    plate.paste(colour, (left, y0, left + fitted.width, y0 + fitted.height), fitted)


def render_plate(rng, style):
    """An RGBA plate of `style` ("eu", "us", "yellow") at its design size (64 px high), random text."""
    aspect = PLATE_STYLES[style][1]
    height = PLATE_DESIGN_HEIGHT
    width = round(height * aspect)
    shade = int(rng.integers(-18, 8))
    if style == "us":
        background = _jitter_colour(rng, [(246, 246, 240), (215, 230, 245), (250, 240, 200), (235, 245, 235)]
                                    [rng.integers(4)], 10)
    else:
        background = (255, 255, 250) if style == "eu" else (250, 205, 25)
        background = tuple(int(np.clip(c + shade, 0, 255)) for c in background)
    plate = Image.new("RGBA", (width, height), background + (255,))
    draw = ImageDraw.Draw(plate)
    draw.rounded_rectangle((0, 0, width - 1, height - 1), radius=5, outline=(20, 20, 20, 255), width=2)
    text = _plate_text(rng, style)
    if style == "eu":
        band = round(width * 0.085)
        draw.rounded_rectangle((2, 2, band, height - 3), radius=3, fill=(20, 60, 170, 255))
        for angle in range(0, 360, 30):  # the ring of stars
            x = band / 2 + 0.28 * band * math.cos(math.radians(angle))
            y = height * 0.33 + 0.28 * band * math.sin(math.radians(angle))
            draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(250, 210, 0, 255))
        country = _text_mask(LETTERS[rng.integers(len(LETTERS))], rng, bitmap=False, stroke=0)
        _paste_text(plate, country, (3, round(height * 0.6), band - 1, height - 8), (255, 255, 255, 255), rng)
        _paste_text(plate, _text_mask(text, rng), (band + 5, 9, width - 6, height - 8), (15, 15, 15, 255), rng)
    elif style == "us":
        ink = [(20, 40, 120), (150, 20, 30), (20, 90, 40), (15, 15, 15)][rng.integers(4)] + (255,)
        state = _text_mask(STATE_NAMES[rng.integers(len(STATE_NAMES))], rng, bitmap=False, stroke=0)
        _paste_text(plate, state, (10, 4, width - 10, 14), ink, rng)
        _paste_text(plate, _text_mask(text, rng), (6, 18, width - 6, height - 12), ink, rng)
        draw.line((12, height - 7, width - 12, height - 7), fill=ink, width=1)
    else:
        _paste_text(plate, _text_mask(text, rng), (6, 8, width - 6, height - 8), (10, 10, 10, 255), rng)
    return plate


# ----------------------------------------------------------------------------------------------- the scene

def _jitter_colour(rng, colour, amount):
    """`colour` with each channel moved by up to +-amount."""
    return tuple(min(max(int(c + shift), 0), 255) for c, shift in zip(colour, rng.integers(-amount, amount + 1, 3)))


def _random_colour(rng, low=0, high=256):
    """An RGB colour with channels drawn from [low, high)."""
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def _draw_background(rng, size, horizon):
    """Sky gradient, buildings, trees, poles and a road below `horizon`; returns an RGB image."""
    width, height = size
    top, bottom = np.array(_random_colour(rng, 60, 230)), np.array(_random_colour(rng, 150, 256))
    t = np.linspace(0, 1, height)[:, None, None]
    sky = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3))
    scene = Image.fromarray(sky.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(scene)
    x = -int(rng.integers(0, 30))
    while x < width:  # a row of buildings standing on the horizon
        building_w = int(rng.integers(25, 110))
        building_top = int(horizon - rng.uniform(0.1, 0.9) * horizon)
        colour = _random_colour(rng, 50, 220)
        draw.rectangle((x, building_top, x + building_w, horizon), fill=colour)
        window = _jitter_colour(rng, (60, 70, 90) if rng.random() < 0.6 else (230, 220, 160), 30)
        step = int(rng.integers(8, 16))
        for wx in range(x + 4, x + building_w - 6, step):
            for wy in range(building_top + 4, int(horizon) - 6, step):
                draw.rectangle((wx, wy, wx + step // 2, wy + step // 2), fill=window)
        x += building_w + int(rng.integers(0, 20))
    for _ in range(int(rng.integers(0, 4))):  # trees and poles
        tx = int(rng.integers(0, width))
        if rng.random() < 0.5:
            radius = int(rng.integers(8, 30))
            draw.rectangle((tx - 2, horizon - radius, tx + 2, horizon), fill=(70, 50, 30))
            draw.ellipse((tx - radius, horizon - 2.5 * radius, tx + radius, horizon - 0.6 * radius),
                         fill=_jitter_colour(rng, (50, 110, 50), 30))
        else:
            draw.rectangle((tx, horizon - rng.uniform(0.3, 1.0) * horizon, tx + 3, horizon), fill=(90, 90, 95))
    road = _jitter_colour(rng, (95, 95, 100), 30)
    draw.rectangle((0, horizon, width, height), fill=road)
    draw.rectangle((0, horizon, width, horizon + rng.uniform(2, 8)), fill=_jitter_colour(rng, (160, 160, 155), 20))
    vanishing = width * rng.uniform(0.2, 0.8)
    for lane in rng.uniform(-1.5, 1.5, size=int(rng.integers(1, 4))):  # lane marks running to the horizon
        bottom_x = vanishing + lane * width
        mark = (235, 235, 225) if rng.random() < 0.7 else (230, 190, 40)
        draw.polygon([(vanishing, horizon), (bottom_x - 4, height), (bottom_x + 4, height)], fill=mark)
    return scene


def _draw_clutter(rng, scene, count):
    """Random shapes, lines and signs with letters (not plates: other colours and shapes)."""
    width, height = scene.size
    draw = ImageDraw.Draw(scene)
    for _ in range(count):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(4, width / 4), rng.uniform(4, height / 4)
        kind = rng.integers(5)
        colour = _random_colour(rng)
        if kind == 0:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        elif kind == 1:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        elif kind == 2:
            draw.line((x, y, x + rng.uniform(-w, w), y + rng.uniform(-h, h)), fill=colour,
                      width=int(rng.integers(1, 4)))
        elif kind == 3:
            points = [(x + rng.uniform(0, w), y + rng.uniform(0, h)) for _ in range(int(rng.integers(3, 6)))]
            draw.polygon(points, fill=colour)
        else:  # a sign: green, blue, red or brown with white letters, squarer than a plate
            side = rng.uniform(12, 40)
            sign = [(20, 110, 50), (20, 60, 160), (180, 30, 30), (110, 60, 30)][rng.integers(4)]
            draw.rectangle((x, y, x + 1.4 * side, y + side), fill=sign)
            letters = _text_mask("".join(LETTERS[i] for i in rng.integers(0, len(LETTERS), 3)), rng, stroke=0)
            _paste_text(scene, letters, (int(x + 2), int(y + side * 0.3), int(x + 1.4 * side - 2),
                                         int(y + side * 0.7)), (245, 245, 245), rng)


def _draw_car(rng, scene, centre_x, body_top, car_width):
    """A car seen from the front or the back, its body's top edge at `body_top`, its bumper round the plate."""
    draw = ImageDraw.Draw(scene)
    body_h, cabin_h = BODY_HEIGHT * car_width, 0.33 * car_width
    left, right = centre_x - car_width / 2, centre_x + car_width / 2
    bottom = body_top + body_h
    colour = _jitter_colour(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 15)
    dark = tuple(int(c * 0.55) for c in colour)
    wheel_w, wheel_drop = 0.13 * car_width, WHEEL_DROP * car_width
    draw.ellipse((left - 0.05 * car_width, bottom - 0.02 * car_width, right + 0.05 * car_width,
                  bottom + 1.6 * wheel_drop), fill=(25, 25, 28))  # shadow
    for wheel_x in (left + 0.04 * car_width, right - 0.04 * car_width - wheel_w):
        draw.rounded_rectangle((wheel_x, bottom - wheel_w, wheel_x + wheel_w, bottom + wheel_drop),
                               radius=0.02 * car_width, fill=(18, 18, 20))
    cabin_bottom_w, cabin_top_w = 0.86 * car_width, 0.62 * car_width
    cabin = [(centre_x - cabin_top_w / 2, body_top - cabin_h), (centre_x + cabin_top_w / 2, body_top - cabin_h),
             (centre_x + cabin_bottom_w / 2, body_top + 1), (centre_x - cabin_bottom_w / 2, body_top + 1)]
    draw.polygon(cabin, fill=colour, outline=dark)
    glass = _jitter_colour(rng, (45, 60, 80), 20)
    inset = 0.04 * car_width
    draw.polygon([(cabin[0][0] + inset, cabin[0][1] + inset), (cabin[1][0] - inset, cabin[1][1] + inset),
                  (cabin[2][0] - 2 * inset, body_top - inset / 2), (cabin[3][0] + 2 * inset, body_top - inset / 2)],
                 fill=glass)
    for side in (-1, 1):  # mirrors
        mirror_x = centre_x + side * cabin_bottom_w / 2
        draw.ellipse((mirror_x - 0.05 * car_width, body_top - 0.08 * car_width, mirror_x + 0.05 * car_width,
                      body_top), fill=colour, outline=dark)
    draw.rounded_rectangle((left, body_top, right, bottom), radius=0.07 * car_width, fill=colour, outline=dark)
    front = rng.random() < 0.5
    light = _jitter_colour(rng, (240, 240, 215), 10) if front else _jitter_colour(rng, (200, 25, 25), 20)
    for side in (-1, 1):
        light_x = centre_x + side * 0.37 * car_width
        draw.ellipse((light_x - 0.09 * car_width, body_top + 0.07 * car_width, light_x + 0.09 * car_width,
                      body_top + 0.17 * car_width), fill=light, outline=dark)
    if front:  # grille
        draw.rounded_rectangle((centre_x - 0.2 * car_width, body_top + 0.08 * car_width, centre_x + 0.2 * car_width,
                                body_top + 0.18 * car_width), radius=0.02 * car_width, fill=(35, 35, 38))
    bumper = dark if rng.random() < 0.5 else (40, 40, 44)
    draw.rounded_rectangle((left + 0.02 * car_width, body_top + 0.5 * body_h, right - 0.02 * car_width,
                            bottom - 0.03 * car_width), radius=0.03 * car_width, fill=bumper)


def _choose_plate(rng, height, slot_width, two_plates):
    """A style and the plate's width and height in the picture (height log-uniform from 7 px to height/6).

    A plate is at most 45 % of its slot (the picture, or its half for two cars) wide; with two cars, also
    small enough for its car to fit in its half, unless that would make it lower than 7 px.
    """
    styles = list(PLATE_STYLES)
    style = styles[rng.choice(len(styles), p=[PLATE_STYLES[s][0] for s in styles])]
    _, aspect, metres = PLATE_STYLES[style]
    aspect *= rng.uniform(0.92, 1.08)
    plate_h = math.exp(rng.uniform(math.log(MIN_PLATE_HEIGHT_PX), math.log(max(height / 6, MIN_PLATE_HEIGHT_PX))))
    limit = 0.45 * slot_width
    if two_plates:
        limit = min(limit, max(0.8 * slot_width * metres / CAR_WIDTH_M, MIN_PLATE_HEIGHT_PX * aspect))
    plate_w = min(plate_h * aspect, limit)
    return style, plate_w, plate_w / aspect


def _place_cars(rng, size, two_plates):
    """For each car: {style, plate_w, plate_h, plate_centre, car_w, car_x, body_top}.

    The plate is placed first, fully inside the picture with a margin for its perspective and roll; the car
    is built round it. With two cars each stays in its half of the picture, so neither hides the other's plate.
    """
    width, height = size
    slots = [(0, width / 2), (width / 2, width)] if two_plates else [(0, width)]
    cars = []
    for slot_left, slot_right in slots:
        style, plate_w, plate_h = _choose_plate(rng, height, slot_right - slot_left, two_plates)
        car_w = plate_w * CAR_WIDTH_M / PLATE_STYLES[style][2] * rng.uniform(0.9, 1.1)
        margin = 0.2 * plate_w + 3
        offset = rng.uniform(-0.04, 0.04) * car_w  # the plate a little off the car's middle
        if two_plates:
            car_w = min(car_w, 0.95 * (slot_right - slot_left))
            low, high = slot_left + car_w / 2 + 1, slot_right - car_w / 2 - 1
            car_x = rng.uniform(low, max(low, high))
            plate_x = car_x + offset
        else:
            low, high = slot_left + margin + plate_w / 2, slot_right - margin - plate_w / 2
            plate_x = rng.uniform(low, max(low, high))
            car_x = plate_x - offset
        plate_y = rng.uniform(max(0.3 * height, margin + plate_h), height - margin - plate_h)
        body_top = plate_y - PLATE_ON_BODY * BODY_HEIGHT * car_w
        cars.append(dict(style=style, plate_w=plate_w, plate_h=plate_h, plate_centre=(plate_x, plate_y),
                         car_w=car_w, car_x=car_x, body_top=body_top))
    return cars


def _finish_photo(rng, scene):
    """Uneven light, a colour cast, maybe blur, then sensor noise: the camera's part."""
    if rng.random() < 0.6:
        scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    pixels = np.asarray(scene, dtype=np.float32)
    height, width = pixels.shape[:2]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * np.linspace(-0.5, 0.5, width)[None, :]
            + np.sin(angle) * np.linspace(-0.5, 0.5, height)[:, None])
    light = rng.uniform(0.75, 1.1) + rng.uniform(0, 0.5) * ramp
    cast = rng.uniform(0.9, 1.1, size=3)
    pixels *= (light[:, :, None] * cast).astype(np.float32)
    noise = rng.standard_normal(size=pixels.shape, dtype=np.float32)
    noise *= rng.uniform(0, 7)
    pixels += noise
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB")


def draw_scene(rng, size=(320, 240), two_plate_fraction=0.15):
    """One picture (PIL RGB image) and its plates' corners [(4, 2) float64 array (TL, TR, BR, BL), ...]."""
    height = size[1]
    cars = _place_cars(rng, size, two_plates=rng.random() < two_plate_fraction)
    ground = min(car["body_top"] + (BODY_HEIGHT + WHEEL_DROP) * car["car_w"] for car in cars)
    horizon = max(min(rng.uniform(0.2, 0.65) * height, ground - 4), 0.05 * height)
    scene = _draw_background(rng, size, horizon)
    _draw_clutter(rng, scene, int(rng.integers(3, 12)))
    plates = []
    for car in sorted(cars, key=lambda car: car["car_w"]):  # the farther (smaller) car first
        _draw_car(rng, scene, car["car_x"], car["body_top"], car["car_w"])
        plates.append((car["style"], _plate_corners(rng, car["plate_centre"], car["plate_w"], car["plate_h"])))
    for style, corners in plates:  # plates last: nothing is drawn over them
        _paste_plate(scene, render_plate(rng, style), corners)
    return _finish_photo(rng, scene), [corners for _, corners in plates]


# ----------------------------------------------------------------------------------------------- street scenes

def _street_cars(rng, size, count, plate_width):
    """`count` cars side by side, each in its own slot of the width, each plate log-uniform in `plate_width`
    px wide (capped by its slot), placed like _place_cars' plates."""
    width, height = size
    cars = []
    for index in range(count):
        slot_left, slot_right = index * width / count, (index + 1) * width / count
        styles = list(PLATE_STYLES)
        style = styles[rng.choice(len(styles), p=[PLATE_STYLES[s][0] for s in styles])]
        _, aspect, metres = PLATE_STYLES[style]
        aspect *= rng.uniform(0.92, 1.08)
        low, high = plate_width[0], min(plate_width[1], 0.7 * (slot_right - slot_left), 0.25 * height * aspect)
        plate_w = math.exp(rng.uniform(math.log(low), math.log(max(low, high))))
        plate_h = max(plate_w / aspect, 3.0)
        car_w = min(plate_w * CAR_WIDTH_M / metres * rng.uniform(0.9, 1.1), 0.98 * (slot_right - slot_left))
        margin = 0.2 * plate_w + 3
        plate_x = rng.uniform(slot_left + margin + plate_w / 2, max(slot_left + margin + plate_w / 2,
                                                                    slot_right - margin - plate_w / 2))
        plate_y = rng.uniform(max(0.3 * height, margin + plate_h), max(0.3 * height, height - margin - plate_h))
        cars.append(dict(style=style, plate_w=plate_w, plate_h=plate_h, plate_centre=(plate_x, plate_y),
                         car_w=car_w, car_x=plate_x, body_top=plate_y - PLATE_ON_BODY * BODY_HEIGHT * car_w))
    return cars


def _night(rng, photo, corners):
    """Dark and blue, the plates lit by their lamps (less dark), a few bright lights."""
    pixels = np.asarray(photo, dtype=np.float32)
    height, width = pixels.shape[:2]
    lit = polygons_mask(corners, height, width).astype(np.float32) if corners else np.zeros((height, width))
    darkness = rng.uniform(0.15, 0.4)
    factor = darkness + lit * rng.uniform(0.2, 0.5)
    pixels *= factor[:, :, None] * np.array([0.85, 0.9, 1.1], np.float32)
    scene = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(0, 6))):  # street lights, headlights
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1.5, 5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 245, 200))
    return scene


def draw_street_scene(rng, size=(320, 240), min_plates=0, max_plates=STREET_MAX_PLATES,
                      plate_width=STREET_PLATE_WIDTH_PX, night_fraction=NIGHT_FRACTION):
    """A detector's training picture: min_plates..max_plates cars with plates 10-200 px wide (log-uniform),
    in perspective, blurred more often than draw_scene's, at night in `night_fraction` of the pictures.
    Returns (PIL RGB image, [(4, 2) corners of each plate])."""
    height = size[1]
    cars = _street_cars(rng, size, int(rng.integers(min_plates, max_plates + 1)), plate_width)
    ground = min([car["body_top"] + (BODY_HEIGHT + WHEEL_DROP) * car["car_w"] for car in cars] + [height])
    horizon = max(min(rng.uniform(0.2, 0.65) * height, ground - 4), 0.05 * height)
    scene = _draw_background(rng, size, horizon)
    _draw_clutter(rng, scene, int(rng.integers(3, 14)))
    plates = []
    for car in sorted(cars, key=lambda car: car["car_w"]):
        _draw_car(rng, scene, car["car_x"], car["body_top"], car["car_w"])
        plates.append((car["style"], _plate_corners(rng, car["plate_centre"], car["plate_w"], car["plate_h"])))
    for style, corners in plates:
        _paste_plate(scene, render_plate(rng, style), corners)
    if rng.random() < 0.4:  # on top of _finish_photo's own blur: motion or focus
        scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    corners = [corners for _, corners in plates]
    photo = _finish_photo(rng, scene)
    return (_night(rng, photo, corners) if rng.random() < night_fraction else photo), corners

"""What plates-box and plates-seg share: data to arrays, options, --init, resume, prediction on photos, drawing.

    splits = read_training_splits(data_source(args), skip_bad_rows=False)   # --data DIR, or the built-in set
    batch = letterbox_records(splits["train"], img_size=128)    # x (N, 3, S, S), boxes, masks on the canvas
    photo = letterbox_photo(load_image(path), 128)              # one photo and how to map back to its pixels
    boxes = photo.boxes_to_photo(model.predict(...))            # normalised canvas boxes -> the photo's pixels

A photo is letterboxed (aspect kept, grey borders) to a square of `img_size`; the models see that square,
and their boxes and masks are mapped back to the photo's own pixels before any metric is computed, so every
number is in the photo's pixels. The built-in synthetic set is described by a dict stored in the model file,
so evaluate finds the same pictures without flags.
"""
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import tinycnn
from tinycnn.callbacks import EarlyStopping
from tinycnn.checks import UserInputError
from tinycnn.cli import positive_int
from tinycnn.saving import load_optimizer_state
from tinycnn.ops.detection import component_stats, label_components

from .box_ops import augment_sample, boxes_from_letterbox, boxes_to_letterbox, letterbox, letterbox_mask
from .common import Training, add_common_train_arguments, print_json
from .plates_data import largest_box, load_image, load_sample, read_plates
from .plates_stream import PlateStream
from .synthetic_plates import ensure_builtin_plates

# The built-in synthetic set a default `python -m tinycnn.train plates-box|plates-seg` trains on (the task sets
# the number of training pictures, --synthetic N: more for pre-training). Its validation and test splits.
BUILTIN_SIZE = (320, 240)
BUILTIN_VAL = 60
BUILTIN_TEST = 60
SEED_OF_BUILTIN = 0


# --------------------------------------------------------------------------------------------- options

def add_plate_train_arguments(parser, epochs, batch_size, img_size, synthetic, img_size_default_help=None):
    """The options both plate tasks take (the common ones of tasks/common.py first). img_size None: the task
    picks it later (img_size_default_help says how)."""
    add_common_train_arguments(parser, epochs=epochs, batch_size=batch_size)
    parser.add_argument("--img-size", type=positive_int, default=img_size,
                        help=f"side of the letterboxed square the model sees (default {img_size_default_help or img_size})")
    parser.add_argument("--synthetic", type=int, default=synthetic, metavar="N",
                        help=f"without --data: how many built-in synthetic training pictures (default {synthetic})")
    parser.add_argument("--init", metavar="RUN_DIR",
                        help="start from RUN_DIR/best.tcnn's weights wherever names and shapes match")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="leave out images with bad annotation rows instead of stopping")
    parser.add_argument("--no-augment", action="store_true", help="no flips, shifts, rotations or colour jitter")
    parser.add_argument("--patience", type=int, default=10, help="early stopping patience in epochs (default 10)")


def data_source(args):
    """What the run trains on, as stored in the model's metadata: a folder, or the built-in set's settings."""
    if args.data:
        return {"data": os.path.abspath(args.data)}
    return {"builtin": {"n_train": args.synthetic, "n_val": BUILTIN_VAL, "n_test": BUILTIN_TEST,
                        "size": list(BUILTIN_SIZE), "seed": SEED_OF_BUILTIN}}


def read_source(source, splits=None, skip_bad_rows=False, data=None):
    """{split: [PlateRecord]} of `data` if given, else of the metadata's source (generating the built-in set)."""
    if data is None and "builtin" in source:
        settings = dict(source["builtin"])
        settings["size"] = tuple(settings["size"])
        data = ensure_builtin_plates(**settings)
    elif data is None:
        data = source["data"]
    return read_plates(data, splits=splits, skip_bad_rows=skip_bad_rows)


def read_training_splits(source, skip_bad_rows):
    """The train and val records; a data folder without a val/ split is an error that says what to add."""
    root = source.get("data")
    if root is not None and not (Path(root) / "val").is_dir():
        raise FileNotFoundError(f"{root} has no val/ folder: the plate tasks pick their best epoch on val/, "
                                "so give the folder train/, val/ (and test/) with their annotations")
    splits = read_source(source, ["train", "val"], skip_bad_rows)
    for split, records in splits.items():
        if not records:
            raise UserInputError(f"the {split} split of {root or 'the built-in set'} holds no annotated image")
    return splits


# ------------------------------------------------------------------------------------------ letterboxing

@dataclass
class LetterboxedPhoto:
    """One photo on the model's square canvas, and how canvas coordinates map back to the photo's pixels."""
    canvas: np.ndarray   # (S, S, 3) float32 (None once it is stored in a batch)
    size: int            # S
    scale: float
    pad: tuple           # (pad_x, pad_y)
    height: int
    width: int
    mask: np.ndarray | None = None  # the photo's own (H, W) plate mask, when kept for evaluation

    def boxes_to_photo(self, normalised_boxes):
        """Normalised canvas boxes (K, 4) -> the photo's pixels, clipped to the photo. A box is the rectangle
        between its two predicted corners, so an output with xmax < xmin still names a proper box."""
        corners = np.asarray(normalised_boxes, np.float32).reshape(-1, 2, 2)
        ordered = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        boxes = boxes_from_letterbox(ordered, self.scale, self.pad, size=self.size)
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, self.width)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, self.height)
        return boxes

    def map_to_photo(self, canvas_map):
        """A (S, S) float map on the canvas (e.g. plate probabilities) -> (H, W) on the photo (bilinear)."""
        new_w = max(1, min(self.size, round(self.width * self.scale)))
        new_h = max(1, min(self.size, round(self.height * self.scale)))
        pad_x, pad_y = self.pad
        inside = np.ascontiguousarray(canvas_map[pad_y:pad_y + new_h, pad_x:pad_x + new_w], dtype=np.float32)
        resized = Image.fromarray(inside, "F").resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.asarray(resized)


def letterbox_photo(image, img_size):
    """A (H, W, 3) float photo as a LetterboxedPhoto on an img_size square."""
    canvas, scale, pad = letterbox(image, img_size)
    return LetterboxedPhoto(canvas, img_size, scale, pad, image.shape[0], image.shape[1])


def to_model_input(canvases):
    """(N, S, S, 3) canvases -> the (N, 3, S, S) float32 array a tinycnn.Module takes."""
    return np.ascontiguousarray(np.asarray(canvases, dtype=np.float32).transpose(0, 3, 1, 2))


@dataclass
class LetterboxedSet:
    """A split on the canvas: x (N, 3, S, S), the largest box of each photo normalised (N, 4), the masks
    (N, S, S) uint8, and each photo's LetterboxedPhoto geometry (canvas dropped) and original boxes and mask."""
    x: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    photos: list
    records: list


def letterbox_records(records, img_size, keep_photo_masks=False):
    """Load and letterbox every record. Errors name the image (a file changed since its annotations were read)."""
    x, boxes, masks, photos = [], [], [], []
    for record in records:
        try:
            image, record_boxes, mask = load_sample(record)
        except (OSError, ValueError) as error:
            raise UserInputError(f"{record.path}: cannot load this image or its mask: {error}") from None
        photo = letterbox_photo(image, img_size)
        x.append(photo.canvas)
        boxes.append(boxes_to_letterbox(largest_box(record_boxes), photo.scale, photo.pad, size=img_size)[0])
        masks.append(letterbox_mask(mask, img_size))
        photo.canvas = None  # kept once, in x
        photo.mask = mask if keep_photo_masks else None
        photos.append(photo)
    return LetterboxedSet(to_model_input(x), np.asarray(boxes, np.float32), np.asarray(masks, np.uint8),
                          photos, list(records))


# ------------------------------------------------------------------------------------------ augmentation

class CanvasAugmenter:
    """fit's `augment=`: flip, scale, shift, rotate and colour-jitter each letterboxed picture of a batch,
    moving its box (the box task: targets (N, 4) normalised) or its mask (the seg task: targets (N, S, S))
    with it. Uses its own seeded generator, so a run with the same --seed sees the same batches.

    crop > 0 (seg only) then cuts a crop x crop window out of each picture and its mask: with probability
    PLATE_CROP_SHARE one that holds a random plate pixel, else one anywhere. A fully convolutional network
    learns the same from windows as from whole pictures, at a fraction of the cost.
    """
    PLATE_CROP_SHARE = 0.75

    def __init__(self, seed, geometry=True, crop=0):
        self.rng = np.random.default_rng([seed, 1])
        self.geometry, self.crop = geometry, int(crop)

    def __call__(self, xb, yb):
        images = xb.transpose(0, 2, 3, 1)
        size = images.shape[1]
        out_x, out_y = np.empty_like(images), np.empty_like(yb)
        for i, image in enumerate(images):
            if not self.geometry:
                out_x[i], out_y[i] = image, yb[i]
            elif yb.ndim == 2:  # one normalised box
                out_x[i], box, _ = augment_sample(image, yb[i] * size, None, self.rng)
                out_y[i] = box[0] / size
            else:
                out_x[i], _, out_y[i] = augment_sample(image, _mask_box_or_centre(yb[i]), yb[i], self.rng)
        if self.crop:
            out_x, out_y = self._crop_all(out_x, out_y)
        return to_model_input(out_x), out_y

    def _crop_all(self, images, masks):
        """A crop x crop window of every picture and its mask."""
        if masks.ndim != 3:
            raise ValueError("cropping needs masks (the seg task): a crop would cut boxes")
        size, side = images.shape[1], self.crop
        if side > size:
            raise ValueError(f"crop {side} is larger than the {size} px canvas")
        out_x = np.empty((len(images), side, side, images.shape[3]), images.dtype)
        out_y = np.empty((len(masks), side, side), masks.dtype)
        for i, (image, mask) in enumerate(zip(images, masks)):
            top, left = self._window(mask, side)
            out_x[i] = image[top:top + side, left:left + side]
            out_y[i] = mask[top:top + side, left:left + side]
        return out_x, out_y

    def _window(self, mask, side):
        """The top-left corner of a window: around a random plate pixel, or anywhere."""
        limit = mask.shape[0] - side
        rows, cols = np.nonzero(mask)
        if rows.size and self.rng.random() < self.PLATE_CROP_SHARE:
            pick = self.rng.integers(rows.size)
            top = self.rng.integers(max(0, rows[pick] - side + 1), min(limit, rows[pick]) + 1)
            left = self.rng.integers(max(0, cols[pick] - side + 1), min(limit, cols[pick]) + 1)
            return int(top), int(left)
        return int(self.rng.integers(limit + 1)), int(self.rng.integers(limit + 1))


def _mask_box_or_centre(mask):
    """The bounding box of a mask's plate pixels (so the augmentation keeps them in view), or a dot in the
    middle for a mask without any."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        middle = mask.shape[0] / 2
        return np.array([[middle - 1, middle - 1, middle + 1, middle + 1]], np.float32)
    return np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], np.float32)


# ------------------------------------------------------------------------------------------ model set-up

def copy_matching_weights(model, run_dir, sample_input):
    """--init: copy RUN_DIR/best.tcnn's parameters and buffers into `model` wherever name and shape match.

    `sample_input` (1, 3, S, S) builds the model's lazy layers first. Returns (copied names, skipped names);
    copying nothing at all is an error (the two models share no layer)."""
    path = Path(run_dir) / "best.tcnn"
    if not path.is_file():
        raise FileNotFoundError(f"--init {run_dir}: no best.tcnn there (is it a run folder of tinycnn.train?)")
    source = tinycnn.load_model(path, compile=False).state_dict()
    build(model, sample_input)
    own = model.state_dict()
    copied = [name for name, value in own.items() if name in source and source[name].shape == value.shape]
    if not copied:
        raise UserInputError(f"--init {run_dir}: none of best.tcnn's {len(source)} tensors fits this model "
                         f"(another task, or another --width/--filters?)")
    own.update({name: source[name] for name in copied})
    model.load_state_dict(own)
    return copied, sorted(set(own) - set(copied))


def build(model, sample_input):
    """Create a model's lazily built weights by running one input through it in eval mode."""
    model.build_input_shape = tuple(sample_input.shape[1:])
    model._weights_built = False  # noqa: SLF001 - the training API's own lazy-build flag
    model._ensure_built()  # noqa: SLF001


def run_settings(args, new_settings):
    """(model or None, settings): with --resume, RUN_DIR/last.tcnn's model and the settings kept in it
    (only --epochs, --batch-size, --quiet and --device of the command line apply); else None and
    `new_settings(args)`."""
    if not args.resume:
        return None, new_settings(args)
    model, metadata = resume_model(args.resume_file)  # checked by Training.run (cli.resume_checkpoint)
    return model, {key: value for key, value in metadata.items()
                   if key not in ("history", "epochs_done", "training_state")}


class PlateTraining(Training):
    """The training run both plate tasks share: letterboxed photos, boxes or masks as targets, early stopping
    on `monitor`, and the best model's metrics on the validation photos at the end. A subclass gives the
    task's settings (`new_settings`), `build` (a new model), `compile`, `targets` and `evaluate_on`."""
    keep_photo_masks = False  # the validation set keeps each photo's full-size mask (the segmenter's metrics)

    def new_settings(self, args):
        raise NotImplementedError

    def settings(self, args):
        return run_settings(args, self.new_settings)

    def data(self, settings, args, folder):
        splits = read_training_splits(settings["source"], settings["skip_bad_rows"])
        train_records = splits["train"] + self.extra_training_records(settings)
        train_set = PlateStream(train_records, lambda chunk: letterbox_records(chunk, settings["img_size"]))
        val_set = letterbox_records(splits["val"], settings["img_size"], keep_photo_masks=self.keep_photo_masks)
        print(f"{self.task}: {len(train_set.records)} training and {len(val_set.records)} validation photos, "
              f"letterboxed to {settings['img_size']} px{self.describe_settings(settings, train_set)}; "
              f"run folder {folder}")
        return train_set, val_set

    def extra_training_records(self, settings):
        """Records trained on beside the data's own training split (none here)."""
        return []

    def describe_settings(self, settings, train_set):
        """More words for the line `data` prints (", ..."), after settling settings drawn from the data."""
        return ""

    def model(self, resumed, settings, args, train_set):
        """The resumed model, or a new one (from --init's weights where they fit), on the device and compiled."""
        model = resumed
        if model is None:
            model = self.build(settings).to(args.device)
            if args.init:
                start_from(model, args.init, train_set.first_input())
            model.metadata = dict(settings)
        self.compile(model.to(args.device), settings)
        if resumed is not None:  # the optimizer's moments and step count go on too
            load_optimizer_state(args.resume_file, model.optimizer)
        return model

    def fit_arguments(self, settings, args, train_set, val_set):
        train = train_set.batches(self.targets, args.batch_size, settings["seed"], self.augmenter(settings))
        return dict(x=train, validation_data=(val_set.x, self.targets(val_set)),
                    batch_size=args.batch_size, epochs=args.epochs, verbose=0 if args.quiet else 1,
                    callbacks=[EarlyStopping(monitor=self.monitor, patience=settings["patience"], verbose=1)])

    def augmenter(self, settings):
        return CanvasAugmenter(settings["seed"]) if settings["augment"] else None

    def report(self, folder, args, rows, val_set):
        best = tinycnn.load_model(f"{folder}/best.tcnn", device=args.device, compile=False)
        metrics = self.evaluate_on(best, val_set, args.batch_size)
        print(f"best.tcnn on val ({metrics['n_images']} photos, original pixels): " + self.describe(metrics))


def evaluate_split(args, evaluate_on, describe, keep_photo_masks=False):
    """`python -m tinycnn.evaluate MODEL` for a plate task: the saved model's metrics (`evaluate_on(model,
    data, batch_size)`) on --split (default test) of its data source or of --data; printed, or --json."""
    model = tinycnn.load_model(args.model, device=args.device, compile=False)
    split = args.split or "test"
    records = read_source(model.metadata["source"], [split], data=args.data)[split]
    if not records:
        raise SystemExit(f"the {split} split holds no annotated photo")
    data = letterbox_records(records, model.metadata["img_size"], keep_photo_masks=keep_photo_masks)
    metrics = evaluate_on(model, data, args.batch_size)
    metrics["split"] = split
    if args.json:
        print_json(metrics)
    else:
        print(f"{args.model} on the {split} split ({metrics['n_images']} photos): " + describe(metrics))
    return 0


def resume_model(path):
    """The model of a run's checkpoint (RUN_DIR/last.tcnn or interrupted.tcnn; uncompiled) and its metadata; the
    task compiles it again.

    The task's own metric (and its Dice / Distance-IoU losses) are not tinycnn built-ins, which
    tinycnn.load_model cannot compile again; the task compiles it, then PlateTraining.model puts the saved
    optimizer state back (tinycnn.saving.load_optimizer_state)."""
    model = tinycnn.load_model(path, compile=False)
    return model, model.metadata


def start_from(model, init_dir, sample_input):
    """--init: copy RUN_DIR/best.tcnn's matching weights into a new model and say how many."""
    copied, skipped = copy_matching_weights(model, init_dir, sample_input)
    print(f"--init {init_dir}: copied {len(copied)} tensors, kept {len(skipped)} fresh"
          + (f" ({', '.join(skipped[:6])}{', ...' if len(skipped) > 6 else ''})" if skipped else ""))


# ------------------------------------------------------------------------------------------ prediction

def load_photo(path):
    """A photo file as (H, W, 3) float32 [0, 1]; ValueError or OSError naming the file when it cannot be read."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return load_image(path)


def predict_photos(model, paths, img_size, handle, run=None):
    """For each path: load, letterbox, run the model (`run(x)`, default model.predict), and call
    handle(path, image, photo, output).

    A photo that cannot be read or handled prints a one-line error to stderr and the others still run.
    Returns the process exit status: 0, or 1 if any photo failed.
    """
    failed = 0
    for path in paths:
        try:
            image = load_photo(path)
            photo = letterbox_photo(image, img_size)
            output = (run or model.predict)(to_model_input([photo.canvas]))[0]
            handle(path, image, photo, output)
        except (OSError, ValueError) as error:
            failed += 1
            message = str(error) if str(path) in str(error) else f"{path}: {error}"
            print(f"error: {message}", file=sys.stderr)
    return 1 if failed else 0


def read_annotation_csv(path):
    """{file name: (K, 4) boxes} from a tutorial CSV (filename,xmin,ymin,xmax,ymax); errors name file:line."""
    boxes = {}
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = [name.strip().lower() for name in next(reader, [])]
        columns = ("filename", "xmin", "ymin", "xmax", "ymax")
        missing = [name for name in columns if name not in header]
        if missing:
            raise UserInputError(f"{path}:1: the header lacks the column(s) {', '.join(missing)}")
        index = [header.index(name) for name in columns]
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            try:
                name = values[index[0]].strip()
                box = [float(values[i]) for i in index[1:]]
            except (IndexError, ValueError):
                raise UserInputError(f"{path}:{reader.line_num}: expected a file name and four numbers, "
                                 f"got {values}") from None
            boxes.setdefault(Path(name).name, []).append(box)
    return {name: np.asarray(found, np.float32) for name, found in boxes.items()}


def output_path(out_dir, image_path, used):
    """OUT/<image stem>.png, made unique (-2, -3, ...) when two inputs share a stem; creates OUT."""
    os.makedirs(out_dir, exist_ok=True)
    stem, n = Path(image_path).stem, 1
    name = f"{stem}.png"
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return Path(out_dir) / name


def to_uint8(image):
    """(H, W, 3) float [0, 1] -> uint8."""
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def draw_boxes(image, predicted, truth=(), scores=None):
    """A PIL image of the photo with the predicted boxes in red (each with its score above it, when given)
    and the ground-truth boxes in green."""
    picture = Image.fromarray(to_uint8(image))
    draw = ImageDraw.Draw(picture)
    for boxes, colour in ((truth, (0, 220, 0)), (predicted, (255, 0, 0))):
        for xmin, ymin, xmax, ymax in np.asarray(boxes, np.float32).reshape(-1, 4):
            draw.rectangle([xmin, ymin, max(xmin, xmax - 1), max(ymin, ymax - 1)], outline=colour, width=2)
    labels = () if scores is None else scores
    for (xmin, ymin, _, _), score in zip(np.asarray(predicted, np.float32).reshape(-1, 4), labels):
        draw.text((xmin, max(0, ymin - 11)), f"{score:.2f}", fill=(255, 0, 0))
    return picture


def overlay_mask(image, mask, colour=(255, 0, 0), alpha=0.5):
    """A PIL image of the photo with the mask's pixels tinted by `colour`."""
    pixels = np.clip(image, 0, 1).copy()
    tint = np.asarray(colour, np.float32) / 255
    pixels[mask > 0] = (1 - alpha) * pixels[mask > 0] + alpha * tint
    return Image.fromarray(to_uint8(pixels))


# ------------------------------------------------------------------------------------------ masks

def connected_components(mask, connectivity=8):
    """Label the 8- (or 4-) connected regions of a (H, W) mask: (labels (H, W) int32, 0 = background, 1..n
    numbered by each region's first pixel in raster order; n). Two-pass union-find (tinycnn.ops.detection)."""
    return label_components(mask, connectivity)


def component_boxes(mask, connectivity=8):
    """The bounding box (xmin, ymin, xmax, ymax) in pixels and pixel count of each 8-connected region,
    largest first: ((K, 4) float32, (K,) int)."""
    labels, count = connected_components(mask, connectivity)
    boxes, sizes = component_stats(labels, count)
    order = np.argsort(sizes, kind="stable")[::-1]
    return boxes.astype(np.float32).reshape(-1, 4)[order], sizes.astype(np.int64)[order]


def largest_component_box(mask):
    """The bounding box of the largest 8-connected region of a mask (4,) float32, or None when it is empty."""
    boxes, _ = component_boxes(mask)
    return boxes[0] if len(boxes) else None


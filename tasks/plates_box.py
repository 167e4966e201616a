"""plates-box: licence-plate boxes. Two heads on a MobileNetV2-style backbone:

    --head center (default)  a dense, anchor-free detector that finds EVERY plate with a score
                             (tasks/plates_detect.py: CenterNet-style heat-map, sizes and offsets at stride 4)
    --head global            the tutorial's regressor, exactly as before: global pooling + Dense(4), one box

    python -m tinycnn.train plates-box                         # built-in synthetic plates
    python -m tinycnn.train plates-box --data DIR   # pre-trains on street scenes once (tasks/detect_pretrain.py)
    python -m tinycnn.evaluate runs/X/best.tcnn --data DIR --split test --json
    python -m tinycnn.predict runs/X/best.tcnn car.jpg --out shown/ --annotations DIR/annotations/test_annotations.csv

The rest of this docstring is the global head's.
The photo is letterboxed (aspect kept, grey borders) to --img-size; the network ends in Dense(4) + sigmoid and
predicts (xmin, ymin, xmax, ymax) divided by that side. Predicted boxes are mapped back to the photo's pixels
before any metric. A photo with several plates has one target: its LARGEST plate (the nearest, most readable
one), as the tutorial's single-box model can only learn one; the detector (--head center) finds them all.

Losses: --loss mse (the tutorial's) or --loss iou: 1 − IoU + (centre distance / enclosing box diagonal)²
(Distance-IoU, whose second term still pulls a box that overlaps nothing towards the plate) + the L1 error
of the coordinates (a gradient for the zero-area boxes a fresh network outputs).
Checkpoints: best.tcnn on val_loss (best only) and last.tcnn; early stopping after --patience epochs
without a better val_loss, as in the tutorial.
Metrics (evaluate): mean IoU, share of photos with IoU >= 0.5 and >= 0.75, mean centre error in pixels.
"""
from pathlib import Path

import numpy as np

import tinycnn
from tinycnn import functional as F
from tinycnn.cli import UserInputError

from .box_ops import box_iou, centre_error, fill_mask_from_boxes
from . import detect_pretrain, plates_detect
from .plates_data import largest_box
from .plates_models import PlateBoxRegressor
from .plates_pipeline import (PlateTraining, add_plate_train_arguments, data_source, draw_boxes, evaluate_split,
                              output_path, predict_photos, read_annotation_csv)

TASK = "plates-box"
DEFAULT_IMG_SIZE = 128           # --head global
DETECT_IMG_SIZE = 256            # --head center
DEFAULT_EPOCHS = 30              # without --epochs; the detector on --data photos: DETECT_EPOCHS (its recipe's)
DETECT_EPOCHS = 80
DEFAULT_LR = 1e-3
TTA = dict(flips=True)           # evaluate/predict --tta, the detector only: the photo and its mirror, averaged


# ------------------------------------------------------------------------------------------ losses, metrics

def _split(boxes):
    return boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]


def _smaller(a, b):
    """Elementwise min(a, b) of tensors/arrays, from relu: a − relu(a − b)."""
    return a - F.relu(a - b)


def _larger(a, b):
    """Elementwise max(a, b): b + relu(a − b)."""
    return b + F.relu(a - b)


class DistanceIoULoss:
    """Mean over the batch of 1 − IoU + d²/c² + L1 for normalised boxes: d the distance between the centres,
    c the diagonal of the smallest box enclosing both (Distance-IoU, Zheng et al., 2020), L1 the mean absolute
    error of the four coordinates.

    The predicted box is the rectangle between its two corners (as when it is read out), so an output with
    xmax < xmin still has an area and an IoU gradient. The L1 term keeps a gradient where IoU has none: at the
    start the sigmoid outputs 0.5 for every coordinate, a box of zero area. Composed of tinycnn ops, so
    autograd differentiates it. Not a tinycnn.losses.Loss: the model file does not store it; the task
    compiles it again."""
    __name__ = "diou_l1"

    def __call__(self, pred, y, sample_weight=None):
        y = np.asarray(y, np.float32)
        ax, ay, bx, by = _split(pred)
        px0, py0, px1, py1 = _smaller(ax, bx), _smaller(ay, by), _larger(ax, bx), _larger(ay, by)
        tx0, ty0, tx1, ty1 = (np.ascontiguousarray(y[:, i]) for i in range(4))
        overlap_w = F.relu(_smaller(px1, tx1) - _larger(px0, tx0))
        overlap_h = F.relu(_smaller(py1, ty1) - _larger(py0, ty0))
        intersection = overlap_w * overlap_h
        union = (px1 - px0) * (py1 - py0) + (tx1 - tx0) * (ty1 - ty0) - intersection + 1e-7
        centre_distance = ((px0 + px1 - tx0 - tx1) * 0.5) ** 2 + ((py0 + py1 - ty0 - ty1) * 0.5) ** 2
        enclosing_diagonal = (_larger(px1, tx1) - _smaller(px0, tx0)) ** 2 + \
                             (_larger(py1, ty1) - _smaller(py0, ty0)) ** 2 + 1e-7
        l1 = (F.relu(pred - y) + F.relu(y - pred)).mean(axis=1)
        return (1.0 - intersection / union + centre_distance / enclosing_diagonal + l1).mean()


def iou(y_true, y_pred):
    """Mean IoU of a batch of normalised boxes (logged per epoch as `iou` / `val_iou`)."""
    return float(np.mean(box_iou(np.asarray(y_pred).reshape(-1, 4), np.asarray(y_true).reshape(-1, 4))))


def compile_model(model, loss, lr):
    model.compile(loss="mse" if loss == "mse" else DistanceIoULoss(),
                  optimizer=tinycnn.optimizers.Adam(learning_rate=lr), metrics=[iou])


def box_metrics(predicted, truth):
    """The issue's metrics for predicted and true boxes (N, 4) in the photos' pixels."""
    ious = box_iou(predicted, truth)
    return {"n_images": int(len(ious)), "mean_iou": float(ious.mean()),
            "share_iou_ge_0.5": float(np.mean(ious >= 0.5)), "share_iou_ge_0.75": float(np.mean(ious >= 0.75)),
            "mean_centre_error_px": float(centre_error(predicted, truth).mean())}


def predicted_photo_boxes(model, data, batch_size=32):
    """The model's box for every photo of a LetterboxedSet, in that photo's pixels (N, 4)."""
    normalised = model.predict(data.x, batch_size=batch_size)
    return np.concatenate([photo.boxes_to_photo(box[None]) for photo, box in zip(data.photos, normalised)])


def evaluate_on(model, data, batch_size=32):
    """box_metrics of the model on a LetterboxedSet, against each photo's largest true box."""
    truth = np.stack([largest_box(record.boxes) for record in data.records])
    return box_metrics(predicted_photo_boxes(model, data, batch_size), truth)


# ------------------------------------------------------------------------------------------ train

def add_train_arguments(parser):
    add_plate_train_arguments(parser, epochs=None, batch_size=16, img_size=None, synthetic=400,
                              img_size_default_help=f"{DETECT_IMG_SIZE} with --head center, "
                                                    f"{DEFAULT_IMG_SIZE} with --head global")
    parser.add_argument("--head", choices=("center", "global"), default="center",
                        help="center: the detector of every plate (default); global: the tutorial's regressor")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier of every layer (default 1.0)")
    parser.add_argument("--loss", choices=("mse", "iou"), default="mse",
                        help="--head global: mse (the tutorial's) or iou (Distance-IoU + L1)")
    parser.add_argument("--neck", type=int, default=None, help="--head center: channels of the neck and heads (default 64)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="--head center: the score a detection needs in predict, redact and the "
                             "precision/recall/F1 metrics (default: the lowest threshold whose F1 on val is "
                             "within one plate of the best, chosen after training and kept in best.tcnn)")
    parser.add_argument("--ema", type=float, nargs="?", const=plates_detect.EMA_MOMENTUM, default=None,
                        metavar="MOMENTUM", help="--head center: validate and keep a moving average of the weights "
                        f"(momentum {plates_detect.EMA_MOMENTUM} when given alone; tinycnn/ema.py)")
    parser.add_argument("--no-ema", dest="ema", action="store_const", const=0.0,
                        help="--head center: keep the training weights themselves")
    detect_pretrain.add_arguments(parser)


def _settings(args):
    """Everything the run needs again (resume) or later (evaluate, predict, redact), kept in the model file."""
    detector_only = (("--pretrain", getattr(args, "pretrain", None)),
                     ("--mix-synthetic", getattr(args, "mix_synthetic", 0)), ("--ema", getattr(args, "ema", None)))
    for flag, value in detector_only:
        if value:
            raise UserInputError(f"{flag} is for the detector (--head center); the tutorial's regressor keeps its "
                                 "recipe (start it from a run of yours with --init)")
    return {"task": TASK, "img_size": args.img_size, "width": args.width, "loss": args.loss,
            "lr": args.lr or DEFAULT_LR, "source": data_source(args), "augment": not args.no_augment,
            "patience": args.patience, "seed": args.seed, "skip_bad_rows": args.skip_bad_rows,
            "init": args.init, "target": "the largest plate of each photo"}


def _describe(metrics):
    return (f"mean IoU {metrics['mean_iou']:.3f}, IoU>=0.5 {metrics['share_iou_ge_0.5']:.1%}, "
            f"IoU>=0.75 {metrics['share_iou_ge_0.75']:.1%}, centre error {metrics['mean_centre_error_px']:.1f} px")


class BoxTraining(PlateTraining):
    """plates-box's run (tasks/plates_pipeline.py PlateTraining): the largest plate's box as the target."""
    task, monitor, main_metric = TASK, "val_loss", "iou"

    new_settings = staticmethod(_settings)

    def build(self, settings):
        return PlateBoxRegressor(width=settings["width"])

    def compile(self, model, settings):
        compile_model(model, settings["loss"], settings["lr"])

    def targets(self, data):
        return data.boxes

    evaluate_on, describe = staticmethod(evaluate_on), staticmethod(_describe)


def train(args):
    """python -m tinycnn.train plates-box: train, keep last/best checkpoints, print the best model's val metrics."""
    head, planned = args.head, None
    if args.resume:  # the resumed run's head and planned epochs (its checkpoint checked: of this task)
        from tinycnn.cli import resume_checkpoint
        from tinycnn.saving import read_metadata
        metadata = read_metadata(resume_checkpoint(args.resume, TASK))
        head, planned = metadata.get("head", "global"), (metadata.get("schedule") or {}).get("epochs")
    if args.epochs is None:
        args.epochs = default_epochs(head, args.data, planned)
    if args.img_size is None:
        args.img_size = DETECT_IMG_SIZE if head == "center" else DEFAULT_IMG_SIZE
    return (plates_detect.DetectTraining() if head == "center" else BoxTraining()).run(args)


def _refuse_tta(args):
    if getattr(args, "tta", False):
        raise UserInputError(f"--tta: {args.model} is the tutorial's regressor (--head global), which has no "
                             "test-time augmentation; the detector (--head center) has")


def default_epochs(head, data, planned=None):
    """--epochs when not given: a resumed run's planned epochs, else DETECT_EPOCHS for the detector on photos
    (--data), else DEFAULT_EPOCHS."""
    if planned:
        return planned
    return DETECT_EPOCHS if head == "center" and data else DEFAULT_EPOCHS


def _is_detector(model_or_metadata):
    metadata = getattr(model_or_metadata, "metadata", model_or_metadata)
    return metadata.get("head", "global") == "center"


# ------------------------------------------------------------------------------------------ evaluate

def evaluate(args):
    """python -m tinycnn.evaluate MODEL [--data DIR] [--split test] [--json]."""
    from tinycnn.saving import read_metadata
    if _is_detector(read_metadata(args.model)):
        return plates_detect.evaluate(args)
    _refuse_tta(args)
    return evaluate_split(args, evaluate_on, _describe)


# ------------------------------------------------------------------------------------------ predict, redact

def photo_box(photo, output):
    """The predicted box (4,) in the photo's pixels, from the model's normalised output."""
    return photo.boxes_to_photo(np.asarray(output)[None])[0]


def predict(args):
    """python -m tinycnn.predict MODEL IMAGE... [--out DIR] [--annotations CSV]."""
    from tinycnn.saving import read_metadata
    if _is_detector(read_metadata(args.model)):
        return plates_detect.predict(args)
    _refuse_tta(args)
    model = tinycnn.load_model(args.model, device=args.device, compile=False)
    truth = read_annotation_csv(args.annotations) if args.annotations else {}
    used = set()

    def show(path, image, photo, output):
        box = photo_box(photo, output)
        line = f"{path}: plate box xmin {box[0]:.1f} ymin {box[1]:.1f} xmax {box[2]:.1f} ymax {box[3]:.1f} px"
        true_boxes = truth.get(_name(path), np.zeros((0, 4), np.float32))
        if len(true_boxes):
            line += f" (IoU {float(box_iou(box, largest_box(true_boxes))):.3f} with the largest true box)"
        elif args.annotations:
            line += f" (no row for {_name(path)} in {args.annotations})"
        print(line)
        if args.out:
            draw_boxes(image, box, true_boxes).save(output_path(args.out, path, used))

    return predict_photos(model, args.images, model.metadata["img_size"], show)


def plate_boxes(photo, output, metadata):
    """The plates' boxes (K, 4) in the photo's pixels: every detected plate (--head center), or the one box."""
    if _is_detector(metadata):
        return plates_detect.plate_boxes(photo, output, plates_detect.threshold_of(metadata))
    return photo_box(photo, output)[None]


def plate_mask(photo, output, metadata=None):
    """The photo's pixels to redact, (H, W) bool: those inside the predicted boxes (the regressor: its one box,
    the largest plate only)."""
    return fill_mask_from_boxes(plate_boxes(photo, output, metadata or {}), photo.height, photo.width) > 0


def _name(path):
    return Path(path).name

"""plates-seg: which pixels are licence plate, by a U-Net-style fully convolutional network.

    python -m tinycnn.train plates-seg                         # built-in synthetic plates, a few minutes
    python -m tinycnn.train plates-seg --data DIR --dice --init runs/synthetic-seg
    python -m tinycnn.evaluate runs/X/best.tcnn --data DIR --split test --json
    python -m tinycnn.predict runs/X/best.tcnn car.jpg --out shown/

The photo is letterboxed to --img-size; the network (tasks/plates_models.PlateSegmenter) gives each pixel a
softmax over two classes, background and plate. Masks come from the data's mask files, or are the filled
plate boxes when there are none (the real photos). All plates of a photo are segmented.

Loss: pixel-wise cross-entropy with class weights, the plate class weighted by --plate-weight (default
sqrt(background pixels / plate pixels) of the training masks: plates cover ~1 % of a photo, so unweighted
cross-entropy would learn to say "background" everywhere); --dice adds a soft Dice loss of the plate class,
1 − (2 Σ p·t + 1) / (Σ p + Σ t + 1) over the batch, composed from tinycnn ops.
Checkpoints: best.tcnn on the validation Dice (the task's measure; val_loss mixes in the class weights),
last.tcnn; early stopping after --patience epochs without a better val Dice.
Metrics (evaluate), per photo at its own resolution, then averaged: Dice and IoU of the plate class, pixel
accuracy; and, for comparison with plates-box, the bounding box of the largest connected plate region
against the largest true box (box_mean_iou, box_share_iou_ge_0.5, ...).
"""
import math
from pathlib import Path

import numpy as np

import tinycnn
from tinycnn.checks import UserInputError

from .box_ops import box_iou, centre_error, mask_dice, mask_iou
from .plates_data import largest_box
from .plates_models import PlateSegmenter
from .plates_pipeline import (CanvasAugmenter, PlateTraining, add_plate_train_arguments, component_boxes,
                              data_source, draw_boxes, evaluate_split, output_path, overlay_mask, predict_photos,
                              read_annotation_csv)

TASK = "plates-seg"
DEFAULT_IMG_SIZE = 256
DEFAULT_LR = 2e-3
MAX_PLATE_WEIGHT = 30.0


# ------------------------------------------------------------------------------------------ losses, metrics

class WeightedCrossEntropyDice:
    """Class-weighted pixel cross-entropy plus the soft Dice loss of the plate class (class 1).

    Dice = (2 Σ p·t + 1) / (Σ p + Σ t + 1) over the whole batch, p the predicted plate probability, t the
    true mask; the loss adds 1 − Dice. Not a tinycnn.losses.Loss: the model file does not store it; the task
    compiles it again when it resumes."""
    __name__ = "cross_entropy_dice"

    def __init__(self, class_weight):
        self.cross_entropy = tinycnn.losses.SparseCategoricalCrossentropy(class_weight=class_weight)

    def __call__(self, pred, y, sample_weight=None):
        plate = pred[:, 1]
        truth = (np.asarray(y) == 1).astype(np.float32)
        dice = ((plate * truth).sum() * 2.0 + 1.0) / (plate.sum() + float(truth.sum()) + 1.0)
        return self.cross_entropy(pred, y) + (1.0 - dice)


def dice(y_true, y_pred):
    """Mean per-picture Dice of the predicted (argmax) plate pixels (logged as `dice` / `val_dice`)."""
    truth = np.asarray(y_true).reshape(len(y_true), *y_pred.shape[2:])
    return float(np.mean(mask_dice(np.argmax(y_pred, axis=1), truth)))


def plate_weight_for(masks):
    """sqrt(background pixels / plate pixels) of the training masks, between 1 and MAX_PLATE_WEIGHT."""
    share = float(np.mean(masks > 0))
    if share == 0:
        raise UserInputError("the training masks hold no plate pixel at all (plates-seg needs plate masks)")
    return float(min(max(math.sqrt((1 - share) / share), 1.0), MAX_PLATE_WEIGHT))


def compile_model(model, use_dice, plate_weight, lr):
    class_weight = [1.0, plate_weight]
    loss = WeightedCrossEntropyDice(class_weight) if use_dice else \
        tinycnn.losses.SparseCategoricalCrossentropy(class_weight=class_weight)
    model.compile(loss=loss, optimizer=tinycnn.optimizers.Adam(learning_rate=lr), metrics=[dice])


def photo_masks(model, data, batch_size=16):
    """The predicted plate mask (H, W) bool of every photo of a LetterboxedSet, at the photo's resolution."""
    masks = []
    for begin in range(0, len(data.x), batch_size):
        probabilities = model.predict(data.x[begin:begin + batch_size], batch_size=batch_size)
        for photo, output in zip(data.photos[begin:begin + batch_size], probabilities):
            masks.append(plate_mask(photo, output))
    return masks


def evaluate_on(model, data, batch_size=16):
    """Dice, IoU, pixel accuracy per photo (averaged), and the largest region's box against the largest true box."""
    predicted = photo_masks(model, data, batch_size)
    truths = [photo.mask for photo in data.photos]
    dices = [float(mask_dice(p, t)) for p, t in zip(predicted, truths)]
    ious = [float(mask_iou(p, t)) for p, t in zip(predicted, truths)]
    accuracy = [float(np.mean(p == (t > 0))) for p, t in zip(predicted, truths)]
    metrics = {"n_images": len(predicted), "dice": float(np.mean(dices)), "iou": float(np.mean(ious)),
               "pixel_accuracy": float(np.mean(accuracy))}
    metrics.update(_box_metrics(predicted, [largest_box(record.boxes) for record in data.records]))
    return metrics


def _box_metrics(masks, true_boxes):
    """The box task's metrics for the bounding box of each mask's largest region (IoU 0 when it is empty)."""
    ious, centres = [], []
    for mask, truth in zip(masks, true_boxes):
        boxes, _ = component_boxes(mask)
        if len(boxes) == 0:
            ious.append(0.0)
            continue
        ious.append(float(box_iou(boxes[0], truth)))
        centres.append(float(centre_error(boxes[0], truth)))
    ious = np.asarray(ious)
    return {"box_mean_iou": float(ious.mean()), "box_share_iou_ge_0.5": float(np.mean(ious >= 0.5)),
            "box_share_iou_ge_0.75": float(np.mean(ious >= 0.75)),
            "box_mean_centre_error_px": float(np.mean(centres)) if centres else float("nan"),
            "box_photos_without_plate": int(len(ious) - len(centres))}


# ------------------------------------------------------------------------------------------ train

def add_train_arguments(parser):
    add_plate_train_arguments(parser, epochs=30, batch_size=8, img_size=DEFAULT_IMG_SIZE, synthetic=200)
    parser.add_argument("--filters", type=int, default=16, help="channels at full resolution (default 16)")
    parser.add_argument("--depth", type=int, default=3, help="how many times the encoder halves (default 3)")
    parser.add_argument("--convs", type=int, default=1, help="3x3 convs per block (default 1)")
    parser.add_argument("--upsample", choices=("transpose", "bilinear"), default="transpose",
                        help="decoder upsampling: transposed conv (default) or bilinear + 1x1 conv")
    parser.add_argument("--crop", type=int, default=None,
                        help="train on random crop x crop windows of the canvas (mostly round a plate) instead "
                             "of whole canvases; validation and evaluation see whole canvases "
                             "(default: half of --img-size; 0: whole canvases)")
    parser.add_argument("--dice", action="store_true", help="add the soft Dice loss to the cross-entropy")
    parser.add_argument("--plate-weight", type=float, default=None,
                        help="cross-entropy weight of the plate class (default: from the training masks)")


def _settings(args):
    """Everything the run needs again (resume) or later (evaluate, predict, redact), kept in the model file."""
    if args.crop is None:
        args.crop = args.img_size // 2 // 2 ** args.depth * 2 ** args.depth
    for name, side in (("--img-size", args.img_size), ("--crop", args.crop)):
        if side % 2 ** args.depth:
            raise SystemExit(f"{name} {side} must divide by 2**depth = {2 ** args.depth}")
    if args.crop > args.img_size:
        raise SystemExit(f"--crop {args.crop} must not exceed --img-size {args.img_size}")
    return {"task": TASK, "img_size": args.img_size, "filters": args.filters, "depth": args.depth,
            "convs": args.convs, "upsample": args.upsample, "crop": args.crop, "dice": args.dice,
            "plate_weight": args.plate_weight, "lr": args.lr or DEFAULT_LR, "source": data_source(args),
            "augment": not args.no_augment, "patience": args.patience, "seed": args.seed,
            "skip_bad_rows": args.skip_bad_rows, "init": args.init}


def _describe(metrics):
    return (f"Dice {metrics['dice']:.3f}, IoU {metrics['iou']:.3f}, pixel accuracy {metrics['pixel_accuracy']:.4f}; "
            f"largest region's box: mean IoU {metrics['box_mean_iou']:.3f}, "
            f"IoU>=0.5 {metrics['box_share_iou_ge_0.5']:.1%}")


class SegmentationTraining(PlateTraining):
    """plates-seg's run (tasks/plates_pipeline.py PlateTraining): per-pixel plate masks as the target."""
    task, monitor, main_metric = TASK, "val_dice", "dice"
    keep_photo_masks = True

    new_settings = staticmethod(_settings)

    def describe_settings(self, settings, train_set):
        if settings["plate_weight"] is None:
            settings["plate_weight"] = plate_weight_for(train_set.masks)
        return f", plate class weight {settings['plate_weight']:.2f}"

    def build(self, settings):
        return PlateSegmenter(settings["filters"], settings["depth"], settings["upsample"], settings["convs"])

    def compile(self, model, settings):
        compile_model(model, settings["dice"], settings["plate_weight"], settings["lr"])

    def targets(self, data):
        return data.masks

    def augmenter(self, settings):
        """Geometry and colours unless --no-augment, then the --crop windows; None when neither."""
        if not settings["augment"] and not settings["crop"]:
            return None
        return CanvasAugmenter(settings["seed"], geometry=settings["augment"], crop=settings["crop"])

    evaluate_on, describe = staticmethod(evaluate_on), staticmethod(_describe)


def train(args):
    """python -m tinycnn.train plates-seg: train, keep last/best checkpoints, print the best model's val metrics."""
    return SegmentationTraining().run(args)


# ------------------------------------------------------------------------------------------ evaluate

def evaluate(args):
    """python -m tinycnn.evaluate MODEL [--data DIR] [--split test] [--json]."""
    return evaluate_split(args, evaluate_on, _describe, keep_photo_masks=True)


# ------------------------------------------------------------------------------------------ predict, redact

def plate_mask(photo, output):
    """The photo's plate pixels, (H, W) bool: the plate probability mapped back to the photo, above 0.5."""
    return photo.map_to_photo(np.asarray(output)[1]) > 0.5


def predict(args):
    """python -m tinycnn.predict MODEL IMAGE... [--out DIR] [--annotations CSV]."""
    model = tinycnn.load_model(args.model, device=args.device, compile=False)
    truth = read_annotation_csv(args.annotations) if args.annotations else {}
    used = set()

    def show(path, image, photo, output):
        mask = plate_mask(photo, output)
        boxes, sizes = component_boxes(mask)
        line = f"{path}: {int(mask.sum())} plate pixels in {len(sizes)} region(s)"
        if len(boxes):
            line += " ; largest region's box xmin {:.0f} ymin {:.0f} xmax {:.0f} ymax {:.0f} px".format(*boxes[0])
        print(line)
        if args.out:
            picture = overlay_mask(image, mask)
            true_boxes = truth.get(Path(path).name, np.zeros((0, 4), np.float32))
            if len(true_boxes):
                picture = draw_boxes(np.asarray(picture, np.float32) / 255, (), true_boxes)
            picture.save(output_path(args.out, path, used))

    return predict_photos(model, args.images, model.metadata["img_size"], show)

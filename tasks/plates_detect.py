"""plates-box's default head: a dense, anchor-free plate detector (CenterNet-style) that finds every plate.

    python -m tinycnn.train plates-box                          # --head center, the built-in synthetic plates
    python -m tinycnn.train plates-box --data DIR   # pre-trains on street scenes once (tasks/detect_pretrain.py)
    python -m tinycnn.evaluate runs/X/best.tcnn --data DIR --json      # AP, recall, IoU; runs/X/pr_curve.png

The network (PlateCenterNet): a MobileNetV2-style backbone of inverted residual blocks (tasks/plates_models.py,
channels-last) down to stride 16, a light neck back up to stride 4 (nearest 2x upsampling + a 1x1 lateral
of the backbone's stride-8 and stride-4 maps, added, then a depthwise 3x3 + 1x1), and two heads on the
stride-4 map. Output (N, 5, S/4, S/4):

    channel 0       centre heat-map logit (a plate's centre falls in its cell)
    channels 1, 2   log(box width / 4), log(box height / 4)    (canvas pixels over the stride)
    channels 3, 4   sub-pixel offset of the centre in its cell, x and y, in cells

Targets (tasks/centernet_targets.py, NumPy only): each plate's centre c = box centre / 4 lies in cell (⌊c_y⌋, ⌊c_x⌋); the heat-map
target is exp(−dx²/2σx² − dy²/2σy²) around it (exactly 1 in the centre cell, the maximum over plates),
σ = max(0.5, 0.54 · box side in cells / 6) per axis (TTFNet's elliptical Gaussian, so a wide flat plate gets
a wide flat bump); the size and offset targets are set in the centre cell only.
Loss (CenterNetLoss): sigmoid focal loss of the heat-map (α 2, β 4; tinycnn.ops.detection) + L1 of the log
sizes + L1 of the offsets, both in the centre cells only, each divided by the number of plates.
Decoding (decode): sigmoid of the heat-map; a cell is a peak when it equals the 3x3 max-pool of the map
(tinycnn.functional.max_pool2d) and its score passes the threshold; each peak gives a box
(centre (cell + offset)·4, size exp(log size)·4). No fixed number of boxes (at most MAX_DETECTIONS).

Data: every plate of every photo is a target (several CSV rows for one file, several VOC objects); fit's y is
(N, max plates, 4) normalised canvas boxes, rows of −1 padding the photos with fewer; the loss encodes them
per batch, so the box-aware augmentation (flip, scale, shift, rotation, colours) moves every box with its photo.
"""
import os
from pathlib import Path

import numpy as np

import tinycnn
from tinycnn import functional as F
from tinycnn import layers
from tinycnn.cli import UserInputError
from tinycnn.ops.detection import sigmoid_focal_loss

from . import detect_pretrain
from .box_ops import augment_sample, boxes_to_letterbox, fill_mask_from_boxes
from .centernet_targets import STRIDE, boxes_at, encode_batch, encode_targets, pad_boxes, valid_boxes  # noqa: F401
from .detection_metrics import best_f1_threshold, detection_metrics, draw_pr_curve, one_plate_tolerance, pairwise_iou
from .plates_models import ConvBNReLU6, inverted_residual_stack, scaled_channels
from .plates_pipeline import (PlateTraining, data_source, draw_boxes, evaluate_split, output_path, predict_photos,
                              read_annotation_csv, to_model_input)

HEAT_PRIOR = -2.19          # log(0.1 / 0.9): the heat-map starts at 0.1 everywhere (CenterNet's bias init)
MAX_DETECTIONS = 100
SCORE_THRESHOLD = 0.3       # the threshold of predict, redact and precision/recall/F1 when none was chosen
AP_THRESHOLD = 0.01         # the scores AP sees: every peak above this
# The recipe's defaults (the PyTorch reference in ../shared/accuracy-notes.md: AP@0.5 0.90 on the plates' test split)
# No rotation: a rotated plate's axis-aligned box is taller than the plate (5° makes a 4:1 plate's box ~30 %
# taller), and the first recipe's boxes came out 13 % too tall on its own training photos. Separable heads:
# a hidden 1x1 layer in each head (docs/plates.md has the runs that chose it).
RECIPE = dict(stem=16, expansion=4, neck=64, lr=2e-3, weight_decay=1e-4, warmup_epochs=3, scale=(0.6, 1.6),
              rotation=0.0, head_layers="separable", stretch=1.0)
EMA_MOMENTUM = 0.995        # --ema alone: an average over ~200 steps, ~8 epochs of the photos and mixed scenes
EMA_BN_BATCHES = 8          # training batches (unaugmented) that give the averaged weights their BN statistics


def stages(expansion):
    """(t, c, n, s) per stage: stride 2 (stem) -> 4 -> 8 -> 16; t is `expansion` after the first block."""
    t = expansion
    return (((1, 16, 1, 1), (t, 24, 2, 2)), ((t, 32, 3, 2),), ((t, 64, 2, 2), (t, 96, 1, 1)))


# ------------------------------------------------------------------------------------------ the network

class NeckStep(tinycnn.Module):
    """Upsample the coarser map 2x, add a 1x1 projection of the finer backbone map, then depthwise 3x3 + 1x1."""
    fusable = (("depthwise", "pointwise"),)  # predict runs the two as one op (tinycnn/fuse.py)

    def __init__(self, channels):
        super().__init__()
        self.up = layers.UpSampling2D(2, data_format="channels_last")  # nearest
        self.lateral = ConvBNReLU6(channels, 1, activation=False, data_format="channels_last")
        self.depthwise = ConvBNReLU6(channels, 3, depthwise=True, data_format="channels_last")
        self.pointwise = ConvBNReLU6(channels, 1, data_format="channels_last")

    def forward(self, coarse, fine):
        return self.pointwise(self.depthwise(self.up(coarse) + self.lateral(fine)))


class Head(tinycnn.Module):
    """A head on the neck's map, ending in a 1x1 conv to `outputs` channels (with a bias). `style`:
    "light"      depthwise 3x3 (batch norm, ReLU6), then the 1x1 out: the first detector's; almost linear
    "separable"  depthwise 3x3, a 1x1 to `channels` (batch norm, ReLU6: a hidden layer), then the 1x1 out
    "conv"       a full 3x3 conv to `channels` (batch norm, ReLU6), then the 1x1 out: CenterNet's head"""
    STYLES = ("light", "separable", "conv")
    fusable = (("conv", "depthwise", "hidden", "out"),)  # the style's layers, one after another (tinycnn/fuse.py)

    def __init__(self, outputs, style="light", channels=64):
        super().__init__()
        if style not in self.STYLES:
            raise ValueError(f"head style {style!r}: expected one of {', '.join(self.STYLES)}")
        self.style = style
        if style == "conv":
            self.conv = ConvBNReLU6(channels, 3, data_format="channels_last")
        else:
            self.depthwise = ConvBNReLU6(0, 3, depthwise=True, data_format="channels_last")
        if style == "separable":
            self.hidden = ConvBNReLU6(channels, 1, data_format="channels_last")
        self.out = layers.Conv2D(outputs, 1, data_format="channels_last")

    def forward(self, x):
        if self.style == "conv":
            return self.out(self.conv(x))
        x = self.depthwise(x)
        return self.out(self.hidden(x) if self.style == "separable" else x)


class PlateCenterNet(tinycnn.Model):
    """(N, 3, S, S) letterboxed photos -> (N, 5, S/4, S/4): heat-map logit, log sizes, offsets (module doc).
    S must divide by 16. `width` scales the backbone's channels, `neck` is the neck's and heads' channel count,
    `stem` the first conv's channels, `expansion` the inverted residuals' t, `head` the heads' style (Head).
    The constructor's defaults are the first detector's (model files written before the recipe kept only width
    and neck); training uses RECIPE."""

    def __init__(self, width=1.0, neck=48, stem=32, expansion=6, head="light"):
        super().__init__()
        self.width, self.neck, self.stem_channels, self.expansion = float(width), int(neck), int(stem), int(expansion)
        self.head_style = str(head)
        stem = scaled_channels(self.stem_channels, self.width)
        table = stages(self.expansion)
        self.stem = ConvBNReLU6(stem, 3, strides=2, data_format="channels_last")
        self.stage4, channels = inverted_residual_stack(stem, table[0], self.width, "channels_last")
        self.stage8, channels = inverted_residual_stack(channels, table[1], self.width, "channels_last")
        self.stage16, channels = inverted_residual_stack(channels, table[2], self.width, "channels_last")
        self.top = ConvBNReLU6(self.neck, 1, data_format="channels_last")
        self.up8, self.up4 = NeckStep(self.neck), NeckStep(self.neck)
        self.heat, self.box = Head(1, self.head_style, self.neck), Head(4, self.head_style, self.neck)

    def forward(self, x):
        if x.shape[2] % 16 or x.shape[3] % 16:
            raise ValueError(f"PlateCenterNet needs sides divisible by 16, got {x.shape[2]}x{x.shape[3]}")
        x = self.stem(x.transpose(0, 2, 3, 1))
        features = []
        for stage in (self.stage4, self.stage8, self.stage16):
            for block in stage:
                x = block(x)
            features.append(x)
        x = self.up4(self.up8(self.top(features[2]), features[1]), features[0])
        out = tinycnn.cat([self.heat(x) + HEAT_PRIOR, self.box(x)], axis=3)
        return out.transpose(0, 3, 1, 2)

    def get_config(self):
        return {"width": self.width, "neck": self.neck, "stem": self.stem_channels, "expansion": self.expansion,
                "head": self.head_style}


def decode(output, threshold=SCORE_THRESHOLD, max_detections=MAX_DETECTIONS):
    """One picture's output (5, g, g) -> (boxes (K, 4) canvas pixels, scores (K,)), best first."""
    output = np.asarray(output, np.float32)
    heat = 1.0 / (1.0 + np.exp(-output[0].astype(np.float64)))
    with tinycnn.no_grad():
        pooled = F.max_pool2d(tinycnn.Tensor(heat[None, None]), 3, stride=1, padding=1).numpy()[0, 0]
    rows, cols = np.nonzero((heat >= pooled) & (heat >= threshold))
    scores = heat[rows, cols]
    order = np.argsort(-scores, kind="stable")[:max_detections]
    return boxes_at(output, rows[order], cols[order]), scores[order].astype(np.float32)


# ------------------------------------------------------------------------------------------ loss

def _l1(a, b):
    return F.relu(a - b) + F.relu(b - a)


class CenterNetLoss:
    """Focal loss of the heat-map + L1 of log sizes and offsets at the centres (per plate). y: (N, M, 4)
    normalised padded boxes. Not a tinycnn.losses.Loss: the model file does not store it; the task compiles
    it again."""
    __name__ = "centernet"

    def __init__(self, size_weight=1.0, offset_weight=1.0):
        self.size_weight, self.offset_weight = float(size_weight), float(offset_weight)

    def __call__(self, pred, y, sample_weight=None):
        heat, regression, mask = encode_batch(y, pred.shape[2] * STRIDE)
        plates = max(1.0, float(mask[:, 0].sum()))
        errors = _l1(pred[:, 1:5], regression) * mask
        size_error = errors[:, 0:2].sum() * (self.size_weight / plates)
        offset_error = errors[:, 2:4].sum() * (self.offset_weight / plates)
        return sigmoid_focal_loss(pred[:, 0:1], heat) + size_error + offset_error


# ------------------------------------------------------------------------------------------ augmentation

class BoxAugmenter:
    """fit's `augment=`: flip, scale, shift, rotate and colour-jitter each picture with ALL its boxes
    (tasks/box_ops.augment_sample keeps every plate at least half in view). Its own seeded generator."""

    def __init__(self, seed, scale=(0.85, 1.15), shift=0.1, rotation=5.0, stretch=1.0):
        self.rng = np.random.default_rng([seed, 2])
        self.scale_translate = (float(scale[0]), float(scale[1]), float(shift))
        self.rotation, self.stretch = float(rotation), float(stretch)

    def __call__(self, xb, yb):
        images = xb.transpose(0, 2, 3, 1)
        size = images.shape[1]
        out_x, out_y = np.empty_like(images), np.full_like(yb, -1.0)
        for i, (image, padded) in enumerate(zip(images, yb)):
            boxes = valid_boxes(padded)
            out_x[i], moved, _ = augment_sample(image, boxes * size, None, self.rng,
                                                scale_translate=self.scale_translate,
                                                max_rotation_deg=self.rotation, max_stretch=self.stretch)
            out_y[i, :len(moved)] = moved / size
        return to_model_input(out_x), out_y


# ------------------------------------------------------------------------------------------ data, evaluation

def canvas_boxes(data):
    """Every plate of every photo of a LetterboxedSet, normalised canvas boxes padded: (N, M, 4)."""
    return pad_boxes([boxes_to_letterbox(record.boxes, photo.scale, photo.pad, size=photo.size)
                      for record, photo in zip(data.records, data.photos)])


def photo_detections(photo, output, threshold):
    """(boxes (K, 4) in the photo's pixels, scores (K,)) of one output."""
    boxes, scores = decode(output, threshold)
    return photo.boxes_to_photo(boxes / photo.size), scores


def mirrored_back(output):
    """The (N, 5, g, g) output of mirrored canvases, in the original canvas's frame: every map flipped back along
    x, and the x offset o -> 1 - o (in the mirror, cell j's centre j + o lies at g - j - o = c + 1 - o from
    the original cell c = g - 1 - j); sizes and the y offset are unchanged."""
    back = np.array(output[..., ::-1], np.float32)
    back[:, 3] = 1.0 - back[:, 3]
    return back


def predict_outputs(model, x, batch_size=16, tta=False):
    """The model's outputs (N, 5, g, g); tta (--tta): the mean of the outputs of x and of its mirror image."""
    output = model.predict(x, batch_size=batch_size)
    if tta:
        mirrored = model.predict(np.ascontiguousarray(x[..., ::-1]), batch_size=batch_size)
        output = 0.5 * (output + mirrored_back(mirrored))
    return output


def detect_all(model, data, threshold, batch_size=16, tta=False):
    """[(boxes, scores)] of every photo of a LetterboxedSet, in the photos' pixels."""
    found = []
    for begin in range(0, len(data.x), batch_size):
        outputs = predict_outputs(model, data.x[begin:begin + batch_size], batch_size, tta)
        found.extend(photo_detections(photo, output, threshold)
                     for photo, output in zip(data.photos[begin:begin + batch_size], outputs))
    return found


def threshold_of(metadata):
    """The model's score threshold: the one kept in its file (chosen on val), else SCORE_THRESHOLD."""
    value = metadata.get("score_threshold")
    return SCORE_THRESHOLD if value is None else float(value)


def evaluate_on(model, data, batch_size=16, threshold=None, predictions=None, tta=False):
    """detection_metrics of the model on a LetterboxedSet (every true plate), with the PR curve under "curve"."""
    threshold = threshold_of(model.metadata) if threshold is None else threshold
    if predictions is None:
        predictions = detect_all(model, data, AP_THRESHOLD, batch_size, tta)
    return detection_metrics(predictions, [record.boxes for record in data.records], threshold)


def describe(metrics):
    return (f"AP@0.5 {metrics['ap_50']:.3f}, AP@[.5:.95] {metrics['ap_50_95']:.3f}, "
            f"recall@0.5 {metrics['recall_50']:.3f}, mean best-match IoU {metrics['mean_best_iou']:.3f}; "
            f"at score >= {metrics['threshold']:g}: precision {metrics['precision']:.3f}, "
            f"recall {metrics['recall']:.3f}, F1 {metrics['f1']:.3f} ({metrics['n_plates']} plates)")


def evaluate_without_curve(model, data, batch_size=16):
    """evaluate_on without the curve arrays (for printing and JSON)."""
    metrics = evaluate_on(model, data, batch_size)
    metrics.pop("curve")
    return metrics


def evaluate(args):
    """python -m tinycnn.evaluate MODEL [--data DIR] [--split test] [--json]; writes pr_curve.png (or
    pr_curve-<split>.png) beside the model file."""
    split = args.split or "test"
    target = Path(args.model).parent / ("pr_curve.png" if split == "test" else f"pr_curve-{split}.png")

    def evaluate_and_draw(model, data, batch_size):
        metrics = evaluate_on(model, data, batch_size, tta=getattr(args, "tta", False))
        draw_pr_curve(target, metrics.pop("curve"), title=f"precision-recall at IoU 0.5, {split} split",
                      threshold=metrics["threshold"])
        metrics["pr_curve"] = str(target)
        return metrics

    return evaluate_split(args, evaluate_and_draw, describe)


# ------------------------------------------------------------------------------------------ train

def new_settings(args):
    """Everything the run needs again (resume) or later (evaluate, predict, redact), kept in the model file."""
    if args.img_size % 16:
        raise SystemExit(f"--img-size {args.img_size} must divide by 16 for --head center")
    source = data_source(args)
    if "builtin" in source:  # the detector's built-in set: street scenes with 1-4 plates of 10-200 px
        source["builtin"]["scene"] = "street"
    pretrain = detect_pretrain.requested(args)
    return {"task": "plates-box", "head": "center", "img_size": args.img_size, "width": args.width,
            "neck": args.neck or RECIPE["neck"], "stem": RECIPE["stem"], "expansion": RECIPE["expansion"],
            "head_layers": RECIPE["head_layers"],
            "lr": args.lr or RECIPE["lr"], "weight_decay": RECIPE["weight_decay"],
            "schedule": {"epochs": args.epochs, "warmup_epochs": min(RECIPE["warmup_epochs"], args.epochs - 1)},
            "scale": list(RECIPE["scale"]), "rotation": RECIPE["rotation"], "stretch": RECIPE["stretch"],
            "score_threshold": args.score_threshold,
            "source": source, "augment": not args.no_augment, "patience": args.patience,
            "seed": args.seed, "skip_bad_rows": args.skip_bad_rows, "init": args.init,
            "target": "every plate of each photo", "pretrain": pretrain,
            "mix_synthetic": detect_pretrain.mixed(args, pretrain), "ema": ema_momentum(args)}


def ema_momentum(args):
    """--ema's momentum (None: no moving average); a one-line error outside (0, 1)."""
    momentum = getattr(args, "ema", None) or None
    if momentum is not None and not 0.0 < momentum < 1.0:
        raise UserInputError(f"--ema {momentum:g}: the momentum must be in (0, 1)")
    return momentum


def optimizer_of(settings):
    """AdamW with a linear warm-up then a cosine to 0 over the run (settings["schedule"]), keeping a moving
    average of the weights with settings["ema"]; the first detector's model files (no schedule kept) go on with
    Adam at a constant rate."""
    schedule = settings.get("schedule")
    if schedule is None:
        return tinycnn.optimizers.Adam(learning_rate=settings["lr"])
    steps = schedule["epochs"] * schedule["steps_per_epoch"]
    warmup = schedule["warmup_epochs"] * schedule["steps_per_epoch"]
    rate = tinycnn.optimizers.CosineDecay(0.0, max(1, steps - warmup), warmup_target=settings["lr"],
                                          warmup_steps=warmup)
    ema = dict(use_ema=True, ema_momentum=settings["ema"]) if settings.get("ema") else {}
    return tinycnn.optimizers.AdamW(learning_rate=rate, weight_decay=settings["weight_decay"], **ema)


class DetectTraining(PlateTraining):
    """plates-box --head center (tasks/plates_pipeline.py PlateTraining): every plate's box as a target;
    best.tcnn on val_loss; at the end the best model's detection metrics on val and val's PR curve."""
    task, monitor, main_metric = "plates-box", "val_loss", "loss"

    def new_settings(self, args):
        return new_settings(args)

    def build(self, settings):
        return PlateCenterNet(settings["width"], settings["neck"], settings.get("stem", 32),
                              settings.get("expansion", 6), settings.get("head_layers", "light"))

    def model(self, resumed, settings, args, train_set):
        if resumed is None and settings.get("pretrain"):  # --pretrain: first the street scenes' run (once)
            args.init = settings["init"] = detect_pretrain.pretrained_run(settings["pretrain"], settings, args,
                                                                          DetectTraining)
            tinycnn.manual_seed(args.seed)  # the fine-tuning run starts the same whether pre-trained now or before
        if "schedule" in settings:  # the cosine's length in steps, from the training photos (kept for resume)
            settings["schedule"].setdefault("steps_per_epoch", -(-len(train_set.records) // args.batch_size))
        return super().model(resumed, settings, args, train_set)

    def compile(self, model, settings):
        model.compile(loss=CenterNetLoss(), optimizer=optimizer_of(settings))

    def targets(self, data):
        return canvas_boxes(data)

    def fit_arguments(self, settings, args, train_set, val_set):
        """PlateTraining's, with --ema: the averaged weights validated and saved, with batch-norm statistics
        of their own from EMA_BN_BATCHES unaugmented training batches (tinycnn/ema.py)."""
        arguments = super().fit_arguments(settings, args, train_set, val_set)
        if settings.get("ema"):
            from tinycnn.ema import SwapEMAWeights
            bn_data = train_set.batches(self.targets, args.batch_size, settings["seed"])
            arguments["callbacks"].insert(0, SwapEMAWeights(bn_data=bn_data, bn_batches=EMA_BN_BATCHES))
        return arguments

    def augmenter(self, settings):
        if not settings["augment"]:
            return None
        return BoxAugmenter(settings["seed"], settings.get("scale", (0.85, 1.15)), rotation=settings.get("rotation", 5.0),
                            stretch=settings.get("stretch", 1.0))

    def extra_training_records(self, settings):
        """--mix-synthetic N: the first N built-in street scenes (the pre-training's set) join every epoch."""
        scenes = (settings.get("pretrain") or {}).get("scenes")
        return detect_pretrain.street_records(settings.get("mix_synthetic") or 0, scenes)

    def describe_settings(self, settings, train_set):
        plates = int(sum(len(record.boxes) for record in train_set.records))
        mixed, ema = settings.get("mix_synthetic"), settings.get("ema")
        return (f", {plates} training plates{f' (with {mixed} street scenes)' if mixed else ''}, CenterNet head"
                + (f", moving average of the weights (momentum {ema:g})" if ema else ""))

    def report(self, folder, args, rows, val_set):
        """The best model's metrics on val and its PR curve (RUN/pr_curve-val.png); without --score-threshold,
        first the score threshold, kept in best.tcnn for evaluate, predict and redact: the lowest whose F1 on
        val is within one plate's worth (1 / val plates) of the best F1."""
        path = os.path.join(folder, "best.tcnn")
        best = tinycnn.load_model(path, device=args.device, compile=False)
        predictions = detect_all(best, val_set, AP_THRESHOLD, args.batch_size)
        chosen = best.metadata.get("score_threshold") is None
        if chosen:
            metrics = evaluate_on(best, val_set, predictions=predictions, threshold=SCORE_THRESHOLD)
            best.metadata["score_threshold"] = best_f1_threshold(
                metrics["curve"], default=SCORE_THRESHOLD, tolerance=one_plate_tolerance(metrics["n_plates"]))
            best.save(path)
        metrics = evaluate_on(best, val_set, predictions=predictions)
        draw_pr_curve(os.path.join(folder, "pr_curve-val.png"), metrics.pop("curve"),
                      title="precision-recall at IoU 0.5, val split", threshold=metrics["threshold"])
        print(f"best.tcnn on val ({metrics['n_images']} photos, original pixels): " + describe(metrics)
              + (" (the lowest threshold within one plate of the best F1 on val, kept in best.tcnn)" if chosen else ""))

    describe = staticmethod(describe)


# ------------------------------------------------------------------------------------------ predict, redact

def predict(args):
    """python -m tinycnn.predict MODEL IMAGE... [--out DIR] [--annotations CSV]: every box with its score."""
    model = tinycnn.load_model(args.model, device=args.device, compile=False)
    threshold = threshold_of(model.metadata)
    truth = read_annotation_csv(args.annotations) if args.annotations else {}
    used = set()

    def show(path, image, photo, output):
        boxes, scores = photo_detections(photo, output, threshold)
        line = f"{path}: {len(boxes)} plate(s)" + "".join(
            f"; {score:.2f} at xmin {b[0]:.1f} ymin {b[1]:.1f} xmax {b[2]:.1f} ymax {b[3]:.1f} px"
            for b, score in zip(boxes, scores))
        true_boxes = truth.get(Path(path).name, np.zeros((0, 4), np.float32))
        if len(true_boxes):
            best = pairwise_iou(true_boxes, boxes).max(axis=1) if len(boxes) else np.zeros(len(true_boxes))
            line += f" (best IoU per true plate: {', '.join(f'{v:.3f}' for v in best)})"
        elif args.annotations:
            line += f" (no row for {Path(path).name} in {args.annotations})"
        print(line)
        if args.out:
            draw_boxes(image, boxes, true_boxes, scores).save(output_path(args.out, path, used))

    return predict_photos(model, args.images, model.metadata["img_size"], show,
                          run=lambda x: predict_outputs(model, x, 1, getattr(args, "tta", False)))


def plate_boxes(photo, output, threshold=SCORE_THRESHOLD):
    """Every detected plate's box (K, 4) in the photo's pixels."""
    return photo_detections(photo, output, threshold)[0]


def plate_mask(photo, output, threshold=SCORE_THRESHOLD):
    """The photo's pixels to redact, (H, W) bool: inside any detected plate's box."""
    return fill_mask_from_boxes(plate_boxes(photo, output, threshold), photo.height, photo.width) > 0

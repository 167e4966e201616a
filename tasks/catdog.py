"""Cat/dog (or any folder-per-class) image classification: train, evaluate, predict.

    python -m tinycnn.train catdog [--data DIR] [--model seed|strong|strong-ema|resnet] [--epochs N] [recipe flags] ...
    python -m tinycnn.evaluate RUN/best.tcnn --data DIR [--json] [--tta]
    python -m tinycnn.predict RUN/best.tcnn photo.jpg ... [--tta]

Presets (`--model`):
- `seed`: the tutorial's net exactly: grayscale 100×100, Conv64-Pool-Conv64-Pool-Dense64-Dense1(sigmoid),
  binary cross-entropy, Adam 1e-3, batch 32, 10 epochs, no augmentation.
- `strong` (the default: 83 % against the seed net's 64–67 % on real photos, see README): RGB 96×96, four
  blocks of conv3×3 + batch norm + ReLU + max-pool (32-64-128-256), global average pooling, dropout 0.3,
  Dense; flips, random resized crops and brightness/contrast jitter; AdamW 1e-3 (weight decay 1e-4) with a
  cosine schedule, 15 epochs. On the built-in images (no --data): 48×48, 8 epochs (BUILTIN_PRESETS).
- `strong-ema`: the strong net with the recipe for real photos (86 % on the shared photos, see README): RGB
  128×128, 45 epochs, random resized crops (area 0.7–1) and HSV jitter in the data workers, one warm-up epoch
  then a per-step cosine, the weights' moving average (0.998) validated and saved.
- `resnet`: a small ResNet (stride-2 stages, BN, global pooling, stochastic depth) with a modern recipe: EMA of
  the weights, random resized crops with aspect jitter, RandAugment and random erasing in the data workers,
  label smoothing, warm-up then cosine; RGB 112×112, 30 epochs (tasks/catdog_models.py).
Recipe flags (--ema, --mixup, --cutmix, --label-smoothing, --crop, --randaugment N,M, --erasing, --warmup,
--drop-path) change any preset's recipe; the run's recipe is kept in the model file (metadata "recipe"), and
seed and strong without flags train exactly as before. --tta averages evaluate's and predict's outputs over
flips and crops (tinycnn/tta.py).
Two classes train a sigmoid output with binary cross-entropy; more classes a softmax with cross-entropy.
Without --data the task trains on built-in procedurally drawn cats and dogs (tinycnn.tasks.synthetic_catdog),
drawn once into a folder of the user cache.
The model file records the task, the class names and the preprocessing, so evaluate and predict need no flags.

Data: the photos stream (tinycnn.data.image_dataset_from_directory), so memory holds a few batches whatever the
folder's size. A folder of class sub-folders is split per class (stratified, seeded by --seed), a folder with
train/ and val/ is taken as it is. The first epoch decodes every photo once into a uint8 file in the user cache
(`$XDG_CACHE_HOME` or ~/.cache, /tinycnn/datasets; `Dataset.cache(path)`, rebuilt when the folder or the
settings change), which later epochs and later runs read back through a memory map, reshuffled every epoch;
--no-cache decodes the photos again in every epoch instead (no disk space, more CPU). Evaluate and predict
decode the photos exactly as training did.
"""
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

import tinycnn
from tinycnn import layers
from tinycnn.callbacks import LearningRateScheduler
from tinycnn.checks import UserInputError
from tinycnn.cli import fraction, positive_int
from tinycnn.data import image_dataset_from_directory
from tinycnn.data.augment import Augment
from tinycnn.data.directory import decode_image_file
from tinycnn.data.folder import balanced_class_weights, class_counts, has_split_folders, user_cache_dir
from tinycnn.tta import predict_tta

from .catdog_models import (RESNET_PRESET, STRONG_EMA_PRESET, add_recipe_arguments, build_and_compile,
                            recipe_fit_arguments, recipe_settings)
from .common import Training, add_common_train_arguments, print_json
from .synthetic_catdog import ensure_builtin_catdog

TASK = "catdog"
TTA = dict(flips=True, crops=5)  # evaluate/predict --tta: the image, 5 crops, and their mirrors (tinycnn/tta.py)
# The built-in images (no --data): 2 × 1120, whose stratified 90/10 split is whole batches of 32 (2,016 train,
# 224 val: no smaller last batch, whose shapes would compile and keep their own buffers). On them the default
# preset trains at 48×48 for 8 epochs (BUILTIN_PRESETS, unless --img-size/--epochs say otherwise): the main
# command of the README, a few minutes from an empty cache on 2 cores (benchmarks/RESULTS.md, issue 20).
BUILTIN_TRAIN = dict(n_per_class=1120, seed=0)
BUILTIN_TEST = dict(n_per_class=200, seed=1)
BUILTIN_PRESETS = {"strong": dict(img_size=48, epochs=8)}
PRESETS = {
    "seed": dict(img_size=100, grayscale=True, epochs=10, batch_size=32, lr=1e-3, augment=False),
    "strong": dict(img_size=96, grayscale=False, epochs=15, batch_size=32, lr=1e-3, augment=True),
    "resnet": RESNET_PRESET,  # tasks/catdog_models.py, with its recipe (EMA, RandAugment, warm-up, ...)
    "strong-ema": STRONG_EMA_PRESET,  # the strong net with a recipe (128 px, crops, HSV, warm-up, EMA, 45 epochs)
}


# ---------------------------------------------------------------------------------------------- models

def seed_model(img_size, channels, classes):
    """The tutorial's network."""
    return tinycnn.Sequential([
        layers.Conv2D(64, 3, activation="relu", input_shape=(img_size, img_size, channels)),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        output_layer(classes),
    ])


def strong_model(img_size, channels, classes):
    """Four conv-BN-ReLU-pool blocks, global average pooling, dropout: 389 k parameters for RGB, 2 classes."""
    blocks = []
    for i, filters in enumerate((32, 64, 128, 256)):
        extra = {"input_shape": (img_size, img_size, channels)} if i == 0 else {}
        blocks += [layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_uniform", **extra),
                   layers.BatchNormalization(momentum=0.9), layers.Activation("relu"), layers.MaxPooling2D(2)]
    return tinycnn.Sequential(blocks + [layers.GlobalAveragePooling2D(), layers.Dropout(0.3), output_layer(classes)])


def output_layer(classes):
    return layers.Dense(1, activation="sigmoid") if classes == 2 else layers.Dense(classes, activation="softmax")


def loss_for(classes):
    return "binary_crossentropy" if classes == 2 else "sparse_categorical_crossentropy"


# ---------------------------------------------------------------------------------------------- train

def add_train_arguments(parser):
    add_common_train_arguments(parser, epochs=None, batch_size=None)
    parser.add_argument("--model", choices=sorted(PRESETS), default="strong",
                        help="seed: the tutorial's net; strong: batch norm, augmentation, RGB; strong-ema: the "
                             "strong net with a longer recipe (128 px, 45 epochs, crops, HSV jitter, EMA) for real "
                             "photos; resnet: a small ResNet with the recipe of tasks/catdog_models.py")
    parser.add_argument("--img-size", type=positive_int, help="square input size (default: the preset's)")
    colour = parser.add_mutually_exclusive_group()
    colour.add_argument("--grayscale", dest="grayscale", action="store_true", default=None)
    colour.add_argument("--rgb", dest="grayscale", action="store_false")
    parser.add_argument("--resize", choices=["stretch", "crop", "pad"], default="stretch",
                        help="stretch as the tutorial, or keep the aspect ratio with a centre crop or padding")
    parser.add_argument("--val-split", type=fraction, default=0.1, help="validation fraction (stratified, seeded)")
    parser.add_argument("--class-weight", choices=["none", "balanced"], default="none",
                        help="balanced: weigh classes by inverse frequency (for imbalanced folders)")
    augment = parser.add_mutually_exclusive_group()
    augment.add_argument("--augment", dest="augment", action="store_true", default=None)
    augment.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--builtin-size", type=int, default=BUILTIN_TRAIN["n_per_class"],
                        help="images per class of the built-in data (when no --data)")
    parser.add_argument("--no-cache", dest="cache", action="store_false",
                        help="decode the photos again every epoch instead of caching them decoded (uint8) in the "
                             "user cache after the first")
    add_recipe_arguments(parser)


class CatDogTraining(Training):
    """catdog's run: a folder of class subfolders (or the built-in images), the preset's net, accuracy."""
    task, monitor, main_metric = TASK, "val_accuracy", "accuracy"

    def settings(self, args):
        if not args.resume:
            return None, _settings(args)
        model = tinycnn.load_model(args.resume_file, device=args.device)  # checked by Training.run
        settings = model.metadata
        settings["epochs"] = args.epochs or settings["epochs"]
        print(f"resuming {args.resume} after {settings['epochs_done']} of {settings['epochs']} epoch(s)")
        return model, settings

    def data(self, settings, args, folder):
        data_root = settings["data"] or ensure_builtin_catdog(n_per_class=args.builtin_size,
                                                              seed=BUILTIN_TRAIN["seed"])
        settings["data"] = data_root
        train_set, val_set = training_datasets(data_root, settings, args.val_split, args.seed,
                                               cache=getattr(args, "cache", True))
        _report_counts(train_set, val_set)
        return train_set, val_set

    def model(self, resumed, settings, args, train_set):
        if resumed is not None:
            return resumed
        classes = len(train_set.class_names)
        if settings.get("recipe"):  # tasks/catdog_models.py
            steps = math.ceil(len(train_set.labels) / settings["batch_size"])
            model = build_and_compile(settings, classes, steps, args.device, seed_model, strong_model)
        else:
            build = seed_model if settings["preset"] == "seed" else strong_model
            model = build(settings["img_size"], 1 if settings["grayscale"] else 3, classes).to(args.device)
            model.compile(loss=loss_for(classes), metrics=["accuracy"], optimizer=_optimizer(settings))
        model.metadata = dict(settings, task=TASK, class_names=train_set.class_names)
        if not args.quiet:
            model.summary()
        return model

    def fit_arguments(self, settings, args, train_set, val_set):
        callbacks = []
        if settings["preset"] == "strong":
            callbacks.append(LearningRateScheduler(_cosine(settings["lr"], settings["epochs"])))
        augment = None
        if settings["augment"]:
            augmenter = Augment(flip=True, crop_scale=(0.7, 1.0), brightness=0.15, contrast=0.15)
            augment = lambda xb, yb: (augmenter(xb), yb)  # noqa: E731
        x = train_set
        if settings.get("recipe"):  # worker policy, mixing, EMA, warm-up: tasks/catdog_models.py
            x, val_set, augment, callbacks = recipe_fit_arguments(settings, len(train_set.class_names), train_set,
                                                                  val_set, _cosine)
        balanced = args.class_weight == "balanced"
        self.started = time.perf_counter()
        return dict(x=x, epochs=settings["epochs"], validation_data=val_set,
                    verbose=0 if args.quiet else 1, augment=augment, callbacks=callbacks,
                    class_weight=balanced_class_weights(train_set.labels) if balanced else None)

    def report(self, folder, args, rows, val_set):
        best = max(rows, key=lambda r: r.get("val_accuracy", -1)) if rows else {}
        print(f"done in {time.perf_counter() - self.started:.0f} s: best val_accuracy "
              f"{best.get('val_accuracy', float('nan')):.4f} (epoch {best.get('epoch', '-')}); "
              f"models in {folder}/best.tcnn and last.tcnn")


def train(args):
    return CatDogTraining().run(args)


def _settings(args):
    preset = dict(PRESETS[args.model], **(BUILTIN_PRESETS.get(args.model, {}) if args.data is None else {}))
    pick = lambda value, key: preset[key] if value is None else value  # noqa: E731
    settings = dict(preset=args.model, data=args.data, img_size=pick(args.img_size, "img_size"),
                    grayscale=pick(args.grayscale, "grayscale"), resize=args.resize,
                    epochs=pick(args.epochs, "epochs"), batch_size=pick(args.batch_size, "batch_size"),
                    lr=pick(args.lr, "lr"), augment=pick(args.augment, "augment"))
    recipe = recipe_settings(args, args.model, settings["epochs"])  # None for seed and strong without flags
    return settings if recipe is None else dict(settings, recipe=recipe)


def _optimizer(settings):
    if settings["preset"] == "seed":
        return tinycnn.optimizers.Adam(learning_rate=settings["lr"])
    return tinycnn.optimizers.AdamW(learning_rate=settings["lr"], weight_decay=1e-4)


def _cosine(base_lr, epochs):
    return lambda epoch, lr: base_lr * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


def _report_counts(train_set, val_set):
    counts = [class_counts(ds.labels, ds.class_names) for ds in (train_set, val_set)]
    print("train: " + ", ".join(f"{k} {v}" for k, v in counts[0].items()) +
          " | val: " + ", ".join(f"{k} {v}" for k, v in counts[1].items()))


# ---------------------------------------------------------------------------------------------- data

def decoding(settings):
    """image_dataset_from_directory's decoding arguments for a run's settings (or a model's metadata)."""
    size = settings["img_size"]
    return dict(image_size=(size, size), color_mode="grayscale" if settings["grayscale"] else "rgb",
                crop_to_aspect_ratio=settings["resize"] == "crop", pad_to_aspect_ratio=settings["resize"] == "pad")


def to_unit(images, labels):
    """A batch's pixels 0..255 -> 0..1 (what the models were built for)."""
    return images / np.float32(255), labels


def training_datasets(root, settings, val_split, seed, cache=True):
    """(train, val) Datasets of (images (B, S, S, C) in [0, 1], int labels) batches streamed from `root`:
    root/train + root/val as they are, else a stratified split of root's class folders seeded by `seed`.
    Each carries the listing's class_names, labels, file_paths and skipped; see the module docstring."""
    common = dict(decoding(settings), batch_size=None if cache else settings["batch_size"], seed=seed)
    if has_split_folders(root):
        train = image_dataset_from_directory(os.path.join(root, "train"), shuffle=not cache, **common)
        val = image_dataset_from_directory(os.path.join(root, "val"), shuffle=False, **common)
        if train.class_names != val.class_names:
            raise UserInputError(f"{root}: train/ and val/ have different class folders: "
                                 f"train {train.class_names}, val {val.class_names}")
    else:
        train, val = image_dataset_from_directory(root, validation_split=val_split, subset="both", stratify=True,
                                                  shuffle=not cache, **common)
    if not cache:
        return _in_unit_range(train, train), _in_unit_range(val, val)
    return (_cached_batches(train, root, "train", settings, seed=seed),
            _cached_batches(val, root, "val", settings, seed=None))


def _cached_batches(images, root, name, settings, seed):
    """Single decoded images -> a uint8 cache file in the user cache (written in the first epoch) -> shuffled
    by row number each epoch when seed is given -> batches in [0, 1]."""
    key = hashlib.sha256(json.dumps([os.path.abspath(root), name, decoding(settings)]).encode()).hexdigest()[:20]
    path = os.path.join(user_cache_dir(), "datasets", f"{os.path.basename(os.path.abspath(root))}-{name}-{key}")
    ds = images.cache(path)
    if seed is not None:
        ds = ds.shuffle(len(ds), seed)
    return _in_unit_range(ds.batch(settings["batch_size"]), images)


def _in_unit_range(batches, listing):
    """batches scaled to [0, 1] in a background thread, with the listing's class_names, labels, file_paths and
    skipped."""
    ds = batches.map(to_unit, 1).prefetch(2)
    for name in ("class_names", "labels", "file_paths", "skipped"):
        setattr(ds, name, getattr(listing, name))
    return ds


# ---------------------------------------------------------------------------------------------- evaluate

def evaluate(args):
    model = tinycnn.load_model(args.model, device=args.device)
    meta = model.metadata
    root = args.data or ensure_builtin_catdog(**BUILTIN_TEST)
    data = image_dataset_from_directory(root, shuffle=False, batch_size=args.batch_size, **decoding(meta))
    if data.class_names != meta["class_names"]:
        raise SystemExit(f"error: {root} has classes {data.class_names}, the model knows {meta['class_names']}")
    # an iterator, not the Dataset: predict then reads to the end of the pass (not len(data) batches), which is
    # where the dataset reports its unreadable files; predictions leave them out
    images = iter(data.map(to_unit, 1))
    predicted = predicted_classes(predict_tta(model, images, **TTA) if getattr(args, "tta", False)
                                  else model.predict(images))
    skipped = {path for path, _ in data.skipped}
    labels = np.array([label for path, label in zip(data.file_paths, data.labels) if path not in skipped])
    report = classification_report(labels, predicted, data.class_names)
    report.update(model=args.model, data=root, images=len(labels))
    if args.json:
        print_json(report)
    else:
        _print_report(report)
    return 0


def predicted_classes(outputs):
    return (outputs[:, 0] > 0.5).astype(np.int64) if outputs.shape[1] == 1 else outputs.argmax(axis=1)


def classification_report(labels, predicted, class_names):
    """Accuracy, per-class precision/recall/F1 and the confusion matrix (rows: true class, columns: predicted)."""
    k = len(class_names)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i].sum() if confusion[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = dict(precision=float(precision), recall=float(recall), f1=float(f1),
                               support=int(confusion[i].sum()))
    return dict(accuracy=float(np.trace(confusion) / max(confusion.sum(), 1)), per_class=per_class,
                confusion_matrix=confusion.tolist(), class_names=list(class_names))


def _print_report(report):
    print(f"{report['images']} images in {report['data']}: accuracy {report['accuracy']:.4f}")
    print(f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name, m in report["per_class"].items():
        print(f"{name:<12}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10}")
    names = report["class_names"]
    print("confusion matrix (rows: true, columns: predicted)")
    print(" " * 12 + "".join(f"{n:>10}" for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        print(f"{name:<12}" + "".join(f"{v:>10}" for v in row))


# ---------------------------------------------------------------------------------------------- predict

def predict(args):
    model = tinycnn.load_model(args.model, device=args.device)
    meta = model.metadata
    size, colour = meta["img_size"], "grayscale" if meta["grayscale"] else "rgb"
    failures = 0
    for path in args.images:
        try:
            image = decode_image_file(path, (size, size), colour, resize=meta["resize"]) / np.float32(255)
        except (OSError, ValueError) as error:
            print(f"{path}: error: {error}", file=sys.stderr)
            failures += 1
            continue
        batch = image[None]
        output = (predict_tta(model, batch, **TTA) if getattr(args, "tta", False) else model.predict(batch))[0]
        if len(output) == 1:
            p_last = float(output[0])
            index, confidence = (1, p_last) if p_last > 0.5 else (0, 1 - p_last)
        else:
            index = int(output.argmax())
            confidence = float(output[index])
        print(f"{path}: {meta['class_names'][index]} ({confidence:.2f})")
    return 1 if failures else 0

"""`image_dataset_from_directory`: a photo folder as a streaming Dataset, with Keras' arguments and meaning.

    from tinycnn.data import image_dataset_from_directory
    train, val = image_dataset_from_directory("PetImages", image_size=(96, 96), validation_split=0.2,
                                              subset="both", seed=0)
    train.class_names        # ["Cat", "Dog"]: the sub-folder names, sorted
    model.fit(train, validation_data=val, epochs=10)

Layout and labels, as Keras: with labels="inferred" each sub-folder of `directory` is a class (files may sit
in nested folders inside it; files directly in `directory` belong to no class and are left out, reported with
the bad files); `class_names` may fix the order of the sub-folders. labels=None reads every file under
`directory` with no labels; a list or tuple gives each file's integer label, the files taken in sorted path
order. label_mode: "int" (int32 (N,)), "categorical" (float32 one-hot (N, classes)), "binary" (float32 (N, 1),
exactly two classes) or None (images only).

Elements: batches of float32 (batch, height, width, channels) images with values 0..255, not rescaled (as
Keras gives them: put a Rescaling layer or a map in front to scale), then the labels. color_mode "grayscale",
"rgb" or "rgba" gives 1, 3 or 4 channels. Every image is resized to image_size=(height, width) with the
`interpolation` filter (Pillow's, which averages every source pixel under an output pixel when it shrinks);
crop_to_aspect_ratio cuts the largest centred region of the target's aspect ratio first, pad_to_aspect_ratio
pads the image with black to that aspect ratio instead (Keras 3). image_size=None keeps
each image's own size: the images then must all have one size (else a one-line error naming the folder), or
batch_size=None must ask for single images.

Splits: with shuffle the file list is shuffled with `seed` first (a seed is required with validation_split,
so that the two subsets never overlap); validation_split takes the last fraction of it as "validation" and the
rest as "training"; subset="both" returns (training, validation). stratify=True (tinycnn's addition, for
labels="inferred") splits each class on its own instead (tinycnn.data.stratified_split with `seed`:
round(validation_split x its count) of every class, at least one, in validation), so that both subsets keep the
folder's class balance; the subsets' files are then in sorted order, and `seed` is still required. The
training dataset is reshuffled every epoch (seeded: the same orders in every run); the validation one is not.

Decoding runs per file in the map's worker threads (as many as the cores the process may use), with
Image.draft decoding a JPEG at 1/2, 1/4 or 1/8 of its size when the target is that much smaller, and a
prefetch thread keeps two batches ready, so decoding overlaps training; memory holds a few batches, never the
folder. A file that is not a readable image (a text file, a truncated JPEG, Thumbs.db) is left out: after
the first complete pass they are reported together in one SkippedFilesWarning, as the folder loader does, and
listed in `.skipped`; an epoch then has fewer elements than len() counted. `.file_paths` lists the subset's
files in their (first) order, `.labels` their integer labels (tinycnn's addition, e.g. for
`balanced_class_weights`).

To decode a folder once and read it back fast in every later epoch and run, cache the decoded images before
shuffling: `image_dataset_from_directory(root, batch_size=None, shuffle=False, ...)
.cache("cache/train").shuffle(n, seed).batch(32).prefetch(2)`.
"""
import os

import numpy as np
from PIL import Image

from .dataset import AUTOTUNE, Dataset, _memo
from .folder import (_cache_key, _check_root, _walk_visible_files, _warn_skipped, find_class_folders, list_class_files,
                     stratified_split)
from .images import ImageDecodeError, open_image, resize_image, to_gray_or_rgb

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
                  "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX,
                  "lanczos3": Image.Resampling.LANCZOS, "lanczos5": Image.Resampling.LANCZOS,
                  "hamming": Image.Resampling.HAMMING}
CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
LABEL_MODES = ("int", "categorical", "binary", None)
SUBSETS = ("training", "validation", "both")


def image_dataset_from_directory(directory, labels="inferred", label_mode="int", class_names=None,
                                 color_mode="rgb", batch_size=32, image_size=(256, 256), shuffle=True, seed=None,
                                 validation_split=None, subset=None, interpolation="bilinear",
                                 crop_to_aspect_ratio=False, pad_to_aspect_ratio=False, num_parallel_calls=AUTOTUNE,
                                 stratify=False):
    """A Dataset of (images, labels) batches streamed from `directory`; see the module docstring."""
    root = _check_root(directory)
    if crop_to_aspect_ratio and pad_to_aspect_ratio:
        raise ValueError("crop_to_aspect_ratio and pad_to_aspect_ratio cannot both be True")
    _check_arguments(root, labels, label_mode, class_names, color_mode, batch_size, image_size, shuffle, seed,
                     validation_split, subset, interpolation)
    if stratify and (labels != "inferred" or validation_split is None or seed is None):
        raise ValueError(f'{root}: stratify=True needs labels="inferred", a validation_split and a seed')
    files, label_ids, class_names, stray = _list_files(root, labels, class_names, label_mode)
    if label_mode == "binary" and len(class_names) != 2:
        raise ValueError(f'{root}: label_mode="binary" needs exactly two classes, found {len(class_names)}: '
                         f"{class_names[:5]}")
    if shuffle and seed is None:
        from ..random import generator
        seed = int(generator().integers(1_000_000))
    order = np.random.default_rng(seed).permutation(len(files)) if shuffle else np.arange(len(files))
    n_val = None
    if stratify:     # the training rows, then the validation rows, each class split on its own
        train_rows, val_rows = stratified_split(label_ids, validation_split, seed)
        order, n_val = np.concatenate([train_rows, val_rows]), len(val_rows)
    parts = _split(root, order, validation_split, subset, n_val)
    settings = dict(color_mode=color_mode, image_size=None if image_size is None else [int(s) for s in image_size],
                    interpolation=interpolation, label_mode=label_mode, class_names=class_names,
                    resize="crop" if crop_to_aspect_ratio else "pad" if pad_to_aspect_ratio else "stretch")
    folder_key = _memo(lambda: _cache_key(root, files, settings))
    made = [_subset_dataset(root, files, label_ids, len(class_names), rows, settings, folder_key, name,
                            batch_size, shuffle and name == "training", seed, num_parallel_calls, stray)
            for name, rows in parts]
    for ds in made:
        ds.class_names = list(class_names)
    return tuple(made) if subset == "both" else made[0]


# ---------------------------------------------------------------------------------------------- arguments

def _check_arguments(root, labels, label_mode, class_names, color_mode, batch_size, image_size, shuffle, seed,
                     validation_split, subset, interpolation):
    if not (labels in ("inferred", None) or isinstance(labels, (list, tuple, np.ndarray))):
        raise ValueError(f'labels must be "inferred", None, or a list of integer labels, got {labels!r}')
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if class_names is not None and labels != "inferred":
        raise ValueError('class_names can only be given with labels="inferred"')
    if color_mode not in CHANNELS:
        raise ValueError(f"color_mode must be one of {tuple(CHANNELS)}, got {color_mode!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if image_size is not None and not (isinstance(image_size, (tuple, list)) and len(image_size) == 2 and
                                       all(isinstance(s, (int, np.integer)) and s >= 1 for s in image_size)):
        raise ValueError(f"image_size must be a (height, width) pair of positive integers or None, got {image_size!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {tuple(INTERPOLATIONS)}, got {interpolation!r}")
    if subset not in SUBSETS + (None,):
        raise ValueError(f"subset must be one of {SUBSETS} or None, got {subset!r}")
    if (subset is None) != (validation_split is None):
        raise ValueError("validation_split and subset go together: give both (subset='training', 'validation' "
                         "or 'both') or neither")
    if validation_split is not None and not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
    if validation_split is not None and shuffle and seed is None:
        raise ValueError(f"{root}: validation_split with shuffle needs a seed, so that the training and "
                         "validation subsets are drawn from the same order and never overlap")


def _list_files(root, labels, class_names, label_mode):
    """(relative file paths, their labels or None, class names, stray files) for the three kinds of labels."""
    if labels == "inferred":
        found = find_class_folders(root)     # errors name root: no class folders, one class only
        if class_names is not None:
            if sorted(class_names) != found:
                raise ValueError(f"class_names {list(class_names)} do not match the class folders of {root}: "
                                 f"{found}")
            found = list(class_names)
        files, label_ids, stray = list_class_files(root, found)
        return files, np.asarray(label_ids, np.int64), found, stray
    files = [os.path.normpath(rel) for rel in _walk_visible_files(root, "")]
    if not files:
        raise ValueError(f"no files in {root}")
    if labels is None:
        if label_mode is not None:
            raise ValueError(f"{root}: labels=None needs label_mode=None (there are no labels to give)")
        return files, None, [], []
    label_ids = np.asarray(labels)
    if label_ids.ndim != 1 or label_ids.dtype.kind not in "iu" or len(label_ids) != len(files):
        raise ValueError(f"labels must be a list of {len(files)} integers, one per file under {root} in sorted "
                         f"order; got {len(label_ids)} of dtype {label_ids.dtype}")
    if label_ids.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(label_ids.min())}")
    return files, label_ids.astype(np.int64), [str(c) for c in range(int(label_ids.max()) + 1)], []


def _split(root, order, validation_split, subset, n_val=None):
    """[(subset name, rows of the file list)]: the last validation_split of the order (or the last n_val rows)
    is "validation"."""
    if validation_split is None:
        return [("training", order)]
    n_val = int(validation_split * len(order)) if n_val is None else n_val
    parts = {"training": order[:len(order) - n_val], "validation": order[len(order) - n_val:]}
    names = ("training", "validation") if subset == "both" else (subset,)
    for name in names:
        if len(parts[name]) == 0:
            raise ValueError(f"{root}: validation_split={validation_split} of {len(order)} files leaves the "
                             f"{name} subset empty")
    return [(name, parts[name]) for name in names]


# ---------------------------------------------------------------------------------------------- the pipeline

def _subset_dataset(root, files, label_ids, n_classes, rows, settings, folder_key, name, batch_size, shuffle,
                    seed, num_parallel_calls, stray):
    """files[rows] -> (optionally shuffled) decode in threads -> drop bad files -> batch -> prefetch -> report."""
    rows = np.asarray(rows, np.int64)
    report = _SkipReport(root, len(rows) + len(stray), [(os.path.join(root, rel), "not inside a class folder")
                                                        for rel in stray])
    source = Dataset(lambda: iter(rows), len(rows), _memo(lambda: f"{folder_key()}:{name}:{_hash_rows(rows)}"))
    ds = source.shuffle(len(rows), seed) if shuffle else source
    ds = ds.map(_decoder(root, files, label_ids, n_classes, settings), num_parallel_calls)
    ds = _keep_decoded(ds, root, files, report, same_size=settings["image_size"] is None and batch_size is not None)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    ds = _reported(ds.prefetch(2), report)
    ds.file_paths = [os.path.join(root, files[i]) for i in rows]
    ds.labels = None if label_ids is None else label_ids[rows]       # e.g. for balanced_class_weights
    ds.skipped = report.skipped
    return ds


def _decoder(root, files, label_ids, n_classes, settings):
    """row -> (row, image float32 (H, W, C) 0..255, label or None), or (row, None, reason) for a bad file."""
    label_mode = settings["label_mode"]

    def decode(row):
        path = os.path.join(root, files[row])
        try:
            pixels = decode_image_file(path, settings["image_size"], settings["color_mode"], settings["interpolation"],
                                       settings["resize"])
        except ImageDecodeError as error:
            return row, None, str(error).removeprefix(path + ": ")
        return row, pixels, _label(label_ids, row, n_classes, label_mode)
    return decode


def decode_image_file(path, image_size, color_mode="rgb", interpolation="bilinear", resize="stretch"):
    """One file as image_dataset_from_directory decodes it: float32 (H, W, C) 0..255 (JPEGs drafted when the
    target is much smaller). resize: "stretch", "crop" or "pad". Raises ImageDecodeError naming the file.
    For predicting on single photos exactly as the model saw its training images."""
    draft = None if image_size is None else (max(image_size),) * 2       # either orientation (EXIF) still big enough
    img = open_image(path, draft_size=draft)
    img = img.convert("RGBA") if color_mode == "rgba" else to_gray_or_rgb(img, grayscale=color_mode == "grayscale")
    if image_size is not None:
        img = resize_image(img, image_size, resize, INTERPOLATIONS[interpolation])
    pixels = np.asarray(img, dtype=np.float32)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _label(label_ids, row, n_classes, label_mode):
    if label_mode is None:
        return None
    label = int(label_ids[row])
    if label_mode == "int":
        return np.int32(label)
    if label_mode == "binary":
        return np.array([label], np.float32)
    return np.eye(n_classes, dtype=np.float32)[label]


def _keep_decoded(ds, root, files, report, same_size):
    """Drop bad files (noting them in the report), check one size if asked, and give (image[, label])."""
    def step(decoded):
        first = None
        for row, image, label in decoded:
            if image is None:
                report.add(files[row], label)
                continue
            if same_size:
                if first is None:
                    first = (files[row], image.shape)
                elif image.shape != first[1]:
                    raise ValueError(f"{root}: images of different sizes ({first[0]} is {first[1][:2]}, {files[row]} "
                                     f"is {image.shape[:2]}); pass image_size=(height, width) to resize them")
            yield image if label is None else (image, label)
    return Dataset(lambda: step(iter(ds)), ds.cardinality(), ds._fingerprint, ds,
                   lambda parent, n, i: _keep_decoded(parent, root, files, report, same_size))


def _reported(ds, report):
    """After each pass, one SkippedFilesWarning for the files not yet reported. Also when the consumer stops
    early: fit stops after len() batches, and a pass with bad files ends one element short of that."""
    def step():
        try:
            yield from ds
        finally:
            report.warn_new()
    return Dataset(step, ds.cardinality(), ds._fingerprint, ds, lambda parent, n, i: _reported(parent, report))


class _SkipReport:
    """The files left out of a subset, each reported once."""

    def __init__(self, root, total, skipped):
        self.root, self.total, self.skipped, self._seen, self._warned = root, total, list(skipped), set(), 0

    def add(self, rel, reason):
        if rel not in self._seen:
            self._seen.add(rel)
            self.skipped.append((os.path.join(self.root, rel), reason))

    def warn_new(self):
        new = self.skipped[self._warned:]
        if not new:
            return
        self._warned = len(self.skipped)
        _warn_skipped(self.root, [(os.path.relpath(path, self.root), reason) for path, reason in new], self.total)


def _hash_rows(rows):
    import hashlib
    return hashlib.sha256(rows.tobytes()).hexdigest()[:16]

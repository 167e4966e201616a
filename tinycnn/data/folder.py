"""Load a folder of images, one sub-folder per class, into arrays; cache the result; split it.

    from tinycnn.data.folder import load_image_folder, stratified_split
    data = load_image_folder("PetImages", img_size=100, grayscale=True)   # PetImages/Cat, PetImages/Dog
    data.images        # (N, 100, 100, 1) float32 in [0, 1]
    data.labels        # (N,) int64: the index of the class in data.class_names
    data.class_names   # ["Cat", "Dog"]: the sub-folder names, sorted
    train_idx, val_idx = stratified_split(data.labels, val_fraction=0.2, seed=0)

Layout. `root/<class>/...` for any number (>= 2) of classes; files may sit in nested folders inside a class
folder. Names starting with "." (files and folders) are ignored. When the data comes already split, as
`root/train/<class>/...` and `root/val/<class>/...`, `load_split_folders(root, ...)` loads both (with the
same class names); `load_image_folder` refuses such a root rather than take "train" and "val" for classes.
`load_train_val(root, ...)` takes either layout and returns a (train, val) pair.

Broken files. Every visible file in a class folder is tried, whatever its extension: a file Pillow cannot
read (a text file, a zero-byte or truncated JPEG, Thumbs.db) is skipped, and so is a file lying directly in
`root` (it belongs to no class). All skipped files are reported together in ONE `SkippedFilesWarning`
(warnings.warn) that counts them and names the first few; the list is in `data.skipped`. The tutorial's
`except: pass` hid them. Errors name the folder at fault: a missing root, no class folders, a single class,
an empty class folder, a class (or a whole folder) without one readable image.

Speed. Decoding runs on a thread pool of `workers` threads (Pillow releases the GIL while it decodes and
resizes: on 2 cores, 300 JPEGs of 500x375 took 0.34 s with 2 threads against 0.82 s serially, as fast as a
process pool and with no `if __name__ == "__main__":` needed in the caller's script). Fewer than
PARALLEL_MIN_FILES files are decoded serially. The decoded pixels are cached once as uint8 (a quarter of the
float32 size; lossless, since every pixel is a whole number / 255) in `<key>.npy` plus `<key>.json`
(settings, class names, which files were kept, which skipped and why). The key hashes the folder's path,
every file's relative path, size and modification time, and the settings (img_size, grayscale, resize), so
a second load reads the .npy instead of decoding, and any change to the folder or the settings decodes
afresh (the outdated entry of that folder and settings is then deleted). The cache lives in the user cache
(`$XDG_CACHE_HOME` or ~/.cache, /tinycnn/folders), never inside the data folder. Files are written to a
temporary name and renamed (os.replace), so a crash never leaves half a cache; an unreadable cache entry is
reported with a CacheWarning and rebuilt, and a cache that cannot be written is reported and skipped.
`cache_dir=False` turns caching off.
"""
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..checks import UserInputError
from ..saving import write_atomically
from .images import ImageDecodeError, RESIZE_MODES, load_image_uint8, parse_size

PARALLEL_MIN_FILES = 64     # below this many files, decode serially (a pool costs more than it saves)
CACHE_FORMAT = 1            # bump when the cache's layout or the decoding changes
NAMED_IN_WARNING = 5        # how many skipped files the warning names


class SkippedFilesWarning(UserWarning):
    """Some files in an image folder could not be decoded and were left out."""


class CacheWarning(UserWarning):
    """The decoded-image cache could not be read (it is rebuilt) or written (loading goes on without it)."""


@dataclass
class ImageFolderData:
    """Decoded images of a class-per-folder dataset; see the module docstring."""
    images: np.ndarray          # (N, H, W, C) float32 in [0, 1]
    labels: np.ndarray          # (N,) int64, index into class_names
    class_names: list           # sorted class-folder names
    paths: list                 # absolute path of each image, in the order of images
    root: str = ""
    skipped: list = field(default_factory=list)   # (path, reason) of every file left out
    from_cache: bool = False

    def __len__(self):
        return len(self.labels)

    def subset(self, indices):
        """A new ImageFolderData with only the samples at `indices` (e.g. from stratified_split)."""
        indices = np.asarray(indices, dtype=np.int64)
        return ImageFolderData(self.images[indices], self.labels[indices], list(self.class_names),
                               [self.paths[i] for i in indices], self.root, list(self.skipped), self.from_cache)

    def class_counts(self):
        """{class name: number of images}."""
        return class_counts(self.labels, self.class_names)


# ----------------------------------------------------------------------------------------------- loading

def load_image_folder(root, img_size, grayscale=True, resize="stretch", cache_dir=None, workers=2):
    """Decode every image under `root/<class>/` to (N, H, W, C) float32; see the module docstring.

    img_size: int or (height, width). grayscale: 1 channel, else RGB. resize: "stretch" | "crop" | "pad"
    (see tinycnn.data.images). cache_dir: None for the default place, a folder, or False for no cache.
    workers: decoding threads.
    """
    root = _check_root(root)
    settings = {"img_size": list(parse_size(img_size)), "grayscale": bool(grayscale), "resize": resize}
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    class_names = find_class_folders(root)
    files, labels, stray = list_class_files(root, class_names)
    key = _cache_key(root, files + stray, settings)
    cache = None if cache_dir is False else _cache_paths(cache_dir or default_cache_dir(root), root, key)
    cached = _read_cache(cache, key) if cache else None
    if cached is not None:
        pixels, kept, skipped = cached["pixels"], cached["kept"], cached["skipped"]
    else:
        pixels, kept, skipped = _decode_all(root, files, settings, workers)
        _check_every_class_read(root, class_names, files, labels, kept, skipped)
        skipped = [(rel, "not inside a class folder") for rel in stray] + skipped
        if cache:
            _write_cache(cache, key, root, settings, class_names, pixels, kept, skipped)
    _warn_skipped(root, skipped, len(files) + len(stray))
    return ImageFolderData(
        images=np.divide(pixels, np.float32(255.0), dtype=np.float32),     # straight to float32: no copy
        labels=np.asarray([labels[i] for i in kept], dtype=np.int64),
        class_names=list(class_names),
        paths=[os.path.join(root, files[i]) for i in kept],
        root=root,
        skipped=[(os.path.join(root, rel), reason) for rel, reason in skipped],
        from_cache=cached is not None)


def has_split_folders(root):
    """True when `root` holds `train/` and `val/` folders (an explicit train/validation split)."""
    return all(os.path.isdir(os.path.join(root, part)) for part in ("train", "val"))


def load_split_folders(root, img_size, grayscale=True, resize="stretch", cache_dir=None, workers=2):
    """Load `root/train/<class>/...` and `root/val/<class>/...` -> (train, val) ImageFolderData.

    Both must have the same class folders, so that a label means the same class in both.
    """
    root = _check_root(root)
    if not has_split_folders(root):
        raise FileNotFoundError(f"{root}: expected the folders {os.path.join(root, 'train')} and "
                                f"{os.path.join(root, 'val')}, each with one sub-folder per class")
    train, val = (load_image_folder(os.path.join(root, part), img_size, grayscale, resize, cache_dir, workers)
                  for part in ("train", "val"))
    if train.class_names != val.class_names:
        raise UserInputError(f"{root}: train/ and val/ have different class folders: "
                         f"train {train.class_names}, val {val.class_names}")
    return train, val


def load_train_val(root, img_size, grayscale=True, resize="stretch", val_fraction=0.2, seed=0,
                   cache_dir=None, workers=2):
    """(train, val) ImageFolderData: `root/train` + `root/val` if they exist, else a stratified split of root."""
    if has_split_folders(root):
        return load_split_folders(root, img_size, grayscale, resize, cache_dir, workers)
    data = load_image_folder(root, img_size, grayscale, resize, cache_dir, workers)
    train_idx, val_idx = stratified_split(data.labels, val_fraction, seed)
    return data.subset(train_idx), data.subset(val_idx)


# ----------------------------------------------------------------------------------------------- listing

def _visible(name):
    return not name.startswith(".")


def _check_root(root):
    root = os.path.abspath(os.fspath(root))
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"not a folder: {root} (expected a folder with one sub-folder per class)")
    return root


def find_class_folders(root):
    """The sorted names of the visible sub-folders of `root`; at least two, else a ValueError naming root."""
    names = sorted(n for n in os.listdir(root) if _visible(n) and os.path.isdir(os.path.join(root, n)))
    if set(names) >= {"train", "val"}:
        raise UserInputError(f"{root} holds train/ and val/ folders: load them with load_split_folders(root, ...) "
                         f"or load_train_val(root, ...) instead of taking 'train' and 'val' for classes")
    if not names:
        raise UserInputError(f"no class folders in {root}: expected one sub-folder per class, "
                         f"e.g. {os.path.join(root, 'cat')} and {os.path.join(root, 'dog')}")
    if len(names) == 1:
        raise UserInputError(f"only one class folder ({names[0]!r}) in {root}: a classifier needs at least two")
    return names


def list_class_files(root, class_names):
    """Every visible file under each class folder, recursively and sorted.

    Returns (files, labels, stray): paths relative to root, their class indices, and the visible files lying
    directly in root (in no class). An empty class folder is a ValueError naming it.
    """
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = _walk_visible_files(root, name)
        if not found:
            raise UserInputError(f"class folder {os.path.join(root, name)} is empty: it holds no (visible) files")
        files += found
        labels += [label] * len(found)
    stray = sorted(n for n in os.listdir(root) if _visible(n) and os.path.isfile(os.path.join(root, n)))
    return files, labels, stray


def _walk_visible_files(root, folder):
    """Relative paths of the visible files under root/folder, skipping hidden folders, in sorted order."""
    found = []
    for here, dirs, names in os.walk(os.path.join(root, folder)):
        dirs[:] = sorted(d for d in dirs if _visible(d))     # prune hidden folders, walk in a fixed order
        rel_here = os.path.relpath(here, root)
        found += [os.path.join(rel_here, n) for n in sorted(names)
                  if _visible(n) and os.path.isfile(os.path.join(here, n))]
    return found


# ---------------------------------------------------------------------------------------------- decoding

def _decode_all(root, files, settings, workers):
    """Decode files (relative to root) -> (uint8 pixels (K, H, W, C), indices kept, [(rel, reason) skipped])."""
    def decode(rel):
        try:
            return load_image_uint8(os.path.join(root, rel), settings["img_size"], settings["grayscale"],
                                    settings["resize"]), None
        except ImageDecodeError as exc:
            return None, str(exc).removeprefix(os.path.join(root, rel) + ": ")

    if workers <= 1 or len(files) < PARALLEL_MIN_FILES:
        results = [decode(rel) for rel in files]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(decode, files))
    kept = [i for i, (pixels, _) in enumerate(results) if pixels is not None]
    skipped = [(files[i], reason) for i, (pixels, reason) in enumerate(results) if pixels is None]
    height, width = settings["img_size"]
    channels = 1 if settings["grayscale"] else 3
    stacked = np.empty((len(kept), height, width, channels), dtype=np.uint8)
    for row, i in enumerate(kept):
        stacked[row] = results[i][0]
    return stacked, kept, skipped


def _check_every_class_read(root, class_names, files, labels, kept, skipped):
    """ValueError if no image at all, or no image of some class, could be decoded."""
    def first_reasons():
        return "; ".join(f"{rel}: {reason}" for rel, reason in skipped[:3])
    if not kept:
        raise UserInputError(f"no readable image under {root}: all {len(files)} files failed ({first_reasons()})")
    read_per_class = np.bincount([labels[i] for i in kept], minlength=len(class_names))
    for label, count in enumerate(read_per_class):
        if count == 0:
            raise UserInputError(f"no readable image in class folder {os.path.join(root, class_names[label])}: "
                             f"every file failed to decode ({first_reasons()})")


def _warn_skipped(root, skipped, total):
    """One SkippedFilesWarning counting the skipped files and naming the first few (nothing if none)."""
    if not skipped:
        return
    named = "; ".join(f"{rel} ({reason})" for rel, reason in skipped[:NAMED_IN_WARNING])
    more = f"; and {len(skipped) - NAMED_IN_WARNING} more" if len(skipped) > NAMED_IN_WARNING else ""
    warnings.warn(f"{root}: skipped {len(skipped)} of {total} files that are not readable images "
                  f"(the list is in .skipped): {named}{more}", SkippedFilesWarning, stacklevel=3)


# ------------------------------------------------------------------------------------------------- cache

def user_cache_dir():
    """tinycnn's folder in the user's cache: $XDG_CACHE_HOME/tinycnn, ~/.cache/tinycnn or %LOCALAPPDATA%."""
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA") or os.path.expanduser("~/.cache")
    return os.path.join(base, "tinycnn")


def default_cache_dir(root):
    """The user cache's folders/ folder: a data folder is never written to (it may be shared or read-only,
    and root ignores permission bits); the key below tells the folders apart."""
    return os.path.join(user_cache_dir(), "folders")


def _cache_key(root, rel_files, settings):
    """sha256 over the folder path, the settings and each file's relative path, size and mtime."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, root, settings]).encode())
    for rel in rel_files:
        stat = os.stat(os.path.join(root, rel))
        # os.fsencode: a file name that is not valid UTF-8 (its bytes kept as surrogates) hashes by its bytes
        digest.update(os.fsencode(rel) + f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_paths(cache_dir, root, key):
    """{"dir", "npy", "json"} of the cache entry for this key (named after the folder, for a human reader)."""
    stem = f"{os.path.basename(root) or 'root'}-{key[:24]}"
    return {"dir": cache_dir, "npy": os.path.join(cache_dir, stem + ".npy"),
            "json": os.path.join(cache_dir, stem + ".json")}


def _read_cache(cache, key):
    """The cached {"pixels", "kept", "skipped"} for key, or None (absent, or unreadable: CacheWarning)."""
    if not os.path.exists(cache["json"]):
        return None
    try:
        with open(cache["json"], encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("key") != key:
            raise ValueError("its key does not match its name")
        pixels = np.load(cache["npy"], allow_pickle=False)
        if pixels.dtype != np.uint8 or list(pixels.shape) != meta["shape"] or len(meta["kept"]) != len(pixels):
            raise ValueError(f"array {pixels.dtype} {pixels.shape} does not match the metadata")
        return {"pixels": pixels, "kept": meta["kept"], "skipped": [tuple(s) for s in meta["skipped"]]}
    except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:  # json's decode error is a ValueError
        warnings.warn(f"cache entry {cache['json']} is unreadable ({exc}); decoding the folder again",
                      CacheWarning, stacklevel=3)
        return None


def _write_cache(cache, key, root, settings, class_names, pixels, kept, skipped):
    """Write the .npy then the .json (the .json's presence marks a complete entry); drop outdated entries."""
    meta = {"format": CACHE_FORMAT, "key": key, "root": root, "settings": settings, "class_names": class_names,
            "shape": list(pixels.shape), "kept": kept, "skipped": [list(s) for s in skipped]}
    try:
        os.makedirs(cache["dir"], exist_ok=True)
        _write_atomically(cache["npy"], lambda f: np.save(f, pixels, allow_pickle=False))
        _write_atomically(cache["json"], lambda f: f.write(json.dumps(meta).encode("utf-8")))
        _remove_outdated_entries(cache, root, settings)
    except OSError as exc:
        warnings.warn(f"could not write the image cache in {cache['dir']} ({exc}); going on without it",
                      CacheWarning, stacklevel=3)


def _write_atomically(path, write):
    """Write through `write(file)` to a temporary file beside `path`, then rename it over `path` (following
    the umask; saving.write_atomically)."""
    write_atomically(path, write, suffix=os.path.splitext(path)[1])


def _remove_outdated_entries(cache, root, settings):
    """Delete other entries of the same folder and settings: the folder changed since they were written."""
    for name in os.listdir(cache["dir"]):
        path = os.path.join(cache["dir"], name)
        if not name.endswith(".json") or path == cache["json"]:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("root") == root and meta.get("settings") == settings:
                os.remove(path)
                os.remove(path[:-len(".json")] + ".npy")
        except (OSError, ValueError):
            continue      # someone else's or a broken entry: leave it alone


# ------------------------------------------------------------------------------------------------ splits

def stratified_split(labels, val_fraction, seed):
    """Seeded per-class split of sample indices -> (train_idx, val_idx), both sorted int64 arrays.

    Each class puts round(val_fraction * its count) of its samples, chosen at random, in validation; when
    val_fraction > 0 a class with >= 2 samples gives at least one to validation and keeps at least one
    for training (a class with a single sample keeps it for training). Same labels and seed, same split.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(np.floor(val_fraction * len(members) + 0.5))
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64) if val else np.zeros(0, np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), val_idx


def class_counts(labels, class_names):
    """{class name: how many labels are that class}, in class order (zero counts included)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    if len(counts) > len(class_names):
        raise ValueError(f"label {len(counts) - 1} has no name: only {len(class_names)} class names")
    return {name: int(count) for name, count in zip(class_names, counts)}


def balanced_class_weights(labels):
    """{class index: n_samples / (n_classes * count of the class)} (scikit-learn's "balanced" weights).

    A Keras-style `class_weight` for fit(): rare classes weigh more, and the weights average to 1 per sample.
    n_classes counts the classes present in labels.
    """
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(classes) == 0:
        raise ValueError("balanced_class_weights needs at least one label")
    weights = len(labels) / (len(classes) * counts)
    return {int(c): float(w) for c, w in zip(classes, weights)}

"""image_dataset_from_directory on tiny folders written with Pillow: Keras' arguments, splits, shuffling,
batches, bad files, the cache file, and the one-line errors."""
import warnings

import numpy as np
import pytest
from PIL import Image

from tinycnn.data import SkippedFilesWarning, image_dataset_from_directory
from tinycnn.data import directory as directory_module


def write_images(folder, n, size=(12, 16), start=0, fmt="png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        pixels = np.full(size + (3,), (i * 17) % 256, np.uint8)
        pixels[0, 0] = (i, 255 - i, 7)
        Image.fromarray(pixels).save(folder / f"{i:03d}.{fmt}")


@pytest.fixture
def pets(tmp_path):
    """cat/ 6 images and dog/ 6 images (dog/ as JPEG), 12x16."""
    write_images(tmp_path / "pets" / "cat", 6)
    write_images(tmp_path / "pets" / "dog", 6, start=6, fmt="jpg")
    return tmp_path / "pets"


def labels_of(ds):
    return [int(v) for _, yb in ds for v in yb]


def test_batches_have_keras_shapes_dtypes_and_unscaled_values(pets):
    ds = image_dataset_from_directory(pets, image_size=(8, 10), batch_size=5, shuffle=False)
    assert ds.class_names == ["cat", "dog"] and len(ds) == 3 and len(ds.file_paths) == 12
    batches = list(ds)
    assert [len(xb) for xb, _ in batches] == [5, 5, 2]                 # the last batch is partial
    xb, yb = batches[0]
    assert xb.shape == (5, 8, 10, 3) and xb.dtype == np.float32 and yb.dtype == np.int32
    assert xb.max() > 1.5 and xb.max() <= 255                            # 0..255, not rescaled
    assert labels_of(ds) == [0] * 6 + [1] * 6 and ds.labels.tolist() == [0] * 6 + [1] * 6


@pytest.mark.parametrize("keep_aspect", ["crop_to_aspect_ratio", "pad_to_aspect_ratio"])
def test_crop_or_pad_to_the_aspect_ratio(tmp_path, keep_aspect):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        pixels = np.full((10, 30, 3), 200, np.uint8)
        pixels[:, :10] = 0                                               # a black left third
        Image.fromarray(pixels).save(tmp_path / name / "wide.png")
    xb, _ = next(iter(image_dataset_from_directory(tmp_path, image_size=(10, 10), shuffle=False,
                                                   **{keep_aspect: True})))
    if keep_aspect == "crop_to_aspect_ratio":
        assert xb[0].min() == 200                                        # the centre 10x10: no black
    else:
        assert xb[0, 0].max() == 0 and xb[0, 5, 5].max() > 0             # black bands above and below


@pytest.mark.parametrize("label_mode, shape, dtype", [("categorical", (12, 2), np.float32),
                                                      ("binary", (12, 1), np.float32)])
def test_label_modes(pets, label_mode, shape, dtype):
    ds = image_dataset_from_directory(pets, label_mode=label_mode, image_size=(4, 4), batch_size=12, shuffle=False)
    _, yb = next(iter(ds))
    assert yb.shape == shape and yb.dtype == dtype
    assert (yb.argmax(1) if label_mode == "categorical" else yb[:, 0]).tolist() == [0] * 6 + [1] * 6


def test_no_labels_and_color_modes(pets):
    images = next(iter(image_dataset_from_directory(pets, labels=None, label_mode=None, image_size=(4, 4),
                                                    batch_size=12, color_mode="grayscale")))
    assert images.shape == (12, 4, 4, 1)
    rgba, _ = next(iter(image_dataset_from_directory(pets, image_size=(4, 4), color_mode="rgba")))
    assert rgba.shape[-1] == 4


def test_the_same_seed_gives_the_same_batches_and_each_epoch_a_new_order(pets):
    a = image_dataset_from_directory(pets, image_size=(4, 4), batch_size=4, seed=5)
    b = image_dataset_from_directory(pets, image_size=(4, 4), batch_size=4, seed=5)
    epochs_a = [[xb[:, 0, 0, 0].tolist() for xb, _ in a] for _ in range(3)]
    epochs_b = [[xb[:, 0, 0, 0].tolist() for xb, _ in b] for _ in range(3)]
    assert epochs_a == epochs_b and a.file_paths == b.file_paths
    assert len({str(order) for order in epochs_a}) == 3
    assert sorted(sum(epochs_a[0], [])) == sorted(sum(epochs_a[1], []))


def test_validation_split_subsets_are_disjoint_and_complete(pets):
    train, val = image_dataset_from_directory(pets, image_size=(4, 4), validation_split=0.25, subset="both",
                                              seed=1)
    assert len(val.file_paths) == 3 and len(train.file_paths) == 9
    assert not set(train.file_paths) & set(val.file_paths)
    assert sorted(train.file_paths + val.file_paths) == sorted(p.as_posix() for p in pets.rglob("*.*"))
    alone = image_dataset_from_directory(pets, image_size=(4, 4), validation_split=0.25, subset="validation",
                                         seed=1)
    assert alone.file_paths == val.file_paths
    assert sum(len(xb) for xb, _ in val) == 3


def test_bad_files_are_counted_and_reported_once(pets):
    (pets / "cat" / "notes.txt").write_text("not an image")
    (pets / "dog" / "cut.jpg").write_bytes((pets / "dog" / "006.jpg").read_bytes()[:40])
    ds = image_dataset_from_directory(pets, image_size=(4, 4), batch_size=5, shuffle=False)
    with pytest.warns(SkippedFilesWarning, match="skipped 2 of 14 files"):
        assert sum(len(xb) for xb, _ in ds) == 12
    assert sorted(p.rsplit("/", 1)[1] for p, _ in ds.skipped) == ["cut.jpg", "notes.txt"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # a second epoch warns no more
        assert sum(len(xb) for xb, _ in ds) == 12


def test_bad_files_are_reported_when_fit_stops_after_len_batches(pets):
    """fit takes len(ds) batches and stops: a pass with a bad file is one element short, never exhausted."""
    (pets / "cat" / "notes.txt").write_text("not an image")
    ds = image_dataset_from_directory(pets, image_size=(4, 4), batch_size=5, shuffle=False)
    assert len(ds) == 3                                              # 13 files, one of them bad
    with pytest.warns(SkippedFilesWarning, match="skipped 1 of 13 files"):
        batches = iter(ds)
        assert [len(next(batches)[0]) for _ in range(len(ds))] == [5, 5, 2]
        batches.close()


def test_cache_file_is_reused_by_a_second_run_and_rebuilt_when_the_folder_changes(pets, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "pets"

    def run():
        ds = image_dataset_from_directory(pets, image_size=(4, 4), batch_size=None, shuffle=False).cache(cache)
        return ds.shuffle(20, seed=0).batch(5)

    first = [xb for xb, _ in run()]
    assert cache.stat().st_size == 12 * 4 * 4 * 3 + 12 * 4             # uint8 pixels, int32 labels

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")
    monkeypatch.setattr(directory_module, "open_image", no_decoding)
    second = [xb for xb, _ in run()]                                   # a new dataset: the file is reused
    assert all(np.array_equal(a, b) for a, b in zip(first, second)) and second[0].dtype == np.float32
    monkeypatch.undo()
    write_images(pets / "dog", 1, start=40)                            # the folder changes: rebuilt
    assert sum(len(xb) for xb, _ in run()) == 13


@pytest.mark.parametrize("make, arguments, message", [
    (lambda root: None, {}, "no class folders"),
    (lambda root: write_images(root / "cat", 2), {}, "only one class folder"),
    (lambda root: (write_images(root / "cat", 2), write_images(root / "dog", 2)),
     dict(validation_split=0.1, subset="validation", seed=0), "validation subset empty"),
    (lambda root: (write_images(root / "cat", 2), write_images(root / "dog", 2, size=(9, 9))),
     dict(image_size=None), "images of different sizes"),
    (lambda root: [write_images(root / c, 1) for c in "abc"], dict(label_mode="binary"), "exactly two"),
    (lambda root: (write_images(root / "cat", 2), write_images(root / "dog", 2)),
     dict(validation_split=0.5, subset="training"), "needs a seed"),
])
def test_clear_errors_name_the_folder(tmp_path, make, arguments, message):
    root = tmp_path / "photos"
    root.mkdir()
    make(root)
    with pytest.raises(ValueError, match=message) as error:
        list(image_dataset_from_directory(root, batch_size=4, **arguments))
    assert str(root) in str(error.value) and "\n" not in str(error.value)


def test_draft_decoding_of_a_big_jpeg_matches_a_full_decode(tmp_path):
    root = tmp_path / "big"
    gradient = np.linspace(0, 255, 640, dtype=np.float32)
    pixels = np.stack([np.add.outer(gradient[:480] / 2, gradient / 2)] * 3, -1).astype(np.uint8)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.fromarray(pixels).save(root / c / "big.jpg", quality=95)
    fast, _ = next(iter(image_dataset_from_directory(root, image_size=(24, 32), shuffle=False)))
    full = np.asarray(Image.open(root / "a" / "big.jpg").convert("RGB").resize((32, 24), Image.BILINEAR),
                      np.float32)
    assert np.abs(fast[0] - full).mean() < 3.0

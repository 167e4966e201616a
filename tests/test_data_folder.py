"""tinycnn.data.folder: class folders to arrays, broken files, errors, the cache, splits and class weights."""
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from tinycnn.data import folder
from tinycnn.data.folder import (CacheWarning, SkippedFilesWarning, balanced_class_weights, class_counts,
                                 load_image_folder, load_split_folders, load_train_val, stratified_split)


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """The default cache folder, inside the test's tmp_path instead of the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "tinycnn" / "folders"


def make_folder(root, counts, size=(12, 10)):
    """root/<class>/<i>.png for {class: count}; class k's images are all gray level 40 * (k + 1) + i."""
    for k, (name, count) in enumerate(sorted(counts.items())):
        os.makedirs(root / name, exist_ok=True)
        for i in range(count):
            Image.new("L", size, 40 * (k + 1) + i).save(root / name / f"{i:03d}.png")
    return root


def broken_files(class_dir):
    """A truncated JPEG, a text file named .jpg and a zero-byte file in class_dir."""
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(class_dir / "truncated.jpg")
    data = (class_dir / "truncated.jpg").read_bytes()
    (class_dir / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (class_dir / "text.jpg").write_text("hello")
    (class_dir / "empty.png").write_bytes(b"")


def load_quietly(root, **kwargs):
    """load_image_folder, failing the test on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_image_folder(root, **{"img_size": 8, "cache_dir": False, **kwargs})


# ------------------------------------------------------------------------------------------ loading

def test_loads_images_labels_class_names_and_paths(tmp_path):
    make_folder(tmp_path, {"dog": 3, "cat": 2})
    data = load_quietly(tmp_path, img_size=(6, 5))
    assert data.images.shape == (5, 6, 5, 1) and data.images.dtype == np.float32
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0, 0, 1, 1, 1]
    assert data.class_names == ["cat", "dog"]
    assert data.paths[0] == str(tmp_path / "cat" / "000.png") and len(data.paths) == 5
    # each image is where its label says: cat levels 40, 41; dog levels 80, 81, 82
    np.testing.assert_allclose(data.images[:, 0, 0, 0] * 255, [40, 41, 80, 81, 82], atol=1e-3)
    assert data.class_counts() == {"cat": 2, "dog": 3} and len(data) == 5


def test_rgb_and_any_number_of_classes(tmp_path):
    make_folder(tmp_path, {"a": 1, "b": 2, "c": 1})
    data = load_quietly(tmp_path, grayscale=False)
    assert data.images.shape == (4, 8, 8, 3) and data.labels.tolist() == [0, 1, 1, 2]


def test_hidden_files_and_folders_are_ignored_and_nested_folders_read(tmp_path):
    make_folder(tmp_path, {"cat": 1, "dog": 1})
    (tmp_path / "cat" / ".DS_Store").write_text("junk")
    os.makedirs(tmp_path / "dog" / ".thumbs")
    (tmp_path / "dog" / ".thumbs" / "x.txt").write_text("junk")
    os.makedirs(tmp_path / ".hidden_class")
    Image.new("L", (4, 4)).save(tmp_path / ".hidden_class" / "x.png")
    os.makedirs(tmp_path / "dog" / "more")
    Image.new("L", (4, 4), 200).save(tmp_path / "dog" / "more" / "x.png")
    data = load_quietly(tmp_path)
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 1, 1]
    assert data.paths[-1] == str(tmp_path / "dog" / "more" / "x.png")


def test_broken_files_are_skipped_with_one_warning(tmp_path):
    make_folder(tmp_path, {"cat": 2, "dog": 2})
    broken_files(tmp_path / "dog")
    (tmp_path / "README.txt").write_text("not in a class")
    with pytest.warns(SkippedFilesWarning) as record:
        data = load_image_folder(tmp_path, 8, cache_dir=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 4 of 8 files" in message
    for name in ("truncated.jpg", "text.jpg", "empty.png", "README.txt"):
        assert name in message
    assert len(data) == 4 and data.labels.tolist() == [0, 0, 1, 1]
    assert sorted(os.path.basename(p) for p, _ in data.skipped) == [
        "README.txt", "empty.png", "text.jpg", "truncated.jpg"]


def test_warning_names_only_the_first_few(tmp_path):
    make_folder(tmp_path, {"cat": 1, "dog": 1})
    for i in range(8):
        (tmp_path / "cat" / f"bad{i}.jpg").write_text("x")
    with pytest.warns(SkippedFilesWarning, match="and 3 more") as record:
        load_image_folder(tmp_path, 8, cache_dir=False)
    assert len(record) == 1 and "bad7.jpg" not in str(record[0].message)


def test_parallel_and_serial_decoding_agree(tmp_path, monkeypatch):
    make_folder(tmp_path, {"cat": 5, "dog": 4})
    broken_files(tmp_path / "cat")
    with pytest.warns(SkippedFilesWarning):
        serial = load_image_folder(tmp_path, 8, cache_dir=False, workers=1)
    monkeypatch.setattr(folder, "PARALLEL_MIN_FILES", 1)
    with pytest.warns(SkippedFilesWarning):
        parallel = load_image_folder(tmp_path, 8, cache_dir=False, workers=2)
    np.testing.assert_array_equal(serial.images, parallel.images)
    assert serial.paths == parallel.paths and serial.skipped == parallel.skipped


# ------------------------------------------------------------------------------------------- errors

def test_missing_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere", 8)


def test_root_that_is_a_file_is_named(tmp_path):
    (tmp_path / "file.png").write_text("x")
    with pytest.raises(NotADirectoryError, match="file.png"):
        load_image_folder(tmp_path / "file.png", 8)


def test_no_class_folders(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "loose.png")
    with pytest.raises(ValueError, match=f"no class folders in {tmp_path}"):
        load_image_folder(tmp_path, 8, cache_dir=False)


def test_single_class(tmp_path):
    make_folder(tmp_path, {"cat": 3})
    with pytest.raises(ValueError, match="only one class folder .'cat'."):
        load_image_folder(tmp_path, 8, cache_dir=False)


def test_empty_class_folder_is_named(tmp_path):
    make_folder(tmp_path, {"cat": 2})
    os.makedirs(tmp_path / "dog")
    (tmp_path / "dog" / ".gitkeep").write_text("")
    with pytest.raises(ValueError, match=f"class folder {tmp_path / 'dog'} is empty"):
        load_image_folder(tmp_path, 8, cache_dir=False)


def test_nothing_readable_is_an_error_naming_the_root(tmp_path):
    for name in ("cat", "dog"):
        os.makedirs(tmp_path / name)
        broken_files(tmp_path / name)
    with pytest.raises(ValueError, match=f"no readable image under {tmp_path}: all 6 files failed"):
        load_image_folder(tmp_path, 8, cache_dir=False)


def test_a_class_without_a_readable_image_is_named(tmp_path):
    make_folder(tmp_path, {"cat": 2})
    os.makedirs(tmp_path / "dog")
    broken_files(tmp_path / "dog")
    with pytest.raises(ValueError, match=f"no readable image in class folder {tmp_path / 'dog'}"):
        load_image_folder(tmp_path, 8, cache_dir=False)


def test_train_val_root_is_not_taken_for_classes(tmp_path):
    make_folder(tmp_path / "train", {"cat": 1, "dog": 1})
    make_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    with pytest.raises(ValueError, match="load_split_folders"):
        load_image_folder(tmp_path, 8, cache_dir=False)


# ------------------------------------------------------------------------------------- split folders

def test_load_split_folders(tmp_path):
    make_folder(tmp_path / "train", {"cat": 3, "dog": 2})
    make_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    train, val = load_split_folders(tmp_path, 8, cache_dir=False)
    assert (len(train), len(val)) == (5, 2) and train.class_names == val.class_names == ["cat", "dog"]


def test_split_folders_must_have_the_same_classes(tmp_path):
    make_folder(tmp_path / "train", {"cat": 1, "dog": 1})
    make_folder(tmp_path / "val", {"cat": 1, "fox": 1})
    with pytest.raises(ValueError, match="different class folders"):
        load_split_folders(tmp_path, 8, cache_dir=False)


def test_load_split_folders_needs_both(tmp_path):
    make_folder(tmp_path / "train", {"cat": 1, "dog": 1})
    with pytest.raises(FileNotFoundError, match="val"):
        load_split_folders(tmp_path, 8, cache_dir=False)


def test_load_train_val_takes_either_layout(tmp_path):
    make_folder(tmp_path / "split" / "train", {"cat": 2, "dog": 2})
    make_folder(tmp_path / "split" / "val", {"cat": 1, "dog": 1})
    train, val = load_train_val(tmp_path / "split", 8, cache_dir=False)
    assert (len(train), len(val)) == (4, 2)
    make_folder(tmp_path / "flat", {"cat": 10, "dog": 10})
    train, val = load_train_val(tmp_path / "flat", 8, val_fraction=0.3, seed=1, cache_dir=False)
    assert (len(train), len(val)) == (14, 6) and val.class_counts() == {"cat": 3, "dog": 3}
    assert not set(train.paths) & set(val.paths)


# -------------------------------------------------------------------------------------------- cache

def fail_if_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")
    monkeypatch.setattr(folder, "load_image_uint8", refuse)


def cache_files(cache, suffix):
    return sorted(p for p in cache.iterdir() if p.suffix == suffix)


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch, user_cache):
    root = make_folder(tmp_path / "data", {"cat": 2, "dog": 3})
    first = load_quietly(root, cache_dir=None)
    assert not first.from_cache and len(cache_files(user_cache, ".npy")) == len(cache_files(user_cache, ".json")) == 1
    fail_if_decoding(monkeypatch)
    second = load_quietly(root, cache_dir=None)
    assert second.from_cache
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.paths == second.paths and first.class_names == second.class_names


def test_the_data_folder_is_never_written_to(tmp_path):
    root = make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    before = sorted(os.walk(root))
    load_quietly(root, cache_dir=None)
    assert sorted(os.walk(root)) == before


def test_cache_hit_warns_about_skipped_files_again(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    broken_files(root / "cat")
    with pytest.warns(SkippedFilesWarning):
        load_image_folder(root, 8)
    fail_if_decoding(monkeypatch)
    with pytest.warns(SkippedFilesWarning, match="skipped 3 of 7"):
        data = load_image_folder(root, 8)
    assert data.from_cache and len(data.skipped) == 3


def test_changed_file_is_decoded_again_and_the_old_entry_removed(tmp_path, user_cache):
    root = make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    load_quietly(root, cache_dir=None)
    Image.new("L", (12, 10), 222).save(root / "dog" / "001.png")
    os.utime(root / "dog" / "001.png", ns=(1, 1))              # a different mtime even on a coarse clock
    data = load_quietly(root, cache_dir=None)
    assert not data.from_cache and data.images[3].max() == pytest.approx(222 / 255)
    assert len(os.listdir(user_cache)) == 2                     # one entry: the outdated one was deleted


def test_added_file_and_other_settings_miss_the_cache(tmp_path, user_cache):
    root = make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    load_quietly(root, cache_dir=None)
    assert not load_quietly(root, cache_dir=None, img_size=6).from_cache
    assert not load_quietly(root, cache_dir=None, grayscale=False).from_cache
    assert len(cache_files(user_cache, ".npy")) == 3            # other settings are other entries, all kept
    Image.new("L", (4, 4)).save(root / "cat" / "new.png")
    data = load_quietly(root, cache_dir=None)
    assert not data.from_cache and len(data) == 5


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, user_cache):
    root = make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    good = load_quietly(root, cache_dir=None)
    npy, = cache_files(user_cache, ".npy")
    npy.write_bytes(npy.read_bytes()[:100])                    # truncated array
    with pytest.warns(CacheWarning, match="unreadable"):
        rebuilt = load_image_folder(root, 8)
    assert not rebuilt.from_cache
    np.testing.assert_array_equal(good.images, rebuilt.images)
    assert load_quietly(root, cache_dir=None).from_cache      # and the rebuilt entry is good


def test_garbage_metadata_is_rebuilt(tmp_path, user_cache):
    root = make_folder(tmp_path / "data", {"cat": 1, "dog": 1})
    load_quietly(root, cache_dir=None)
    meta, = cache_files(user_cache, ".json")
    meta.write_text("{not json")
    with pytest.warns(CacheWarning):
        assert not load_image_folder(root, 8).from_cache


def test_metadata_that_does_not_match_the_array_is_rebuilt(tmp_path, user_cache):
    root = make_folder(tmp_path / "data", {"cat": 1, "dog": 1})
    load_quietly(root, cache_dir=None)
    meta_path, = cache_files(user_cache, ".json")
    meta = json.loads(meta_path.read_text())
    meta["shape"][0] = 5
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(CacheWarning, match="does not match"):
        assert not load_image_folder(root, 8).from_cache


def test_explicit_cache_dir_and_no_cache(tmp_path, user_cache):
    root = make_folder(tmp_path / "data", {"cat": 1, "dog": 1})
    load_quietly(root, cache_dir=tmp_path / "cache")
    assert len(os.listdir(tmp_path / "cache")) == 2 and not user_cache.exists()
    assert load_quietly(root, cache_dir=tmp_path / "cache").from_cache
    load_quietly(root, cache_dir=False)
    assert not user_cache.exists()


def test_unwritable_cache_warns_and_loads_anyway(tmp_path):
    root = make_folder(tmp_path / "data", {"cat": 1, "dog": 1})
    (tmp_path / "blocked").write_text("a file where the cache folder should go")
    with pytest.warns(CacheWarning, match="could not write"):
        data = load_image_folder(root, 8, cache_dir=tmp_path / "blocked")
    assert len(data) == 2


def test_no_temporary_files_are_left_behind(tmp_path, user_cache):
    root = make_folder(tmp_path / "data", {"cat": 1, "dog": 1})
    load_quietly(root, cache_dir=None)
    assert not [n for n in os.listdir(user_cache) if n.startswith(".tmp-")]


# ------------------------------------------------------------------------------------ split, counts

def test_stratified_split_is_proportional_disjoint_and_complete():
    labels = np.array([0] * 100 + [1] * 50 + [2] * 3 + [3] * 1)
    train, val = stratified_split(labels, 0.2, seed=0)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.bincount(labels[val], minlength=4).tolist() == [20, 10, 1, 0]
    assert not set(train) & set(val) and sorted(np.concatenate([train, val])) == list(range(len(labels)))
    assert list(train) == sorted(train) and list(val) == sorted(val)


def test_stratified_split_is_seeded():
    labels = np.repeat([0, 1], 50)
    assert np.array_equal(stratified_split(labels, 0.3, 7)[1], stratified_split(labels, 0.3, 7)[1])
    assert not np.array_equal(stratified_split(labels, 0.3, 7)[1], stratified_split(labels, 0.3, 8)[1])


def test_every_class_with_two_samples_gets_a_val_sample_and_keeps_a_train_one():
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    train, val = stratified_split(labels, 0.01, seed=0)
    assert sorted(labels[val]) == [0, 1, 2]
    train, val = stratified_split(labels, 0.99, seed=0)
    assert sorted(set(labels[train])) == [0, 1, 2]


def test_zero_val_fraction_and_bad_fractions():
    train, val = stratified_split(np.array([0, 1, 1]), 0.0, seed=0)
    assert train.tolist() == [0, 1, 2] and val.size == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            stratified_split(np.array([0, 1]), bad, seed=0)


def test_class_counts_and_balanced_weights():
    labels = np.array([0, 0, 0, 1])
    assert class_counts(labels, ["cat", "dog", "fox"]) == {"cat": 3, "dog": 1, "fox": 0}
    weights = balanced_class_weights(labels)
    assert weights == pytest.approx({0: 4 / (2 * 3), 1: 4 / (2 * 1)})
    assert sum(weights[c] for c in labels) == pytest.approx(len(labels))   # average weight 1 per sample
    with pytest.raises(ValueError, match="no name"):
        class_counts(np.array([0, 2]), ["cat", "dog"])


def test_subset_keeps_everything_aligned(tmp_path):
    make_folder(tmp_path, {"cat": 2, "dog": 2})
    data = load_quietly(tmp_path)
    part = data.subset([3, 0])
    assert part.labels.tolist() == [1, 0] and part.paths == [data.paths[3], data.paths[0]]
    np.testing.assert_array_equal(part.images, data.images[[3, 0]])

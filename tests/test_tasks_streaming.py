"""The tasks' streaming data: catdog's stratified split and cache file, evaluate and predict decoding as training
did, and the plate tasks' PlateStream (tasks/plates_stream.py). Small folders drawn here; no shared data."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import tinycnn
from tinycnn import evaluate, predict
from tinycnn.data import image_dataset_from_directory, stratified_split
from tinycnn.data.directory import decode_image_file
from tinycnn.data.folder import list_class_files
from tinycnn.tasks import catdog, plates_pipeline
from tinycnn.tasks.plates_stream import PlateStream
from tinycnn.tasks.synthetic_plates import generate_plates

COUNTS = {"cat": 13, "dog": 7}     # imbalanced, so that a random split would not keep the balance
SETTINGS = dict(img_size=16, grayscale=False, resize="stretch", batch_size=4)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """COUNTS pictures per class, each a flat colour that names it (its red channel = its number)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "pets"
    for label, (name, count) in enumerate(COUNTS.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.zeros((12, 10, 3), np.uint8)
            pixels[..., 0], pixels[..., 1] = 10 * i + label, 200 * label
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def epoch_images(ds):
    xs, ys = zip(*list(ds))
    return np.concatenate(xs), np.concatenate(ys)


def identities(images):
    """Each picture's (green, red) value: which picture it is."""
    return [(int(round(g)), int(round(r))) for r, g in zip(images[:, 0, 0, 0] * 255, images[:, 0, 0, 1] * 255)]


# ------------------------------------------------------------------------------------------ stratified split

def test_stratify_keeps_each_class_balance_and_matches_stratified_split(folder):
    train, val = image_dataset_from_directory(folder, image_size=(8, 8), batch_size=None, validation_split=0.3,
                                              subset="both", seed=5, stratify=True)
    files, labels, _ = list_class_files(str(folder), ["cat", "dog"])
    train_rows, val_rows = stratified_split(np.array(labels), 0.3, 5)
    assert val.file_paths == [os.path.join(folder, files[i]) for i in val_rows]
    assert sorted(train.file_paths + val.file_paths) == sorted(os.path.join(folder, f) for f in files)
    assert np.bincount(val.labels).tolist() == [4, 2]         # round(0.3 x 13), round(0.3 x 7)
    other = image_dataset_from_directory(folder, image_size=(8, 8), validation_split=0.3, subset="validation",
                                         seed=6, stratify=True)
    assert other.file_paths != val.file_paths


def test_stratify_needs_a_seed_and_a_split(folder):
    with pytest.raises(ValueError, match="stratify=True needs"):
        image_dataset_from_directory(folder, stratify=True, shuffle=False, validation_split=0.2, subset="both")
    with pytest.raises(ValueError, match="stratify=True needs"):
        image_dataset_from_directory(folder, stratify=True, seed=0)


# ------------------------------------------------------------------------------------------ catdog's datasets

@pytest.mark.parametrize("cache", [True, False])
def test_catdog_datasets_cover_the_split_in_unit_range_and_reshuffle(folder, cache):
    train, val = catdog.training_datasets(str(folder), SETTINGS, 0.25, seed=1, cache=cache)
    first, labels = epoch_images(train)
    second, _ = epoch_images(train)
    assert first.shape == (15, 16, 16, 3) and first.dtype == np.float32 and 0 <= first.min() and first.max() <= 1
    assert sorted(identities(first)) == sorted(identities(second)) and identities(first) != identities(second)
    assert [green // 200 for green, _ in identities(first)] == labels.tolist()      # labels stay with their image
    val_images, val_labels = epoch_images(val)
    assert identities(val_images) == identities(epoch_images(val)[0])               # validation: a fixed order
    assert np.bincount(val_labels).tolist() == [3, 2] and train.class_names == ["cat", "dog"]
    assert not set(identities(first)) & set(identities(val_images))
    again, _ = catdog.training_datasets(str(folder), SETTINGS, 0.25, seed=1, cache=cache)
    assert identities(epoch_images(again)[0]) == identities(first)                  # the same seed, the same order


def test_catdog_cached_and_streamed_epochs_are_the_same_batches(folder):
    cached, _ = catdog.training_datasets(str(folder), SETTINGS, 0.25, seed=1, cache=True)
    streamed, _ = catdog.training_datasets(str(folder), SETTINGS, 0.25, seed=1, cache=False)
    for _ in range(2):      # the row permutation is drawn from (seed, epoch) either way
        assert identities(epoch_images(cached)[0]) == identities(epoch_images(streamed)[0])


def test_catdog_cache_file_is_reused_and_rebuilt_when_the_folder_changes(folder, tmp_path):
    train, _ = catdog.training_datasets(str(folder), SETTINGS, 0.25, seed=1)
    epoch_images(train)
    cached = [p for p in (tmp_path / "cache" / "tinycnn" / "datasets").iterdir() if "-train-" in p.name
              and p.suffix != ".json"]
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    train, _ = catdog.training_datasets(str(folder), SETTINGS, 0.25, seed=1)
    epoch_images(train)
    assert cached[0].stat().st_mtime_ns == stamp
    Image.fromarray(np.full((12, 10, 3), 99, np.uint8)).save(folder / "cat" / "new.png")
    train, _ = catdog.training_datasets(str(folder), SETTINGS, 0.25, seed=1)
    images, _ = epoch_images(train)
    assert cached[0].stat().st_mtime_ns != stamp and (99, 99) in identities(images)


def test_catdog_train_and_val_folders_are_taken_as_they_are(tmp_path, folder):
    split = tmp_path / "split"
    os.rename(folder, split / "train") if (split.mkdir() or True) else None
    (split / "val" / "cat").mkdir(parents=True)
    (split / "val" / "dog").mkdir(parents=True)
    for name in ("cat", "dog"):
        os.rename(split / "train" / name / "00.png", split / "val" / name / "00.png")
    train, val = catdog.training_datasets(str(split), SETTINGS, 0.25, seed=1)
    assert len(epoch_images(train)[0]) == 18 and identities(epoch_images(val)[0]) == [(0, 0), (200, 1)]


def test_catdog_evaluate_lines_labels_up_with_the_decoded_files(folder, tmp_path, capsys):
    (folder / "cat" / "00.png").write_bytes(b"not an image")       # the first file: labels must shift past it
    model = catdog.seed_model(16, 3, 2)
    model.compile(loss="binary_crossentropy", metrics=["accuracy"], optimizer="adam")
    model.predict(np.zeros((1, 16, 16, 3), np.float32))
    model.metadata = dict(SETTINGS, task="catdog", class_names=["cat", "dog"], preset="seed")
    model.save(tmp_path / "m.tcnn")
    with pytest.warns(UserWarning, match="skipped 1 of 20"):
        assert evaluate.main([str(tmp_path / "m.tcnn"), "--data", str(folder), "--json"]) == 0
    report = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 19
    assert [report["per_class"][name]["support"] for name in ("cat", "dog")] == [12, 7]


def test_predict_decodes_a_photo_as_training_did(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), np.uint8)).save(tmp_path / "a" / "p.jpg", quality=90)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "b" / "q.png")
    ds = image_dataset_from_directory(tmp_path, image_size=(32, 32), color_mode="grayscale", batch_size=None,
                                      shuffle=False, crop_to_aspect_ratio=True)
    trained_on = next(iter(ds))[0]
    alone = decode_image_file(str(tmp_path / "a" / "p.jpg"), (32, 32), "grayscale", resize="crop")
    assert trained_on.shape == (32, 32, 1) and np.array_equal(alone, trained_on)


def test_predict_cli_still_prints_one_line_per_photo(folder, tmp_path, capsys):
    model = catdog.seed_model(16, 1, 2)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    model.predict(np.zeros((1, 16, 16, 1), np.float32))
    model.metadata = dict(SETTINGS, grayscale=True, task="catdog", class_names=["cat", "dog"], preset="seed")
    model.save(tmp_path / "m.tcnn")
    assert predict.main([str(tmp_path / "m.tcnn"), str(folder / "dog" / "01.png")]) == 0
    assert capsys.readouterr().out.startswith(f"{folder / 'dog' / '01.png'}: ")


# ------------------------------------------------------------------------------------------ PlateStream

def fake_load(records):
    """A LetterboxedSet stand-in: x holds each record's number, masks its number too."""
    ids = np.array([r.number for r in records], np.float32)
    return SimpleNamespace(x=np.broadcast_to(ids[:, None, None, None], (len(ids), 3, 2, 2)).copy(), boxes=ids,
                           masks=np.broadcast_to(ids[:, None, None], (len(ids), 2, 2)).astype(np.uint8))


def test_plate_stream_covers_every_photo_once_per_epoch_in_a_new_seeded_order():
    records = [SimpleNamespace(number=i) for i in range(11)]
    stream = PlateStream(records, fake_load)
    ds = stream.batches(lambda data: data.boxes, batch_size=4, seed=3)
    epochs = [np.concatenate([yb for _, yb in ds]) for _ in range(2)]
    assert [len(xb) for xb, _ in ds] == [4, 4, 3]
    assert all(sorted(e.tolist()) == list(range(11)) for e in epochs) and epochs[0].tolist() != epochs[1].tolist()
    for xb, yb in ds:
        assert np.array_equal(xb[:, 0, 0, 0], yb)                      # each target stays with its picture
    again = PlateStream(records, fake_load).batches(lambda data: data.boxes, batch_size=4, seed=3)
    assert np.concatenate([yb for _, yb in again]).tolist() == epochs[0].tolist()
    in_order = stream.batches(lambda data: data.boxes, batch_size=4)
    assert np.concatenate([yb for _, yb in in_order]).tolist() == list(range(11))


def test_plate_stream_augments_each_batch_and_gathers_masks_in_chunks(monkeypatch):
    monkeypatch.setattr("tinycnn.tasks.plates_stream.MASK_CHUNK", 3)
    records = [SimpleNamespace(number=i) for i in range(7)]
    stream = PlateStream(records, fake_load)
    seen = []

    def augment(xb, yb):
        seen.append(len(xb))
        return xb + 100, yb

    xs = [xb for xb, _ in stream.batches(lambda data: data.boxes, batch_size=3, augment=augment)]
    assert seen == [3, 3, 1] and xs[0][0, 0, 0, 0] == 100
    assert stream.masks.shape == (7, 2, 2) and stream.masks[:, 0, 0].tolist() == list(range(7))
    assert stream.first_input().shape == (1, 3, 2, 2) and len(stream) == 7


def test_plate_stream_batches_equal_the_letterboxed_arrays(tmp_path):
    root = generate_plates(tmp_path / "plates", 6, 2, 2, size=(96, 72), seed=3)
    records = plates_pipeline.read_plates(root, splits=["train"])["train"]
    load = lambda chunk: plates_pipeline.letterbox_records(chunk, 32)  # noqa: E731
    whole = load(records)
    xs, ys = zip(*PlateStream(records, load).batches(lambda data: data.masks, batch_size=4))
    assert np.array_equal(np.concatenate(xs), whole.x) and np.array_equal(np.concatenate(ys), whole.masks)

"""Plate photos as streaming Datasets: the annotations stay in memory, the pixels only a few batches at a time.

    from .plates_pipeline import letterbox_records
    train = PlateStream(records, load=lambda chunk: letterbox_records(chunk, img_size=128))
    batches = train.batches(targets=lambda data: data.boxes, batch_size=16, seed=0, augment=CanvasAugmenter(0))
    model.fit(batches, validation_data=..., epochs=...)

A PlateRecord (tasks/plates_data.py) holds a photo's path, size, boxes and mask file, not its pixels. `batches`
is the pipeline

    row numbers -> shuffle(seed) -> batch(batch_size) -> map(load + targets, workers) -> map(augment, 1) -> prefetch(2)

- shuffle permutes the row numbers (no buffer of photos), seeded from (seed, epoch): every epoch another order,
  every run with the same seed the same orders; seed None keeps the records' order (validation).
- `load(records)` turns a batch's records into a LetterboxedSet (tasks/plates_pipeline.py letterbox_records:
  x (B, 3, S, S) float32 in [0, 1], largest boxes (B, 4) normalised, masks (B, S, S) uint8, each photo's
  geometry); `targets(that set)` picks what the task learns (the boxes, the masks, every plate's boxes padded
  with -1 to the batch's largest count). Batches load in `workers` threads (Pillow decodes without the GIL), up
  to 2 x workers batches ahead.
- `augment(xb, yb) -> (xb, yb)` (the box- and mask-aware CanvasAugmenter) runs on each batch in one thread, so
  its seeded generator draws in the same order in every run, and overlaps the training step (prefetch).

Memory: a few batches of pixels, whatever the number of photos. `first_input()` gives the (1, 3, S, S) input
that builds a model's lazy weights (--init); `masks` letterboxes every training mask (uint8, S x S per photo, a
twelfth of the float32 pixels) on first use, for statistics over the whole split such as the segmenter's plate
class weight. The loader and the augmenter are passed in, so this module depends on neither plates_pipeline nor
a task.
"""
import numpy as np

from tinycnn.data import AUTOTUNE, Dataset

MASK_CHUNK = 64    # photos letterboxed at a time when `masks` gathers every mask


class PlateStream:
    """One split of plate photos (a list of PlateRecord), read as it is used; see the module docstring."""

    def __init__(self, records, load):
        if not records:
            raise ValueError("PlateStream needs at least one annotated photo")
        self.records, self._load, self._masks = list(records), load, None

    def __len__(self):
        return len(self.records)

    def batches(self, targets, batch_size, seed=None, augment=None, workers=AUTOTUNE):
        """A Dataset of (x (B, 3, S, S) float32, targets(the batch's LetterboxedSet)) batches."""
        rows = Dataset.from_tensor_slices(np.arange(len(self.records)))
        if seed is not None:
            rows = rows.shuffle(len(self.records), seed)

        def load(batch_rows):
            data = self._load([self.records[i] for i in batch_rows])
            return data.x, targets(data)

        ds = rows.batch(batch_size).map(load, workers)
        if augment is not None:
            ds = ds.map(augment, 1)
        return ds.prefetch(2)

    def first_input(self):
        """The first photo as the (1, 3, S, S) model input."""
        return self._load(self.records[:1]).x

    @property
    def masks(self):
        """Every photo's letterboxed mask (N, S, S) uint8, gathered MASK_CHUNK photos at a time on first use."""
        if self._masks is None:
            self._masks = np.concatenate([self._load(self.records[begin:begin + MASK_CHUNK]).masks
                                          for begin in range(0, len(self.records), MASK_CHUNK)])
        return self._masks

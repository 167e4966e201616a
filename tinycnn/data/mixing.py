"""Mixup and CutMix: each training image blended with another of the same batch, and its label with it.

    from tinycnn.data.mixing import Mixup, CutMix, MixupOrCutMix
    mix = MixupOrCutMix(mixup_alpha=0.2, cutmix_alpha=1.0, seed=0)
    model.fit(x, y, augment=mix)               # fit's augment(xb, yb) -> (xb, yb)
    ds = ds.batch(32).map(mix)                 # or in the data workers, on batches of (images, labels)

A batch of images (N, H, W, C) (float, any range) and its labels is paired with a permutation π of itself and
one λ ~ Beta(α, α) per batch:

    Mixup:   x'_i = λ x_i + (1 − λ) x_π(i)                      y'_i = λ y_i + (1 − λ) y_π(i)
    CutMix:  x'_i = x_i with a box of area ≈ (1 − λ) H W pasted from x_π(i) (the same box for the whole batch,
             clipped to the image), y'_i = λ' y_i + (1 − λ') y_π(i), λ' the fraction of x_i left uncovered

Since one λ and a permutation serve the whole batch, every sample's label still sums to 1 and each class keeps
its total mass over the batch. Labels:
- one-hot or probability rows (N, K), K > 1: mixed as they are (train with categorical cross-entropy);
- integer class labels (N,) with `num_classes=K`: turned into one-hot rows (N, K) first;
- binary labels (N,) or (N, 1) (sigmoid output, binary cross-entropy) without num_classes: mixed as
  probabilities of the positive class, float32, same shape.
`prob` is the chance a batch is mixed at all (otherwise it passes unchanged, labels made float and one-hot
the same way so that every batch has one form). Randomness: `rng`, else `seed`, else the engine's generator.
"""
import numpy as np

from .. import random as engine_random


class _BatchMixer:
    def __init__(self, alpha, prob=1.0, num_classes=None, seed=None, rng=None):
        if not alpha > 0:
            raise ValueError(f"{type(self).__name__}: alpha must be > 0, got {alpha!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{type(self).__name__}: prob must be in [0, 1], got {prob!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ValueError(f"{type(self).__name__}: num_classes must be an int ≥ 2, got {num_classes!r}")
        self.alpha, self.prob, self.num_classes = float(alpha), float(prob), num_classes
        self.rng = rng if rng is not None else (engine_random.generator() if seed is None
                                                else np.random.default_rng(seed))

    def __call__(self, images, labels):
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects a batch of images (N, H, W, C), got shape {images.shape}")
        labels = mixable_labels(labels, self.num_classes, type(self).__name__)
        if len(labels) != len(images):
            raise ValueError(f"{type(self).__name__}: {len(images)} images but {len(labels)} labels")
        if len(images) < 2 or self.rng.random() >= self.prob:
            return images.astype(np.float32, copy=False), labels
        lam = float(self.rng.beta(self.alpha, self.alpha))
        order = self.rng.permutation(len(images))
        return self.mix(images.astype(np.float32), labels, lam, order)

    def mix(self, images, labels, lam, order):
        raise NotImplementedError


def mixable_labels(labels, num_classes, owner="mixing"):
    """float32 labels that can be blended: one-hot rows for class indices with num_classes, else as given."""
    labels = np.asarray(labels)
    if num_classes is not None and (labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)):
        index = labels.reshape(-1).astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= num_classes):
            raise ValueError(f"{owner}: labels must be class indices in [0, {num_classes}), "
                             f"got {index.min()}..{index.max()}")
        return np.eye(num_classes, dtype=np.float32)[index]
    if labels.ndim not in (1, 2):
        raise ValueError(f"{owner}: labels must be (N,) or (N, K), got shape {labels.shape}")
    return labels.astype(np.float32)


def blend_labels(labels, lam, order):
    return lam * labels + (1.0 - lam) * labels[order]


class Mixup(_BatchMixer):
    """x' = λ x + (1 − λ) x[π], y' likewise; λ ~ Beta(alpha, alpha) per batch (alpha 0.2 is usual)."""

    def __init__(self, alpha=0.2, **options):
        super().__init__(alpha, **options)

    def mix(self, images, labels, lam, order):
        return lam * images + (1.0 - lam) * images[order], blend_labels(labels, lam, order)


class CutMix(_BatchMixer):
    """A box of area ≈ (1 − λ) of the image pasted from x[π]; labels by the area actually kept."""

    def __init__(self, alpha=1.0, **options):
        super().__init__(alpha, **options)

    def mix(self, images, labels, lam, order):
        _, height, width, _ = images.shape
        top, bottom, left, right = cut_box(height, width, lam, self.rng)
        images[:, top:bottom, left:right] = images[order, top:bottom, left:right]
        kept = 1.0 - (bottom - top) * (right - left) / (height * width)
        return images, blend_labels(labels, kept, order)


def cut_box(height, width, lam, rng):
    """(top, bottom, left, right) of a box with sides √(1 − λ) of the image's, centred at a uniform point,
    clipped to the image."""
    side = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(round(height * side)), int(round(width * side))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h - cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w - cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


class MixupOrCutMix:
    """Each batch: CutMix with probability switch_prob, else Mixup (timm's recipe), both with the same options."""

    def __init__(self, mixup_alpha=0.2, cutmix_alpha=1.0, switch_prob=0.5, prob=1.0, num_classes=None, seed=None,
                 rng=None):
        rng = rng if rng is not None else (engine_random.generator() if seed is None else np.random.default_rng(seed))
        options = dict(prob=prob, num_classes=num_classes, rng=rng)
        self.mixup, self.cutmix = Mixup(mixup_alpha, **options), CutMix(cutmix_alpha, **options)
        self.switch_prob, self.rng = float(switch_prob), rng

    def __call__(self, images, labels):
        return (self.cutmix if self.rng.random() < self.switch_prob else self.mixup)(images, labels)

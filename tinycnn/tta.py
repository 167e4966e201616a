"""Test-time augmentation: a model's predictions averaged over flipped and cropped views of each image.

    from tinycnn.tta import predict_tta
    probs = predict_tta(model, images)                      # the image and its mirror image
    probs = predict_tta(model, images, crops=5)             # × the centre and four corner crops

Views of a batch (N, H, W, C) (channels-last, as a Sequential's predict takes; (N, C, H, W) for a model whose
input_format is channels_first):
- the image itself, and with `flips=True` its left-right mirror;
- with `crops=1` the centre crop, with `crops=5` the centre and the four corners: windows of `crop_scale` of
  each side, stretched back to (H, W) by bilinear interpolation (tinycnn.data.augment's resampling);
every crop is mirrored too when flips is on. The outputs (probabilities, as model.predict gives them) are the
mean over the views: 2 × (1 + crops) forward passes with flips, 1 + crops without. A model whose output does not
change under a mirror (an even function of the columns) gives exactly its plain predictions with flips alone.
`x` may also be a Dataset or an iterable of batches (images, or (images, labels, ...)); the labels are not used.
"""
import numpy as np

from .data.augment import _interpolate_rows, _sample_positions


def tta_views(images, flips=True, crops=0, crop_scale=0.875, channels_last=True):
    """The list of view batches (each the shape of `images`) that predict_tta averages over."""
    if crops not in (0, 1, 5):
        raise ValueError(f"predict_tta: crops must be 0, 1 (centre) or 5 (centre and corners), got {crops!r}")
    if not 0.0 < crop_scale <= 1.0:
        raise ValueError(f"predict_tta: crop_scale must be in (0, 1], got {crop_scale!r}")
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"predict_tta expects a batch of images (4 dimensions), got shape {images.shape}")
    nhwc = images if channels_last else images.transpose(0, 2, 3, 1)
    corners = [(0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)][:crops]  # (row, column) place
    views = [nhwc] + [_crop(nhwc, crop_scale, *place) for place in corners]
    if flips:
        views += [view[:, :, ::-1] for view in views]
    return [np.ascontiguousarray(v if channels_last else v.transpose(0, 3, 1, 2)) for v in views]


def _crop(images, scale, row_place, col_place):
    """A window of `scale` of each side at the given relative place (0: top/left, 1: bottom/right), resized back."""
    n, height, width, _ = images.shape
    top = np.full(n, row_place * (1 - scale) * height)
    left = np.full(n, col_place * (1 - scale) * width)
    rows = _sample_positions(top, np.full(n, scale * height), height)
    cols = _sample_positions(left, np.full(n, scale * width), width)
    out = _interpolate_rows(images, rows)
    return _interpolate_rows(out.swapaxes(1, 2), cols).swapaxes(1, 2)


def predict_tta(model, x, flips=True, crops=0, crop_scale=0.875, batch_size=32):
    """model.predict averaged over the views of tta_views (see the module docstring)."""
    channels_last = getattr(model, "input_format", "channels_last") == "channels_last"
    if isinstance(x, np.ndarray):
        batches = (x[b:b + batch_size] for b in range(0, len(x), batch_size))
    else:
        batches = (batch[0] if isinstance(batch, tuple) else batch for batch in x)
    outputs = []
    for xb in batches:
        views = tta_views(xb, flips, crops, crop_scale, channels_last)
        outputs.append(sum(model.predict(view, batch_size=batch_size) for view in views) / len(views))
    if not outputs:
        raise ValueError("predict_tta: no images to predict")
    return np.concatenate(outputs, axis=0)

"""Data loading for tinycnn: image folders, decoding, caching, splits, augmentation."""

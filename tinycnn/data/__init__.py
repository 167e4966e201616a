"""Data loading for tinycnn: image folders, decoding, caching, splits, augmentation.

    from tinycnn.data import load_image_folder, stratified_split, Augment
"""
from .images import ImageDecodeError, load_image, load_image_uint8  # noqa: F401
from .folder import (ImageFolderData, SkippedFilesWarning, CacheWarning, load_image_folder,  # noqa: F401
                     load_split_folders, load_train_val, stratified_split, class_counts, balanced_class_weights)
from .augment import Augment  # noqa: F401

"""Data loading for tinycnn: streaming datasets, image folders, decoding, caching, splits, augmentation.

    from tinycnn.data import Dataset, image_dataset_from_directory       # streaming, as tf.data / Keras
    from tinycnn.data import load_image_folder, stratified_split, Augment   # a folder decoded into arrays
"""
from .images import ImageDecodeError, load_image, load_image_uint8  # noqa: F401
from .folder import (ImageFolderData, SkippedFilesWarning, CacheWarning, load_image_folder,  # noqa: F401
                     load_split_folders, load_train_val, stratified_split, class_counts, balanced_class_weights)
from .augment import Augment  # noqa: F401
from .dataset import AUTOTUNE, Dataset  # noqa: F401
from .directory import image_dataset_from_directory  # noqa: F401

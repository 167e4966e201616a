"""File names that are not valid UTF-8 (a Latin-1 name copied from an old disk) load like any other."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

from tinycnn.data.folder import load_image_folder

pytestmark = pytest.mark.skipif(sys.platform in ("win32", "darwin"),
                                reason="only POSIX file systems without a name encoding take any bytes as a name")


def _png(path_bytes, grey):
    with open(path_bytes, "wb") as file:
        Image.new("L", (6, 6), grey).save(file, format="PNG")


def test_a_non_utf8_file_name_in_a_class_folder_loads_and_caches(tmp_path):
    root = os.fsencode(tmp_path / "pets")
    for label, grey in ((b"cat", 40), (b"dog", 200)):
        os.makedirs(os.path.join(root, label))
        _png(os.path.join(root, label, b"plain.png"), grey)
    _png(os.path.join(root, b"cat", b"caf\xe9-latin1.png"), 60)   # \xe9 alone is not UTF-8
    cache = tmp_path / "cache"
    first = load_image_folder(tmp_path / "pets", img_size=4, cache_dir=cache)
    again = load_image_folder(tmp_path / "pets", img_size=4, cache_dir=cache)
    assert len(first) == 3 and list(first.labels) == [0, 0, 1]
    assert any(os.fsencode(path).endswith(b"caf\xe9-latin1.png") for path in first.paths)
    assert again.from_cache and np.array_equal(again.images, first.images) and again.paths == first.paths


def test_a_non_utf8_class_folder_name_is_a_class(tmp_path):
    root = os.fsencode(tmp_path / "pets")
    for label, grey in ((b"chat-\xe9", 40), (b"dog", 200)):
        os.makedirs(os.path.join(root, label))
        _png(os.path.join(root, label, b"one.png"), grey)
    data = load_image_folder(tmp_path / "pets", img_size=4, cache_dir=tmp_path / "cache")
    assert [os.fsencode(name) for name in data.class_names] == [b"chat-\xe9", b"dog"]
    assert load_image_folder(tmp_path / "pets", img_size=4, cache_dir=tmp_path / "cache").from_cache

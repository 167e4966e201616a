"""`Dataset.cache(path)`: every element of a pipeline written once to one file, read back through a memory map.

Files: `path` holds the elements' parts back to back as raw bytes; `path.json` says where each part lies:
{"format", "key", "tuple": whether elements are tuples, "parts": [[offset, stored dtype, dtype, shape], ...]
per element}. A float part whose values are all whole numbers in 0..255 (a decoded image) is stored as uint8
(a quarter of float32) and turned back into its dtype on reading; anything else is stored as it is.

The key is the pipeline's fingerprint (Dataset.fingerprint()); an entry with another key is written afresh.
Both files are written under temporary names and renamed (the .json last), so an interrupted build leaves no
half cache. Reading maps the file in windows of about WINDOW_BYTES and copies each element out, so the
process holds at most one window of the file in memory whatever its size. When every element has the same
parts, shapes and dtypes, the file is a table of equal rows, and `gather(rows)` reads a whole batch of rows
with one fancy index (the Dataset's shuffle-then-batch path), mapping the file afresh every REMAP_EVERY
batches so that the pages read so far leave the process.
"""
import json
import os
import tempfile

import numpy as np

CACHE_FORMAT = 1
WINDOW_BYTES = 64 << 20
REMAP_EVERY = 64          # gathers between two fresh maps of the file (bounds the pages held)


class DiskCache:
    """The cache file of one pipeline (`source`, a Dataset) at `path`."""

    def __init__(self, path, source):
        self.path, self.source = path, source
        self._table, self._stamp = None, None     # the row layout, and the index file it was read from

    def elements(self):
        """One epoch: from the file if it is up to date, else after writing it (with a progress bar)."""
        index = self._read_index()
        if index is None:
            index = self._write()
        return self._read(index)

    # ------------------------------------------------------------------ access by row
    def has_rows(self):
        """True when every element has the same parts, shapes and dtypes (the file is written if missing):
        the file is then a table of equal rows that order() and gather() read by row number."""
        if self._stamp is None or self._stamp != _stamp(self.path + ".json"):   # (re)read only when it changed
            index = self._read_index() or self._write()
            self._table, self._stamp = _table_layout(index), _stamp(self.path + ".json")
        self._gathers = 0
        return self._table is not None

    def order(self):
        return iter(range(self._table["count"]))

    def gather(self, rows):
        """The elements at `rows`, stacked part by part (one fancy-indexing read of the file)."""
        table = self._table
        if self._gathers % REMAP_EVERY == 0:      # a fresh map now and then: read pages leave this process
            table["map"] = np.memmap(self.path, np.uint8, "r", shape=(table["count"], table["row_bytes"]))
        self._gathers += 1
        data = table["map"][rows]
        values = tuple(data[:, begin:begin + _nbytes(stored, shape)].view(np.dtype(stored))
                       .reshape((len(rows),) + tuple(shape)).astype(np.dtype(dtype))
                       for begin, stored, dtype, shape in table["parts"])
        return values if table["tuple"] else values[0]

    # ------------------------------------------------------------------ key and index
    def _key(self):
        return self.source.fingerprint() or "unkeyed"

    def _read_index(self):
        try:
            with open(self.path + ".json", encoding="utf-8") as f:
                index = json.load(f)
            if index.get("format") != CACHE_FORMAT or index.get("key") != self._key():
                return None
            end = max((offset + _nbytes(stored, shape) for parts in index["parts"]
                       for offset, stored, _, shape in parts), default=0)
            if os.path.getsize(self.path) < end:
                return None     # truncated: write it again
            return index
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------------ writing
    def _write(self):
        from tqdm import tqdm
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        length = self.source.cardinality()
        total = length if isinstance(length, int) else None
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(self.path))
        parts, as_tuple, offset = [], False, 0
        try:
            with os.fdopen(fd, "wb") as f, tqdm(total=total, desc=f"caching {self.path}", unit="element", disable=None,
                                                 leave=False) as bar:
                for element in self.source:
                    as_tuple = isinstance(element, tuple)
                    row = []
                    for value in (element if as_tuple else (element,)):
                        value = np.asarray(value)
                        stored = np.uint8 if _whole_bytes(value) else value.dtype
                        data = np.ascontiguousarray(value, dtype=stored)
                        f.write(data.tobytes())
                        row.append([offset, np.dtype(stored).str, value.dtype.str, list(value.shape)])
                        offset += data.nbytes
                    parts.append(row)
                    bar.update(1)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        index = {"format": CACHE_FORMAT, "key": self._key(), "tuple": as_tuple, "parts": parts}
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(self.path) + ".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(index, f)
        os.replace(tmp, self.path + ".json")
        return index

    # ------------------------------------------------------------------ reading
    def _read(self, index):
        """Yield the elements, mapping the file one window of elements at a time."""
        rows, as_tuple = index["parts"], index["tuple"]
        start = 0
        while start < len(rows):
            stop, begin = start, rows[start][0][0] if rows[start] else 0
            while stop < len(rows) and (stop == start or _row_end(rows[stop]) - begin <= WINDOW_BYTES):
                stop += 1
            end = _row_end(rows[stop - 1])
            window = np.memmap(self.path, np.uint8, "r", offset=begin, shape=(end - begin,)) if end > begin \
                else np.zeros(0, np.uint8)
            for row in rows[start:stop]:
                values = tuple(_part(window, begin, *part) for part in row)
                yield values if as_tuple else values[0]
            del window      # unmapped: its pages leave this process
            start = stop


def _table_layout(index):
    """{"count", "row_bytes", "parts": [(offset in row, stored, dtype, shape)], "tuple"} when the elements lie
    in the file as equal rows one after the other; None otherwise (e.g. batches with a smaller last one)."""
    rows = index["parts"]
    if not rows:
        return None
    first = rows[0]
    row_bytes = _row_end(first) - first[0][0]
    signature = [(offset - first[0][0], stored, dtype, shape) for offset, stored, dtype, shape in first]
    for i, row in enumerate(rows):
        if [(offset - i * row_bytes - first[0][0], stored, dtype, shape)
                for offset, stored, dtype, shape in row] != signature:
            return None
    if first[0][0] != 0:
        return None
    return {"count": len(rows), "row_bytes": row_bytes, "parts": signature, "tuple": index["tuple"]}


def _part(window, begin, offset, stored, dtype, shape):
    size = _nbytes(stored, shape)
    value = window[offset - begin:offset - begin + size].view(np.dtype(stored)).reshape(shape)
    return value.astype(np.dtype(dtype))   # a copy: nothing keeps the map alive, and it is writable


def _stamp(path):
    try:
        stat = os.stat(path)
        return stat.st_mtime_ns, stat.st_size
    except OSError:
        return None


def _row_end(row):
    offset, stored, _, shape = row[-1]
    return offset + _nbytes(stored, shape)


def _nbytes(stored, shape):
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(stored).itemsize


def _whole_bytes(value):
    """True for a float array whose every value is a whole number in 0..255 (stored as uint8 losslessly)."""
    if value.dtype.kind != "f" or value.size == 0:
        return False
    return bool(value.min() >= 0 and value.max() <= 255 and np.array_equal(value, np.floor(value)))

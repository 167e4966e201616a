"""Read licence-plate data: the Keras tutorial's CSV layout or Pascal VOC XML, every annotation checked.

    from tinycnn.tasks.plates_data import read_plates, load_sample, largest_box
    splits = read_plates("data/plates")            # {"train": [PlateRecord, ...], "val": [...], "test": [...]}
    image, boxes, mask = load_sample(splits["train"][0])   # (H, W, 3) float32 [0, 1], (K, 4) pixels, (H, W) uint8

The folder DIR given to `read_plates`:

    DIR/train/  DIR/val/  DIR/test/            the images of each split (any format Pillow reads)
    DIR/annotations/...                        the plate boxes, in one of the three layouts below
    DIR/masks/<split>/<image name>.png         optional per-pixel masks (nonzero = plate)

Where the boxes are found (decided for the whole folder, in this order):
1. CSV per split: `DIR/annotations/<split>_annotations.csv` with the header `filename,xmin,ymin,xmax,ymax`
   (more columns, in any order, are allowed) and one row per plate: several rows with the same filename are
   several plates in one image. Coordinates are pixels of the image file.
2. VOC per split: `DIR/annotations/<split>/*.xml`.
3. VOC flat: `DIR/annotations/*.xml`; each file's image is looked for in the split folders, and it belongs to
   the split whose folder holds it.
A VOC file is `<annotation><filename>NAME</filename><object><bndbox><xmin/><ymin/><xmax/><ymax/></bndbox>
</object>...</annotation>`, one <object> per plate (its <name> is not read: every object is a plate); the
line number given in errors is that of the <object>. A split with both a CSV and a VOC folder, or flat VOC
files next to per-split annotations, is ambiguous: AnnotationError. A split folder without annotations:
FileNotFoundError naming the files looked for. File names are relative to the split folder.

Every annotation is checked, and ALL the problems are gathered into one AnnotationError (a ValueError) that
lists each as `file:line: what is wrong`:
- an empty filename, an absolute one, or one with a `..` part (it would escape the data folder);
- an image that does not exist or that Pillow cannot read;
- a coordinate that is not a finite number, xmin >= xmax, ymin >= ymax;
- a box outside the image by more than 1 pixel (BOX_TOLERANCE_PX; boxes within it are clipped to the image);
- a mask file whose size differs from its image's, or that cannot be read.
With `skip_bad_rows=True`, the images named by bad rows are left out instead (an image keeps no half-labelled
plates: a dropped row would leave one of its plates unmarked) and one AnnotationWarning gives the count.

Images of a split folder that no annotation names are left out with one AnnotationWarning per split that
names them: they may be plate-free negatives or forgotten labels, and the reader cannot tell which.
Masks: `DIR/masks/<split>/<filename with suffix .png>` when it exists; otherwise `load_mask` fills the boxes
(a split whose mask folder exists but lacks some masks gets a warning). Image sizes are those after the EXIF
orientation is applied, the way `load_image` decodes them.
"""
import codecs
import csv
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import numpy as np
from PIL import Image

from tinycnn.checks import UserInputError
from tinycnn.data.images import open_image, to_gray_or_rgb

from .box_ops import box_areas, clip_boxes, fill_mask_from_boxes

SPLITS = ("train", "val", "test")
CSV_COLUMNS = ("filename", "xmin", "ymin", "xmax", "ymax")
COORDINATES = CSV_COLUMNS[1:]
BOX_TOLERANCE_PX = 1.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_EXIF_ORIENTATION = 0x0112
_SHOWN = 10  # how many names a warning spells out


class AnnotationError(UserInputError):
    """Annotations that cannot be used. `.problems` holds one Problem per bad row (empty for a layout error)."""

    def __init__(self, message, problems=()):
        self.problems = list(problems)
        super().__init__(message)


class AnnotationWarning(UserWarning):
    """Rows skipped (skip_bad_rows=True), images without annotations, or masks missing for some images."""


@dataclass(frozen=True)
class Problem:
    """What is wrong with one annotation row: the file it is in, its line (None: the whole file), the reason."""
    file: Path
    line: int | None
    message: str

    def __str__(self):
        where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, eq=False)
class PlateRecord:
    """One image: its path, its size in pixels, its plate boxes (K, 4) float32 pixels, its mask file or None."""
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    mask_path: Path | None = None

    @property
    def size(self):
        """(width, height), Pillow's order."""
        return self.width, self.height


@dataclass(frozen=True)
class _Row:
    """One plate as written in an annotation file, not yet checked. split is None for flat VOC files."""
    file: Path
    line: int | None
    split: str | None
    filename: str
    fields: tuple  # the coordinate texts (xmin, ymin, xmax, ymax); None where a VOC tag is missing


# --------------------------------------------------------------------------------------------------- public API

def read_plates(root, splits=None, skip_bad_rows=False):
    """Read and check the annotations of `root`; returns {split: [PlateRecord, ...]} in annotation order.

    splits: None for every one of train/val/test that has a folder, or a name / list of names.
    Raises FileNotFoundError for a missing folder or annotation file, AnnotationError listing every bad row
    (unless skip_bad_rows=True, which leaves their images out with one AnnotationWarning).
    """
    root = Path(root)
    splits = _splits_to_read(root, splits)
    findings = _check_rows(root, splits)
    records = {split: _make_records(root, split, findings.boxes[split], findings.sizes) for split in splits}
    for split in splits:
        for record, problem in _check_masks(records[split]):
            findings.reject(problem, split, _name_in_split(root, split, record.path), exists=True)
    problems = sorted(findings.problems, key=lambda problem: (str(problem.file), problem.line or 0))
    if problems and not skip_bad_rows:
        raise AnnotationError(_problem_report(root, problems), problems)
    if problems:
        records = {split: [record for record in found if (split, _name_in_split(root, split, record.path))
                           not in findings.spoiled] for split, found in records.items()}
        warnings.warn(_skip_report(root, problems, len(findings.left_out)), AnnotationWarning, stacklevel=2)
    for split in splits:
        _warn_unannotated(root, split, findings.named)
        _warn_partial_masks(root, split, records[split])
    return records


def read_split(root, split, skip_bad_rows=False):
    """The records of one split: `read_plates(root, [split], skip_bad_rows)[split]`."""
    return read_plates(root, [split], skip_bad_rows=skip_bad_rows)[split]


def load_image(path):
    """Decode an image file to (H, W, 3) float32 in [0, 1]: RGB, EXIF orientation applied, transparency on white.

    Raises tinycnn.data.images.ImageDecodeError (a ValueError) naming the file if Pillow cannot read it.
    """
    return np.asarray(to_gray_or_rgb(open_image(path), grayscale=False), dtype=np.float32) / np.float32(255)


def load_mask(record):
    """The record's (H, W) uint8 mask, 1 = plate: from its mask PNG (nonzero = plate), else filled from its boxes."""
    if record.mask_path is None:
        return fill_mask_from_boxes(record.boxes, record.height, record.width)
    with Image.open(record.mask_path) as img:
        mask = (np.asarray(img.convert("L")) > 0).astype(np.uint8)
    if mask.shape != (record.height, record.width):
        raise ValueError(f"mask {record.mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {record.path} "
                         f"is {record.width}x{record.height}")
    return mask


def load_sample(record):
    """(image (H, W, 3) float32 [0, 1], boxes (K, 4) float32 pixels, mask (H, W) uint8) of one record."""
    image = load_image(record.path)
    if image.shape[:2] != (record.height, record.width):
        raise ValueError(f"{record.path} is now {image.shape[1]}x{image.shape[0]}, "
                         f"but was {record.width}x{record.height} when its annotations were read")
    return image, record.boxes.copy(), load_mask(record)


def largest_box(boxes):
    """The box of largest area among (K, 4) `boxes` (the first one on a tie): the regressor's single target.

    The tutorial's regressor predicts one box per image; when an image shows several plates it learns the
    biggest, i.e. the nearest and most readable one. Raises ValueError for K = 0.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("largest_box needs at least one box, got none")
    return boxes[int(np.argmax(box_areas(boxes)))].copy()


# ------------------------------------------------------------------------------------------------- discovery

def _splits_to_read(root, splits):
    """The split names to read, each with an existing folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"plate data folder {root} does not exist")
    if splits is None:
        found = [split for split in SPLITS if (root / split).is_dir()]
        if not found:
            raise FileNotFoundError(f"{root} has none of the split folders {', '.join(s + '/' for s in SPLITS)}")
        return found
    splits = [splits] if isinstance(splits, str) else list(splits)
    for split in splits:
        if not (root / split).is_dir():
            raise FileNotFoundError(f"split folder {root / split} does not exist")
    return splits


def find_annotation_files(root, splits):
    """Where the boxes of each split are, per the module docstring: (flat VOC files, {split: [files]})."""
    folder = Path(root) / "annotations"
    flat = sorted(folder.glob("*.xml")) if folder.is_dir() else []
    per_split = {}
    for split in splits:
        csv_path = folder / f"{split}_annotations.csv"
        xml_files = sorted((folder / split).glob("*.xml")) if (folder / split).is_dir() else []
        if csv_path.is_file() and xml_files:
            raise AnnotationError(f"split {split!r} has both {csv_path} and VOC files in {folder / split}: "
                                  f"keep one of them")
        per_split[split] = [csv_path] if csv_path.is_file() else xml_files
    if flat and any(per_split.values()):
        mixed = [str(files[0]) for files in per_split.values() if files]
        raise AnnotationError(f"{folder} mixes flat VOC files ({flat[0].name}, ...) with per-split annotations "
                              f"({', '.join(mixed)}): keep one layout")
    if not flat:
        for split, files in per_split.items():
            if not files:
                raise FileNotFoundError(f"no annotations for split {split!r}: looked for "
                                        f"{folder / (split + '_annotations.csv')}, {folder / split}/*.xml "
                                        f"and {folder}/*.xml")
    return flat, per_split


def _read_annotation_rows(root, splits):
    """Every annotation row of the requested splits (flat VOC rows have split None), and file-level problems."""
    flat, per_split = find_annotation_files(root, splits)
    rows, problems = [], []
    sources = [(path, None) for path in flat] + [(path, split) for split in splits for path in per_split[split]]
    for path, split in sources:
        read = _read_csv if path.suffix == ".csv" else _read_voc
        file_rows, file_problems = read(path, split)
        rows += file_rows
        problems += file_problems
    return rows, problems


# ------------------------------------------------------------------------------------------------------ readers

def _read_csv(path, split):
    """The rows of one tutorial CSV file. A header without the five columns is an error for the whole file."""
    rows, problems = [], []
    with io.StringIO(_decode_text(path), newline="") as file:
        reader = csv.reader(file)
        header = [name.strip().lower() for name in next(reader, [])]
        missing = [name for name in CSV_COLUMNS if name not in header]
        if missing:
            raise AnnotationError(f"{path}:1: the header must name the columns {','.join(CSV_COLUMNS)}; "
                                  f"missing {', '.join(missing)} (header: {','.join(header) or 'empty file'})")
        columns = [header.index(name) for name in CSV_COLUMNS]
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # a blank line holds no plate
            if len(values) != len(header):
                problems.append(Problem(path, reader.line_num, f"{len(values)} values for {len(header)} columns"))
                continue
            name, *fields = (values[index].strip() for index in columns)
            rows.append(_Row(path, reader.line_num, split, name, tuple(fields)))
    return rows, problems


_BYTE_ORDER_MARKS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _decode_text(path):
    """The text of an annotation CSV: UTF-8 with or without a byte-order mark, or UTF-16 with one.
    Anything else (Latin-1, UTF-16 without a mark, a binary file) is an AnnotationError naming the line."""
    data = path.read_bytes()
    encoding = next((name for mark, name in _BYTE_ORDER_MARKS if data.startswith(mark)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1 if encoding != "utf-16" else None
        where = f"{path}:{line}" if line else f"{path}"
        raise AnnotationError(f"{where}: not {encoding.upper().removesuffix('-SIG')} text (byte "
                              f"{data[error.start:error.start + 1]!r} at offset {error.start}): save the CSV as "
                              f"UTF-8, or as UTF-16 with a byte-order mark") from None
    if "\0" in text:  # UTF-16 without its mark decodes as UTF-8 full of NUL characters
        raise AnnotationError(f"{path}:{text[:text.index(chr(0))].count(chr(10)) + 1}: not UTF-8 text (it holds "
                              f"NUL characters: UTF-16 without a byte-order mark?): save the CSV as UTF-8, or as "
                              f"UTF-16 with a byte-order mark")
    return text


class _XmlNode:
    """An XML element with the line it starts on (ElementTree's C parser does not keep line numbers)."""

    def __init__(self, tag, line):
        self.tag, self.line, self.children = tag, line, []
        self.chunks = []  # the text as expat hands it over, joined once at the end (linear time)

    @property
    def text(self):
        return "".join(self.chunks)

    def find(self, tag):
        return next((child for child in self.children if child.tag == tag), None)

    def findall(self, tag):
        return [child for child in self.children if child.tag == tag]


class _EntityDeclared(ValueError):
    """An XML file declares an entity: refused (a few hundred bytes of nested entities expand to gigabytes)."""

    def __init__(self, line):
        super().__init__("declares an XML entity (<!ENTITY ...>), which annotation files never need: refused")
        self.lineno = line


def _parse_xml(path):
    """The root element of an XML file as an _XmlNode tree, in time linear in the file's size. Raises
    expat.ExpatError or _EntityDeclared (both with .lineno); external entities are never fetched."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack = [_XmlNode("document", 0)]

    def entity_declared(*_declaration):
        raise _EntityDeclared(parser.CurrentLineNumber)

    def start(tag, _attributes):
        node = _XmlNode(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def text(data):
        stack[-1].chunks.append(data)

    parser.EntityDeclHandler = entity_declared
    parser.UnparsedEntityDeclHandler = entity_declared
    parser.StartElementHandler = start
    parser.EndElementHandler = lambda _tag: stack.pop()
    parser.CharacterDataHandler = text
    with open(path, "rb") as file:
        parser.ParseFile(file)
    return stack[0].children[0]


def _read_voc(path, split):
    """The rows of one Pascal VOC file: one per <object>. A broken file is one problem."""
    try:
        root = _parse_xml(path)
    except expat.ExpatError as error:
        return [], [Problem(path, error.lineno, f"not valid XML ({expat.ErrorString(error.code)})")]
    except _EntityDeclared as error:
        return [], [Problem(path, error.lineno, str(error))]
    filename = root.find("filename")
    if filename is None:
        return [], [Problem(path, root.line, "no <filename> element")]
    rows = []
    for plate in root.findall("object"):
        box = plate.find("bndbox")
        nodes = [box.find(label) if box is not None else None for label in COORDINATES]
        fields = tuple(node.text.strip() if node is not None else None for node in nodes)
        rows.append(_Row(path, plate.line, split, filename.text.strip(), fields))
    return rows, []


# ------------------------------------------------------------------------------------------------------ checks

class _ImageSizes:
    """(width, height) of image files as load_image will decode them, read once from the file header."""

    def __init__(self):
        self._known = {}

    def __call__(self, path):
        """(width, height), or a message saying why there is none."""
        if path not in self._known:
            self._known[path] = self._read(path)
        return self._known[path]

    @staticmethod
    def _read(path):
        if not path.is_file():
            return "not found"
        try:
            with Image.open(path) as img:
                width, height = img.size
                if img.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):  # turned by a quarter
                    width, height = height, width
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            return f"not a readable image ({type(error).__name__}: {error})"
        return width, height


def _escape_problem(name):
    """Why `name` may not be used as a path inside a split folder, or None if it may."""
    if not name:
        return "empty filename"
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return f"filename {name!r} is an absolute path; give it relative to its split folder"
    if ".." in parts:
        return f"filename {name!r} escapes the data folder ('..')"
    return None


def _name_in_split(root, split, path):
    """The file name of `path` relative to its split folder, '/'-separated (the key images are grouped by)."""
    return path.relative_to(root / split).as_posix()


def _normalised_name(name):
    return "/".join(part for part in re.split(r"[\\/]", name) if part not in ("", "."))


def _find_split(root, name, splits):
    """For a flat VOC row: (split holding the image, None) or (None, why none)."""
    candidates = list(dict.fromkeys([*splits, *SPLITS]))
    found = [split for split in candidates if (root / split / name).is_file()]
    if len(found) == 1:
        return found[0], None
    if not found:
        return None, f"image {name!r} not found in any split folder ({', '.join(s + '/' for s in candidates)})"
    return None, f"image {name!r} is in several split folders ({', '.join(found)}): ambiguous"


def _parse_coordinates(fields):
    """The four floats, or None and the messages saying which are not finite numbers."""
    numbers, messages = [], []
    for label, text in zip(COORDINATES, fields):
        try:
            value = float(text)
        except (TypeError, ValueError):
            messages.append(f"{label} is missing" if text is None else f"{label} {text!r} is not a number")
            continue
        if not np.isfinite(value):
            messages.append(f"{label} {text!r} is not a finite number")
        numbers.append(value)
    return (numbers if not messages else None), messages


class _Findings:
    """What checking the rows found: good boxes per image, problems, and the images the problems spoil."""

    def __init__(self, splits):
        self.sizes = _ImageSizes()
        self.boxes = {split: {} for split in splits}  # split -> {image name: [box, ...]}, in row order
        self.named = set()     # (split, image name) of every row, good or bad
        self.problems = []
        self.spoiled = set()   # (split, image name) with a bad row or a bad mask
        self.left_out = set()  # those of them whose image exists

    def accept(self, split, name, box):
        self.named.add((split, name))
        self.boxes[split].setdefault(name, []).append(box)

    def reject(self, problem, split, name, exists):
        self.named.add((split, name))
        self.problems.append(problem)
        self.spoiled.add((split, name))
        if exists:
            self.left_out.add((split, name))


def _check_rows(root, splits):
    """Read every annotation row of `splits` and check it; returns the _Findings."""
    findings = _Findings(splits)
    rows, file_problems = _read_annotation_rows(root, splits)
    findings.problems += file_problems
    for row in rows:
        split, name, box, messages = _check_row(row, root, splits, findings.sizes)
        if split is not None and split not in splits:
            continue  # a flat VOC file of a split that was not asked for
        if not messages:
            findings.accept(split, name, box)
            continue
        exists = (split is not None and not _escape_problem(row.filename)
                  and isinstance(findings.sizes(root / split / name), tuple))
        findings.reject(Problem(row.file, row.line, "; ".join(messages)), split, name, exists)
    return findings


def _check_row(row, root, splits, sizes):
    """Check one row. Returns (split, image name, box (4,) float32 clipped to the image, [problem messages])."""
    name = _normalised_name(row.filename)
    messages = []
    escape = _escape_problem(row.filename)
    split = row.split
    if escape:
        messages.append(escape)
    elif split is None:
        split, why = _find_split(root, name, splits)
        messages += [why] if why else []
    size = None
    if split is not None and not escape:
        size = sizes(root / split / name)
        if isinstance(size, str):
            messages.append(f"image {name!r} {size} in {root / split}")
            size = None
    numbers, number_messages = _parse_coordinates(row.fields)
    messages += number_messages
    if numbers is None:
        return split, name, None, messages
    xmin, ymin, xmax, ymax = numbers
    if xmin >= xmax:
        messages.append(f"xmin {xmin:g} >= xmax {xmax:g}")
    if ymin >= ymax:
        messages.append(f"ymin {ymin:g} >= ymax {ymax:g}")
    if size is not None and (min(xmin, ymin) < -BOX_TOLERANCE_PX or xmax > size[0] + BOX_TOLERANCE_PX
                             or ymax > size[1] + BOX_TOLERANCE_PX):
        messages.append(f"box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside the {size[0]}x{size[1]} "
                        f"image (tolerance {BOX_TOLERANCE_PX:g} px)")
    box = clip_boxes(numbers, *size)[0] if size is not None else None
    return split, name, box, messages


def _make_records(root, split, boxes_by_name, sizes):
    """PlateRecords of one split from {image name: [box, ...]}, with their mask files when they exist."""
    records = []
    for name, boxes in boxes_by_name.items():
        path = root / split / name
        mask_path = (root / "masks" / split / name).with_suffix(".png")
        width, height = sizes(path)
        records.append(PlateRecord(path, width, height, np.array(boxes, dtype=np.float32).reshape(-1, 4),
                                   mask_path if mask_path.is_file() else None))
    return records


def _check_masks(records):
    """(record, Problem) for each record whose mask file differs in size from its image or cannot be read."""
    found = []
    for record in records:
        if record.mask_path is None:
            continue
        try:
            with Image.open(record.mask_path) as img:
                size = img.size
        except (OSError, ValueError, SyntaxError) as error:
            message = f"mask is not a readable image ({type(error).__name__}: {error})"
        else:
            if size == record.size:
                continue
            message = f"mask is {size[0]}x{size[1]} but its image {record.path.name} is {record.width}x{record.height}"
        found.append((record, Problem(record.mask_path, None, message)))
    return found


# ------------------------------------------------------------------------------------------------ reporting

def _problem_report(root, problems):
    lines = "\n  ".join(str(problem) for problem in problems)
    return (f"{len(problems)} bad annotation row(s) in {root} (fix them, or read with skip_bad_rows=True "
            f"to leave their images out):\n  {lines}")


def _skip_report(root, problems, dropped):
    shown = "; ".join(f"{problem.file.name}:{problem.line or ''} {problem.message}" for problem in problems[:3])
    more = f"; and {len(problems) - 3} more (skip_bad_rows=False lists them all)" if len(problems) > 3 else ""
    return (f"skipped {len(problems)} bad annotation row(s) in {root} and left out the {dropped} image(s) that "
            f"had them: {shown}{more}")


def _image_files(folder):
    """Image file names directly inside `folder`, sorted."""
    return sorted(path.name for path in folder.iterdir()
                  if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def _warn_unannotated(root, split, named):
    """One warning naming the images of the split folder that no annotation row mentions ({(split, name)})."""
    lonely = [name for name in _image_files(root / split) if (split, name) not in named]
    if lonely:
        more = f", ... ({len(lonely) - _SHOWN} more)" if len(lonely) > _SHOWN else ""
        warnings.warn(f"{len(lonely)} image(s) in {root / split} have no annotation and are left out: "
                      f"{', '.join(lonely[:_SHOWN])}{more}", AnnotationWarning, stacklevel=3)


def _warn_partial_masks(root, split, records):
    """One warning when the split has a mask folder but some of its images have no mask there."""
    folder = root / "masks" / split
    without = [record.path.name for record in records if record.mask_path is None]
    if folder.is_dir() and without:
        warnings.warn(f"{len(without)} image(s) of {root / split} have no mask in {folder}; their masks are "
                      f"filled from their boxes: {', '.join(without[:_SHOWN])}", AnnotationWarning, stacklevel=3)

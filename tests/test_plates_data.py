"""Reading plate data sets: the tutorial's CSV layout, Pascal VOC (per split and flat), masks, and every kind
of bad annotation row, each reported with its file and line."""
import warnings

import numpy as np
import pytest
from PIL import Image

from tinycnn.tasks.plates_data import (
    AnnotationError, AnnotationWarning, largest_box, load_image, load_mask, load_sample, read_plates, read_split,
)

HEADER = "filename,xmin,ymin,xmax,ymax\n"


def make_image(path, size=(40, 30), colour=(200, 60, 20), exif=None):
    """A small solid image file (width, height) at `path`, folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if exif is not None:
        image.save(path, exif=exif)
    else:
        image.save(path)
    return path


def write_csv(root, split, lines, header=HEADER):
    path = root / "annotations" / f"{split}_annotations.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join(line + "\n" for line in lines))
    return path


def voc(filename, boxes, extra=""):
    objects = "".join(f"""
  <object>
    <name>plate</name>
    <bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>
  </object>""" for b in boxes)
    return f"<annotation>\n  <filename>{filename}</filename>{extra}{objects}\n</annotation>\n"


def write_voc(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def tutorial(tmp_path):
    """train: a.jpg (two plates), b.png (one); val: c.jpg (one). No test split."""
    make_image(tmp_path / "train" / "a.jpg")
    make_image(tmp_path / "train" / "b.png", size=(32, 24))
    make_image(tmp_path / "val" / "c.jpg")
    write_csv(tmp_path, "train", ["a.jpg,2.5,3.0,12.0,8.0", "b.png,1,1,10,5", "a.jpg,20,10,35.5,16.25"])
    write_csv(tmp_path, "val", ["c.jpg,0,0,40,30"])
    return tmp_path


def read_quietly(root, **options):
    """read_plates, failing the test on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_plates(root, **options)


# ------------------------------------------------------------------------------------------------------ layouts

def test_csv_layout_groups_rows_by_image(tutorial):
    splits = read_quietly(tutorial)
    assert list(splits) == ["train", "val"]  # only the split folders that exist
    a, b = splits["train"]
    assert a.path == tutorial / "train" / "a.jpg" and a.size == (40, 30) and a.mask_path is None
    assert a.boxes.dtype == np.float32
    np.testing.assert_array_equal(a.boxes, [[2.5, 3, 12, 8], [20, 10, 35.5, 16.25]])
    assert b.size == (32, 24) and b.boxes.shape == (1, 4)
    np.testing.assert_array_equal(splits["val"][0].boxes, [[0, 0, 40, 30]])


def test_load_sample_decodes_rgb_float_and_fills_the_mask(tutorial):
    record = read_split(tutorial, "train")[0]
    image, boxes, mask = load_sample(record)
    assert image.shape == (30, 40, 3) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    np.testing.assert_allclose(image[5, 5], np.array([200, 60, 20]) / 255, atol=0.03)  # JPEG
    assert mask.shape == (30, 40) and mask.dtype == np.uint8
    # pixels whose centre is inside: columns 2..11 x rows 3..7 (50) and columns 20..34 x rows 10..15 (90)
    assert mask.sum() == 50 + 90
    assert mask[3, 2] == 1 and mask[3, 1] == 0 and mask[8, 5] == 0 and mask[15, 34] == 1 and mask[16, 34] == 0
    np.testing.assert_array_equal(boxes, record.boxes)


def test_explicit_missing_split_and_missing_annotations_are_named(tutorial):
    with pytest.raises(FileNotFoundError, match="test"):
        read_plates(tutorial, ["train", "test"])
    make_image(tutorial / "test" / "d.jpg")
    with pytest.raises(FileNotFoundError, match="test_annotations.csv"):
        read_plates(tutorial)


def test_voc_per_split(tmp_path):
    make_image(tmp_path / "train" / "a.jpg")
    make_image(tmp_path / "train" / "b.jpg")
    write_voc(tmp_path / "annotations" / "train" / "a.xml", voc("a.jpg", [(1, 2, 10, 8), (20, 5, 30, 12.5)]))
    write_voc(tmp_path / "annotations" / "train" / "b.xml", voc("b.jpg", [(0, 0, 5, 5)], "<size><width>40</width>"
                                                                         "<height>30</height></size>"))
    a, b = read_quietly(tmp_path)["train"]
    np.testing.assert_array_equal(a.boxes, [[1, 2, 10, 8], [20, 5, 30, 12.5]])
    np.testing.assert_array_equal(b.boxes, [[0, 0, 5, 5]])


def test_flat_voc_files_find_their_split_by_image_location(tmp_path):
    make_image(tmp_path / "train" / "a.jpg")
    make_image(tmp_path / "val" / "b.jpg")
    write_voc(tmp_path / "annotations" / "one.xml", voc("a.jpg", [(1, 1, 9, 9)]))
    write_voc(tmp_path / "annotations" / "two.xml", voc("b.jpg", [(2, 2, 8, 8)]))
    splits = read_quietly(tmp_path)
    assert [r.path.name for r in splits["train"]] == ["a.jpg"]
    assert [r.path.name for r in splits["val"]] == ["b.jpg"]


def test_flat_voc_files_of_a_split_not_asked_for_are_not_checked(tmp_path):
    make_image(tmp_path / "train" / "a.jpg")
    make_image(tmp_path / "val" / "b.jpg")
    write_voc(tmp_path / "annotations" / "one.xml", voc("a.jpg", [(1, 1, 9, 9)]))
    write_voc(tmp_path / "annotations" / "two.xml", voc("b.jpg", [(8, 2, 2, 8)]))  # bad, but val is not read
    assert [r.path.name for r in read_quietly(tmp_path, splits="train")["train"]] == ["a.jpg"]
    with pytest.raises(AnnotationError, match=r"two.xml:3: xmin 8 >= xmax 2"):
        read_plates(tmp_path)


def test_mixed_layouts_are_refused(tutorial):
    write_voc(tutorial / "annotations" / "x.xml", voc("a.jpg", [(1, 1, 9, 9)]))
    with pytest.raises(AnnotationError, match="mixes flat VOC"):
        read_plates(tutorial)


def test_csv_and_voc_for_one_split_are_refused(tutorial):
    write_voc(tutorial / "annotations" / "train" / "a.xml", voc("a.jpg", [(1, 1, 9, 9)]))
    with pytest.raises(AnnotationError, match="both"):
        read_plates(tutorial)


def test_csv_header_must_name_the_columns(tutorial):
    write_csv(tutorial, "val", ["c.jpg,0,0,4,3"], header="name,x1,y1,x2,y2\n")
    with pytest.raises(AnnotationError, match=r"val_annotations.csv:1: .*missing filename, xmin"):
        read_plates(tutorial)


# --------------------------------------------------------------------------------------------------- bad rows

BAD_ROWS = {  # CSV line -> (row, what the error must say)
    3: ("missing.jpg,1,1,5,5", "not found"),
    4: ("a.jpg,1,1,45,5", "outside the 40x30 image"),
    5: ("a.jpg,9,1,9,5", "xmin 9 >= xmax 9"),
    6: ("a.jpg,1,7,5,2", "ymin 7 >= ymax 2"),
    7: ("a.jpg,1,two,5,5", "ymin 'two' is not a number"),
    8: (",1,1,5,5", "empty filename"),
    9: ("../../outside.jpg,1,1,5,5", "escapes the data folder"),  # that file exists: it must not be read
    10: ("{absolute},1,1,5,5", "absolute path"),
    11: ("a.jpg,nan,1,5,5", "not a finite number"),
    12: ("a.jpg,1,1,5", "4 values for 5 columns"),
    13: ("a.jpg,-1.5,1,5,5", "outside"),
}


@pytest.fixture
def bad_folder(tmp_path):
    root = tmp_path / "data"
    make_image(root / "train" / "a.jpg")
    make_image(root / "train" / "good.jpg")
    outside = make_image(tmp_path / "outside.jpg")  # exists, yet must not be reachable
    lines = ["good.jpg,0.5,1,40.8,30.9"]  # line 2: within the 1-pixel tolerance
    lines += [BAD_ROWS[line][0].format(absolute=outside) for line in sorted(BAD_ROWS)]
    write_csv(root, "train", lines)
    return root


def test_every_bad_row_is_listed_with_its_line(bad_folder):
    with pytest.raises(AnnotationError) as caught:
        read_plates(bad_folder)
    error = caught.value
    assert isinstance(error, ValueError)
    assert [problem.line for problem in error.problems] == sorted(BAD_ROWS)
    for problem in error.problems:
        assert problem.file.name == "train_annotations.csv"
        assert BAD_ROWS[problem.line][1] in problem.message
        assert f"train_annotations.csv:{problem.line}: " in str(error)
    assert f"{len(BAD_ROWS)} bad annotation row(s)" in str(error)


def test_skip_bad_rows_warns_once_and_keeps_the_good_images(bad_folder):
    with pytest.warns(AnnotationWarning) as caught:
        splits = read_plates(bad_folder, skip_bad_rows=True)
    assert len(caught) == 1
    assert f"skipped {len(BAD_ROWS)} bad annotation row(s)" in str(caught[0].message)
    assert "left out the 1 image(s)" in str(caught[0].message)  # a.jpg; the others do not exist
    (good,) = splits["train"]  # a.jpg had bad rows: left out whole
    assert good.path.name == "good.jpg"
    np.testing.assert_allclose(good.boxes, [[0.5, 1, 40, 30]])  # clipped to the image


def test_an_image_with_one_bad_row_is_left_out_whole(tutorial):
    write_csv(tutorial, "train", ["a.jpg,2,3,12,8", "a.jpg,5,5,2,9", "b.png,1,1,10,5"])
    with pytest.warns(AnnotationWarning, match="left out the 1 image"):
        splits = read_plates(tutorial, skip_bad_rows=True)
    assert [r.path.name for r in splits["train"]] == ["b.png"]


def test_bad_voc_files_name_file_and_line(tmp_path):
    make_image(tmp_path / "train" / "a.jpg")
    make_image(tmp_path / "train" / "b.jpg")
    make_image(tmp_path / "train" / "c.jpg")
    folder = tmp_path / "annotations" / "train"
    write_voc(folder / "a.xml", voc("a.jpg", [(1, 1, 5, 5)]).replace("<ymax>5</ymax>", ""))
    write_voc(folder / "b.xml", "<annotation>\n<filename>b.jpg</filename>\n<object>\n</annotation>\n")
    write_voc(folder / "c.xml", voc("c.jpg", [(1, 1, 5, 5), (2, "x", 9, 9)]))
    with pytest.raises(AnnotationError) as caught:
        read_plates(tmp_path)
    problems = {(p.file.name, p.line): p.message for p in caught.value.problems}
    assert "ymax is missing" in problems[("a.xml", 3)]           # the <object> starts on line 3
    assert "not valid XML" in problems[("b.xml", 4)]             # mismatched tag on line 4
    assert "ymin 'x' is not a number" in problems[("c.xml", 7)]  # the second <object>
    assert len(problems) == 3


def test_unannotated_images_are_left_out_with_a_warning(tutorial):
    make_image(tutorial / "val" / "lonely.jpg")
    with pytest.warns(AnnotationWarning, match=r"1 image\(s\) .* no annotation .*lonely.jpg"):
        splits = read_plates(tutorial)
    assert [r.path.name for r in splits["val"]] == ["c.jpg"]


# ------------------------------------------------------------------------------------------- masks and images

def test_masks_from_png_when_present_else_from_boxes(tutorial):
    blob = np.zeros((30, 40), np.uint8)
    blob[4:7, 3:9] = 255
    blob[5, 10] = 17  # any nonzero value is plate
    (tutorial / "masks" / "train").mkdir(parents=True)
    Image.fromarray(blob).save(tutorial / "masks" / "train" / "a.png")
    with pytest.warns(AnnotationWarning, match="b.png"):  # b has no mask in the folder: filled from its boxes
        a, b = read_plates(tutorial)["train"]
    assert a.mask_path == tutorial / "masks" / "train" / "a.png"
    np.testing.assert_array_equal(load_mask(a), (blob > 0).astype(np.uint8))
    assert b.mask_path is None
    assert load_mask(b).sum() == 9 * 4  # box (1, 1, 10, 5): centres x 1.5..9.5, y 1.5..4.5


def test_a_mask_of_the_wrong_size_is_a_bad_row(tutorial):
    (tutorial / "masks" / "val").mkdir(parents=True)
    Image.new("L", (20, 20)).save(tutorial / "masks" / "val" / "c.png")
    with pytest.raises(AnnotationError, match=r"c.png: mask is 20x20 but its image c.jpg is 40x30"):
        read_plates(tutorial)


def test_exif_rotated_photo_is_read_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned by a quarter
    make_image(tmp_path / "train" / "a.jpg", size=(40, 30), exif=exif)
    write_csv(tmp_path, "train", ["a.jpg,1,1,25,35"])  # fits the upright 30x40 picture only
    (record,) = read_quietly(tmp_path)["train"]
    assert record.size == (30, 40)
    assert load_image(record.path).shape == (40, 30, 3)


def test_unreadable_image_is_a_bad_row(tutorial):
    (tutorial / "val" / "c.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(AnnotationError, match=r"val_annotations.csv:2: image 'c.jpg' not a readable image"):
        read_plates(tutorial)


def test_largest_box_picks_the_biggest_plate_first_on_ties():
    boxes = np.array([[0, 0, 4, 4], [10, 10, 20, 12], [5, 5, 9, 9]], np.float32)
    np.testing.assert_array_equal(largest_box(boxes), [10, 10, 20, 12])  # area 20 beats 16 and 16
    boxes[0] = [0, 0, 5, 5]
    np.testing.assert_array_equal(largest_box(boxes), [0, 0, 5, 5])
    np.testing.assert_array_equal(largest_box([[0, 0, 2, 2], [3, 3, 5, 5]]), [0, 0, 2, 2])
    with pytest.raises(ValueError, match="at least one box"):
        largest_box(np.zeros((0, 4)))

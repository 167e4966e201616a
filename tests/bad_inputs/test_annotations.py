"""Hostile and oddly encoded plate annotations: an entity bomb refused at once, CSV encodings read or named."""
import time

import numpy as np
import pytest
from PIL import Image

from tinycnn.checks import UserInputError
from tinycnn.tasks.plates_data import AnnotationError, read_plates

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>a.png</filename><object><bndbox><xmin>&lol9;</xmin><ymin>1</ymin><xmax>9</xmax>
<ymax>9</ymax></bndbox></object></annotation>
"""
GOOD_ROWS = "filename,xmin,ymin,xmax,ymax\na.png,1,1,9,9\nb.png,2,2,8,8\n"


@pytest.fixture
def plates(tmp_path):
    """train/a.png and train/b.png (16x12), with an annotations/ folder still empty."""
    for name in ("a.png", "b.png"):
        (tmp_path / "train").mkdir(exist_ok=True)
        Image.new("RGB", (16, 12), (90, 90, 90)).save(tmp_path / "train" / name)
    (tmp_path / "annotations").mkdir()
    return tmp_path


def test_billion_laughs_is_refused_in_well_under_a_second(plates):
    folder = plates / "annotations" / "train"
    folder.mkdir()
    (folder / "a.xml").write_text(BILLION_LAUGHS)
    (folder / "b.xml").write_text("<annotation><filename>b.png</filename><object><bndbox><xmin>2</xmin>"
                                  "<ymin>2</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object></annotation>")
    start = time.perf_counter()
    with pytest.raises(AnnotationError, match=r"a\.xml:3: declares an XML entity") as error:
        read_plates(plates)
    assert time.perf_counter() - start < 0.3
    assert isinstance(error.value, UserInputError) and len(error.value.problems) == 1


def test_a_long_text_node_parses_in_linear_time(plates):
    folder = plates / "annotations" / "train"
    folder.mkdir()
    # expat hands long text over in many small pieces; joining them pairwise was quadratic
    padding = "&amp;" * 400_000
    for name in ("a", "b"):
        (folder / f"{name}.xml").write_text(f"<annotation><filename>{name}.png</filename><note>{padding}</note>"
                                            "<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                                            "<ymax>9</ymax></bndbox></object></annotation>")
    start = time.perf_counter()
    records = read_plates(plates)["train"]
    assert time.perf_counter() - start < 2.0
    assert [record.path.name for record in records] == ["a.png", "b.png"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])  # utf-16: Python writes the BOM
def test_csv_in_utf8_with_or_without_bom_and_utf16_with_bom(plates, encoding):
    (plates / "annotations" / "train_annotations.csv").write_bytes(GOOD_ROWS.encode(encoding))
    records = read_plates(plates)["train"]
    assert [record.path.name for record in records] == ["a.png", "b.png"]
    assert np.allclose(records[1].boxes, [[2, 2, 8, 8]])


@pytest.mark.parametrize("encoding, line", [("latin-1", 4), ("utf-16-le", None)])
def test_other_csv_encodings_are_an_error_naming_the_file(plates, encoding, line):
    text = GOOD_ROWS + "caf\u00e9.png,1,1,9,9\n" if encoding == "latin-1" else GOOD_ROWS
    path = plates / "annotations" / "train_annotations.csv"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(AnnotationError) as error:
        read_plates(plates)
    message = str(error.value)
    assert str(path) in message and "UTF-8" in message
    if line:
        assert f"{path}:{line}:" in message

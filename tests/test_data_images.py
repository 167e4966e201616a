"""tinycnn.data.images: every Pillow mode and format to (H, W, C) float32 in [0, 1], EXIF, resizing, errors."""
import numpy as np
import pytest
from PIL import Image

from tinycnn.data import images
from tinycnn.data.images import ImageDecodeError, load_image, load_image_uint8, parse_size


def saved(tmp_path, img, name, **options):
    path = tmp_path / name
    img.save(path, **options)
    return path


def halves(mode, size, left, right):
    """An image whose left half is `left` and right half `right` (size = (width, height))."""
    img = Image.new(mode, size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


# ------------------------------------------------------------------------------------------ modes

def test_gray_png_is_float32_in_unit_range(tmp_path):
    x = load_image(saved(tmp_path, Image.new("L", (8, 6), 100), "g.png"), (6, 8))
    assert x.shape == (6, 8, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x, 100 / 255)


def test_rgb_to_gray_uses_luma_and_rgb_keeps_channels(tmp_path):
    path = saved(tmp_path, Image.new("RGB", (8, 8), (200, 100, 50)), "c.png")
    gray = load_image_uint8(path, 8, grayscale=True)
    assert gray.shape == (8, 8, 1) and gray[0, 0, 0] == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    rgb = load_image_uint8(path, 8, grayscale=False)
    assert rgb.shape == (8, 8, 3) and tuple(rgb[3, 3]) == (200, 100, 50)


def test_gray_source_loaded_as_rgb_repeats_the_channel(tmp_path):
    rgb = load_image_uint8(saved(tmp_path, Image.new("L", (4, 4), 77), "g.png"), 4, grayscale=False)
    assert rgb.shape == (4, 4, 3) and (rgb == 77).all()


def test_rgba_is_composited_on_white(tmp_path):
    img = halves("RGBA", (8, 4), (255, 0, 0, 255), (0, 0, 0, 0))      # right half: transparent black
    rgb = load_image_uint8(saved(tmp_path, img, "a.png"), (4, 8), grayscale=False)
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[0, 7]) == (255, 255, 255)


def test_half_transparent_gray_blends_halfway_to_white(tmp_path):
    img = Image.new("LA", (4, 4), (0, 128))
    gray = load_image_uint8(saved(tmp_path, img, "la.png"), 4)
    assert abs(int(gray[0, 0, 0]) - 127) <= 1


def test_palette_with_transparent_index_becomes_white(tmp_path):
    img = Image.new("P", (8, 4), 1)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)     # index 0 black (transparent), 1 blue
    img.paste(0, (4, 0, 8, 4))
    rgb = load_image_uint8(saved(tmp_path, img, "p.png", transparency=0), (4, 8), grayscale=False)
    assert tuple(rgb[0, 0]) == (0, 0, 255)
    assert tuple(rgb[0, 7]) == (255, 255, 255)


def test_palette_without_transparency(tmp_path):
    img = Image.new("P", (4, 4), 2)
    img.putpalette([0, 0, 0, 0, 0, 0, 10, 200, 30] + [0] * 759)
    rgb = load_image_uint8(saved(tmp_path, img, "p.bmp"), 4, grayscale=False)
    assert tuple(rgb[1, 1]) == (10, 200, 30)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    img = Image.new("CMYK", (16, 16), (0, 255, 0, 0))          # full magenta ink
    rgb = load_image_uint8(saved(tmp_path, img, "cmyk.jpg", quality=95), 16, grayscale=False)
    np.testing.assert_allclose(rgb[8, 8].astype(int), (255, 0, 255), atol=4)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 257 * 200, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    assert img.convert("L").getpixel((1, 0)) == 255           # what a plain convert would have done
    gray = load_image_uint8(saved(tmp_path, img, "deep.png"), (1, 4))
    assert gray[0, :, 0].tolist() == [0, 100, 200, 255]


def test_thirty_two_bit_integer_tiff_is_read_as_sixteen_bit(tmp_path):
    img = Image.fromarray(np.array([[257 * 10, 257 * 250]], dtype=np.int32))
    assert img.mode == "I"
    assert load_image_uint8(saved(tmp_path, img, "i.tif"), (1, 2))[0, :, 0].tolist() == [10, 250]


def test_bilevel_image(tmp_path):
    img = halves("1", (8, 2), 0, 1)
    gray = load_image(saved(tmp_path, img, "b.png"), (2, 8))
    assert gray[0, 0, 0] == 0.0 and gray[0, 7, 0] == 1.0


def test_float_image_in_unit_range_is_kept(tmp_path):
    img = Image.fromarray(np.full((3, 3), 0.2, dtype=np.float32))
    assert img.mode == "F"
    assert load_image_uint8(saved(tmp_path, img, "f.tif"), 3)[1, 1, 0] == 51


def test_float_image_outside_byte_range_is_stretched(tmp_path):
    img = Image.fromarray(np.array([[-100.0, 450.0, 1000.0]], dtype=np.float32))
    assert load_image_uint8(saved(tmp_path, img, "f.tif"), (1, 3))[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("name, options", [("x.bmp", {}), ("x.webp", {"lossless": True}), ("x.png", {}),
                                           ("x.tif", {})])
def test_lossless_formats_round_trip_exactly(tmp_path, name, options):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb = load_image_uint8(saved(tmp_path, Image.fromarray(pixels), name, **options), (5, 7), grayscale=False)
    np.testing.assert_array_equal(rgb, pixels)


def test_animated_gif_gives_its_first_frame(tmp_path):
    red, blue = Image.new("RGB", (6, 6), (255, 0, 0)), Image.new("RGB", (6, 6), (0, 0, 255))
    path = saved(tmp_path, red, "anim.gif", save_all=True, append_images=[blue], duration=50)
    with Image.open(path) as gif:
        assert gif.n_frames == 2
    rgb = load_image_uint8(path, 6, grayscale=False)
    assert tuple(rgb[2, 2]) == (255, 0, 0)


# ------------------------------------------------------------------------------------------ EXIF

def test_exif_orientation_is_applied(tmp_path):
    img = halves("L", (40, 20), 0, 255)                      # 40 wide, 20 tall: dark left, bright right
    exif = Image.Exif()
    exif[0x0112] = 6                                         # "rotate 90 degrees clockwise to display"
    path = saved(tmp_path, img, "phone.jpg", exif=exif, quality=95)
    upright = load_image(path, (40, 20))                     # (height, width): portrait after rotation
    assert upright[:20].mean() < 0.1 and upright[20:].mean() > 0.9   # the dark left side is now on top
    plain = load_image(saved(tmp_path, img, "plain.jpg", quality=95), (20, 40))
    assert plain[:, :20].mean() < 0.1 and plain[:, 20:].mean() > 0.9


# ---------------------------------------------------------------------------------------- resizing

def bars(width=40, height=20):
    """Black outer eighths, white in between."""
    img = Image.new("L", (width, height), 0)
    img.paste(255, (width // 8, 0, 7 * width // 8, height))
    return img


def test_stretch_ignores_aspect_ratio(tmp_path):
    x = load_image(saved(tmp_path, bars(), "b.png"), 10, resize="stretch")
    assert x.shape == (10, 10, 1)
    assert x[:, 0].max() < 0.05 and x[:, 5].min() > 0.95     # the black sides are still there, squeezed


def test_crop_keeps_the_centre(tmp_path):
    x = load_image(saved(tmp_path, bars(), "b.png"), 10, resize="crop")
    assert x.shape == (10, 10, 1) and x.min() > 0.95          # the centre 20x20 square is all white


def test_pad_keeps_everything_and_fills_with_black(tmp_path):
    x = load_image(saved(tmp_path, Image.new("L", (40, 20), 255), "w.png"), 10, resize="pad")
    assert x.shape == (10, 10, 1)
    assert x[0].max() == 0.0 and x[-1].max() == 0.0          # padding rows above and below
    assert x[4:6].min() == 1.0                               # the image itself in the middle


def test_non_square_size_is_height_then_width(tmp_path):
    x = load_image(saved(tmp_path, Image.new("RGB", (30, 30)), "s.png"), (12, 20), grayscale=False)
    assert x.shape == (12, 20, 3)


@pytest.mark.parametrize("bad", [0, -3, (10,), (10, 0), "100", 2.5, True])
def test_bad_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match="img_size"):
        parse_size(bad)


def test_unknown_resize_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="resize"):
        load_image(saved(tmp_path, Image.new("L", (4, 4)), "g.png"), 4, resize="squash")


# ------------------------------------------------------------------------------------------ errors

def test_a_text_file_named_jpg_is_a_decode_error_naming_it(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(ImageDecodeError, match="notes.jpg"):
        load_image(path, 4)


def test_a_truncated_jpeg_is_a_decode_error(tmp_path):
    path = saved(tmp_path, Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)),
                 "t.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="t.jpg"):
        load_image(path, 8)


def test_a_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="gone.png"):
        load_image(tmp_path / "gone.png", 8)


def test_decompression_bomb_guard_is_on(tmp_path, monkeypatch):
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 0
    path = saved(tmp_path, Image.new("L", (30, 30)), "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)        # 900 pixels > 2 x 100: refused
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path, 8)


def test_image_to_uint8_accepts_an_open_image():
    img = Image.new("RGB", (10, 10), (0, 255, 0))
    assert images.image_to_uint8(img, 5, grayscale=True).shape == (5, 5, 1)

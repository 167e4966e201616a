"""tinycnn.visualize: curves with matplotlib and the Pillow fallback, feature maps and their shapes, filters,
boxes, masks, grids."""
import sys
import warnings

import numpy as np
import pytest

import tinycnn
from tinycnn import layers, visualize
from tinycnn.nn import Parameter
from tinycnn.tasks.plates_models import PlateBoxRegressor, PlateSegmenter, scaled_channels


def history(epochs=6, spike=False, lr=True):
    rows = []
    for e in range(1, epochs + 1):
        row = dict(epoch=e, loss=1.0 / e, val_loss=1.2 / e, accuracy=0.5 + 0.05 * e, val_accuracy=0.45 + 0.05 * e,
                   images_per_sec=300.0)
        if lr:
            row["lr"] = 1e-3 * 0.5 ** e
        rows.append(row)
    if spike:
        rows[0]["loss"] = 500.0
    return rows


# ------------------------------------------------------------------------------------------------ curves

def test_history_panels_loss_metrics_and_learning_rate():
    panels = visualize.history_panels(history(), best_epoch=4)
    assert [p.title for p in panels] == ["loss", "accuracy", "learning rate"]   # images_per_sec is no metric
    assert [s.label for s in panels[0].series] == ["train", "validation"]
    assert panels[0].mark[:2] == (6, pytest.approx(0.2))        # the lowest val_loss
    assert panels[1].mark[:2] == (6, pytest.approx(0.75))       # the highest val_accuracy
    assert all(p.vline[0] == 4 for p in panels)
    assert [p.title for p in visualize.history_panels(history(lr=False))] == ["loss", "accuracy"]


def test_a_loss_spike_gets_a_log_scale():
    assert visualize.history_panels(history(spike=True))[0].log
    assert not visualize.history_panels(history())[0].log
    assert visualize.wants_log_scale([1e-5, 1e-3]) and not visualize.wants_log_scale([-1.0, 100.0])


def test_plot_history_reads_a_run_folder_and_saves(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n1,2.0,2.5\n2,1.0,1.5\n")
    picture = visualize.plot_history(tmp_path, path=tmp_path / "curves.png")
    assert (tmp_path / "curves.png").is_file() and picture.size[0] > 300
    pixels = np.asarray(picture)
    assert (np.abs(pixels.astype(int) - visualize.TRAIN_COLOUR).max(axis=2) < 10).sum() > 50   # the train line


def test_without_matplotlib_the_pillow_picture_is_drawn_and_said_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    monkeypatch.setattr(visualize, "_fallback_warned", False)
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        picture = visualize.plot_history(history())
    assert picture.size == (3 * 450, 360)   # the plain picture: one 450 x 360 box per panel
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        visualize.plot_history(history(spike=True))   # no second warning
    pixels = np.asarray(picture)
    assert (np.abs(pixels.astype(int) - visualize.VAL_COLOUR).max(axis=2) < 10).sum() > 50


def test_empty_history_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        visualize.plot_history([])


# ------------------------------------------------------------------------------------------------ feature maps

def test_sequential_feature_maps_are_each_conv_block_and_end_at_the_output():
    model = tinycnn.Sequential([layers.Conv2D(4, 3, activation="relu", input_shape=(12, 12, 2)),
                                layers.MaxPooling2D(2),
                                layers.Conv2D(5, 3, padding="same"), layers.BatchNormalization(),
                                layers.Activation("relu")])
    x = np.random.default_rng(0).uniform(0, 1, (12, 12, 2)).astype(np.float32)
    maps = visualize.feature_maps(model, x)
    assert [m.shape for _, m in maps] == [(4, 10, 10), (5, 5, 5)]
    assert "BatchNormalization + Activation" in maps[1][0]
    expected = model.predict(x[None])[0].transpose(2, 0, 1)   # channels-last output -> (C, H, W)
    np.testing.assert_allclose(maps[1][1], expected, rtol=1e-4, atol=1e-5)


def test_segmenter_feature_maps_have_the_blocks_shapes():
    model = PlateSegmenter(filters=4, depth=2, convs_per_block=1)
    x = np.random.default_rng(1).uniform(0, 1, (3, 16, 16)).astype(np.float32)
    maps = dict(visualize.feature_maps(model, x))
    assert list(maps) == ["down.0", "down.1", "bottom", "ups.0", "up_blocks.0", "ups.1", "up_blocks.1", "classify"]
    assert maps["down.0"].shape == (4, 16, 16) and maps["down.1"].shape == (8, 8, 8)
    assert maps["bottom"].shape == (16, 4, 4) and maps["up_blocks.1"].shape == (4, 16, 16)
    np.testing.assert_allclose(maps["classify"], model.predict(x[None])[0], rtol=1e-4, atol=1e-5)
    assert all("forward" not in module.__dict__ for _, module in model.named_modules())   # unwrapped again


def test_channels_last_blocks_come_back_channels_first():
    x = np.random.default_rng(2).uniform(0, 1, (3, 16, 16)).astype(np.float32)
    last = PlateBoxRegressor(width=0.35)
    last.predict(x[None])
    first = PlateBoxRegressor(width=0.35, data_format="channels_first")
    first.predict(x[None])
    first.load_state_dict(last.state_dict())
    maps_last, maps_first = visualize.feature_maps(last, x), visualize.feature_maps(first, x)
    assert maps_last[0][0] == "stem" and maps_last[0][1].shape == (scaled_channels(32, 0.35), 8, 8)
    for (name, a), (_, b) in zip(maps_last, maps_first):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=name)


def test_feature_maps_take_one_input():
    model = PlateSegmenter(filters=4, depth=1, convs_per_block=1)
    with pytest.raises(ValueError, match="one image"):
        visualize.feature_maps(model, np.zeros((2, 3, 8, 8), np.float32))


def test_model_summary_lists_the_blocks():
    model = PlateSegmenter(filters=4, depth=1, convs_per_block=1)
    model.predict(np.zeros((1, 3, 8, 8), np.float32))
    text = visualize.model_summary(model)
    assert "down.0 (ConvBlock)" in text and "(4, 8, 8)" in text and f"{model.count_params():,}" in text


# ------------------------------------------------------------------------------------------------ pictures

def test_show_filters_draws_rgb_kernels_with_grey_zero():
    conv = layers.Conv2D(8, 3)
    conv.build((1, 3, 5, 5))
    kernel = np.zeros((8, 3, 3, 3), np.float32)
    kernel[0, 0] = 1.0   # filter 0: red only, positive
    conv.kernel = Parameter(kernel)
    picture = np.asarray(visualize.show_filters(conv, tile=40))
    assert picture.shape == (4 + 39 + 4, 8 * (39 + 4) + 4, 3)   # 3 px kernels enlarged 13x, 8 in a row
    assert tuple(picture[20, 20]) == (255, 128, 128)           # filter 0's tile
    assert tuple(picture[20, 4 + 43 + 20]) == (128, 128, 128)  # an all-zero filter is mid-grey


def test_confusion_matrix_must_be_square_in_the_classes():
    with pytest.raises(ValueError, match="2x2"):
        visualize.confusion_matrix_image([[1, 2, 3]], ["cat", "dog"])


def test_draw_boxes_and_overlay_mask_colour_the_right_pixels():
    photo = np.full((40, 60, 3), 0.5, np.float32)
    boxed = np.asarray(visualize.draw_boxes(photo, [[10, 10, 30, 20]], [[35, 5, 55, 35]]))
    assert tuple(boxed[10, 20]) == visualize.PREDICTED_COLOUR and tuple(boxed[5, 45]) == visualize.TRUE_COLOUR
    assert tuple(boxed[15, 20]) == (128, 128, 128)   # inside the box: the photo
    mask, truth = np.zeros((40, 60), bool), np.zeros((40, 60), bool)
    mask[5:10, 5:10] = True
    truth[20:30, 20:30] = True
    shown = np.asarray(visualize.overlay_mask(photo, mask, truth))
    assert tuple(shown[7, 7]) == (192, 64, 64)                  # half red over mid-grey
    assert tuple(shown[20, 25]) == visualize.TRUE_COLOUR        # the truth's outline
    assert tuple(shown[25, 25]) == (128, 128, 128)              # inside the truth: untouched


def test_image_grid_enlarges_small_inputs_pixel_by_pixel():
    tiny = np.zeros((4, 4, 1), np.float32)
    tiny[0, 0] = 1.0
    grid = np.asarray(visualize.image_grid([tiny, tiny], ["a", "b"], tile=40))
    assert grid.shape[1] == 2 * 50
    assert tuple(grid[5, 5 + 9]) == (255, 255, 255) and tuple(grid[5 + 10, 5 + 10]) == (0, 0, 0)


def test_crop_around_keeps_the_boxes_and_the_aspect():
    picture = visualize.as_picture(np.zeros((300, 400, 3), np.uint8))
    crop = visualize.crop_around(picture, [[390, 10, 400, 20]])   # a small box in the top-right corner
    assert crop.size == (200, 150)                                 # min_share 0.5, aspect 4:3
    assert visualize.crop_around(picture, []).size == (400, 300)
    assert visualize.crop_around(picture, [[0, 0, 300, 10]]).size == (400, 300)   # wide boxes: the whole width


def test_long_captions_are_shortened_to_the_tile():
    font = visualize._font(13)
    name = "us_37170dd1_2802_4e38_b982_c5d07c64ff67.jpg"
    short = visualize.fit_text(name, font, 120)
    assert font.getlength(short) <= 120 and short.startswith("us_") and short.endswith(".jpg") and "..." in short
    assert visualize.fit_text("IoU 0.5", font, 120) == "IoU 0.5"

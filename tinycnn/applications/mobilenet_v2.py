"""MobileNetV2 (Sandler et al., 2018) as keras.applications.MobileNetV2 builds it: the same layers, layer names
and weight counts, as a functional tinycnn.Model.

    base = MobileNetV2(input_shape=(224, 224, 3), include_top=False)      # 2,257,984 weights
    x = layers.GlobalAveragePooling2D()(base.output)
    model = tinycnn.Model(base.input, layers.Dense(4, activation="sigmoid")(x))

    Conv1 (3×3, stride 2, 'same', no bias) -> bn_Conv1 -> Conv1_relu (ReLU6)
    17 inverted residual blocks, (expansion t, filters c, stride s):
        expanded_conv (t 1, c 16), block_1..2 (6, 24, 2 then 1), block_3..5 (6, 32, 2, 1, 1),
        block_6..9 (6, 64, 2, 1, 1, 1), block_10..12 (6, 96, 1), block_13..15 (6, 160, 2, 1, 1), block_16 (6, 320, 1)
      each: block_i_expand (1×1) -> _BN -> _relu, [block_i_pad (stride 2)], block_i_depthwise (3×3) -> _BN -> _relu,
            block_i_project (1×1) -> _BN, and block_i_add (the residual) where the shape stays
    Conv_1 (1×1, 1280) -> Conv_1_bn -> out_relu
    include_top: global_average_pooling2d -> predictions (Dense(classes, classifier_activation))

Batch norms use Keras' momentum 0.999 and ε = 1e-3. The convs, batch norms and paddings run channels-last
((N, H, W, C) maps: the layout in which tinycnn's 1×1 and depthwise kernels are fastest on the CPU), the
functional Model transposing once at the first conv and once after the last (tinycnn/functional_model.py);
`layout="channels_first"` builds the same network on NCHW maps (the same weights give the same outputs). Weight shapes are tinycnn's (a conv kernel (F, C, kh, kw),
a depthwise kernel (C, 1, kh, kw), a dense kernel (units, features)); a converter from Keras (kh, kw, C, F) or
torchvision (F, C, kh, kw) files maps them by layer name: `state_dict()` keys are "<layer name>.<weight>".
"""
import os

from .. import layers
from ..functional_model import Input, Model

# (expansion, filters, stride) of blocks 0..16, as Keras lists them
BLOCKS = [(1, 16, 1),
          (6, 24, 2), (6, 24, 1),
          (6, 32, 2), (6, 32, 1), (6, 32, 1),
          (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
          (6, 96, 1), (6, 96, 1), (6, 96, 1),
          (6, 160, 2), (6, 160, 1), (6, 160, 1),
          (6, 320, 1)]


def make_divisible(value, divisor=8, min_value=None):
    """Round `value` to a multiple of `divisor`, never down by more than 10 % (Keras' _make_divisible)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def correct_pad(size, kernel=3):
    """Keras' padding before a stride-2 3×3 'valid' depthwise conv: ((top, bottom), (left, right))."""
    adjust = [1 - s % 2 for s in size]
    half = kernel // 2
    return ((half - adjust[0], half), (half - adjust[1], half))


def _batch_norm(name, layout):
    return layers.BatchNormalization(momentum=0.999, epsilon=1e-3, axis=-1 if layout == "channels_last" else 1,
                                     name=name)


def inverted_res_block(x, expansion, stride, alpha, filters, block_id, layout="channels_last"):
    """Keras' _inverted_res_block: expand (1×1) -> depthwise (3×3) -> project (1×1), + the input if shapes allow."""
    in_channels = x.shape[-1]
    pointwise_filters = make_divisible(int(filters * alpha), 8)
    inputs, prefix = x, f"block_{block_id}_"
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, data_format=layout,
                          name=prefix + "expand")(x)
        x = _batch_norm(prefix + "expand_BN", layout)(x)
        x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = layers.ZeroPadding2D(correct_pad(x.shape[1:3]), data_format=layout, name=prefix + "pad")(x)
    x = layers.DepthwiseConv2D(3, strides=stride, use_bias=False, padding="same" if stride == 1 else "valid",
                               data_format=layout, name=prefix + "depthwise")(x)
    x = _batch_norm(prefix + "depthwise_BN", layout)(x)
    x = layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
    x = layers.Conv2D(pointwise_filters, 1, padding="same", use_bias=False, data_format=layout,
                      name=prefix + "project")(x)
    x = _batch_norm(prefix + "project_BN", layout)(x)
    if in_channels == pointwise_filters and stride == 1:
        return layers.Add(name=prefix + "add")([inputs, x])
    return x


def MobileNetV2(input_shape=None, alpha=1.0, include_top=True, weights=None, input_tensor=None,  # noqa: N802
                pooling=None, classes=1000, classifier_activation="softmax", name=None, layout="channels_last"):
    """keras.applications.MobileNetV2: a tinycnn.Model taking (N, H, W, 3) images (default 224×224×3).

    weights: None (random: train from scratch), or the path of a tinycnn model file with these layer names
    (e.g. converted from Keras or torchvision). Nothing is downloaded: "imagenet" is refused with a hint.
    pooling (include_top=False): None (the 4-D feature map), "avg" or "max" (a vector per image).
    layout (a tinycnn extension): the layout the convs run in inside, "channels_last" or "channels_first"."""
    if weights == "imagenet":
        raise ValueError("MobileNetV2(weights='imagenet'): tinycnn downloads nothing; convert the Keras or "
                         "torchvision ImageNet weights to a tinycnn model file and pass weights='path/to/file'")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"MobileNetV2: weights must be None or a file path, got {type(weights).__name__}")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"MobileNetV2: no weights file at {weights}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"MobileNetV2: pooling must be None, 'avg' or 'max', got {pooling!r}")
    if layout not in ("channels_last", "channels_first"):
        raise ValueError(f"MobileNetV2: layout must be 'channels_last' or 'channels_first', got {layout!r}")
    if alpha <= 0:
        raise ValueError(f"MobileNetV2: alpha must be positive, got {alpha}")
    if input_tensor is not None:
        img_input = input_tensor
        input_shape = tuple(input_tensor.shape[1:])
    else:
        input_shape = tuple(input_shape) if input_shape is not None else (224, 224, 3)
        img_input = Input(input_shape, name="input_1")
    if len(input_shape) != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"MobileNetV2: input_shape must be (height, width, channels) with sides ≥ 32, got "
                         f"{input_shape}")

    x = layers.Conv2D(make_divisible(32 * alpha, 8), 3, strides=2, padding="same", use_bias=False,
                      data_format=layout, name="Conv1")(img_input)
    x = _batch_norm("bn_Conv1", layout)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (expansion, filters, stride) in enumerate(BLOCKS):
        x = inverted_res_block(x, expansion, stride, alpha, filters, block_id, layout)
    last_filters = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last_filters, 1, use_bias=False, data_format=layout, name="Conv_1")(x)
    x = _batch_norm("Conv_1_bn", layout)(x)
    x = layers.ReLU(6.0, name="out_relu")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(data_format=layout, name="global_average_pooling2d")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(data_format=layout, name="global_average_pooling2d")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(data_format=layout, name="global_max_pooling2d")(x)

    model = Model(img_input, x, name=name or f"mobilenetv2_{alpha:0.2f}_{input_shape[0]}")
    if weights is not None:
        _load_weights(model, weights)
    return model


def _load_weights(model, path):
    from ..saving import ModelFileError, _read
    _, arrays = _read(os.fspath(path))
    state = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    try:
        model.load_state_dict(state)
    except ValueError as error:
        raise ModelFileError(f"{path}: the weights do not fit this MobileNetV2 (alpha, include_top, classes?): "
                             f"{error}") from None

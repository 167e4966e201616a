"""The two plate models, built from scratch with tinycnn's layers: a box regressor and a segmenter.

    model = PlateBoxRegressor(width=1.0)          # (N, 3, S, S) -> (N, 4) normalised (xmin, ymin, xmax, ymax)
    model = PlateSegmenter(filters=16, depth=3)   # (N, 3, S, S) -> (N, 2, S, S) per-pixel class probabilities

PlateBoxRegressor is a MobileNetV2-style network (Sandler et al., 2018): a strided 3x3 stem, then inverted
residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear project, batch norm after each, ReLU6 after the
first two; the input is added back when the block keeps its shape), a 1x1 head conv, global average
pooling and Dense(4) + sigmoid, as in the Keras tutorial's regressor. `width` multiplies every channel count
(rounded to a multiple of 8, as MobileNet does); head_channels=0 leaves the head conv out (the benchmark's
twin, benchmarks/models.py).

PlateSegmenter is a U-Net-style fully convolutional encoder-decoder: conv blocks and 2x2 max pooling down,
transposed convolutions (or bilinear upsampling + 1x1 conv) up, the encoder's maps concatenated onto the
decoder's at each scale (skip connections), and a 1x1 conv to the classes with a per-pixel softmax.

Both are tinycnn.Model subclasses (they train with fit; their blocks are plain Modules, layers) and save and
load by `get_config` (the __init__ arguments), so `tinycnn.load_model` rebuilds them.
"""
import tinycnn
from tinycnn import layers

# MobileNetV2's block table (t expansion, c output channels, n repeats, s stride of the first repeat), cut
# to the depth a 128-160 px letterbox needs: the stem and three strided stages bring 128 px down to 8 px.
DEFAULT_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2), (6, 64, 1, 2), (6, 128, 1, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 256


def scaled_channels(channels, width, divisor=8):
    """`channels * width` rounded to the nearest multiple of `divisor`, never below it or under 90 %
    of the exact value (MobileNet's `_make_divisible`)."""
    value = channels * width
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(tinycnn.Module):
    """Conv (no bias: batch norm has one), batch norm, then ReLU6 unless `activation` is False; on
    (N, H, W, C) maps when data_format is "channels_last"."""
    fusable = (("conv", "bn"),)  # predict folds the batch norm into the conv (tinycnn/fuse.py)
    chain = ("conv", "bn")  # forward is these two, one after the other: blocks of them fuse further

    def __init__(self, filters, kernel_size=1, strides=1, depthwise=False, activation=True,
                 data_format="channels_first"):
        super().__init__()
        if depthwise:
            self.conv = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False,
                                               kernel_initializer="he_normal", data_format=data_format)
        else:
            self.conv = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                                      kernel_initializer="he_normal", data_format=data_format)
        # ReLU6 fused into the batch norm's own passes (the same values as BatchNormalization, then ReLU6)
        self.bn = layers.BatchNormalization(momentum=0.9, activation="relu6" if activation else None,
                                            axis=-1 if data_format == "channels_last" else 1)

    def forward(self, x):
        return self.bn(self.conv(x))


class InvertedResidual(tinycnn.Module):
    """MobileNetV2's block: 1x1 expand to in·t channels (skipped when t = 1), 3x3 depthwise with `strides`,
    1x1 linear projection to `out_channels`. The input is added to the output when the block keeps the
    shape (strides 1 and in_channels == out_channels): `self.residual` says whether it does."""
    fusable = (("expand", "depthwise", "project"),)  # predict runs the three as one op (tinycnn/fuse.py)

    def __init__(self, in_channels, out_channels, strides, expansion, data_format="channels_first"):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvBNReLU6(hidden, 1, data_format=data_format) if expansion != 1 else None
        self.depthwise = ConvBNReLU6(hidden, 3, strides=strides, depthwise=True, data_format=data_format)
        self.project = ConvBNReLU6(out_channels, 1, activation=False, data_format=data_format)
        self.residual = strides == 1 and in_channels == out_channels

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


def inverted_residual_stack(in_channels, blocks, width, data_format="channels_first"):
    """The InvertedResidual blocks of a (t, c, n, s) table, channels scaled by `width`; and the last channels."""
    stack = []
    for expansion, channels, repeats, strides in blocks:
        out_channels = scaled_channels(channels, width)
        for index in range(repeats):
            stack.append(InvertedResidual(in_channels, out_channels, strides if index == 0 else 1, expansion,
                                          data_format))
            in_channels = out_channels
    return stack, in_channels


class PlateBoxRegressor(tinycnn.Model):
    """MobileNetV2-style backbone -> global average pooling -> Dense(4) + sigmoid: one normalised box.

    The output is (xmin, ymin, xmax, ymax) divided by the letterbox side, in [0, 1]. The tutorial's model
    predicts one box per image; for an image with several plates it is trained on the largest.

    The input is an NCHW batch, as the task's data gives it. With data_format="channels_last" (the default)
    the network transposes it once and runs on (N, H, W, C) maps: its 1×1 and depthwise convs are faster
    so (kernels/cpu/conv.py, "channels-last"). Both layouts have the same weights, so a saved model loads
    in either.
    """

    def __init__(self, width=1.0, blocks=DEFAULT_BLOCKS, dropout=0.2, data_format="channels_last",
                 head_channels=HEAD_CHANNELS):
        super().__init__()
        self.width, self.blocks, self.dropout_rate = float(width), [list(b) for b in blocks], float(dropout)
        self.data_format, self.head_channels = data_format, int(head_channels or 0)
        stem_channels = scaled_channels(STEM_CHANNELS, self.width)
        self.stem = ConvBNReLU6(stem_channels, 3, strides=2, data_format=data_format)
        self.features, channels = inverted_residual_stack(stem_channels, self.blocks, self.width, data_format)
        self.head = ConvBNReLU6(scaled_channels(self.head_channels, max(self.width, 1.0)), 1,
                                data_format=data_format) if self.head_channels else None
        self.pool = layers.GlobalAveragePooling2D(data_format=data_format)
        self.dropout = layers.Dropout(self.dropout_rate)
        self.box = layers.Dense(4, activation="sigmoid")

    def backbone(self, x):
        """(N, 3, S, S) -> the head's feature map, (N, S/16, S/16, C) channels last, else (N, C, S/16, S/16)."""
        if self.data_format == "channels_last":
            x = x.transpose(0, 2, 3, 1)
        x = self.stem(x)
        for block in self.features:
            x = block(x)
        return self.head(x) if self.head is not None else x

    def forward(self, x):
        return self.box(self.dropout(self.pool(self.backbone(x))))

    def get_config(self):
        return {"width": self.width, "blocks": self.blocks, "dropout": self.dropout_rate,
                "data_format": self.data_format, "head_channels": self.head_channels}


class ConvBlock(tinycnn.Module):
    """`convs` times: 3x3 conv ('same', no bias), batch norm, ReLU. Its input may be a list of tensors, their
    channel concatenation (layers.Conv2D takes one so, without building it)."""
    fusable = (("convs", "norms"),)  # predict folds each batch norm into its conv (tinycnn/fuse.py)

    def __init__(self, filters, convs=2):
        super().__init__()
        self.convs = [layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal")
                      for _ in range(convs)]
        self.norms = [layers.BatchNormalization(momentum=0.9, activation="relu") for _ in range(convs)]  # fused ReLU

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = norm(conv(x))
        return x


class UpStep(tinycnn.Module):
    """Double the resolution: a 2x2 transposed convolution with stride 2 ('transpose'), or bilinear
    upsampling followed by a 1x1 conv ('bilinear'); both give `filters` channels."""

    def __init__(self, filters, mode):
        super().__init__()
        if mode == "transpose":
            self.up = layers.Conv2DTranspose(filters, 2, strides=2, kernel_initializer="he_normal")
            self.mix = None
        elif mode == "bilinear":
            self.up = layers.UpSampling2D(2, interpolation="bilinear")
            self.mix = layers.Conv2D(filters, 1, kernel_initializer="he_normal")
        else:
            raise ValueError(f"upsample must be 'transpose' or 'bilinear', got {mode!r}")

    def forward(self, x):
        x = self.up(x)
        return self.mix(x) if self.mix is not None else x


class PlateSegmenter(tinycnn.Model):
    """U-Net-style segmenter: (N, 3, S, S) -> (N, classes, S, S) softmax probabilities (class 1 = plate).

    `filters` channels at full resolution, doubled at each of the `depth` poolings; S must divide by 2**depth.
    """

    def __init__(self, filters=16, depth=3, upsample="transpose", convs_per_block=2, classes=2):
        super().__init__()
        self.filters, self.depth, self.upsample = int(filters), int(depth), upsample
        self.convs_per_block, self.classes = int(convs_per_block), int(classes)
        widths = [self.filters * 2 ** level for level in range(self.depth + 1)]
        self.down = [ConvBlock(w, self.convs_per_block) for w in widths[:-1]]
        self.pool = layers.MaxPooling2D(2)
        self.bottom = ConvBlock(widths[-1], self.convs_per_block)
        self.ups = [UpStep(w, upsample) for w in reversed(widths[:-1])]
        self.up_blocks = [ConvBlock(w, self.convs_per_block) for w in reversed(widths[:-1])]
        self.classify = layers.Conv2D(self.classes, 1, activation="softmax")

    def forward(self, x):
        size = x.shape[2:]
        step = 2 ** self.depth
        if size[0] % step or size[1] % step:
            raise ValueError(f"PlateSegmenter of depth {self.depth} needs a side divisible by {step}, got {size}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            x = block([up(x), skip])  # their channel concatenation, read part by part by its first conv
        return self.classify(x)

    def get_config(self):
        return {"filters": self.filters, "depth": self.depth, "upsample": self.upsample,
                "convs_per_block": self.convs_per_block, "classes": self.classes}

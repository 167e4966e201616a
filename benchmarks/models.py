"""The task models, three times: in tinycnn, PyTorch and Keras, with the same architecture, batch and input.

    build_tinycnn("catdog")  -> (model, loss_fn)      model: a tinycnn.Module, NCHW tensors in
    build_torch("catdog")    -> (model, loss_fn)      model: a torch.nn.Module, NCHW tensors in
    build_keras("catdog")    -> (model, loss_fn)      model: a keras.Model, NHWC tensors in (channels-last)
    make_batch("catdog", n)  -> (x, y) NumPy arrays   x float32 (n, C, H, W); y the model's targets

Each builder imports its framework only when called: this file is imported by the benchmark's children in
all environments (tinycnn's, which has no torch, and a peer's, which need not have numba).

The models (tinycnn's are the task models of tasks/plates_models.py; the PyTorch and Keras twins are written
here to match them):

- catdog    the tutorial's net, batch 32, 1×100×100: Conv64 3×3 + ReLU, MaxPool 2, Conv64 3×3 + ReLU,
            MaxPool 2, Flatten, Dense 64 + ReLU, Dense 1 + sigmoid; binary cross-entropy (on the logits).
- mobilenet MobileNetV2-style box regressor, batch 16, 3×128×128: stem conv 3×3 stride 2 → 32 (no bias) + BN +
            ReLU6; inverted residual blocks (t, c, s) = (1,16,1) (6,24,2) (6,24,1) (6,32,2) (6,64,2) (6,128,1)
            (1×1 expand + BN + ReLU6 when t > 1, 3×3 depthwise + BN + ReLU6, 1×1 project + BN, residual add
            when the shape is kept); global average pooling, Linear 4 + sigmoid; MSE. tinycnn's model is
            PlateBoxRegressor without its head conv and dropout: channels-last inside, transposing the NCHW
            batch in its forward.
- fcn       U-Net-style segmenter, batch 8, 3×128×128: encoder blocks of two (conv 3×3 'same' no bias + BN +
            ReLU) with 16, 32, 64 channels and 2×2 max pooling between them; decoder: transposed conv 2×2
            stride 2 (64→32, 32→16), concatenation with the encoder's map of that scale, a block of two
            conv+BN+ReLU; 1×1 conv to 2 classes; per-pixel cross-entropy (on the logits). tinycnn's model is
            PlateSegmenter(16, depth=2, convs_per_block=2), whose softmax output keeps the logits the loss reads.
- strong    the cat/dog `strong` preset (tasks/catdog.py strong_model, `python -m tinycnn.train catdog`'s
            default), batch 32, 3×96×96: four blocks of conv 3×3 'same' no bias + BN + ReLU + MaxPool 2 with
            32, 64, 128, 256 channels, global average pooling, dropout 0.3, Dense 1 + sigmoid; binary
            cross-entropy (on the logits).
- detector  the plate detector (tasks/plates_detect.py PlateCenterNet with its RECIPE: stem 16, expansion 4,
            neck 64, width 1.0), batch 16, 3×256×256: stem conv 3×3 stride 2 → 16 + BN + ReLU6; inverted
            residual stages (t, c, n, s) (1,16,1,1) (4,24,2,2) | (4,32,3,2) | (4,64,2,2) (4,96,1,1) ending at
            strides 4, 8, 16; 1×1 conv to 64 (+ BN + ReLU6); two neck steps (nearest 2× upsampling + a 1×1
            conv + BN lateral of the stride-8, then the stride-4 map, added, depthwise 3×3 + 1×1, each + BN +
            ReLU6); two heads (depthwise 3×3 + BN + ReLU6, 1×1 + BN + ReLU6, 1×1 conv with bias to 1 heat-map logit, + the prior
            −2.19, and to 4 box values), concatenated: (N, 5, 64, 64). Loss: a stand-in, MSE of the output
            against random (N, 5, 64, 64) targets in all three frameworks (the task's CenterNet loss, focal
            loss + L1 at the centres, encodes boxes in NumPy per batch and is awkward to write three times;
            MSE costs a few elementwise passes over the output, which is small beside the network). The
            network is channels-last inside in tinycnn (transposing the NCHW batch in, the output back out);
            the Keras twin ends with a Permute to the same (N, 5, 64, 64) output. The PyTorch twin is
            benchmarks/torch_plates_detect.py's CenterNet with the convs' own padding instead of its explicit
            F.pad per conv (TF's 'same'), as the other twins here.

Batch norm: ε = 1e-3 in all three (Keras' default, which tinycnn's layer uses), momentum 0.9 (PyTorch's 0.1).
Convolutions before a batch norm have no bias. tinycnn's 'same' padding follows Keras: for the stride-2 3×3
convs on an even size it pads (0, 1) (tinycnn and Keras inside the conv); PyTorch's twin pads (1, 1).
Output sizes and FLOPs are equal. Keras is channels-last: its input is the NCHW batch transposed
once (outside any timed region), catdog's Flatten reads (H, W, C) order, fcn's concatenation is on the last
axis, and the targets are the same (fcn's are per pixel, (N, H, W), in every framework).
"""
import numpy as np

MODELS = ("catdog", "mobilenet", "fcn", "strong", "detector")
BATCH = {"catdog": 32, "mobilenet": 16, "fcn": 8, "strong": 32, "detector": 16}
INPUT = {"catdog": (1, 100, 100), "mobilenet": (3, 128, 128), "fcn": (3, 128, 128), "strong": (3, 96, 96),
         "detector": (3, 256, 256)}
MOBILENET_BLOCKS = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 64, 2), (6, 128, 1))
MOBILENET_STEM = 32
FCN_WIDTHS = (16, 32, 64)
STRONG_WIDTHS = (32, 64, 128, 256)
STRONG_DROPOUT = 0.3
# tasks/plates_detect.py: stages(RECIPE["expansion"]), RECIPE["stem"], RECIPE["neck"] (tests check they agree)
DETECTOR_STAGES = (((1, 16, 1, 1), (4, 24, 2, 2)), ((4, 32, 3, 2),), ((4, 64, 2, 2), (4, 96, 1, 1)))
DETECTOR_STEM, DETECTOR_NECK, DETECTOR_STRIDE = 16, 64, 4
HEAT_PRIOR = -2.19
BN_EPS = 1e-3

# The conv layers timed alone: name -> (N, C, H, W, filters, K, stride, padding, groups, need_dx).
# need_dx is False for a first layer (training never needs the gradient of the image).
CONV_CASES = {
    "catdog conv1 1→64 3×3": (32, 1, 100, 100, 64, 3, 1, 0, 1, False),
    "catdog conv2 64→64 3×3": (32, 64, 49, 49, 64, 3, 1, 0, 1, True),
    "mobilenet 1×1 24→144 @32": (16, 24, 32, 32, 144, 1, 1, 0, 1, True),
    "mobilenet dw 3×3 144 @32": (16, 144, 32, 32, 144, 3, 1, 1, 144, True),
}


def conv_output(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def conv_flops(case):
    """Multiply-adds × 2 of the forward; the backward does this once per gradient (dx, dw)."""
    N, C, H, W, filters, K, s, p, g, _ = case
    OH, OW = conv_output(H, K, s, p), conv_output(W, K, s, p)
    return 2.0 * N * filters * OH * OW * (C // g) * K * K


def make_batch(name, n, seed=0):
    """Random inputs and targets of the model's task, NCHW float32."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n,) + INPUT[name]).astype(np.float32)
    if name == "catdog":
        y = (rng.uniform(size=(n, 1)) > 0.5).astype(np.float32)
    elif name == "strong":
        y = (rng.uniform(size=(n, 1)) > 0.5).astype(np.float32)
    elif name == "detector":  # the stand-in loss's targets: the output's shape
        side = INPUT[name][1] // DETECTOR_STRIDE
        y = rng.uniform(0.0, 1.0, (n, 5, side, side)).astype(np.float32)
    elif name == "mobilenet":
        corners = np.sort(rng.uniform(size=(n, 2, 2)), axis=1)  # (xmin, xmax), (ymin, ymax)
        y = np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], 1).astype(np.float32)
    else:
        y = rng.integers(0, 2, (n,) + INPUT[name][1:]).astype(np.int64)
    return x, y


# ---------------------------------------------------------------------- tinycnn

def build_tinycnn(name):
    """(model, loss_fn): loss_fn(output tensor, NumPy targets) -> scalar tensor."""
    import tinycnn
    from tinycnn import layers

    if name == "catdog":
        model = tinycnn.Sequential([
            layers.Conv2D(64, 3, activation="relu", input_shape=(100, 100, 1)),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(1, activation="sigmoid"),
        ])
        return model, tinycnn.losses.BinaryCrossentropy()  # reads the logits kept on the sigmoid's output
    from tinycnn.tasks.plates_models import PlateBoxRegressor, PlateSegmenter
    if name == "mobilenet":  # the plate regressor, without its head conv and dropout (as the twins)
        blocks = [(t, c, 1, s) for t, c, s in MOBILENET_BLOCKS]
        model = PlateBoxRegressor(width=1.0, blocks=blocks, dropout=0.0, head_channels=0)
        return model, tinycnn.losses.MeanSquaredError()
    if name == "fcn":  # the plate segmenter; the loss reads the logits kept on its softmax output
        model = PlateSegmenter(filters=FCN_WIDTHS[0], depth=len(FCN_WIDTHS) - 1, upsample="transpose",
                               convs_per_block=2, classes=2)
        return model, tinycnn.losses.SparseCategoricalCrossentropy()
    if name == "strong":  # the preset's network; the loss reads the logits kept on its sigmoid output
        from tinycnn.tasks.catdog import strong_model
        c, h, w = INPUT[name]
        return strong_model(h, c, 2), tinycnn.losses.BinaryCrossentropy()
    if name == "detector":  # the recipe's network; MSE stands in for the CenterNet loss (module doc)
        from tinycnn.tasks.plates_detect import RECIPE, PlateCenterNet
        model = PlateCenterNet(width=1.0, neck=RECIPE["neck"], stem=RECIPE["stem"], expansion=RECIPE["expansion"],
                               head=RECIPE["head_layers"])
        return model, tinycnn.losses.MeanSquaredError()
    raise ValueError(f"unknown model {name!r}: {MODELS}")


# ---------------------------------------------------------------------- PyTorch twins

def build_torch(name):
    """(model, loss_fn): loss_fn(output, target tensor) -> scalar; the model returns logits where the
    tinycnn twin's loss reads the logits (sigmoid + BCE and softmax + CE are fused as in tinycnn)."""
    import torch
    from torch import nn
    import torch.nn.functional as TF

    def conv_bn(cin, cout, k, stride=1, groups=1, act=nn.ReLU6):
        mods = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout, eps=BN_EPS, momentum=0.1)]
        if act is not None:
            mods.append(act())
        return nn.Sequential(*mods)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            layers = [conv_bn(cin, hidden, 1)] if t != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=None)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    if name == "catdog":
        model = nn.Sequential(
            nn.Conv2d(1, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(23 * 23 * 64, 64), nn.ReLU(), nn.Linear(64, 1))
        return model, lambda out, y: TF.binary_cross_entropy_with_logits(out, y)

    if name == "mobilenet":
        class MobileNet(nn.Module):
            def __init__(self):
                super().__init__()
                blocks, cin = [conv_bn(3, MOBILENET_STEM, 3, 2)], MOBILENET_STEM
                for t, c, s in MOBILENET_BLOCKS:
                    blocks.append(InvertedResidual(cin, c, s, t))
                    cin = c
                self.features = nn.Sequential(*blocks)
                self.box = nn.Linear(cin, 4)

            def forward(self, x):
                x = self.features(x).mean(dim=(2, 3))
                return torch.sigmoid(self.box(x))

        return MobileNet(), lambda out, y: TF.mse_loss(out, y)

    if name == "fcn":
        w1, w2, w3 = FCN_WIDTHS

        def block(cin, cout):
            return nn.Sequential(conv_bn(cin, cout, 3, act=nn.ReLU), conv_bn(cout, cout, 3, act=nn.ReLU))

        class FCN(nn.Module):
            def __init__(self, classes=2):
                super().__init__()
                self.enc1, self.enc2, self.bottom = block(3, w1), block(w1, w2), block(w2, w3)
                self.up2, self.dec2 = nn.ConvTranspose2d(w3, w2, 2, 2), block(2 * w2, w2)
                self.up1, self.dec1 = nn.ConvTranspose2d(w2, w1, 2, 2), block(2 * w1, w1)
                self.classify = nn.Conv2d(w1, classes, 1)

            def forward(self, x):
                s1 = self.enc1(x)
                s2 = self.enc2(TF.max_pool2d(s1, 2))
                x = self.bottom(TF.max_pool2d(s2, 2))
                x = self.dec2(torch.cat([self.up2(x), s2], 1))
                x = self.dec1(torch.cat([self.up1(x), s1], 1))
                return self.classify(x)

        return FCN(), lambda out, y: TF.cross_entropy(out, y)

    if name == "strong":
        mods, cin = [], INPUT[name][0]
        for width in STRONG_WIDTHS:
            mods += [conv_bn(cin, width, 3, act=nn.ReLU), nn.MaxPool2d(2)]
            cin = width
        model = nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(STRONG_DROPOUT),
                              nn.Linear(cin, 1))
        return model, lambda out, y: TF.binary_cross_entropy_with_logits(out, y)

    if name == "detector":
        neck = DETECTOR_NECK

        class NeckStep(nn.Module):
            def __init__(self, fine_channels):
                super().__init__()
                self.lateral = conv_bn(fine_channels, neck, 1, act=None)
                self.body = nn.Sequential(conv_bn(neck, neck, 3, groups=neck), conv_bn(neck, neck, 1))

            def forward(self, coarse, fine):
                return self.body(TF.interpolate(coarse, scale_factor=2, mode="nearest") + self.lateral(fine))

        def head(outputs):
            return nn.Sequential(conv_bn(neck, neck, 3, groups=neck), conv_bn(neck, neck, 1),
                                 nn.Conv2d(neck, outputs, 1))

        class CenterNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem, cin = conv_bn(3, DETECTOR_STEM, 3, 2), DETECTOR_STEM
                self.stages, widths = nn.ModuleList(), []
                for stage in DETECTOR_STAGES:
                    blocks = []
                    for t, c, n, s in stage:
                        for i in range(n):
                            blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                            cin = c
                    self.stages.append(nn.Sequential(*blocks))
                    widths.append(cin)
                self.top = conv_bn(cin, neck, 1)
                self.up8, self.up4 = NeckStep(widths[1]), NeckStep(widths[0])
                self.heat, self.box = head(1), head(4)

            def forward(self, x):
                features, x = [], self.stem(x)
                for stage in self.stages:
                    x = stage(x)
                    features.append(x)
                x = self.up4(self.up8(self.top(features[2]), features[1]), features[0])
                return torch.cat([self.heat(x) + HEAT_PRIOR, self.box(x)], dim=1)

        return CenterNet(), lambda out, y: TF.mse_loss(out, y)
    raise ValueError(f"unknown model {name!r}: {MODELS}")


# ---------------------------------------------------------------------- Keras twins (TensorFlow backend)

def build_keras(name):
    """(model, loss_fn): loss_fn(targets, output) -> scalar, Keras' argument order; a functional keras.Model on
    NHWC float32 input, returning logits where the tinycnn twin's loss reads the logits (from_logits=True)."""
    import keras
    from keras import layers

    def conv_bn(x, filters, k, stride=1, depthwise=False, act="relu6"):
        if depthwise:
            x = layers.DepthwiseConv2D(k, stride, padding="same", use_bias=False)(x)
        else:
            x = layers.Conv2D(filters, k, stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=BN_EPS)(x)
        if act == "relu6":
            return layers.ReLU(6.0)(x)
        return layers.ReLU()(x) if act == "relu" else x

    c, h, w = INPUT[name]
    inputs = keras.Input((h, w, c), batch_size=None, dtype="float32")
    if name == "catdog":
        x = layers.Conv2D(64, 3, activation="relu")(inputs)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dense(64, activation="relu")(layers.Flatten()(x))
        out = layers.Dense(1)(x)
        return keras.Model(inputs, out, name=name), keras.losses.BinaryCrossentropy(from_logits=True)

    if name == "mobilenet":
        x, cin = conv_bn(inputs, MOBILENET_STEM, 3, 2), MOBILENET_STEM
        for t, cout, s in MOBILENET_BLOCKS:
            y = conv_bn(x, cin * t, 1) if t != 1 else x
            y = conv_bn(conv_bn(y, cin * t, 3, s, depthwise=True), cout, 1, act=None)
            x = layers.Add()([x, y]) if s == 1 and cin == cout else y
            cin = cout
        out = layers.Dense(4, activation="sigmoid")(layers.GlobalAveragePooling2D()(x))
        return keras.Model(inputs, out, name=name), keras.losses.MeanSquaredError()

    if name == "fcn":
        w1, w2, w3 = FCN_WIDTHS

        def block(x, filters):
            return conv_bn(conv_bn(x, filters, 3, act="relu"), filters, 3, act="relu")

        s1 = block(inputs, w1)
        s2 = block(layers.MaxPooling2D(2)(s1), w2)
        x = block(layers.MaxPooling2D(2)(s2), w3)
        x = block(layers.Concatenate()([layers.Conv2DTranspose(w2, 2, 2)(x), s2]), w2)
        x = block(layers.Concatenate()([layers.Conv2DTranspose(w1, 2, 2)(x), s1]), w1)
        out = layers.Conv2D(2, 1)(x)
        return keras.Model(inputs, out, name=name), keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    if name == "strong":
        x = inputs
        for width in STRONG_WIDTHS:
            x = layers.MaxPooling2D(2)(conv_bn(x, width, 3, act="relu"))
        x = layers.Dropout(STRONG_DROPOUT)(layers.GlobalAveragePooling2D()(x))
        out = layers.Dense(1)(x)
        return keras.Model(inputs, out, name=name), keras.losses.BinaryCrossentropy(from_logits=True)

    if name == "detector":
        neck = DETECTOR_NECK

        def neck_step(coarse, fine):
            x = layers.Add()([layers.UpSampling2D(2, interpolation="nearest")(coarse),
                              conv_bn(fine, neck, 1, act=None)])
            return conv_bn(conv_bn(x, neck, 3, depthwise=True), neck, 1)

        def head(x, outputs):
            return layers.Conv2D(outputs, 1)(conv_bn(conv_bn(x, neck, 3, depthwise=True), neck, 1))

        x, features = conv_bn(inputs, DETECTOR_STEM, 3, 2), []
        cin = DETECTOR_STEM
        for stage in DETECTOR_STAGES:
            for t, cout, n, s in stage:
                for i in range(n):
                    stride = s if i == 0 else 1
                    y = conv_bn(x, cin * t, 1) if t != 1 else x
                    y = conv_bn(conv_bn(y, cin * t, 3, stride, depthwise=True), cout, 1, act=None)
                    x = layers.Add()([x, y]) if stride == 1 and cin == cout else y
                    cin = cout
            features.append(x)
        x = neck_step(neck_step(conv_bn(features[2], neck, 1), features[1]), features[0])
        out = layers.Concatenate()([head(x, 1) + HEAT_PRIOR, head(x, 4)])
        out = layers.Permute((3, 1, 2))(out)  # (N, 5, H/4, W/4), as tinycnn's and PyTorch's outputs
        return keras.Model(inputs, out, name=name), keras.losses.MeanSquaredError()
    raise ValueError(f"unknown model {name!r}: {MODELS}")


def count_trainable(model):
    """A Keras model's trainable parameters: what tinycnn's count_params and PyTorch's parameters() count
    (Keras' own count_params adds the batch norms' moving mean and variance)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))

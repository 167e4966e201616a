"""The residual preset of the cat/dog task (`--model resnet`) and its stochastic-depth layer.

    model = resnet_model(img_size=96, channels=3, classes=2, widths=(32, 64, 128, 256), drop_path=0.1)

A small ResNet (He et al., "basic" blocks), through the functional API:

    stem     conv3×3 (widths[0], stride 2) + BN + ReLU                          (S, S, C) -> (S/2, S/2, w0)
    stage i  `blocks` basic blocks of width widths[i]; every stage after the first starts with stride 2
             block: conv3×3 (stride s) + BN + ReLU, conv3×3 + BN, stochastic depth, + shortcut (identity, or
             conv1×1 stride s + BN where the shape changes), ReLU; `zero_init_residual` starts the second BN's γ
             at 0, so that each block begins as the identity (Goyal et al.; off by default, as torchvision: in
             short runs on the cat/dog photos it learned more slowly)
    head     global average pooling, dropout, Dense (sigmoid for 2 classes, softmax for more)

Stochastic depth (Huang et al.; timm's DropPath): in training each sample's residual branch is dropped with
probability p and kept ×1/(1 − p) otherwise; in inference it is the identity. p grows linearly from 0 at the
first block to `drop_path` at the last. With widths (32, 64, 128, 256) and 1 block a stage: ~1.2 M weights.
"""
import argparse

import numpy as np

import tinycnn
from tinycnn import layers
from tinycnn.checks import UserInputError
from tinycnn.layers import Layer
from tinycnn.tensor import Tensor


class StochasticDepth(Layer):
    """Drops a residual branch per sample: y = x · mask / (1 − rate), mask ~ Bernoulli(1 − rate) per sample
    (training); y = x (inference). Gradient: mask / (1 − rate) (the engine's multiply)."""

    def __init__(self, rate=0.1, seed=None, name=None, input_shape=None):
        super().__init__(name, input_shape)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"StochasticDepth rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = None if seed is None else np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        rng = self.rng if self.rng is not None else tinycnn.random.generator()
        keep = rng.random(x.shape[0]) >= self.rate
        mask = (keep / (1.0 - self.rate)).reshape((x.shape[0],) + (1,) * (len(x.shape) - 1))
        return x * Tensor(mask.astype(x.dtype), device=x.device)

    def config(self):
        return dict(super().config(), rate=self.rate)


def conv_bn(x, filters, kernel, strides=1, relu=True, zero_gamma=False):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_uniform")(x)
    bn = layers.BatchNormalization(momentum=0.9)
    x = bn(x)
    if zero_gamma:
        bn.zero_gamma = True  # applied after the model is built (resnet_model)
    return layers.Activation("relu")(x) if relu else x


def basic_block(x, filters, strides, drop_rate, zero_init_residual=False):
    shortcut = x
    y = conv_bn(x, filters, 3, strides)
    y = conv_bn(y, filters, 3, relu=False, zero_gamma=zero_init_residual)
    if drop_rate > 0:
        y = StochasticDepth(drop_rate)(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides, relu=False)
    return layers.Activation("relu")(layers.Add()([shortcut, y]))


def resnet_model(img_size, channels, classes, widths=(32, 64, 128, 256), blocks=1, drop_path=0.0, dropout=0.2,
                 zero_init_residual=False):
    """The residual network of the module docstring, compiled by the caller."""
    inputs = tinycnn.Input((img_size, img_size, channels))
    x = conv_bn(inputs, widths[0], 3, strides=2)
    total, index = len(widths) * blocks, 0
    for stage, filters in enumerate(widths):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, filters, strides, drop_path * index / max(total - 1, 1), zero_init_residual)
            index += 1
    x = layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    activation = "sigmoid" if classes == 2 else "softmax"
    model = tinycnn.Model(inputs, layers.Dense(1 if classes == 2 else classes, activation=activation)(x))
    _zero_last_gammas(model)
    return model


def _zero_last_gammas(model):
    """γ = 0 in each block's last batch norm: the blocks start as identities (Goyal et al.)."""
    for _, module in model.named_modules():
        if getattr(module, "zero_gamma", False):
            module.gamma.data[...] = 0.0


# ---------------------------------------------------------------------------------------------- recipe options

RESNET_PRESET = dict(img_size=112, grayscale=False, epochs=30, batch_size=32, lr=2e-3, augment=True)
# what `--model resnet` adds unless flags say otherwise (0 / None: off)
RESNET_RECIPE = dict(ema=0.999, mixup=0.0, cutmix=0.0, label_smoothing=0.1, crop=0.35, hsv=None,
                     randaugment=(2, 7), erasing=0.25, warmup=2, drop_path=0.05)
# `--model strong-ema`: the strong net with the recipe that reached 86 % on the shared photos (README)
STRONG_EMA_PRESET = dict(img_size=128, grayscale=False, epochs=45, batch_size=32, lr=1e-3, augment=True)
STRONG_EMA_RECIPE = dict(ema=0.998, mixup=0.0, cutmix=0.0, label_smoothing=0.0, crop=0.7, hsv=(0.02, 0.2, 0.2),
                         randaugment=None, erasing=0.0, warmup=1, drop_path=0.0)
PRESET_RECIPES = {"resnet": RESNET_RECIPE, "strong-ema": STRONG_EMA_RECIPE}
RECIPE_OFF = dict(ema=None, mixup=0.0, cutmix=0.0, label_smoothing=0.0, crop=0.0, hsv=None, randaugment=None,
                  erasing=0.0, warmup=0, drop_path=0.0)


def add_recipe_arguments(parser):
    """The training-recipe flags (each overrides the preset's choice; see recipe_settings)."""
    parser.add_argument("--ema", type=float, nargs="?", const=0.999, default=None, metavar="MOMENTUM",
                        help="validate and save an exponential moving average of the weights (default momentum 0.999)")
    parser.add_argument("--no-ema", dest="ema", action="store_const", const=0.0)
    parser.add_argument("--mixup", type=float, default=None, metavar="ALPHA", help="mixup with Beta(α, α) (0.2)")
    parser.add_argument("--cutmix", type=float, default=None, metavar="ALPHA", help="CutMix with Beta(α, α) (1.0)")
    parser.add_argument("--label-smoothing", type=float, default=None, metavar="EPS")
    parser.add_argument("--randaugment", type=_n_m, default=None, metavar="N,M",
                        help="RandAugment: N ops per image at magnitude M (0..10), in the data workers; 0,0: off")
    parser.add_argument("--crop", type=float, default=None, metavar="MIN_SCALE",
                        help="random resized crop with aspect jitter (3/4..4/3) of area MIN_SCALE..1, in the data "
                             "workers (0: off)")
    parser.add_argument("--hsv", type=_floats(3, "--hsv H,S,V"), default=None, metavar="H,S,V",
                        help="colour jitter in HSV: hue shift ±H turns, saturation and value ×(1 ± S), ×(1 ± V), "
                             "in the data workers (e.g. 0.02,0.3,0.3)")
    parser.add_argument("--erasing", type=float, default=None, metavar="P", help="random erasing probability")
    parser.add_argument("--warmup", type=int, default=None, metavar="EPOCHS",
                        help="linear learning-rate warm-up over EPOCHS, then a per-step cosine decay")
    parser.add_argument("--drop-path", type=float, default=None, metavar="P",
                        help="stochastic depth of the resnet preset's last block (0: off)")


def _floats(count, flag):
    def parse(text):
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{flag} wants {count} numbers separated by commas, got {text!r}")
        return values
    return parse


def _n_m(text):
    n, m = _floats(2, "--randaugment N,M")(text)
    if n != int(n) or n < 0 or not 0 <= m <= 10:
        raise argparse.ArgumentTypeError(f"--randaugment N,M needs an integer N ≥ 0 and M in 0..10, got {text!r}")
    return (int(n), m)


def recipe_settings(args, preset, epochs):
    """The recipe dict kept in the run's settings (and so in the model file), or None when no flag is given and
    the preset has no recipe (seed and strong keep their settings as they were)."""
    flags = {key: getattr(args, key, None) for key in RECIPE_OFF}
    if preset not in PRESET_RECIPES and all(v is None for v in flags.values()):
        return None
    base = PRESET_RECIPES.get(preset, RECIPE_OFF)
    recipe = {key: base[key] if value is None else value for key, value in flags.items()}
    if recipe["ema"] == 0.0:
        recipe["ema"] = None
    if recipe["randaugment"] is not None and tuple(recipe["randaugment"]) == (0, 0):
        recipe["randaugment"] = None
    _check_ranges(recipe)
    if recipe["warmup"] > epochs:
        raise UserInputError(f"--warmup {recipe['warmup']}: more warm-up epochs than the run's {epochs}")
    if recipe["ema"] is not None and not 0.0 < recipe["ema"] < 1.0:
        raise UserInputError(f"--ema: the momentum must be in (0, 1), got {recipe['ema']}")
    return recipe


def _check_ranges(recipe):
    """Each flag's value in its range, else a one-line error naming the flag."""
    ranges = dict(mixup=(0, float("inf")), cutmix=(0, float("inf")), label_smoothing=(0, 0.99), crop=(0, 1),
                  erasing=(0, 1), warmup=(0, float("inf")), drop_path=(0, 0.99))
    for key, (low, high) in ranges.items():
        if not low <= recipe[key] <= high:
            raise UserInputError(f"--{key.replace('_', '-')}: {recipe[key]} is outside [{low}, {high}]")
    if recipe["hsv"] and not (0 <= recipe["hsv"][0] <= 0.5 and all(0 <= v <= 1 for v in recipe["hsv"][1:])):
        raise UserInputError(f"--hsv H,S,V needs 0 ≤ H ≤ 0.5 and S, V in [0, 1], got {recipe['hsv']}")


def recipe_optimizer(recipe, lr, steps_per_epoch, epochs):
    """AdamW (weight decay 1e-4); with warm-up, a per-step cosine schedule after it; with ema, use_ema."""
    schedule = lr
    if recipe["warmup"]:
        warmup = recipe["warmup"] * steps_per_epoch
        schedule = tinycnn.optimizers.CosineDecay(0.0, max(1, (epochs - recipe["warmup"]) * steps_per_epoch),
                                                  warmup_target=lr, warmup_steps=warmup)
    ema = dict(use_ema=True, ema_momentum=recipe["ema"]) if recipe["ema"] else {}
    return tinycnn.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4, **ema)


def recipe_loss(recipe, classes):
    """Binary cross-entropy (2 classes) or categorical cross-entropy on one-hot targets, with label smoothing."""
    if classes == 2:
        return tinycnn.losses.BinaryCrossentropy(label_smoothing=recipe["label_smoothing"])
    if recipe["mixup"] or recipe["cutmix"] or recipe["label_smoothing"]:
        return tinycnn.losses.CategoricalCrossentropy(label_smoothing=recipe["label_smoothing"])
    return "sparse_categorical_crossentropy"


def recipe_augment(recipe, classes, augment):
    """fit's augment: the batch augmentation `augment(xb, yb)` (or None), then mixup / CutMix; for more than two
    classes the labels become one-hot rows (what categorical cross-entropy takes)."""
    from tinycnn.data.mixing import CutMix, Mixup, MixupOrCutMix, mixable_labels
    num_classes = None if classes == 2 else classes
    options = dict(num_classes=num_classes)
    if recipe["mixup"] and recipe["cutmix"]:
        mixer = MixupOrCutMix(recipe["mixup"], recipe["cutmix"], **options)
    elif recipe["mixup"] or recipe["cutmix"]:
        mixer = Mixup(recipe["mixup"], **options) if recipe["mixup"] else CutMix(recipe["cutmix"], **options)
    else:
        mixer = None
    if classes == 2 and mixer is None:
        return augment

    def augment_and_mix(xb, yb):
        if augment is not None:
            xb, yb = augment(xb, yb)
        return mixer(xb, yb) if mixer is not None else (xb, mixable_labels(yb, num_classes))
    return augment_and_mix


def recipe_policy(recipe):
    """The per-image policy run in the data workers (None if the recipe has none)."""
    from tinycnn.data.policies import ColorJitterHSV, Compose, RandAugment, RandomErasing, RandomResizedCrop
    steps = [RandomResizedCrop((recipe["crop"], 1.0))] if recipe["crop"] else []
    if recipe["hsv"]:
        steps.append(ColorJitterHSV(*recipe["hsv"]))
    if recipe["randaugment"]:
        steps.append(RandAugment(*recipe["randaugment"]))
    if recipe["erasing"]:
        steps.append(RandomErasing(recipe["erasing"]))
    return Compose(steps) if steps else None


def recipe_batch_augment(recipe):
    """The batch augmentation in fit (flips, and lighting; the crop only when the workers do none)."""
    from tinycnn.data.augment import Augment
    augmenter = Augment(flip=True, crop_scale=None if recipe["crop"] else (0.7, 1.0), brightness=0.15,
                        contrast=0.15)
    return lambda xb, yb: (augmenter(xb), yb)


def recipe_callbacks(recipe, bn_data=None):
    """The EMA callback; bn_data (the training images, without the recipe's augmentation): the batches on which
    the averaged weights get their own batch-norm statistics (tinycnn/ema.py, issue 19)."""
    from tinycnn.ema import SwapEMAWeights
    return [SwapEMAWeights(bn_data=bn_data)] if recipe["ema"] else []


def build_and_compile(settings, classes, steps_per_epoch, device, seed_model, strong_model):
    """A run with a recipe (settings["recipe"]): the preset's network (resnet, or the task's seed / strong
    builders), compiled with the recipe's loss and optimizer."""
    recipe = settings["recipe"]
    channels = 1 if settings["grayscale"] else 3
    if settings["preset"] == "resnet":
        model = resnet_model(settings["img_size"], channels, classes, drop_path=recipe["drop_path"])
    else:
        model = (seed_model if settings["preset"] == "seed" else strong_model)(settings["img_size"], channels, classes)
    model = model.to(device)
    optimizer = recipe_optimizer(recipe, settings["lr"], steps_per_epoch, settings["epochs"])
    model.compile(loss=recipe_loss(recipe, classes), metrics=["accuracy"], optimizer=optimizer)
    return model


def recipe_fit_arguments(settings, classes, train_set, val_set, cosine):
    """(training data, validation data, augment, callbacks) of a run with a recipe: the worker policy mapped over
    the training batches, the batch augmentation and mixing in fit, one-hot validation labels where the loss is
    categorical cross-entropy, the per-epoch cosine (when there is no warm-up schedule on the optimizer) and the
    EMA callback."""
    from tinycnn.callbacks import LearningRateScheduler
    from tinycnn.data.mixing import mixable_labels
    recipe = settings["recipe"]
    policy = recipe_policy(recipe)
    x = train_set if policy is None else train_set.map(policy.on_batch, 2).prefetch(2)
    if not isinstance(recipe_loss(recipe, classes), str) and classes > 2:
        val_set = val_set.map(lambda images, labels: (images, mixable_labels(labels, classes)), 1)
    augment = recipe_augment(recipe, classes, recipe_batch_augment(recipe) if settings["augment"] else None)
    callbacks = [] if recipe["warmup"] else [LearningRateScheduler(cosine(settings["lr"], settings["epochs"]))]
    return x, val_set, augment, callbacks + recipe_callbacks(recipe, bn_data=train_set)

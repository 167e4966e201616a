"""ImageNet weights from torchvision or Keras onto tinycnn.applications.MobileNetV2.

    python -m tinycnn.convert mobilenet_v2.safetensors mnv2.tcnn          # torchvision's state dict
    python -m tinycnn.convert mobilenet_v2-b0353104.pth mnv2.tcnn         # the same as a .pth (needs torch)
    python -m tinycnn.convert mobilenet_v2.weights.h5 mnv2.tcnn           # Keras' (needs h5py)
    python -m tinycnn.convert SRC OUT.safetensors --input-shape 160,160,3 --no-top --alpha 0.35
    python -m tinycnn.convert SRC runs/imagenet --for plates-box        # then: train plates-box --init runs/imagenet

    model = MobileNetV2(input_shape=(224, 224, 3))
    convert.load_torchvision(model, state)       # {torchvision name: array}, every tensor placed or an error
    convert.load_keras(model, "x.weights.h5")

The result is a tinycnn model file (`MobileNetV2(weights="mnv2.tcnn")` takes it), a .safetensors weights file,
or (`--for plates-box`) a run folder whose best.tcnn is a plates-box model with MobileNetV2's weights in its
stem and in each inverted residual block that has a MobileNetV2 block of its shapes (`fill_backbone`), which
`python -m tinycnn.train plates-box --init FOLDER` starts from. Layer by layer:

    torchvision                                   tinycnn (Keras names)             layout
    features.0.0.weight / features.0.1.*          Conv1.kernel / bn_Conv1.*          (F, C, kh, kw): as is
    features.1.conv.{0.0, 0.1, 1, 2}              expanded_conv_{depthwise, _BN, project, _BN}
    features.i.conv.{0.0, 0.1, 1.0, 1.1, 2, 3}    block_{i-1}_{expand, _BN, depthwise, _BN, project, _BN}
    features.18.{0, 1}                            Conv_1, Conv_1_bn
    classifier.1.weight / .bias                   predictions.kernel / .bias         (units, features): as is
    batch norm weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance

    Keras (.weights.h5: layers/<name>/vars/<i>; or the older <name>/<name>/<weight>:0)
    Conv2D kernel (kh, kw, C, F)             -> (F, C, kh, kw)          transpose (3, 2, 0, 1)
    DepthwiseConv2D kernel (kh, kw, C, m)    -> (C·m, 1, kh, kw)
    Dense kernel (features, units)           -> (units, features)

torchvision's batch norms use ε = 1e-5 (Keras': 1e-3): load_torchvision sets it on every batch norm. Its
stride-2 convs pad 1 on every side where Keras pads bottom/right only for even sides: the two agree on odd
sides (225 = 32·7 + 1, or 33 in the tests), and differ slightly at 224, as the two libraries' own models do.
A tensor whose shape does not fit names itself, its tinycnn name and both shapes; every tensor of the
model must be given one.
"""
import os
import re
import sys

import numpy as np

from .checks import UserInputError
from .weights import load_state

TORCH_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
KERAS_NAMES = {"kernel": "kernel", "depthwise_kernel": "kernel", "bias": "bias", "gamma": "gamma", "beta": "beta",
               "moving_mean": "moving_mean", "moving_variance": "moving_variance"}
KERAS_ORDER = {"conv": ("kernel", "bias"), "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
               "dense": ("kernel", "bias")}
TORCHVISION_EPSILON = 1e-5


class ConversionError(UserInputError):
    """Weights that do not fit the model being filled; one line naming the tensor."""


# ---------------------------------------------------------------------- torchvision

def torchvision_layers(blocks=None):
    """[(torchvision module prefix, tinycnn layer name)] of MobileNetV2, in order."""
    from .applications.mobilenet_v2 import BLOCKS
    pairs = [("features.0.0", "Conv1"), ("features.0.1", "bn_Conv1")]
    for index, (expansion, _, _) in enumerate(blocks or BLOCKS):
        prefix, keras = f"features.{index + 1}.conv", ("expanded_conv_" if index == 0 else f"block_{index}_")
        parts = ["depthwise", "depthwise_BN", "project", "project_BN"]
        torch_parts = ["0.0", "0.1", "1", "2"]
        if expansion != 1:
            parts = ["expand", "expand_BN"] + parts
            torch_parts = ["0.0", "0.1", "1.0", "1.1", "2", "3"]
        pairs += [(f"{prefix}.{t}", keras + k) for t, k in zip(torch_parts, parts)]
    last = len(blocks or BLOCKS) + 1
    return pairs + [(f"features.{last}.0", "Conv_1"), (f"features.{last}.1", "Conv_1_bn"),
                    ("classifier.1", "predictions")]


def torchvision_names(model):
    """{torchvision tensor name: tinycnn state name} for the tensors `model` has."""
    own = set(model.state_dict())
    names = {}
    for torch_prefix, layer in torchvision_layers():
        leaves = TORCH_BN if _is_batch_norm(layer) else {"weight": "kernel", "bias": "bias"}
        for torch_leaf, ours in leaves.items():
            if f"{layer}.{ours}" in own:
                names[f"{torch_prefix}.{torch_leaf}"] = f"{layer}.{ours}"
    return names


def load_torchvision(model, state, source="the torchvision weights"):
    """Place a torchvision MobileNetV2 state dict ({name: array}) into tinycnn's MobileNetV2 `model`."""
    names = torchvision_names(model)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    ignorable = ("classifier.",) if not any(n.startswith("predictions.") for n in model.state_dict()) else ()
    unknown = [k for k in state if k not in names and not k.startswith(ignorable)]
    if unknown:
        raise ConversionError(f"{source}: {len(unknown)} tensor(s) have no place in this MobileNetV2 "
                              f"(alpha, include_top, classes?), e.g. {', '.join(unknown[:4])}")
    placed = {names[k]: (k, np.asarray(v)) for k, v in state.items() if k in names}
    for layer in model.layers:
        if _is_batch_norm(layer.name):
            layer.epsilon = TORCHVISION_EPSILON
    _load_checked(model, placed, source)
    return model


def _is_batch_norm(layer_name):
    return layer_name.endswith(("_BN", "_bn")) or layer_name.startswith("bn_")


# ---------------------------------------------------------------------- Keras

def read_keras_h5(path):
    """{layer name: {weight name or index: array}} of a Keras weights file: Keras 3's `.weights.h5`
    (layers/<name>/vars/<i>) or the older format (<name>/<name>/<weight>:0)."""
    try:
        import h5py
    except ImportError:
        raise ConversionError("Keras .h5 files need h5py: pip install 'tinycnn[convert]'") from None
    found = {}

    def visit(name, item):
        if not isinstance(item, h5py.Dataset):
            return
        parts = name.split("/")
        if len(parts) >= 3 and parts[-2] == "vars":
            found.setdefault(parts[-3], {})[int(parts[-1])] = np.asarray(item)
        elif len(parts) >= 2:
            found.setdefault(parts[-2], {})[re.sub(r":\d+$", "", parts[-1])] = np.asarray(item)

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as error:
        raise ConversionError(f"{path}: not a readable HDF5 file ({error})") from None
    return found


def load_keras(model, path):
    """Place a Keras MobileNetV2 weights file into tinycnn's MobileNetV2 `model` (layouts transposed)."""
    stored = read_keras_h5(path)
    own = model.state_dict()
    placed = {}
    for layer in model.layers:
        kind = _keras_kind(layer)
        if kind is None or not any(n.startswith(layer.name + ".") for n in own):
            continue
        if layer.name not in stored:
            raise ConversionError(f"{path}: no weights for layer '{layer.name}'")
        for position, (key, array) in enumerate(sorted(stored[layer.name].items(), key=_keras_order)):
            ours = KERAS_ORDER[kind][position] if isinstance(key, int) else KERAS_NAMES.get(key)
            if ours is None or f"{layer.name}.{ours}" not in own:
                raise ConversionError(f"{path}: weight '{layer.name}/{key}' has no place in layer '{layer.name}'")
            target = own[f"{layer.name}.{ours}"].shape
            placed[f"{layer.name}.{ours}"] = (f"{layer.name}/{key}", _from_keras_layout(array, kind, layer, target))
    _load_checked(model, placed, path)
    return model


def _keras_order(item):
    key = item[0]
    return (0, key, "") if isinstance(key, int) else (1, 0, key)


def _keras_kind(layer):
    from . import layers
    if isinstance(layer, layers.BatchNormalization):
        return "bn"
    if isinstance(layer, layers.Conv2D):
        return "conv"
    if isinstance(layer, layers.Dense):
        return "dense"
    return None


def _from_keras_layout(array, kind, layer, target):
    """A Keras kernel -> tinycnn's layout (biases and batch-norm vectors as they are)."""
    from . import layers
    if array.ndim == 4 and isinstance(layer, layers.DepthwiseConv2D):
        kh, kw, c, m = array.shape
        return array.reshape(kh, kw, c * m).transpose(2, 0, 1).reshape(c * m, 1, kh, kw)
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if array.ndim == 2 and kind == "dense":
        return array.T
    return array


# ---------------------------------------------------------------------- a backbone of another model

BN_TENSORS = ("gamma", "beta", "moving_mean", "moving_variance")


def backbone_pairs(model, mobilenet):
    """[(prefix in `model`, MobileNetV2 conv layer, its batch norm)] for `model`'s stem (`stem`: conv + bn) and
    each inverted residual block (a module with `depthwise` and `project`, and `expand` or None, each a
    conv + bn), matched in order to MobileNetV2's first block of the same kernel shapes and stride. A block
    with no counterpart (another width, or channels MobileNetV2 has not) is left out."""
    own = model.state_dict()
    ours = _inverted_residual_blocks(model)
    theirs = [("expanded_conv_", None)] + [(f"block_{i}_", "expand") for i in range(1, 17)]
    pairs = []
    if "stem.conv.kernel" in own and _fits(model, mobilenet, "stem", "Conv1"):
        pairs.append(("stem", "Conv1", "bn_Conv1"))
    position = 0
    for prefix, block in ours:
        parts = [("expand", "expand")] * (block.expand is not None) + [("depthwise", "depthwise"), ("project", "project")]
        for at in range(position, len(theirs)):
            keras = theirs[at][0]
            if (block.expand is None) == (theirs[at][1] is None) and all(
                    _fits(model, mobilenet, f"{prefix}.{mine}", keras + other) for mine, other in parts):
                pairs += [(f"{prefix}.{mine}", keras + other, keras + other + "_BN") for mine, other in parts]
                position = at + 1
                break
    return pairs


def fill_backbone(model, mobilenet):
    """Copy MobileNetV2's weights into `model`'s matching stem and blocks (backbone_pairs), in place; the rest
    of `model` keeps its own. -> (copied tensor names, kept tensor names)."""
    source, state = mobilenet.state_dict(), model.state_dict()
    copied = []
    for prefix, conv_layer, bn_layer in backbone_pairs(model, mobilenet):
        copied.append(f"{prefix}.conv.kernel")
        state[f"{prefix}.conv.kernel"] = source[f"{conv_layer}.kernel"]
        for name in BN_TENSORS:
            copied.append(f"{prefix}.bn.{name}")
            state[f"{prefix}.bn.{name}"] = source[f"{bn_layer}.{name}"]
    load_state(model, state, source="MobileNetV2's weights")
    return copied, [name for name in state if name not in set(copied)]


def _inverted_residual_blocks(model):
    return [(prefix.rstrip("."), m) for prefix, m in model.named_modules()
            if all(hasattr(m, a) for a in ("expand", "depthwise", "project")) and prefix]


def _fits(model, mobilenet, prefix, layer):
    """`model`'s conv + bn at `prefix` has the shapes and stride of MobileNetV2's `layer`."""
    mine, other = _get(model, prefix), mobilenet.get_layer(layer) if layer in _layer_names(mobilenet) else None
    if mine is None or other is None or not hasattr(mine, "conv") or not hasattr(mine, "bn"):
        return False
    return (getattr(mine.conv, "kernel", None) is not None and mine.conv.kernel.shape == other.kernel.shape
            and tuple(mine.conv.strides) == tuple(other.strides))


def _get(model, prefix):
    module = model
    for part in prefix.split("."):
        module = module[int(part)] if isinstance(module, list) else getattr(module, part, None)
        if module is None:
            return None
    return module


def _layer_names(mobilenet):
    return {layer.name for layer in mobilenet.layers}


# ---------------------------------------------------------------------- shared

def _load_checked(model, placed, source):
    """placed: {tinycnn name: (source name, array)}. Shapes first (an error names both tensors and shapes),
    then every tensor of the model must have been given one."""
    own = model.state_dict()
    for ours, (theirs, array) in placed.items():
        if array.shape != own[ours].shape:
            raise ConversionError(f"{source}: tensor '{theirs}' (for '{ours}') has shape {tuple(array.shape)}, "
                                  f"the model's has {own[ours].shape}")
    missing = [name for name in own if name not in placed]
    if missing:
        raise ConversionError(f"{source}: no tensor for {len(missing)} of the model's, e.g. {', '.join(missing[:4])}")
    load_state(model, {ours: array for ours, (_, array) in placed.items()}, source=source)


def read_state(path):
    """{name: array} of a torchvision state dict: .safetensors (NumPy, no torch) or .pth/.pt (needs torch)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from .weights import _safetensors
        return _safetensors()[1](path)
    try:
        import torch
    except ImportError:
        raise ConversionError(f"{path}: reading a .pth needs torch; or save the state dict as .safetensors "
                              "(safetensors.torch.save_file) and convert that") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


def convert_file(source, input_shape=(224, 224, 3), alpha=1.0, include_top=True, classes=1000,
                 classifier_activation="softmax"):
    """A MobileNetV2 filled from `source` (torchvision or Keras, by the file's suffix and names)."""
    from .applications import MobileNetV2
    source = os.fspath(source)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such file")
    model = MobileNetV2(input_shape=tuple(input_shape), alpha=alpha, include_top=include_top, classes=classes,
                        classifier_activation=classifier_activation)
    if source.endswith(".h5"):
        return load_keras(model, source)
    return load_torchvision(model, read_state(source), source)


def plate_model(head, width, neck):
    """A fresh plates-box model, as `python -m tinycnn.train plates-box --head HEAD` builds it."""
    import importlib
    if head == "center":
        return importlib.import_module("tinycnn.tasks.plates_detect").PlateCenterNet(width, neck)
    return importlib.import_module("tinycnn.tasks.plates_models").PlateBoxRegressor(width=width)


def write_plate_init(mobilenet, folder, head="center", width=1.0, neck=48, side=64):
    """FOLDER/best.tcnn: a plates-box model whose backbone holds MobileNetV2's weights (fill_backbone), for
    `python -m tinycnn.train plates-box --init FOLDER`. -> (copied, kept) tensor names."""
    model = plate_model(head, width, neck)
    model.build_input_shape = (3, side, side)
    model._ensure_built()  # noqa: SLF001 - the training API's lazy build
    copied, kept = fill_backbone(model, mobilenet)
    if not copied:
        raise ConversionError(f"no block of MobileNetV2 (alpha {width}) fits the plates-box model of width {width}")
    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, "best.tcnn"), include_optimizer=False)
    return copied, kept


def main(argv=None):
    from .cli import Parser
    parser = Parser("convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="torchvision .safetensors/.pth state dict, or Keras .h5 weights")
    parser.add_argument("out", help="a .tcnn model file, .safetensors weights, or with --for a folder for --init")
    parser.add_argument("--input-shape", default="224,224,3", help="H,W,C of the model (default 224,224,3)")
    parser.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0)")
    parser.add_argument("--classes", type=int, default=1000, help="classifier outputs (default 1000)")
    parser.add_argument("--no-top", action="store_true", help="leave the classifier out (include_top=False)")
    parser.add_argument("--for", dest="task", choices=["plates-box"],
                        help="write OUT/best.tcnn, a plates-box model (width --alpha) with this backbone, for "
                             "`python -m tinycnn.train plates-box --init OUT`")
    parser.add_argument("--head", choices=["center", "global"], default="center", help="with --for: the head")
    parser.add_argument("--neck", type=int, default=48, help="with --for and --head center: the neck's channels")
    args = parser.parse_args(argv)
    try:
        shape = tuple(int(s) for s in args.input_shape.split(","))
    except ValueError:
        raise ConversionError(f"--input-shape: expected H,W,C, got {args.input_shape!r}") from None
    top = not args.no_top and args.task is None
    model = convert_file(args.source, shape, args.alpha, top, args.classes)
    if args.task:
        copied, kept = write_plate_init(model, args.out, args.head, args.alpha, args.neck)
        print(f"{args.source} -> {os.path.join(args.out, 'best.tcnn')}: {len(copied)} backbone tensors from "
              f"MobileNetV2, {len(kept)} of the {args.head} head's model its own")
        return 0
    if args.out.endswith(".safetensors"):
        model.save_weights(args.out)
    else:
        model.save(args.out, include_optimizer=False)
    print(f"{args.source} -> {args.out}: {len(model.state_dict())} tensors, {model.count_params():,} weights")
    return 0


if __name__ == "__main__":
    from .cli import run_cli
    sys.exit(run_cli("convert", main))

"""torchvision's MobileNetV2 and tinycnn's, with the same weights, give the same outputs (tinycnn/convert.py).

    /tmp/torchenv/bin/python benchmarks/torch_mobilenet_v2.py torch --out /tmp/mnv2.npz --sizes 225 224
    python benchmarks/torch_mobilenet_v2.py compare /tmp/mnv2.npz

The first command needs only torch and NumPy (torchvision is not needed: the network is written here with
torch.nn under torchvision's module names, features.0.0 ... classifier.1, the same layers as
torchvision.models.mobilenet_v2). It initialises the weights as torchvision does, sets the batch norms'
running statistics from a few random batches (so that activations have realistic scales), and writes the
state dict, the input images and torch's logits (eval mode) to an .npz. The second loads that state dict
into tinycnn.applications.MobileNetV2 with tinycnn.convert.load_torchvision, runs predict on the same
images (channels last), also through the exported ONNX file where onnxruntime is installed, and prints the
largest differences. At odd sides (225) the two networks pad their stride-2 convs alike; at even sides (224)
Keras' architecture pads bottom/right only, torchvision's all round, so outputs differ there (by design).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


def divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def torch_side(args):
    import torch
    from torch import nn

    def conv_bn_relu(cin, cout, kernel=3, stride=1, groups=1):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden, self.residual = cin * t, stride == 1 and cin == cout
            layers = [conv_bn_relu(cin, hidden, 1)] if t != 1 else []
            layers += [conv_bn_relu(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                       nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, width=1.0, classes=1000):
            super().__init__()
            channels, last = divisible(32 * width), divisible(1280 * max(1.0, width))
            features = [conv_bn_relu(3, channels, stride=2)]
            for t, c, n, s in SETTING:
                for i in range(n):
                    features.append(InvertedResidual(channels, divisible(c * width), s if i == 0 else 1, t))
                    channels = divisible(c * width)
            features.append(conv_bn_relu(channels, last, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))
            for m in self.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    torch.manual_seed(0)
    model = MobileNetV2(args.width)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the calibration batches
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 160, 160))
    model.eval()
    out = {f"state/{k}": v.numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(1)
    for size in args.sizes:
        images = rng.random((2, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            out[f"input/{size}"] = images
            out[f"logits/{size}"] = model(torch.from_numpy(images)).numpy()
    np.savez(args.out, width=args.width, **out)
    print(f"wrote {args.out}: {sum(k.startswith('state/') for k in out)} tensors, sizes {args.sizes}")


def compare_side(args):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tinycnn.applications import MobileNetV2
    from tinycnn.convert import load_torchvision
    data = np.load(args.npz)
    state = {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")}
    for key in sorted(k for k in data.files if k.startswith("input/")):
        size = int(key.split("/")[1])
        model = MobileNetV2(input_shape=(size, size, 3), alpha=float(data["width"]), classifier_activation=None)
        load_torchvision(model, state, args.npz)
        images = np.ascontiguousarray(data[key].transpose(0, 2, 3, 1))
        logits, expected = model.predict(images), data[f"logits/{size}"]
        line = (f"size {size}: max |tinycnn - torch| = {np.abs(logits - expected).max():.2e} "
                f"(logits up to {np.abs(expected).max():.2f}); same top-1: "
                f"{bool((logits.argmax(1) == expected.argmax(1)).all())}")
        try:
            import onnxruntime
            from tinycnn.onnx import export
            path = Path(args.npz).with_suffix(f".{size}.onnx")
            export(model, path)
            got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
                None, {"input": images})[0]
            line += f"; max |onnxruntime - torch| = {np.abs(got - expected).max():.2e}"
        except ImportError:
            pass
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="side", required=True)
    torch_parser = sub.add_parser("torch", help="(torch's venv) write weights, images and logits")
    torch_parser.add_argument("--out", required=True)
    torch_parser.add_argument("--width", type=float, default=1.0)
    torch_parser.add_argument("--sizes", type=int, nargs="+", default=[225, 224])
    compare_parser = sub.add_parser("compare", help="(tinycnn's env) load them into tinycnn and compare")
    compare_parser.add_argument("npz")
    args = parser.parse_args()
    (torch_side if args.side == "torch" else compare_side)(args)


if __name__ == "__main__":
    main()

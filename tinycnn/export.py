"""python -m tinycnn.export RUN/best.tcnn model.onnx [--input-shape H,W,C] [--opset 17] [--fixed-batch]:
write a trained model as ONNX (tinycnn/onnx/), for onnxruntime, OpenCV's dnn, TensorRT or a browser.

The model file's metadata (task, image size, colour mode, class names) goes into the ONNX file's
metadata_props, with the preprocessing its input needs ("preprocessing", JSON). A run folder stands for its
best.tcnn. Needs `pip install tinycnn[onnx]`."""
import os
import sys

from .cli import Parser, run_cli


def main(argv=None):
    parser = Parser("export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .tcnn model file (or a run folder: its best.tcnn)")
    parser.add_argument("out", help="the .onnx file to write")
    parser.add_argument("--input-shape", help="one sample's shape as predict takes it, e.g. 96,96,3 (default: "
                                              "the model's own)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--fixed-batch", action="store_true", help="batch size 1 only, instead of any")
    args = parser.parse_args(argv)
    from .onnx import ExportError, export
    from .saving import load_model
    path = os.path.join(args.model, "best.tcnn") if os.path.isdir(args.model) else args.model
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(s) for s in args.input_shape.split(","))
        except ValueError:
            raise ExportError(f"--input-shape: expected numbers separated by commas, got {args.input_shape!r}") from None
    model = load_model(path, compile=False)
    export(model, args.out, input_shape=shape, opset=args.opset, dynamic_batch=not args.fixed_batch)
    print(f"{path} -> {args.out} (opset {args.opset}, {'batch 1' if args.fixed_batch else 'any batch size'})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("export", main))

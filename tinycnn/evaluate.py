"""python -m tinycnn.evaluate MODEL --data DIR [--split test] [--json]: the model file knows its task."""
import sys

from .cli import Parser, device, positive_int, run_cli, task_of_model


def main(argv=None):
    parser = Parser("evaluate", description=__doc__)
    parser.add_argument("model", help="a .tcnn model file written by tinycnn.train")
    parser.add_argument("--data", help="data folder (default: the built-in data of the model's task)")
    parser.add_argument("--split", default=None, help="which split to evaluate (tasks with train/val/test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: average over flips and crops "
                        "(tasks that have it: catdog; plates-box's detector: the mirror image)")
    args = parser.parse_args(argv)
    if args.tta and not getattr(task_of_model(args.model), "TTA", False):
        parser.error(f"--tta: the task of {args.model} has no test-time augmentation")
    return task_of_model(args.model).evaluate(args)


if __name__ == "__main__":
    sys.exit(run_cli("evaluate", main))

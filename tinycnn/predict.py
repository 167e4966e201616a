"""python -m tinycnn.predict MODEL IMAGE... [--out DIR]: one line per image; a bad image gets a one-line
error and the others still run (exit status 1 if any failed). --out never replaces an input image: a folder
that holds one of the images is refused unless --overwrite is given."""
import sys

from .cli import Parser, device, refuse_overwriting_inputs, run_cli, task_of_model


def main(argv=None):
    parser = Parser("predict", description=__doc__)
    parser.add_argument("model", help="a .tcnn model file written by tinycnn.train")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", help="folder for annotated images (plate tasks)")
    parser.add_argument("--overwrite", action="store_true", help="allow --out to be a folder of the input images")
    parser.add_argument("--annotations", help="CSV of ground-truth boxes to draw beside the prediction (plates)")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: average over flips and crops "
                        "(tasks that have it: catdog; plates-box's detector: the mirror image)")
    args = parser.parse_args(argv)
    if args.tta and not getattr(task_of_model(args.model), "TTA", False):
        parser.error(f"--tta: the task of {args.model} has no test-time augmentation")
    if args.out:
        refuse_overwriting_inputs(args.images, [args.out], args.overwrite)
    return task_of_model(args.model).predict(args)


if __name__ == "__main__":
    sys.exit(run_cli("predict", main))

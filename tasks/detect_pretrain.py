"""plates-box --pretrain N: the detector first learns on N built-in street scenes, then fine-tunes on --data.

    python -m tinycnn.train plates-box --data DIR                 # pre-trains on 1,000 scenes (once), then DIR
                                                                  # with 128 of the scenes in every epoch
    python -m tinycnn.train plates-box --data DIR --pretrain 0    # from scratch
    python -m tinycnn.train plates-box --data DIR --init RUN_DIR  # from a run of your own

The tutorial starts its box regressor from MobileNetV2's ImageNet weights. tinycnn downloads nothing, so the
detector's default start is a run on its own street scenes (tasks/synthetic_plates.py, scene "street": 0-4
plates of 10-200 px in perspective, blurred, at night), the job's own pictures; docs/plates.md has what it
brings on the real photos. The pre-training run is an ordinary run folder,

    runs/pretrained/plates-street-<N>x<epochs>-<img size>px-<key>/

(<key>: a hash of every setting that shapes it), trained once and reused by every later run with the same
settings. Fine-tuning then keeps DEFAULT_MIX of those scenes in every epoch beside the photos (`--mix-synthetic N`;
0: the photos alone), so the plates the photos lack (wide European ones, tiny ones) stay in view.
Only a run that finished counts (it writes `pretrained.json`); an interrupted one goes on from its
last checkpoint the next time, so no work is lost.
"""
import argparse
import hashlib
import json
import os

import tinycnn
from tinycnn.cli import UserInputError

from .plates_data import read_plates
from .plates_pipeline import BUILTIN_SIZE, BUILTIN_TEST, BUILTIN_VAL, SEED_OF_BUILTIN
from .synthetic_plates import ensure_builtin_plates

DEFAULT_SCENES = 1000
DEFAULT_EPOCHS = 15
DEFAULT_MIX = 128      # street scenes in every fine-tuning epoch (docs/plates.md: test AP@0.5 +0.07/+0.10, 2 seeds)
FOLDER = os.path.join("runs", "pretrained")
DONE = "pretrained.json"


def add_arguments(parser):
    parser.add_argument("--pretrain", type=int, default=None, metavar="N",
                        help=f"--head center with --data: first pre-train on N built-in street scenes (default "
                             f"{DEFAULT_SCENES}; trained once into {FOLDER}/ and reused; 0: none)")
    parser.add_argument("--mix-synthetic", type=int, default=None, metavar="N",
                        help=f"with --data: N of the built-in street scenes join the training photos of every epoch "
                             f"(default {DEFAULT_MIX} when pre-training, else 0)")
    parser.add_argument("--pretrain-epochs", type=int, default=DEFAULT_EPOCHS, metavar="E",
                        help=f"epochs of that pre-training (default {DEFAULT_EPOCHS})")


def requested(args):
    """{"scenes": N, "epochs": E} when this run pre-trains first, else None; a one-line error for a --pretrain
    that cannot apply."""
    scenes = getattr(args, "pretrain", None)
    if scenes is not None and scenes < 0:
        raise UserInputError(f"--pretrain {scenes}: give a number of scenes (0 for none)")
    if scenes and not args.data:
        raise UserInputError("--pretrain needs --data: without it the run trains on the built-in scenes already")
    if scenes and args.init:
        raise UserInputError("--pretrain and --init both choose the starting weights: give one of them")
    if args.pretrain_epochs < 1:
        raise UserInputError(f"--pretrain-epochs {args.pretrain_epochs}: give at least 1")
    if scenes is None:
        scenes = DEFAULT_SCENES if args.data and not args.init and not args.resume else 0
    return {"scenes": scenes, "epochs": args.pretrain_epochs} if scenes else None


def mixed(args, plan):
    """--mix-synthetic's N (0: none; by default DEFAULT_MIX when `plan`, the run's pre-training, is not None);
    a one-line error where it cannot apply."""
    n = getattr(args, "mix_synthetic", None)
    if n is None:
        return DEFAULT_MIX if plan else 0
    if n < 0:
        raise UserInputError(f"--mix-synthetic {n}: give a number of scenes (0 for none)")
    if n and not args.data:
        raise UserInputError("--mix-synthetic needs --data: without it the run trains on the built-in scenes only")
    return n


def street_records(n, scenes=None):
    """The first n training records of the built-in street scenes: of the set of `scenes` pictures that
    pre-training used (default DEFAULT_SCENES), or of a set of n where n is larger."""
    if n <= 0:
        return []
    folder = ensure_builtin_plates(n_train=max(n, scenes or DEFAULT_SCENES), n_val=BUILTIN_VAL, n_test=BUILTIN_TEST,
                                   size=BUILTIN_SIZE, seed=SEED_OF_BUILTIN, scene="street")
    return read_plates(folder, ["train"])["train"][:n]


def pretrain_folder(plan, settings, args):
    """The pre-training run's folder: named by its settings (those of the fine-tuning run it starts)."""
    shaping = {key: settings[key] for key in ("img_size", "width", "neck", "stem", "expansion", "head_layers",
                                               "lr", "weight_decay", "scale", "rotation", "augment", "seed")}
    shaping.update(plan, batch_size=args.batch_size)
    key = hashlib.sha1(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(FOLDER, f"plates-street-{plan['scenes']}x{plan['epochs']}-{settings['img_size']}px-{key}")


def pretrained_run(plan, settings, args, training_class):
    """The folder of a finished pre-training run for this fine-tuning run: reused, resumed or trained here."""
    folder = pretrain_folder(plan, settings, args)
    if os.path.isfile(os.path.join(folder, DONE)):
        print(f"pre-trained on {plan['scenes']} street scenes: reusing {folder} (--pretrain 0: none)")
        return folder
    partial = any(os.path.isfile(os.path.join(folder, name)) for name in ("last.tcnn", "interrupted.tcnn"))
    print(f"pre-training on {plan['scenes']} built-in street scenes for {plan['epochs']} epochs into {folder} "
          f"({'going on from its last checkpoint; ' if partial else ''}once: later runs reuse it; "
          f"--pretrain 0: none)")
    inner = argparse.Namespace(**{**vars(args), **dict(
        data=None, synthetic=plan["scenes"], epochs=plan["epochs"], out=folder, overwrite=True,
        resume=folder if partial else None, init=None, pretrain=0, mix_synthetic=0, ema=None, score_threshold=None,
        skip_bad_rows=False, no_augment=not settings["augment"], lr=settings["lr"])})
    training_class().run(inner)
    dist = tinycnn.distributed.auto()
    if dist is None or dist.is_root:
        with open(os.path.join(folder, DONE), "w") as file:
            json.dump(plan, file)
    print(f"pre-training done; fine-tuning on {args.data}")
    return folder

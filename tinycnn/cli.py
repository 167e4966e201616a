"""What every `python -m tinycnn.<command>` shares: one error line for a user's mistake, a traceback for a bug.

    from tinycnn.cli import Parser, run_cli
    def main(argv=None):
        parser = Parser("predict", description=__doc__)
        ...
    if __name__ == "__main__":
        sys.exit(run_cli("predict", main))

A user's mistake prints ONE line on stderr, `tinycnn <command>: error: <what is wrong, naming the file, row,
argument or layer>`, and exits with status 2 (the status argparse gives a bad argument). These are mistakes:
- a UserInputError (tinycnn/checks.py; ModelFileError, ImageDecodeError and AnnotationError are ones);
- an OSError about a file the user named (not found, not a folder, a folder, no permission), a full or
  read-only disk, and running out of memory;
- a bad argument (Parser.error, argparse's type checks, and the argument types below);
- SystemExit with a message (how some tasks refuse an input).
Any other exception is a bug in tinycnn: its traceback is printed, then a line asking to report it (status 1).
With `--debug` (or the environment variable TINYCNN_DEBUG=1) a mistake's traceback is printed too. Ctrl-C
prints one line and exits with status 130.

Also here: argument types that check their value where it is parsed (`positive_int`, `fraction`, `device`);
the checks of the files a command reads (`task_of_model`, `resume_checkpoint`: the run of another task is named
as such); and of those it writes, before it writes one (`refuse_overwriting_inputs`: outputs never replace
inputs; `refuse_overwriting_run`, `fresh_folder`: a run never replaces another run).
"""
import argparse
import errno
import os
import sys
import traceback

from .checks import UserInputError

EXIT_MISTAKE = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
REPORT = "this is a bug in tinycnn, not a mistake of yours: please report it with the command line and the traceback"


class Parser(argparse.ArgumentParser):
    """argparse with tinycnn's error line (`tinycnn <command>: error: ...`, status 2) and a --debug flag.

    `command` is the name after `python -m tinycnn.`; sub-parsers (train's tasks) inherit both."""

    def __init__(self, command=None, **kwargs):
        self.command = command
        if command is not None:
            kwargs.setdefault("prog", f"python -m tinycnn.{command}")
        super().__init__(**kwargs)
        self.add_argument("--debug", action="store_true", help="print the traceback of an error (or set "
                          "TINYCNN_DEBUG=1)")

    def error(self, message):
        command = self.command or self.prog.removeprefix("python -m tinycnn.").replace(".", " ")
        print(f"tinycnn {command}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_MISTAKE)


def run_cli(command, main, argv=None):
    """Run `main(argv)` and return its exit status, reporting exceptions as the module docstring says."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("TINYCNN_DEBUG", "") not in ("", "0")
    try:
        status = main(argv)
    except KeyboardInterrupt:
        print(f"tinycnn {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as stop:  # SystemExit("message"): a task's own way of refusing, made one error line
        if not isinstance(stop.code, str):
            raise
        print(f"tinycnn {command}: error: {stop.code.removeprefix('error: ')}", file=sys.stderr)
        return EXIT_MISTAKE
    except BrokenPipeError:  # `... | head`: the reader is gone, nothing more to say (nor to flush at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BUG
    except Exception as error:  # noqa: BLE001  (sorted into mistakes and bugs right here)
        from .trainer import TrainingError
        if isinstance(error, TrainingError):  # the loss diverged: not a bug, nor a mistake in the input
            if debug:
                traceback.print_exc()
            print(f"tinycnn {command}: error: {error}", file=sys.stderr)
            return EXIT_BUG
        message = user_mistake_message(error)
        if message is None:
            traceback.print_exc()
            print(f"tinycnn {command}: {REPORT}", file=sys.stderr)
            return EXIT_BUG
        if debug:
            traceback.print_exc()
        print(f"tinycnn {command}: error: {message}", file=sys.stderr)
        return EXIT_MISTAKE
    return status or 0


def user_mistake_message(error):
    """The one-line message of an exception that is the user's mistake, or None for a bug."""
    if isinstance(error, UserInputError):
        return str(error)
    if isinstance(error, MemoryError):
        return f"out of memory ({error or 'MemoryError'}): a smaller --batch-size or image size needs less"
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
        return f"{error.filename or 'writing'}: {error.strerror or error}"
    if isinstance(error, OSError) and (error.filename is not None or type(error) in _PATH_ERRORS):
        if error.filename is None:  # raised by tinycnn with its own message naming the path
            return str(error)
        named = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 else "")
        return f"{named}: {error.strerror or error}"
    return None


_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the disk is full or read-only: not a bug either


# ---------------------------------------------------------------------------------------- argument types

def positive_int(text):
    """An argparse type: a whole number >= 1 (epochs, batch size, image size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text):
    """An argparse type: a number strictly between 0 and 1 (a validation or test split)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def device(text):
    """An argparse type: 'cpu', 'cuda' or 'auto' (tinycnn/device.py), checked against this machine's devices."""
    from .device import normalize_device
    try:
        normalize_device(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda or auto "
                                         f"(this machine has {_devices_here()})") from None
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"no CUDA GPU on this machine (it has {_devices_here()}): "
                                         f"use cpu, or auto to take a GPU when there is one") from None
    return text


def _devices_here():
    from .device import cuda_available
    return "cpu and cuda" if cuda_available() else "cpu only, no CUDA GPU"


# ---------------------------------------------------------------------------------------- inputs

def task_of_model(path):
    """The task module (tinycnn.tasks.*) a model file written by `tinycnn.train` was trained for."""
    from .saving import read_metadata
    from .task_names import TASKS, task_module
    task = read_metadata(path).get("task")
    if task is None:
        raise UserInputError(f"{path} does not say which task it was trained for (not written by tinycnn.train)")
    if task not in TASKS:
        raise UserInputError(f"{path} was trained for the task {task!r}, which this tinycnn does not know "
                             f"(it knows {', '.join(TASKS)})")
    return task_module(task)


def resume_checkpoint(run_dir, task):
    """The checkpoint `train TASK --resume RUN_DIR` goes on from: RUN_DIR/interrupted.tcnn (where Ctrl-C stopped
    the run, mid-epoch) if there is one, else RUN_DIR/last.tcnn; after checking that it exists and that it was
    trained for TASK (resuming another task's run would fail deep inside the task with a KeyError)."""
    from .saving import read_metadata
    last = os.path.join(run_dir, "last.tcnn")
    if not os.path.isdir(run_dir):
        raise UserInputError(f"--resume {run_dir}: no such run folder")
    if os.path.isfile(os.path.join(run_dir, "interrupted.tcnn")):
        last = os.path.join(run_dir, "interrupted.tcnn")
    elif not os.path.isfile(last):
        raise UserInputError(f"--resume {run_dir}: no last.tcnn in it (not a run folder of tinycnn.train, or "
                             f"stopped before its first epoch)")
    trained = read_metadata(last).get("task")  # a ModelFileError (one line) for a damaged file
    if trained != task:
        raise UserInputError(f"--resume {run_dir}: that run trained the task {trained!r}, not {task!r}; go on with "
                             f"python -m tinycnn.train {trained} --resume {run_dir}")
    return last


# ---------------------------------------------------------------------------------------- outputs

def refuse_overwriting_inputs(inputs, outputs, overwrite=False, flag="--out"):
    """UserInputError if an output would replace an input, unless overwrite.

    inputs: the files read. outputs: files to write, or folders to write into: a folder output is refused
    when it holds one of the inputs (its outputs would sit among, and may replace, the originals). Paths are
    compared after resolving links, so `./a/../a` and a symlink to the input folder count as the same."""
    if overwrite:
        return
    resolved = {os.path.realpath(path): path for path in map(os.fspath, inputs)}
    folders = {os.path.dirname(real): path for real, path in resolved.items()}
    for output in map(os.fspath, outputs):
        real = os.path.realpath(output)
        if real in resolved:
            raise UserInputError(f"{flag} {output} would overwrite the input {resolved[real]}; write elsewhere, "
                                 f"or pass --overwrite")
        if real in folders:
            raise UserInputError(f"{flag} {output} is the folder of the input {folders[real]}: the outputs "
                                 f"could replace the originals; choose another folder, or pass --overwrite")


RUN_FILES = ("last.tcnn", "best.tcnn", "history.csv")


def refuse_overwriting_run(folder, overwrite=False, flag="--out"):
    """UserInputError if `folder` holds another training run (its last/best model or history), unless
    overwrite: a new run would replace them."""
    found = [name for name in RUN_FILES if os.path.exists(os.path.join(folder, name))]
    if found and not overwrite:
        raise UserInputError(f"{flag} {folder} holds a run already ({', '.join(found)}): choose another folder, "
                             f"go on with --resume {folder}, or pass --overwrite")


def fresh_folder(path):
    """`path` if nothing is there yet, else the first of path-2, path-3, ... that is free (not created here)."""
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate

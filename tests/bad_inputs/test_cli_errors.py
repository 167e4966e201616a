"""A user's mistake on the command line: one line `tinycnn <command>: error: ...`, exit status 2, no traceback
(unless --debug); a bug keeps its traceback and asks to be reported."""
import pytest

from tinycnn import evaluate, predict
from tinycnn.checks import UserInputError
from tinycnn.cli import EXIT_BUG, EXIT_MISTAKE, Parser, resume_checkpoint, run_cli

from bad_input_helpers import run_module


def _one_error_line(stderr, command):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"tinycnn {command}: error: "), stderr
    return lines[0]


def _run(command, main, argv, capsys):
    status = run_cli(command, main, [str(a) for a in argv])
    return status, _one_error_line(capsys.readouterr().err, command)


def test_missing_model_file_through_python_dash_m(tmp_path):
    status, out, err = run_module("tinycnn.evaluate", tmp_path / "nothing.tcnn")
    assert status == EXIT_MISTAKE and out == ""
    assert str(tmp_path / "nothing.tcnn") in _one_error_line(err, "evaluate")


def test_device_gpu_through_python_dash_m_says_which_devices_exist(catdog_model_file, photo):
    status, _, err = run_module("tinycnn.predict", catdog_model_file, photo, "--device", "gpu")
    assert status == EXIT_MISTAKE
    line = _one_error_line(err, "predict")
    assert "--device" in line and "'gpu'" in line and "this machine has cpu" in line


@pytest.mark.parametrize("command, main", [("evaluate", evaluate.main), ("predict", predict.main)])
def test_a_file_that_is_not_a_model(tmp_path, photo, capsys, command, main):
    status, line = _run(command, main, [photo] + ([photo] if command == "predict" else []), capsys)
    assert status == EXIT_MISTAKE and str(photo) in line and "not a zip" in line


def test_wrong_data_folder_is_named(catdog_model_file, tmp_path, capsys):
    status, line = _run("evaluate", evaluate.main, [catdog_model_file, "--data", tmp_path / "no-such-folder"], capsys)
    assert status == EXIT_MISTAKE and str(tmp_path / "no-such-folder") in line


def test_a_data_folder_without_classes_is_named(catdog_model_file, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status, line = _run("evaluate", evaluate.main, [catdog_model_file, "--data", tmp_path / "empty"], capsys)
    assert status == EXIT_MISTAKE and "no class folders" in line and str(tmp_path / "empty") in line


@pytest.mark.parametrize("argv, named", [(["--batch-size", "0"], "--batch-size"), (["--batch-size", "x"], "--batch-size"),
                                         (["--device", "tpu"], "--device"), (["--no-such-flag"], "--no-such-flag")])
def test_bad_arguments(catdog_model_file, capsys, argv, named):
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(catdog_model_file)] + argv)
    assert stop.value.code == EXIT_MISTAKE
    assert named in _one_error_line(capsys.readouterr().err, "evaluate")


def test_a_model_of_an_unknown_task(small_model_file, tmp_path, capsys):
    import tinycnn
    model = tinycnn.load_model(small_model_file)
    model.metadata = {"task": "weather"}
    model.save(tmp_path / "weather.tcnn")
    status, line = _run("evaluate", evaluate.main, [tmp_path / "weather.tcnn"], capsys)
    assert status == EXIT_MISTAKE and "'weather'" in line
    status, line = _run("evaluate", evaluate.main, [small_model_file], capsys)
    assert status == EXIT_MISTAKE and "does not say which task" in line


def test_debug_shows_the_traceback_of_a_mistake(tmp_path, capsys, monkeypatch):
    assert run_cli("evaluate", evaluate.main, [str(tmp_path / "none.tcnn"), "--debug"]) == EXIT_MISTAKE
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("tinycnn evaluate: error: ")
    monkeypatch.setenv("TINYCNN_DEBUG", "1")
    assert run_cli("evaluate", evaluate.main, [str(tmp_path / "none.tcnn")]) == EXIT_MISTAKE
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback_and_asks_for_a_report(capsys):
    def broken(argv):
        return {}["not a user's mistake"]
    assert run_cli("train", broken, []) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and "please report it" in err


def test_a_task_that_exits_with_a_message_gives_the_error_line(capsys):
    def refuses(argv):
        raise SystemExit("error: data/ has classes ['a'], the model knows ['cat', 'dog']")
    assert run_cli("evaluate", refuses, []) == EXIT_MISTAKE
    assert _one_error_line(capsys.readouterr().err, "evaluate").endswith("the model knows ['cat', 'dog']")
    def stops(argv):
        raise SystemExit(130)
    with pytest.raises(SystemExit) as stop:
        run_cli("train", stops, [])
    assert stop.value.code == 130


def test_ctrl_c_is_one_line_and_status_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt
    assert run_cli("train", interrupted, []) == 130
    assert capsys.readouterr().err.strip() == "tinycnn train: interrupted"


def test_parser_error_names_the_command_and_help(capsys):
    parser = Parser("redact")
    parser.add_argument("--amount", type=int)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--amount", "lots"])
    assert stop.value.code == EXIT_MISTAKE
    line = _one_error_line(capsys.readouterr().err, "redact")
    assert "--amount" in line and "python -m tinycnn.redact --help" in line


def test_resuming_another_tasks_run_names_both_tasks(catdog_model_file, tmp_path):
    run = catdog_model_file.parent
    (run / "last.tcnn").write_bytes(catdog_model_file.read_bytes())
    assert resume_checkpoint(str(run), "catdog") == str(run / "last.tcnn")
    with pytest.raises(UserInputError, match=r"trained the task 'catdog', not 'plates-box'"):
        resume_checkpoint(str(run), "plates-box")
    with pytest.raises(UserInputError, match="no last.tcnn"):
        resume_checkpoint(str(tmp_path), "catdog")
    with pytest.raises(UserInputError, match="no such run folder"):
        resume_checkpoint(str(tmp_path / "gone"), "catdog")


@pytest.mark.parametrize("error, shown", [
    (OSError(28, "No space left on device"), "writing: No space left on device"),
    (PermissionError(13, "Permission denied", "/srv/x.tcnn"), "/srv/x.tcnn: Permission denied"),
    (MemoryError("Unable to allocate 37.3 GiB"), "out of memory (Unable to allocate 37.3 GiB)"),
])
def test_the_machine_saying_no_is_one_line(capsys, error, shown):
    def fails(argv):
        raise error
    assert run_cli("train", fails, []) == EXIT_MISTAKE
    assert shown in _one_error_line(capsys.readouterr().err, "train")


def test_train_with_a_wrong_data_folder_through_python_dash_m(tmp_path):
    status, _, err = run_module("tinycnn.train", "catdog", "--data", tmp_path / "no-photos", "--out",
                                tmp_path / "run", "--epochs", "1", "--quiet")
    assert status == EXIT_MISTAKE
    assert str(tmp_path / "no-photos") in _one_error_line(err, "train")


def test_redact_with_a_missing_model_through_python_dash_m(tmp_path, photo):
    status, _, err = run_module("tinycnn.redact", tmp_path / "none.tcnn", photo, "--out", tmp_path / "out")
    assert status == EXIT_MISTAKE
    assert str(tmp_path / "none.tcnn") in _one_error_line(err, "redact")

"""The compile notice (tinycnn/compile_notice.py): one line on stderr when kernels compile (an empty Numba
cache), nothing when they load from the cache. Each run is a fresh process on its own NUMBA_CACHE_DIR, with a
tiny kernel (activation.fused_activate, a fraction of a second to compile)."""
import os
import subprocess
import sys

from tinycnn.compile_notice import MESSAGE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = ("from tinycnn.kernels.cpu import activation\n"
          "print(activation.fused_activate(-2.0, 1), activation.fused_activate(3.0, 0))\n")


def _run(cache_dir, **env):
    environ = {k: v for k, v in os.environ.items() if k != "TINYCNN_COMPILE_NOTICE"}
    environ.update(NUMBA_CACHE_DIR=str(cache_dir), **env)
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.0", "3.0"]
    return done.stderr


def test_notice_on_a_cold_cache_and_silence_on_a_warm_one(tmp_path):
    cold = _run(tmp_path / "numba")
    assert cold.count(MESSAGE) == 1, cold
    lines = cold.splitlines()  # stderr is not a terminal here: the message, then "… N kernels compiled in S s"
    assert lines.index(MESSAGE) < len(lines) - 1, cold
    done = lines[lines.index(MESSAGE) + 1]
    count, kernels, compiled = done.split()[1:4]
    assert done.startswith("… ") and int(count) >= 1 and kernels in ("kernel", "kernels") and compiled == "compiled"
    warm = _run(tmp_path / "numba")
    assert MESSAGE not in warm and "compiled" not in warm, warm


def test_notice_can_be_turned_off(tmp_path):
    assert MESSAGE not in _run(tmp_path / "numba", TINYCNN_COMPILE_NOTICE="0")

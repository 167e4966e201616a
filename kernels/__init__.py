"""tinycnn's kernels: reference/ (NumPy oracles), cpu/ (Numba), cuda/ (numba-cuda). See README.md here.

Import them as `tinycnn.kernels` (what the package and its tests do). Imported as a top-level `kernels`
package instead (a script run with the repository root on sys.path), Numba would write cache entries that
name the `kernels` module, and a later tinycnn process loading them would fail with "No module named
'kernels'": refused here, with the way out.
"""
if __name__ == "kernels":
    raise ImportError("import the kernels as tinycnn.kernels (e.g. `from tinycnn.kernels.cpu import conv`), "
                      "not as a top-level 'kernels' package: Numba's on-disk cache would name the wrong module")

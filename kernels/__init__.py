"""tinycnn's kernels: reference/ (NumPy oracles), cpu/ (Numba), cuda/ (numba-cuda). See README.md here."""

"""CPU kernels: Numba `@njit(cache=True)` functions, one file per op family (see kernels/README.md)."""

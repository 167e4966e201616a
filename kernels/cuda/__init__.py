"""CUDA kernels (numba-cuda), file for file beside kernels/cpu (see kernels/README.md)."""

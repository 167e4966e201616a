"""tinycnn's benchmarks against its peers (PyTorch, TensorFlow when installed): `python -m benchmarks --help`.

Not part of the installed package; run from the repository root. See benchmarks/README.md.
"""

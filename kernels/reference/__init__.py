"""Plain NumPy references of every op: slow, obvious, the oracle of the tests."""

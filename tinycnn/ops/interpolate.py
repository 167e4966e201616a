"""PLACEHOLDER: being written (replace this whole file)."""

def interpolate(*args, **kwargs):
    raise NotImplementedError('interpolate is not written yet')



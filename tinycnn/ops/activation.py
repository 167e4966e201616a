"""PLACEHOLDER: being written (replace this whole file)."""

def leaky_relu(*args, **kwargs):
    raise NotImplementedError('leaky_relu is not written yet')


def relu(*args, **kwargs):
    raise NotImplementedError('relu is not written yet')


def relu6(*args, **kwargs):
    raise NotImplementedError('relu6 is not written yet')


def sigmoid(*args, **kwargs):
    raise NotImplementedError('sigmoid is not written yet')


def tanh(*args, **kwargs):
    raise NotImplementedError('tanh is not written yet')



"""The autograd ops: each file pairs an op family's forward with its local backward (see tensor.Function)."""

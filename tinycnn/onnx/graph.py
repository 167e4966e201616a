"""The ONNX graph being written: value names, initializers (weights and constants) and nodes.

    g = Graph(opset=17)
    w = g.constant(array, "conv.weight")       # an initializer; the same Tensor is written once
    y = g.node("Conv", [x, w], strides=[1, 1])  # -> the output's name
    g.transpose(y, (0, 2, 3, 1))                # two transposes in a row are merged (and dropped if they cancel)
    g.elementwise("Relu", [y])                  # Relu(source), then the transpose: it may meet its inverse
    g.reshape(y, ...)                           # the same for reshapes

`g.names` maps each traced Tensor (by id) to the name of its value in the graph. After the last node,
`used_nodes(outputs)` drops the nodes no output needs (a transpose that a merge made idle).
"""
import numpy as np


class Graph:
    def __init__(self, opset):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.opset = opset
        self.nodes, self.initializers = [], []
        self.names = {}            # id(Tensor) -> value name
        self._transposes = {}      # output name of a Transpose node -> (its input, its perm)
        self._reshapes = {}        # output name of a Reshape node -> (its input, that input's traced shape)
        self._scalars = set()      # names of one-element constants (they broadcast the same in any layout)
        self._count = 0

    def fresh(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    # ------------------------------------------------------------------ values
    def constant(self, array, hint="const"):
        """A new initializer holding `array` -> its name."""
        name = self.fresh(hint)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def scalar(self, value, dtype):
        name = self.constant(np.asarray(value, dtype=dtype), "scalar")
        self._scalars.add(name)
        return name

    def ints(self, values):
        return self.constant(np.asarray(values, dtype=np.int64), "ints")

    def value(self, t, like_dtype=np.float32):
        """The name of a traced Tensor (made by an op, or a constant written now); a Python number becomes a
        scalar constant of `like_dtype`."""
        if not hasattr(t, "data"):
            return self.scalar(t, like_dtype)
        if id(t) not in self.names:
            self.names[id(t)] = self.constant(t.numpy(), "w")
        return self.names[id(t)]

    # ------------------------------------------------------------------ nodes
    def node(self, op_type, inputs, outputs=1, **attributes):
        """Append a node -> its output name (or list of names when outputs > 1)."""
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def elementwise(self, op_type, inputs, **attributes):
        """An elementwise node. When its tensor inputs are all transposed the same way (the others scalars),
        it runs on what they transpose and the transpose comes after it, where the next transpose (a
        channels-last conv's) can cancel it."""
        tensors = [x for x in inputs if x not in self._scalars]
        perms = {tuple(self._transposes[x][1]) if x in self._transposes else None for x in tensors}
        if len(perms) != 1 or None in perms:
            return self.node(op_type, inputs, **attributes)
        sources = [self._transposes[x][0] if x in self._transposes else x for x in inputs]
        return self.transpose(self.node(op_type, sources, **attributes), perms.pop())

    def transpose(self, x, perm):
        """Transpose(x, perm), merged with a Transpose that made x (and nothing at all when they cancel)."""
        perm = [int(p) for p in perm]
        if x in self._transposes:
            source, first = self._transposes[x]
            x, perm = source, [first[p] for p in perm]
        if perm == list(range(len(perm))):
            return x
        y = self.node("Transpose", [x], perm=perm)
        self._transposes[y] = (x, perm)
        return y

    def reshape(self, x, x_shape, shape, out_shape):
        """Reshape(x, shape): a reshape of a reshape reads the first one's input (reshapes keep the elements'
        order), and one back to that input's shape is nothing at all. Shapes are the traced ones."""
        if x in self._reshapes:
            x, x_shape = self._reshapes[x]
        if tuple(x_shape) == tuple(out_shape):
            return x
        y = self.node("Reshape", [x, self.ints(shape)])
        self._reshapes[y] = (x, tuple(x_shape))
        return y

    def used_nodes(self, outputs):
        """The nodes that the graph's outputs depend on, in order."""
        needed, kept = set(outputs), []
        for node in reversed(self.nodes):
            if any(o in needed for o in node.output):
                kept.append(node)
                needed.update(node.input)
        kept.reverse()
        used = {name for node in kept for name in node.input}
        self.initializers = [i for i in self.initializers if i.name in used or i.name in outputs]
        return kept

"""Bind the --input-shape sizes into an ONNX graph and fold the shape arithmetic they decide.

A graph exported with a dynamic axis (torch.onnx.export's dynamo default) computes sizes at run time:
Shape -> Squeeze -> Range -> Gather ... TVM's importer keeps that arithmetic as run-time code, so an
output's shape can stay unknown after every input is static (a ConvNeXt's pooled head did). Folded here,
where the input shapes are known, TVM imports a static graph. Only values computed from Shape or Size
are folded: a graph without them (AttendNeXt, every legacy static export) is returned as it is, so its
kernels and tuning records do not change.
"""
from typing import Dict, Tuple

FOLD_LIMIT = 1 << 16  # elements: a folded value is shape arithmetic, never a weight
SHAPE_OPS = ("Shape", "Size")
NOT_FOLDED = ("If", "Loop", "Scan", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial")


def bind(proto, shapes: Dict[str, Tuple[int, ...]]):
    """`proto` with its inputs set to `shapes` and each value that follows from them folded to a Constant
    (a copy; `proto` itself when it has no Shape or Size node)."""
    import onnx

    if not any(node.op_type in SHAPE_OPS for node in proto.graph.node):
        return proto
    bound = onnx.ModelProto()
    bound.CopyFrom(proto)
    for value in bound.graph.input:
        if value.name in shapes:
            value.type.tensor_type.shape.Clear()
            for size in shapes[value.name]:
                value.type.tensor_type.shape.dim.add().dim_value = size
    # The exporter's annotations of intermediate and output shapes hold the symbolic axes: inferred anew.
    del bound.graph.value_info[:]
    declared = [onnx.TypeProto.FromString(value.type.SerializeToString()) for value in bound.graph.output]
    for value in bound.graph.output:
        value.type.tensor_type.ClearField("shape")
    opset = next((o.version for o in bound.opset_import if o.domain in ("", "ai.onnx")), None)
    derived = set()  # names of the values folded so far: all that follows from the bound shapes
    while _fold_pass(bound, {"": opset} if opset else None, derived):
        pass
    inferred = onnx.shape_inference.infer_shapes(bound).graph.output
    for value, old, new in zip(bound.graph.output, declared, inferred):
        value.type.CopyFrom(new.type if new.type.tensor_type.HasField("shape") else old)
    return bound


def _static_shapes(model) -> dict:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tensor.shape.dim)
    return shapes


def _fold_pass(model, opsets, derived: set) -> bool:
    """Fold, in graph order, every node whose value the bound shapes decide; True if any was."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    shapes = _static_shapes(model)
    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer
             if int(np.prod(init.dims)) <= FOLD_LIMIT}
    nodes, folded = [], False
    for node in graph.node:
        values = _value(node, shapes, known, derived, opsets)
        if values is None or any(v.size > FOLD_LIMIT for v in values):
            nodes.append(node)
            continue
        for name, value in zip(node.output, values):
            known[name] = value
            derived.add(name)
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name)))
        folded = True
    if folded:
        del graph.node[:]
        graph.node.extend(nodes)
    return folded


def _value(node, shapes, known, derived, opsets):
    """The node's output values if the bound shapes decide them, else None (a small Constant's value is
    recorded in `known` for the nodes after it)."""
    import numpy as np
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    if node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED:
        return None
    if node.op_type == "Constant":
        (value,) = ReferenceEvaluator(node, opsets=opsets).run(None, {})
        known[node.output[0]] = np.asarray(value) if np.size(value) <= FOLD_LIMIT else None
        return None
    if node.op_type in SHAPE_OPS:
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape)), dtype=np.int64)]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return [np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))], dtype=np.int64)]
    inputs = [name for name in node.input if name]
    if not inputs or not any(name in derived for name in inputs) or \
            not all(known.get(name) is not None for name in inputs):
        return None
    return [np.asarray(v) for v in ReferenceEvaluator(node, opsets=opsets).run(None, {n: known[n] for n in inputs})]

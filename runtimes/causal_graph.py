"""Edits to Optimum's causal-LM export (text-generation-with-past), made once in the export worker.

``keep_logits`` gives the graph a ``logits_to_keep`` input (int64 ``[1]``), as Hugging Face's
``forward(logits_to_keep=...)``: the final hidden state is sliced to its last ``logits_to_keep``
positions before the vocabulary projection (``/lm_head/MatMul``), and 0 keeps every position.
Optimum's graph projects every input position (a prefill of 16 prompts x 40 tokens pays
640 x 49152 x 576 multiply-adds in lm_head alone), while a running batch needs the last
position's logits only: it is left-padded, so each row's last token is at index -1. Prompt
log-probabilities (Caikit's input token details) ask for 0 and get every position, as before.

``materialize_lm_head`` replaces the Transpose that Optimum's graph computes from the tied
embedding (``model.embed_tokens.weight`` -> ``..._transposed``) by a transposed initializer, so
that a weight-only quantizer sees lm_head's weight as a constant and quantizes it; the embedding's
Gather keeps reading the fp32 table.

``EDITS`` names these edits' version: the export's fingerprint holds it, so a change re-exports.
Nothing heavy is imported at module level (the serving process only reads the constants).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK = "text-generation-with-past"
LOGITS_TO_KEEP = "logits_to_keep"
EDITS = 1  # bump when keep_logits changes: cached exports (and their variants) are remade
_HEAD_OUTPUT = "logits"
_INT64_MAX = 2**63 - 1


def edit_export(folder: Path) -> None:
    """Apply ``keep_logits`` to ``folder/model.onnx`` in place (Optimum's fresh export)."""
    import onnx

    path = folder / "model.onnx"
    model = onnx.load(str(path))
    if keep_logits(model):
        onnx.save(model, str(path))


def _lm_head(graph: Any) -> Any:
    heads = [n for n in graph.node if n.op_type == "MatMul" and list(n.output) == [_HEAD_OUTPUT]]
    if len(heads) != 1:
        raise ValueError(f"expected one MatMul producing {_HEAD_OUTPUT!r}, found {len(heads)}")
    return heads[0]


def lm_head_name(model: Any) -> str:
    """The name of the MatMul producing ``logits`` (Optimum: ``/lm_head/MatMul``)."""
    return str(_lm_head(model.graph).name)


def keep_logits(model: Any) -> bool:
    """Add the ``logits_to_keep`` input and slice lm_head's input by it; False when present."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if any(i.name == LOGITS_TO_KEEP for i in graph.input):
        return False
    head = _lm_head(graph)
    start, ends, axes, kept = (f"/lm_head/keep_{part}" for part in ("start", "ends", "axes", "hidden"))
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray([_INT64_MAX], np.int64), ends),
            numpy_helper.from_array(np.asarray([1], np.int64), axes),
        ]
    )
    nodes = [
        helper.make_node("Neg", [LOGITS_TO_KEEP], [start], name="/lm_head/KeepStart"),
        helper.make_node("Slice", [head.input[0], start, ends, axes], [kept], name="/lm_head/KeepLast"),
    ]
    head.input[0] = kept
    index = list(graph.node).index(head)
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    graph.input.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
    for output in graph.output:
        if output.name == _HEAD_OUTPUT and len(output.type.tensor_type.shape.dim) == 3:
            output.type.tensor_type.shape.dim[1].dim_param = "kept_positions"
    return True


def materialize_lm_head(model: Any) -> bool:
    """Replace a Transpose of an initializer feeding lm_head by the transposed initializer."""
    from onnx import numpy_helper

    graph = model.graph
    head = _lm_head(graph)
    weight = head.input[1]
    producer = next((n for n in graph.node if weight in n.output), None)
    if producer is None or producer.op_type != "Transpose":
        return False
    initializers = {i.name: i for i in graph.initializer}
    source = initializers.get(producer.input[0])
    if source is None:
        return False
    perm = next((list(a.ints) for a in producer.attribute if a.name == "perm"), None)
    table = numpy_helper.to_array(source)
    graph.initializer.append(numpy_helper.from_array(table.transpose(perm).copy(), weight))
    graph.node.remove(producer)
    return True

"""Rewrite a TFLite model's graph for diagnosis: expose every op's output, cut the graph after op ``k``, or
cut every op loose so that each can be fed the same inputs on every kernel set.

They work on the object API of the flatbuffer schema that ``ai_edge_litert`` ships (no TensorFlow) and
return new bytes; the weights and the ops are unchanged, so a runtime computes the same values. Used by
``tfedge.validate(trace=True)`` (every intermediate tensor in one run, on every kernel set) and to find
the op a runtime crashes in (run growing prefixes in the isolated worker).

>>> from tfedge.tflite import tiny_int8_model
>>> [(op.index, op.name, op.outputs) for op in graph_ops(tiny_int8_model())]
[(0, 'FULLY_CONNECTED', (3,))]
>>> len(prefix(tiny_int8_model(), 1)) > 0
True
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

from tfedge.errors import InputError
from tfedge.flatbuffer import pack


@dataclasses.dataclass(frozen=True)
class GraphOp:
    """One operator of the main subgraph: its position, name (builtin or custom) and tensor indices."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def label(self) -> str:
        """How reports name the op, e.g. ``ADD (op 7)``."""
        return f"{self.name} (op {self.index})"


@functools.lru_cache(maxsize=1)
def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _unpack(content: bytes) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    except Exception as exc:  # the schema reader raises struct / index errors on damaged files
        raise InputError(f"cannot read the model graph: {type(exc).__name__}; the file is corrupted") from None
    if not model.subgraphs:
        raise InputError("the model has no subgraph to rewrite")
    return model


def _ops(model: Any) -> list[GraphOp]:
    names = _builtin_names()
    found = []
    for k, op in enumerate(model.subgraphs[0].operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode
            name = custom.decode("utf-8", "replace") if isinstance(custom, bytes) else str(custom or "CUSTOM")
        found.append(
            GraphOp(
                k,
                name,
                tuple(int(i) for i in (op.inputs if op.inputs is not None else [])),
                tuple(int(i) for i in (op.outputs if op.outputs is not None else [])),
            )
        )
    return found


def graph_ops(content: bytes) -> list[GraphOp]:
    """The main subgraph's operators in execution order."""
    return _ops(_unpack(content))


def _rewrite(content: bytes, edit: Callable[[Any], None]) -> bytes:
    model = _unpack(content)
    edit(model)
    model.signatureDefs = None  # signatures name the old outputs
    return pack(model)


def with_outputs(content: bytes, tensors: Sequence[int]) -> bytes:
    """The model with the main subgraph's outputs replaced by ``tensors`` (tensor indices, in order)."""
    wanted = [int(t) for t in dict.fromkeys(tensors)]

    def edit(model: Any) -> None:
        sub = model.subgraphs[0]
        count = len(sub.tensors or [])
        bad = [t for t in wanted if not 0 <= t < count]
        if bad or not wanted:
            raise InputError(f"outputs must be tensor indices in [0, {count}), got {list(tensors)!r}")
        sub.outputs = wanted

    return _rewrite(content, edit)


def traced(content: bytes) -> tuple[bytes, list[tuple[GraphOp, int]]]:
    """The model with every op's outputs as model outputs, and ``(op, tensor)`` per new output, in order.

    Running it gives every intermediate tensor in one invoke; the ops and weights are unchanged.
    """
    ops = graph_ops(content)
    pairs = list({t: (op, t) for op in ops for t in op.outputs if t >= 0}.values())
    return with_outputs(content, [t for _, t in pairs]), pairs


def isolated(content: bytes) -> tuple[bytes, list[int], list[tuple[GraphOp, int]]]:
    """Every op cut loose from the ops before it: each non-constant input it reads becomes a model input of
    its own (a copy of that tensor), and every op output a model output.

    Returns ``(model, sources, outputs)``: ``sources[i]`` is the original tensor whose values model input ``i``
    takes, and ``outputs`` is ``(op, tensor)`` per model output. Feeding every op the same values (e.g. what
    the reference kernels computed) measures each op's own error, not the error it inherited.
    """
    sources: list[int] = []

    def edit(model: Any) -> None:
        import copy

        sub = model.subgraphs[0]
        buffers = model.buffers or []

        def constant(t: Any) -> bool:
            return bool(
                t.buffer
                and t.buffer < len(buffers)
                and buffers[t.buffer].data is not None
                and len(buffers[t.buffer].data)
            )

        inputs: list[int] = []
        for op in sub.operators or []:
            wired = []
            for i in op.inputs if op.inputs is not None else []:
                tensor = sub.tensors[i] if i >= 0 else None
                if tensor is None or constant(tensor) or tensor.isVariable:
                    wired.append(int(i))
                    continue
                twin = copy.deepcopy(tensor)
                twin.buffer = 0
                sub.tensors.append(twin)
                wired.append(len(sub.tensors) - 1)
                inputs.append(len(sub.tensors) - 1)
                sources.append(int(i))
            op.inputs = wired
        sub.inputs = inputs
        sub.outputs = [t for _, t in outputs]

    outputs = list({t: (op, t) for op in graph_ops(content) for t in op.outputs if t >= 0}.values())
    return _rewrite(content, edit), sources, outputs


def prefix(content: bytes, count: int) -> bytes:
    """The model cut after its first ``count`` ops; the last kept op's outputs become the model outputs."""

    def edit(model: Any) -> None:
        sub = model.subgraphs[0]
        ops = sub.operators or []
        if not 1 <= count <= len(ops):
            raise InputError(f"count must be in [1, {len(ops)}] ops, got {count!r}")
        sub.operators = ops[:count]
        sub.outputs = [int(i) for i in ops[count - 1].outputs if i >= 0]

    return _rewrite(content, edit)


__all__ = ["GraphOp", "graph_ops", "with_outputs", "traced", "isolated", "prefix"]

"""Read a ``.tflite`` file without running it: ops, tensor dtypes, int8-ness, sparsity, size.

:func:`verify` runs the structural checks alone (fast, strict): call it before handing bytes to
TFLite Micro, which trusts the file. :func:`inspect` also summarises the model.

>>> import tfedge
>>> from tfedge import keras
>>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2)])
>>> info = tfedge.inspect(tfedge.convert(model, quantization="float32"))
>>> info.ops, info.fully_int8, info.inputs[0]["shape"]
({'FULLY_CONNECTED': 1}, False, [1, 4])
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from tfedge.flatbuffer import Model, parse
from tfedge.tables import format_table
from tfedge.tflite import (
    FLOAT_DTYPES,
    INT8_MODEL_DTYPES,
    ModelSource,
    TensorInfo,
    guess_quantization,
    gzip_size,
    model_bytes,
    non_int8_ops,
    tensor_labels,
)

#: Builtin ops with a kernel in the stock TFLite Micro op resolver (the kernels registered in the
#: ``tflite_micro`` Python package's runtime; tests/test_inspection.py checks this against it).
TFLM_BUILTIN_OPS = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTH_TO_SPACE
DEPTHWISE_CONV_2D DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL
FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF
L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC
LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE
READ_VARIABLE REDUCE_ALL REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR
REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V
SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV
UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split())
#: Dtypes no stock TFLite Micro kernel reads (it has no float16 / bfloat16 / float64 math).
TFLM_UNSUPPORTED_DTYPES = frozenset({"float16", "bfloat16", "float64", "complex64", "complex128"})


def verify(content: bytes, source: str = "model") -> None:
    """Check that ``content`` is a structurally sound TFLite flatbuffer; raise ``InputError`` if not.

    Checks the ``TFL3`` identifier, the size cap, that every offset, length and tensor / buffer /
    opcode / subgraph index is in range (no overflow), non-negative dims, constant data as long as
    its shape says, finite positive quantization scales, and the shapes, dtypes, strides and axes
    the common kernels index memory by. Never runs the model; takes about a millisecond for a
    small model.

    >>> verify(b"\\xff\\xff\\x00\\x00TFL3" + bytes(24), source="junk.tflite")
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: junk.tflite is not a valid TFLite model: model table at byte 65535 (+4 bytes) ...
    """
    parse(content, source)


def _zero_fraction(data: memoryview, dtype: str) -> tuple[int, int]:
    arr = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
    return int(arr.size - np.count_nonzero(arr)), int(arr.size)


def _weight_sparsity(model: Model) -> tuple[float, dict[str, float]]:
    """Fraction of exact zeros in constant weight tensors (int8 / float kernels of rank >= 2)."""
    per_tensor: dict[str, float] = {}
    seen: dict[int, tuple[int, int]] = {}
    for sub in model.subgraphs:
        labels = tensor_labels(sub)
        for t in sub.tensors:
            if not t.is_constant or t.sparse or len(t.shape) < 2 or t.dtype not in ("int8", "float32", "float16"):
                continue
            if t.buffer not in seen:
                nbytes = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize
                seen[t.buffer] = _zero_fraction(model.buffer_data(t.buffer)[:nbytes], t.dtype)
            zeros, total = seen[t.buffer]
            per_tensor[labels[t.index]] = round(zeros / total, 4) if total else 0.0
    zeros = sum(z for z, _ in seen.values())
    total = sum(n for _, n in seen.values())
    return (round(zeros / total, 4) if total else 0.0), per_tensor


def _tflm_unsupported(model: Model) -> list[str]:
    out: dict[str, None] = {}
    for sub in model.subgraphs:
        for op in sub.operators:
            if op.op not in TFLM_BUILTIN_OPS:
                out[op.op] = None
                continue
            odd = sorted({sub.tensors[i].dtype for i in (*op.inputs, *op.outputs) if i >= 0}
                         & TFLM_UNSUPPORTED_DTYPES)
            if odd:
                out[f"{op.op} ({', '.join(odd)})"] = None
            if any(sub.tensors[i].sparse for i in op.inputs if i >= 0):
                out[f"{op.op} (sparse tensor)"] = None
    return list(out)


def _scale_cell(t: dict) -> str | None:
    return f"{t['scale']:.6g}" if t["scale"] else None


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What :func:`inspect` found in a ``.tflite`` file. ``to_dict()`` is JSON-able.

    ``inputs`` / ``outputs`` hold :meth:`TensorInfo.to_dict` of the main subgraph's tensors.
    """

    source: str
    bytes: int
    gzip_bytes: int
    quantization: str
    ops: dict[str, int]
    operators: list[dict]
    tensors: list[dict]
    dtypes: dict[str, int]
    fully_int8: bool
    non_int8_ops: list[dict]
    sparsity: float
    weight_sparsity: dict[str, float]
    inputs: list[dict]
    outputs: list[dict]
    tflm_unsupported_ops: list[str]
    subgraphs: int
    metadata: list[str]
    signatures: list[str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def format_table(self) -> str:
        """A readable multi-line summary: a header, then one table per section."""
        lines = [
            f"model        {self.source}",
            f"size         {self.bytes:,} bytes ({self.gzip_bytes:,} gzip)",
            f"quantization {self.quantization}   fully int8: {'yes' if self.fully_int8 else 'no'}",
            f"sparsity     {self.sparsity:.1%} of weights are zero",
            "",
            format_table([[role, t["name"] or "(unnamed)", t["dtype"], str(t["shape"]), _scale_cell(t),
                           t["zero_point"] if t["scale"] else None]
                          for role, tensors in (("input", self.inputs), ("output", self.outputs)) for t in tensors],
                         ["tensor", "name", "dtype", "shape", "scale", "zero point"]),
            "",
            format_table(list(self.ops.items()), ["op", "count"]),
            "",
            "tensor dtypes  " + ", ".join(f"{k}: {v}" for k, v in self.dtypes.items()),
        ]
        if self.weight_sparsity:
            lines += ["", format_table([[name[:60], f"{frac:.1%}"] for name, frac in self.weight_sparsity.items()],
                                       ["weight tensor", "zeros"])]
        if self.non_int8_ops:
            rows = [[o["op"], o["index"], ", ".join(f"{n} ({d})" for n, d in o["tensors"])] for o in self.non_int8_ops]
            lines += ["", format_table(rows, ["not int8", "#", "tensors"])]
        lines += ["", "TFLite Micro  " + ("runs every op" if not self.tflm_unsupported_ops
                                          else "cannot run: " + ", ".join(self.tflm_unsupported_ops))]
        return "\n".join(lines)


def _operators(model: Model, labels: list[list[str]]) -> list[dict]:
    return [{"subgraph": s, "index": op.index, "op": op.op,
             "inputs": [labels[s][i] if i >= 0 else None for i in op.inputs],
             "outputs": [labels[s][i] for i in op.outputs]}
            for s, sub in enumerate(model.subgraphs) for op in sub.operators]


def _count(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def inspect(model_or_path: ModelSource) -> ModelInfo:
    """Read a TFLiteModel, ``.tflite`` bytes or a path without running it.

    >>> inspect(b"not a model")
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: TFLite model (bytes) is not a TFLite model: only 11 bytes ...; the file is empty ...
    """
    content, source = model_bytes(model_or_path, "inspect()'s argument")
    model = parse(content, source)
    labels = [tensor_labels(sub) for sub in model.subgraphs]
    dtypes = _count([t.dtype for sub in model.subgraphs for t in sub.tensors])
    strict = non_int8_ops(model)
    sparsity, per_tensor = _weight_sparsity(model)
    main = model.subgraphs[0]
    return ModelInfo(
        source=source,
        bytes=len(content),
        gzip_bytes=gzip_size(content),
        quantization=guess_quantization(model),
        ops=_count([op.op for sub in model.subgraphs for op in sub.operators]),
        operators=_operators(model, labels),
        tensors=[{"subgraph": s, "index": t.index, "name": labels[s][t.index], "dtype": t.dtype,
                  "shape": list(t.shape), "constant": t.is_constant}
                 for s, sub in enumerate(model.subgraphs) for t in sub.tensors],
        dtypes=dtypes,
        fully_int8=not strict and "int8" in dtypes,
        non_int8_ops=strict,
        sparsity=sparsity,
        weight_sparsity=per_tensor,
        inputs=[TensorInfo.from_tensor(main.tensors[i]).to_dict() for i in main.inputs],
        outputs=[TensorInfo.from_tensor(main.tensors[i]).to_dict() for i in main.outputs],
        tflm_unsupported_ops=_tflm_unsupported(model),
        subgraphs=len(model.subgraphs),
        metadata=[name for name, _ in model.metadata],
        signatures=list(model.signature_keys),
    )


__all__ = ["verify", "inspect", "ModelInfo", "non_int8_ops", "tensor_labels", "TFLM_BUILTIN_OPS", "FLOAT_DTYPES",
           "INT8_MODEL_DTYPES"]

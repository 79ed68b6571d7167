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
import gzip
import json
import os
from typing import Any

import numpy as np

from tfedge.errors import InputError
from tfedge.files import read_bytes
from tfedge.flatbuffer import Model, Subgraph, Tensor, parse

#: Tensor dtypes that make a model not integer-only.
FLOAT_DTYPES = frozenset({"float32", "float16", "float64", "bfloat16", "complex64", "complex128",
                          "float8_e4m3fn", "float8_e5m2"})
#: Dtypes allowed anywhere in a fully int8 model: int8 data, int32 biases / shapes, int64 / bool indices.
INT8_MODEL_DTYPES = frozenset({"int8", "int32", "int64", "bool"})

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
    tfedge.errors.InputError: junk.tflite is not a valid TFLite model: model table at byte 65535 (+4 bytes) lies outside the 32-byte file; ...
    """
    parse(content, source)


def _as_bytes(model_or_path: Any, what: str = "model") -> tuple[bytes, str]:
    content = getattr(model_or_path, "content", None)
    if isinstance(content, bytes):
        return content, str(getattr(model_or_path, "source", "TFLite model"))
    if isinstance(model_or_path, (bytes, bytearray, memoryview)):
        return bytes(model_or_path), "TFLite model (bytes)"
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        return read_bytes(path, what="TFLite model"), f"TFLite model '{path}'"
    raise InputError(
        f"{what} must be a TFLiteModel, the bytes of a .tflite file or a path, got {type(model_or_path).__name__}"
    )


def _io(model: Model, indices: tuple[int, ...]) -> list[dict]:
    tensors = model.subgraphs[0].tensors
    out = []
    for i in indices:
        t = tensors[i]
        out.append({"name": t.name, "index": i, "shape": list(t.shape), "dtype": t.dtype,
                    "scale": float(t.scale[0]) if len(t.scale) == 1 else 0.0,
                    "zero_point": int(t.zero_point[0]) if len(t.zero_point) == 1 else 0})
    return out


def tensor_labels(sub: Subgraph) -> list[str]:
    """Each tensor's name; for a stripped (unnamed) tensor, the op that makes or first reads it,
    e.g. ``CONV_2D#0.output0`` or ``CONV_2D#0.input1`` (its weights)."""
    roles: dict[int, str] = {}
    for op in sub.operators:
        for k, i in enumerate(op.outputs):
            roles.setdefault(i, f"{op.op}#{op.index}.output{k}")
    for op in sub.operators:
        for k, i in enumerate(op.inputs):
            if i >= 0:
                roles.setdefault(i, f"{op.op}#{op.index}.input{k}")
    return [t.name or roles.get(t.index, f"tensor_{t.index}") for t in sub.tensors]


def non_int8_ops(model: Model, allow_float_io: bool = False) -> list[dict]:
    """Operators (and stray tensors) that are not integer-only.

    With ``allow_float_io``, a QUANTIZE reading a float model input and a DEQUANTIZE writing a float
    model output are allowed: that is the float boundary of an int8 model converted with float I/O.
    Each entry: ``{"subgraph", "index", "op", "tensors": [[name, dtype], ...]}`` (index -1: no op).
    """
    found = []
    for s, sub in enumerate(model.subgraphs):
        labels = tensor_labels(sub)
        boundary_in = set(sub.inputs) if allow_float_io and s == 0 else set()
        boundary_out = set(sub.outputs) if allow_float_io and s == 0 else set()
        seen: set[int] = set()
        for op in sub.operators:
            used = [i for i in (*op.inputs, *op.outputs, *op.intermediates) if i >= 0]
            seen.update(used)
            if op.op == "QUANTIZE" and set(op.inputs) <= boundary_in:
                continue
            if op.op == "DEQUANTIZE" and set(op.outputs) <= boundary_out:
                continue
            bad = [sub.tensors[i] for i in dict.fromkeys(used) if sub.tensors[i].dtype not in INT8_MODEL_DTYPES]
            if bad:
                found.append({"subgraph": s, "index": op.index, "op": op.op,
                              "tensors": [[labels[t.index], t.dtype] for t in bad]})
        allowed = seen | boundary_in | boundary_out
        stray = [t for t in sub.tensors if t.index not in allowed and t.dtype not in INT8_MODEL_DTYPES]
        if stray:
            found.append({"subgraph": s, "index": -1, "op": "(no operator)",
                          "tensors": [[labels[t.index], t.dtype] for t in stray]})
    return found


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


def _guess_quantization(tensors: list[Tensor], float_io_only: bool) -> str:
    dtypes = {t.dtype for t in tensors}
    act = {t.dtype for t in tensors if not t.is_constant}
    const = {t.dtype for t in tensors if t.is_constant}
    if not dtypes & FLOAT_DTYPES or float_io_only:
        if "int16" in act:
            return "int16x8"
        return "int8" if "int8" in dtypes else "integer"
    if "float16" in const:
        return "float16"
    if "int8" in const and act & FLOAT_DTYPES:
        return "dynamic"
    if dtypes <= FLOAT_DTYPES | {"int32", "int64", "bool"}:
        return "float32"
    return "mixed"


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


@dataclasses.dataclass
class ModelInfo:
    """What :func:`inspect` found in a ``.tflite`` file. ``to_dict()`` is JSON-able."""

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

    def to_dict(self) -> dict:
        """A JSON-able dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def format_table(self) -> str:
        """A readable multi-line summary."""

        def io_line(d: dict) -> str:
            q = f" scale={d['scale']:.6g} zero_point={d['zero_point']}" if d["scale"] else ""
            return f"  {d['name'] or '(unnamed)'}: {d['dtype']} {d['shape']}{q}"

        lines = [
            f"model        {self.source}",
            f"size         {self.bytes:,} bytes ({self.gzip_bytes:,} gzip)",
            f"quantization {self.quantization}   fully int8: {'yes' if self.fully_int8 else 'no'}",
            f"sparsity     {self.sparsity:.1%} of weights are zero",
            "inputs", *map(io_line, self.inputs),
            "outputs", *map(io_line, self.outputs),
            "ops",
            *(f"  {name:<28} {count:>4}" for name, count in self.ops.items()),
            "tensor dtypes  " + ", ".join(f"{k}: {v}" for k, v in self.dtypes.items()),
        ]
        if self.weight_sparsity:
            lines.append("weight sparsity")
            lines += [f"  {name[:60]:<60} {frac:6.1%}" for name, frac in self.weight_sparsity.items()]
        if self.non_int8_ops:
            lines.append("not int8")
            lines += [f"  {o['op']} #{o['index']}: " + ", ".join(f"{n} ({d})" for n, d in o["tensors"])
                      for o in self.non_int8_ops]
        lines.append("TFLite Micro  " + ("runs every op" if not self.tflm_unsupported_ops
                                          else "cannot run: " + ", ".join(self.tflm_unsupported_ops)))
        return "\n".join(lines)


def inspect(model_or_path: Any) -> ModelInfo:
    """Read a TFLiteModel, ``.tflite`` bytes or a path without running it.

    >>> inspect(b"not a model")
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: TFLite model (bytes) is not a TFLite model: only 11 bytes (a .tflite file is far larger); the file is empty or truncated
    """
    content, source = _as_bytes(model_or_path, "inspect()'s argument")
    model = parse(content, source)
    tensors = [t for sub in model.subgraphs for t in sub.tensors]
    ops: dict[str, int] = {}
    operators = []
    labels = [tensor_labels(sub) for sub in model.subgraphs]
    for s, sub in enumerate(model.subgraphs):
        for op in sub.operators:
            ops[op.op] = ops.get(op.op, 0) + 1
            operators.append({"subgraph": s, "index": op.index, "op": op.op,
                              "inputs": [labels[s][i] if i >= 0 else None for i in op.inputs],
                              "outputs": [labels[s][i] for i in op.outputs]})
    dtypes: dict[str, int] = {}
    for t in tensors:
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + 1
    strict = non_int8_ops(model)
    sparsity, per_tensor = _weight_sparsity(model)
    return ModelInfo(
        source=source,
        bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9, mtime=0)),
        quantization=_guess_quantization(tensors, not non_int8_ops(model, allow_float_io=True)),
        ops=ops,
        operators=operators,
        tensors=[{"subgraph": s, "index": t.index, "name": labels[s][t.index], "dtype": t.dtype,
                  "shape": list(t.shape), "constant": t.is_constant}
                 for s, sub in enumerate(model.subgraphs) for t in sub.tensors],
        dtypes=dtypes,
        fully_int8=not strict and "int8" in dtypes,
        non_int8_ops=strict,
        sparsity=sparsity,
        weight_sparsity=per_tensor,
        inputs=_io(model, model.subgraphs[0].inputs),
        outputs=_io(model, model.subgraphs[0].outputs),
        tflm_unsupported_ops=_tflm_unsupported(model),
        subgraphs=len(model.subgraphs),
        metadata=[name for name, _ in model.metadata],
        signatures=list(model.signature_keys),
    )


__all__ = ["verify", "inspect", "ModelInfo", "non_int8_ops", "tensor_labels", "TFLM_BUILTIN_OPS", "FLOAT_DTYPES"]

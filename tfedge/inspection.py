"""Read a ``.tflite`` file without running it: ops, tensor dtypes, int8-ness, sparsity, where the bytes go.

:func:`verify` runs the bounds checks alone (fast): call it before handing bytes to TFLite Micro,
which trusts the file. :func:`inspect` reads every well-formed model (custom ops, every tensor type,
several subgraphs, metadata, signatures), lists what is unusual as notes, flags degenerate
quantization, predicts per op whether TFLite Micro runs it, and breaks the file's bytes down.

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
import math
from typing import Any

import numpy as np

from tfedge.flatbuffer import DEGENERATE_SCALE, Model, parse
from tfedge.tables import format_table
from tfedge.targets import tflm_only_reason
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
TFLM_BUILTIN_OPS = frozenset(
    """
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
""".split()
)
#: Custom ops the ``tflite_micro`` Python package's op resolver registers: the signal ops of its audio
#: front end, LUT decompression (``tflite_micro.compression``) and SSD post-processing. Measured once by
#: loading a one-op model per name in the pinned wheel (``ethos-u`` is not registered: no NPU driver).
TFLM_CUSTOM_OPS = frozenset(
    """
SignalDelay SignalEnergy SignalFftAutoScale SignalFilterBank SignalFilterBankLog
SignalFilterBankSpectralSubtraction SignalFilterBankSquareRoot SignalFramer SignalIrfft SignalOverlapAdd
SignalPCAN SignalRfft SignalStacker SignalWindow TFLM_DECODE TFLite_Detection_PostProcess
""".split()
)
#: Dtypes no stock TFLite Micro kernel reads (it has no float16 / bfloat16 / float64 math).
TFLM_UNSUPPORTED_DTYPES = frozenset({"float16", "bfloat16", "float64", "complex64", "complex128"})
#: Builtin ops whose TFLite Micro kernels also take uint8 (elsewhere it dropped uint8 for int8).
TFLM_UINT8_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"})
#: Builtin ops that take raw integers: an integer tensor without quantization parameters is normal there.
RAW_INTEGER_OPS = frozenset(
    {
        "CAST",
        "RESHAPE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "GATHER",
        "GATHER_ND",
        "SHAPE",
        "FILL",
        "ARG_MAX",
        "ARG_MIN",
        "CUMSUM",
        "EMBEDDING_LOOKUP",
        "SLICE",
        "STRIDED_SLICE",
        "BROADCAST_TO",
        "BROADCAST_ARGS",
        "ZEROS_LIKE",
        "SELECT_V2",
        "PACK",
        "UNPACK",
    }
)
#: The LUT decompression op of ``tflite_micro.compression`` (inputs: packed indices, value tables, ...).
LUT_DECODE_OP = "CUSTOM:TFLM_DECODE"


def verify(content: bytes, source: str = "model") -> None:
    """Check that ``content`` is a structurally sound TFLite flatbuffer; raise ``InputError`` if not.

    Checks the ``TFL3`` identifier, the size cap, that every offset, length and tensor / buffer /
    opcode / subgraph index is in range (no overflow), non-negative dims, constant data as long as
    its shape says, per-channel scale counts, and the shapes, element sizes, strides and axes the
    common kernels index memory by: what would make a reader or kernel go out of bounds. What is
    only unusual (custom ops, integer tensors without quantization, degenerate scales) passes: see
    :func:`inspect`'s notes. Never runs the model; takes about a millisecond for a small model.

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


def _op_label(op) -> str:
    return f"{op.op}#{op.index}"


def _degenerate(model: Model, labels: list[list[str]]) -> list[dict]:
    """Activation tensors whose scale is non-finite, not positive or below ``DEGENERATE_SCALE``, each with the
    ops that read and write it (constants are left out: a tiny bias scale is the normal product of two scales)."""
    found = []
    for s, sub in enumerate(model.subgraphs):
        readers: dict[int, list[str]] = {}
        writers: dict[int, str] = {}
        for op in sub.operators:
            for i in op.inputs:
                if i >= 0:
                    readers.setdefault(i, []).append(_op_label(op))
            for i in op.outputs:
                writers.setdefault(i, _op_label(op))
        for t in sub.tensors:
            bad = [
                v for v in t.scale if not (math.isfinite(v) and v > 0) or (not t.is_constant and v < DEGENERATE_SCALE)
            ]
            if not bad:
                continue
            name = labels[s][t.index]
            read_by = readers.get(t.index, [])
            where = (
                f"read by {', '.join(read_by)}"
                if read_by
                else f"written by {writers[t.index]}"
                if t.index in writers
                else "used by no op"
            )
            message = (
                f"tensor '{name}' ({where}) has quantization scale {bad[0]:.3g}: degenerate; likely cause: "
                "the calibration data never exercised that layer, so its range collapsed: calibrate with "
                "representative data that reaches it (TFLite Micro and LiteRT's reference kernels abort on "
                "such scales)"
            )
            found.append(
                {
                    "subgraph": s,
                    "tensor": t.index,
                    "name": name,
                    "scale": float(bad[0]),
                    "read_by": read_by,
                    "written_by": writers.get(t.index),
                    "message": message,
                }
            )
    return found


def _tflm_prediction(model: Model, labels: list[list[str]], degenerate: list[dict]) -> list[dict]:
    """Per op: ``yes``, ``no`` or ``risk`` on TFLite Micro with the reason, from the ops its Python package
    registers (:data:`TFLM_BUILTIN_OPS`, :data:`TFLM_CUSTOM_OPS`) and what its kernels read."""
    risky = {(d["subgraph"], op): d for d in degenerate for op in (*d["read_by"], d["written_by"]) if op}
    out = []
    for s, sub in enumerate(model.subgraphs):
        for op in sub.operators:
            custom = op.op.removeprefix("CUSTOM:") if op.op.startswith("CUSTOM:") else None
            tensors = [sub.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
            odd = sorted({t.dtype for t in tensors} & TFLM_UNSUPPORTED_DTYPES)
            verdict, reason = "yes", None
            if custom is not None and custom not in TFLM_CUSTOM_OPS:
                verdict, reason = "no", f"custom op '{custom}' is not registered in TFLite Micro"
            elif custom is None and op.op not in TFLM_BUILTIN_OPS:
                verdict, reason = "no", f"TFLite Micro has no {op.op} kernel"
            elif odd:
                verdict, reason = "no", f"no TFLite Micro kernel reads {', '.join(odd)}"
            elif any(sub.tensors[i].sparse for i in op.inputs if i >= 0):
                verdict, reason = "no", "sparse tensor"
            elif custom is None and op.op not in TFLM_UINT8_OPS and any(t.dtype == "uint8" for t in tensors):
                verdict, reason = "no", "uint8 tensors: TFLite Micro's kernels are int8, int16 or float"
            elif (s, _op_label(op)) in risky:
                d = risky[(s, _op_label(op))]
                verdict, reason = "risk", f"tensor '{d['name']}' has a degenerate scale {d['scale']:.3g}"
            elif custom is None and op.op not in RAW_INTEGER_OPS:
                bare = [t for t in tensors if t.dtype in ("int8", "uint8", "int16") and not t.scale]
                if bare:
                    verdict, reason = (
                        "risk",
                        (f"{bare[0].dtype} tensor '{labels[s][bare[0].index]}' has no quantization parameters"),
                    )
            out.append({"subgraph": s, "index": op.index, "op": op.op, "tflm": verdict, "reason": reason})
    return out


def _tflm_unsupported(prediction: list[dict]) -> list[str]:
    """The historical ``tflm_unsupported_ops`` list: ``OP`` or ``OP (why)`` for each op predicted not to run."""
    out: dict[str, None] = {}
    for p in prediction:
        if p["tflm"] != "no":
            continue
        reason = p["reason"] or ""
        if reason.startswith("no TFLite Micro kernel reads "):
            out[f"{p['op']} ({reason.removeprefix('no TFLite Micro kernel reads ')})"] = None
        elif reason == "sparse tensor":
            out[f"{p['op']} (sparse tensor)"] = None
        elif reason.startswith("uint8"):
            out[f"{p['op']} (uint8)"] = None
        else:
            out[p["op"]] = None
    return list(out)


# ----------------------------------------------------------------------------------------------
# where the bytes go

#: Rows of :attr:`ModelInfo.bytes_breakdown`, in order, with their labels in the table.
BREAKDOWN_ROWS = {
    "weights": "weights",
    "biases": "biases",
    "constants": "other constants (shapes, axes, tables)",
    "lut_indices": "LUT packed indices",
    "lut_tables": "LUT value tables",
    "unused_buffers": "data no tensor uses",
    "scales": "quantization scales",
    "zero_points": "quantization zero points",
    "min_max": "quantization min/max",
    "quantization_tables": "quantization tables",
    "tensors": "tensor structure (types, shapes)",
    "operators": "op structure (codes, inputs, options)",
    "graph": "graph structure (model, subgraphs, buffer tables)",
    "names": "tensor and subgraph names",
    "metadata": "metadata and description",
    "signatures": "signatures",
    "padding": "alignment padding",
    "other": "other (unread fields)",
}
_PART_ROWS = {
    "header": "graph",
    "Model": "graph",
    "Model.Subgraphs": "graph",
    "SubGraph.Inputs": "graph",
    "SubGraph.Outputs": "graph",
    "Model.Buffers": "graph",
    "Buffer.Data": "unused_buffers",
    "SubGraph.Tensors": "tensors",
    "Tensor.Shape": "tensors",
    "Tensor.ShapeSignature": "tensors",
    "Tensor.Sparsity": "tensors",
    "Tensor.Quantization": "quantization_tables",
    "QuantizationParameters.Details": "quantization_tables",
    "QuantizationParameters.Scale": "scales",
    "QuantizationParameters.ZeroPoint": "zero_points",
    "QuantizationParameters.Min": "min_max",
    "QuantizationParameters.Max": "min_max",
    "Model.OperatorCodes": "operators",
    "OperatorCode.CustomCode": "operators",
    "SubGraph.Operators": "operators",
    "Tensor.Name": "names",
    "SubGraph.Name": "names",
    "Model.Description": "metadata",
    "Model.Metadata": "metadata",
    "Metadata.Name": "metadata",
    "Model.MetadataBuffer": "metadata",
    "Model.SignatureDefs": "signatures",
}
# bias input position of the ops that have one
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3, "CONV_3D": 2}


def _part_row(part: str) -> str:
    row = _PART_ROWS.get(part)
    if row is not None:
        return row
    table = part.partition(".")[0]
    if table in ("Operator", "OperatorCode") or table.endswith(("Options", "Options2")):
        return "operators"
    if table in ("SignatureDef", "TensorMap"):
        return "signatures"
    return "other"


def _buffer_rows(model: Model) -> dict[int, str]:
    """What each data buffer holds: weights, biases, other constants, LUT indices / tables, metadata."""
    rows: dict[int, str] = {}
    for name_buffer in model.metadata:
        rows[name_buffer[1]] = "metadata"
    for sub in model.subgraphs:
        for op in sub.operators:
            for k, i in enumerate(op.inputs):
                if i < 0 or not sub.tensors[i].is_constant:
                    continue
                t = sub.tensors[i]
                if op.op == LUT_DECODE_OP:
                    row = "lut_indices" if k % 2 == 0 else "lut_tables"
                elif _BIAS_INPUT.get(op.op) == k:
                    row = "biases"
                elif t.dtype in ("int32", "int64", "bool", "string") and len(t.shape) <= 1:
                    row = "constants"
                else:
                    row = "weights"
                rows.setdefault(t.buffer, row)
        for t in sub.tensors:
            if t.is_constant:
                rows.setdefault(t.buffer, "constants")
    return rows


def bytes_breakdown(model: Model) -> dict[str, int]:
    """Bytes of the file by what they hold (:data:`BREAKDOWN_ROWS`); the values add up to the file size.

    ``model`` must come from ``parse(content, layout=True)``. Bytes no read part covers are alignment
    padding when zero, ``other`` (fields tfedge does not read, e.g. sparsity details) otherwise.
    """
    if not model.layout:
        raise ValueError("bytes_breakdown needs parse(content, layout=True)")
    codes = {row: k + 1 for k, row in enumerate(BREAKDOWN_ROWS)}
    buffer_rows = _buffer_rows(model)
    owner = np.zeros(model.size, np.uint8)
    for start, size, part in model.layout:
        if part.startswith("buffer:"):
            row = buffer_rows.get(int(part[7:]), "unused_buffers")
        else:
            row = _part_row(part)
        owner[start : start + size] = codes[row]
    content = np.frombuffer(model.content, np.uint8)
    unclaimed = owner == 0
    owner[unclaimed & (content == 0)] = codes["padding"]
    owner[owner == 0] = codes["other"]
    counts = np.bincount(owner, minlength=len(codes) + 1)
    return {row: int(counts[code]) for row, code in codes.items()}


def _finite(value: Any) -> Any:
    """The same structure with non-finite floats as strings (``"nan"``, ``"inf"``): strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _scale_cell(t: dict) -> str | None:
    scale = t["scale"]
    if isinstance(scale, float) and not math.isfinite(scale):
        return str(scale)
    return f"{scale:.6g}" if scale else None


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What :func:`inspect` found in a ``.tflite`` file. ``to_dict()`` is JSON-able (strict JSON).

    ``inputs`` / ``outputs`` hold :meth:`TensorInfo.to_dict` of the main subgraph's tensors. ``notes``
    lists what is well-formed but unusual (each runtime decides for itself); ``tflm`` predicts, per op,
    whether TFLite Micro runs it (``yes`` / ``no`` / ``risk`` and why); ``bytes_breakdown`` says where the
    file's bytes go (:data:`BREAKDOWN_ROWS`, adding up to ``bytes``).
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
    notes: list[dict]
    custom_ops: list[str]
    tflm: dict[str, Any]
    degenerate_scales: list[dict]
    bytes_breakdown: dict[str, int]
    metadata_entries: list[dict]
    signature_defs: list[dict]
    subgraph_details: list[dict]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (non-finite scales as the strings ``"nan"`` / ``"inf"``)."""
        return json.loads(json.dumps(_finite(dataclasses.asdict(self))))

    def tflm_summary(self) -> str:
        """One line: whether TFLite Micro is predicted to run every op, and if not, which and why."""
        verdict = self.tflm["prediction"]
        if verdict == "runs":
            return "predicted to run every op (registered kernels, supported types)"
        ops = [o for o in self.tflm["ops"] if o["tflm"] == ("no" if verdict == "cannot run" else "risk")]
        listed = "; ".join(dict.fromkeys(f"{o['op']}#{o['index']}: {o['reason']}" for o in ops[:4]))
        more = f" (+{len(ops) - 4} more)" if len(ops) > 4 else ""
        return f"{'cannot run' if verdict == 'cannot run' else 'may fail'}: {listed}{more}"

    def format_table(self) -> str:
        """A readable multi-line summary: a header, then one table per section."""
        lines = [
            f"model        {self.source}",
            f"size         {self.bytes:,} bytes ({self.gzip_bytes:,} gzip)",
            f"quantization {self.quantization}   fully int8: {'yes' if self.fully_int8 else 'no'}",
            f"sparsity     {self.sparsity:.1%} of weights are zero",
        ]
        if self.subgraphs > 1:
            lines.append(
                "subgraphs    "
                + ", ".join(
                    f"{d['index']}: {d['name'] or '(unnamed)'} ({d['operators']} ops)" for d in self.subgraph_details
                )
            )
        if self.metadata_entries:
            lines.append("metadata     " + ", ".join(f"{m['name']} ({m['bytes']:,} B)" for m in self.metadata_entries))
        if self.signature_defs:
            lines.append(
                "signatures   "
                + ", ".join(
                    f"{d['key'] or '(no key)'}({', '.join(d['inputs'])}) -> {', '.join(d['outputs'])}"
                    for d in self.signature_defs
                )
            )
        lines += [
            "",
            format_table(
                [
                    [
                        role,
                        t["name"] or "(unnamed)",
                        t["dtype"],
                        str(t["shape"]),
                        _scale_cell(t),
                        t["zero_point"] if t["scale"] else None,
                    ]
                    for role, tensors in (("input", self.inputs), ("output", self.outputs))
                    for t in tensors
                ],
                ["tensor", "name", "dtype", "shape", "scale", "zero point"],
            ),
            "",
            format_table(self._op_rows(), ["op", "count", "TFLite Micro (predicted)"]),
            "",
            "tensor dtypes  " + ", ".join(f"{k}: {v}" for k, v in self.dtypes.items()),
        ]
        if self.weight_sparsity:
            lines += [
                "",
                format_table(
                    [[name[:60], f"{frac:.1%}"] for name, frac in self.weight_sparsity.items()],
                    ["weight tensor", "zeros"],
                ),
            ]
        if self.non_int8_ops:
            rows = [[o["op"], o["index"], ", ".join(f"{n} ({d})" for n, d in o["tensors"])] for o in self.non_int8_ops]
            lines += ["", format_table(rows, ["not int8", "#", "tensors"])]
        rows = [[BREAKDOWN_ROWS[k], f"{v:,}", f"{v / self.bytes:.1%}"] for k, v in self.bytes_breakdown.items() if v]
        rows.append(["total", f"{self.bytes:,}", "100.0%"])
        lines += ["", format_table(rows, ["where the bytes go", "bytes", "share"])]
        if self.degenerate_scales:
            lines += ["", "degenerate quantization:"] + [f"  - {d['message']}" for d in self.degenerate_scales]
        other = [n for n in self.notes if n["kind"] != "degenerate_scale"]
        if other:
            shown = other[:12]
            lines += ["", "notes (well-formed but unusual; each runtime decides):"]
            lines += [f"  - {n['message']}" for n in shown]
            if len(other) > len(shown):
                lines.append(f"  ... and {len(other) - len(shown)} more (see --json)")
        lines += ["", "TFLite Micro  " + self.tflm_summary()]
        return "\n".join(lines)

    def _op_rows(self) -> list[list]:
        rows: dict[tuple[str, str], list] = {}
        for o in self.tflm["ops"]:
            cell = "yes" if o["tflm"] == "yes" else f"{'no' if o['tflm'] == 'no' else 'risk'}: {o['reason']}"
            key = (o["op"], cell)
            if key not in rows:
                rows[key] = [o["op"], 0, cell[:90]]
            rows[key][1] += 1
        return list(rows.values())


def _operators(model: Model, labels: list[list[str]], prediction: list[dict]) -> list[dict]:
    tflm = {(p["subgraph"], p["index"]): p for p in prediction}
    return [
        {
            "subgraph": s,
            "index": op.index,
            "op": op.op,
            "inputs": [labels[s][i] if i >= 0 else None for i in op.inputs],
            "outputs": [labels[s][i] for i in op.outputs],
            "tflm": tflm[(s, op.index)]["tflm"],
            "tflm_reason": tflm[(s, op.index)]["reason"],
        }
        for s, sub in enumerate(model.subgraphs)
        for op in sub.operators
    ]


def _count(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def _custom_op_notes(model: Model) -> list[dict]:
    notes = []
    for code in model.opcodes:
        if code.custom_code is None:
            if code.name.startswith("UNKNOWN_OP_"):
                notes.append(
                    {
                        "kind": "unknown_op",
                        "message": f"op code {code.builtin_code} is not a builtin op this "
                        "schema knows (a newer converter's?)",
                        "subgraph": -1,
                        "operator": -1,
                        "tensor": -1,
                    }
                )
            continue
        known = (
            "TFLite Micro registers it" if code.custom_code in TFLM_CUSTOM_OPS else "TFLite Micro does not register it"
        )
        notes.append(
            {
                "kind": "custom_op",
                "message": f"custom op '{code.custom_code}': {known}; LiteRT runs it only "
                "if the application registers it",
                "subgraph": -1,
                "operator": -1,
                "tensor": -1,
            }
        )
    return notes


def inspect(model_or_path: ModelSource) -> ModelInfo:
    """Read a TFLiteModel, ``.tflite`` bytes or a path without running it.

    >>> inspect(b"not a model")
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: TFLite model (bytes) is not a TFLite model: only 11 bytes ...; the file is empty ...
    """
    content, source = model_bytes(model_or_path, "inspect()'s argument")
    model = parse(content, source, layout=True)
    labels = [tensor_labels(sub) for sub in model.subgraphs]
    dtypes = _count([t.dtype for sub in model.subgraphs for t in sub.tensors])
    strict = non_int8_ops(model)
    sparsity, per_tensor = _weight_sparsity(model)
    degenerate = _degenerate(model, labels)
    prediction = _tflm_prediction(model, labels, degenerate)
    verdicts = {p["tflm"] for p in prediction}
    notes = [dataclasses.asdict(n) for n in model.notes] + _custom_op_notes(model)
    notes += [
        {
            "kind": "degenerate_scale",
            "message": d["message"],
            "subgraph": d["subgraph"],
            "operator": -1,
            "tensor": d["tensor"],
        }
        for d in degenerate
    ]
    only_tflm = tflm_only_reason(model, source)
    if only_tflm:
        notes.append({"kind": "tflm_only", "message": only_tflm, "subgraph": -1, "operator": -1, "tensor": -1})
    main = model.subgraphs[0]
    return ModelInfo(
        source=source,
        bytes=len(content),
        gzip_bytes=gzip_size(content),
        quantization=guess_quantization(model),
        ops=_count([op.op for sub in model.subgraphs for op in sub.operators]),
        operators=_operators(model, labels, prediction),
        tensors=[
            {
                "subgraph": s,
                "index": t.index,
                "name": labels[s][t.index],
                "dtype": t.dtype,
                "shape": list(t.shape),
                "constant": t.is_constant,
            }
            for s, sub in enumerate(model.subgraphs)
            for t in sub.tensors
        ],
        dtypes=dtypes,
        fully_int8=not strict and "int8" in dtypes,
        non_int8_ops=strict,
        sparsity=sparsity,
        weight_sparsity=per_tensor,
        inputs=[TensorInfo.from_tensor(main.tensors[i]).to_dict() for i in main.inputs],
        outputs=[TensorInfo.from_tensor(main.tensors[i]).to_dict() for i in main.outputs],
        tflm_unsupported_ops=_tflm_unsupported(prediction),
        subgraphs=len(model.subgraphs),
        metadata=[name for name, _ in model.metadata],
        signatures=list(model.signature_keys),
        notes=notes,
        custom_ops=[c.custom_code for c in model.opcodes if c.custom_code is not None],
        tflm={
            "prediction": "cannot run" if "no" in verdicts else "at risk" if "risk" in verdicts else "runs",
            "ops": prediction,
        },
        degenerate_scales=degenerate,
        bytes_breakdown=bytes_breakdown(model),
        metadata_entries=[{"name": name, "buffer": b, "bytes": model.buffers[b][1]} for name, b in model.metadata],
        signature_defs=[
            {
                "key": sig.key,
                "subgraph": sig.subgraph,
                "inputs": [n for n, _ in sig.inputs],
                "outputs": [n for n, _ in sig.outputs],
            }
            for sig in model.signatures
        ],
        subgraph_details=[
            {
                "index": s,
                "name": sub.name,
                "tensors": len(sub.tensors),
                "operators": len(sub.operators),
                "inputs": len(sub.inputs),
                "outputs": len(sub.outputs),
            }
            for s, sub in enumerate(model.subgraphs)
        ],
    )


__all__ = [
    "verify",
    "inspect",
    "ModelInfo",
    "bytes_breakdown",
    "non_int8_ops",
    "tensor_labels",
    "TFLM_BUILTIN_OPS",
    "TFLM_CUSTOM_OPS",
    "BREAKDOWN_ROWS",
    "FLOAT_DTYPES",
    "INT8_MODEL_DTYPES",
]

"""A bounds-checked reader for the part of the TFLite flatbuffer schema tfedge needs.

The ``flatbuffers`` Python library trusts every offset it reads, and TFLite Micro does too (it
segfaults on some corrupted files). :func:`parse` checks every offset, length and index before it
is used (Python integers, so nothing overflows), caps the work at a multiple of the file size so a
crafted file cannot make it hang, and raises :class:`~tfedge.errors.InputError` naming the problem
and the source; nothing else escapes it. Beyond the structure it checks what the common kernels
(conv, depthwise, fully connected, pools, reshape, reductions, pad, concatenation, elementwise)
index memory by: shapes, element sizes, strides, axes and per-channel quantization counts, one
checker per op family (:data:`OP_CHECKERS`). "Corrupted" means only that: what would make a reader
or kernel go out of bounds. Everything well-formed but unusual (custom ops, integer tensors without
quantization, int8 -> int16 ops, an odd ``quantized_dimension``, unknown types and ops) is read and
listed in :attr:`Model.notes`; each runtime decides for itself. It does not replay every kernel's
arithmetic, so TFLite Micro still belongs in a child process. Field slots, types and defaults are not
written here by hand: each comes from the generated schema's builder functions (:func:`schema_field`),
the schema ``ai_edge_litert`` ships.

>>> from tfedge.flatbuffer import parse
>>> parse(b"\\x10\\x00\\x00\\x00NOPE" + bytes(16), source="x.tflite")
Traceback (most recent call last):
...
tfedge.errors.InputError: x.tflite is not a TFLite model: its file identifier is b'NOPE', expected b'TFL3'; ...
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import struct
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from ai_edge_litert import schema_py_generated as _schema  # fast, TensorFlow-free import

from tfedge import files as _files
from tfedge.errors import InputError

IDENTIFIER = b"TFL3"
#: Size cap of :func:`parse`; None: ``tfedge.files.MAX_FILE_BYTES`` as it is when parse runs (raising it works).
MAX_FILE_BYTES: int | None = None
SCHEMA_VERSION = 3
#: Largest tensor (bytes) a model may declare; TFLite and TFLite Micro size tensors with 32-bit ints.
MAX_TENSOR_BYTES = 2**31 - 1
#: An activation scale below this (or a non-finite / non-positive scale) is degenerate: the layer's range
#: collapsed, usually because the calibration data never exercised it. Read, and flagged by ``inspect``.
DEGENERATE_SCALE = 1e-6


# ----------------------------------------------------------------------------------------------
# field slots, read from the generated schema

#: struct format of each scalar kind the generated builders prepend (``Prepend<Kind>Slot``).
_SCALAR_FORMATS = {
    "Bool": "<B",
    "Int8": "<b",
    "Uint8": "<B",
    "Int16": "<h",
    "Uint16": "<H",
    "Int32": "<i",
    "Uint32": "<I",
    "Int64": "<q",
    "Uint64": "<Q",
    "Float32": "<f",
    "Float64": "<d",
}


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a schema table: its vtable slot, and for a scalar its struct format and default."""

    table: str
    name: str
    slot: int
    fmt: str | None  # None: an offset (table, vector, string)
    default: Any


class _SlotRecorder:
    """Stands in for a ``flatbuffers.Builder``: records the ``Prepend*Slot`` call a generated
    ``<Table>Add<Field>`` function makes, which names the field's slot, type and default."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, tuple]] = []

    def __getattr__(self, method: str) -> Callable[..., None]:
        def record(slot: int, *args: Any) -> None:
            self.calls.append((method, slot, args))

        return record


def schema_field(table: str, name: str) -> Field:
    """The slot, format and default of ``table.name`` as the generated ``<table>Add<name>`` builder writes it.

    >>> schema_field("Conv2DOptions", "DilationWFactor")
    Field(table='Conv2DOptions', name='DilationWFactor', slot=4, fmt='<i', default=1)
    """
    recorder = _SlotRecorder()
    getattr(_schema, f"{table}Add{name}")(recorder, 0)
    ((method, slot, args),) = recorder.calls
    kind = method.removeprefix("Prepend").removesuffix("Slot")
    fmt = _SCALAR_FORMATS.get(kind)
    return Field(table, name, slot, fmt, args[-1] if fmt else None)


@functools.cache
def option_vectors(table: str) -> tuple[tuple[Field, int], ...]:
    """The vector fields of an options table with their element sizes, from the generated
    ``<table>Start<Field>Vector`` builders (``ReshapeOptions.NewShape``: 4-byte ints).

    >>> [(f.name, size) for f, size in option_vectors("SqueezeOptions")]
    [('SqueezeDims', 4)]
    """
    prefix, out = f"{table}Start", []
    for attr in sorted(vars(_schema)):
        name = attr[len(prefix) : -len("Vector")]
        if attr.startswith(prefix) and attr.endswith("Vector") and hasattr(_schema, f"{table}Add{name}"):
            recorder = _SlotRecorder()
            getattr(_schema, attr)(recorder, 0)
            ((_method, elem_size, _args),) = recorder.calls  # StartVector(elem_size, count, alignment)
            out.append((schema_field(table, name), elem_size))
    return tuple(out)


def _fields(table: str, names: str) -> dict[str, Field]:
    return {name: schema_field(table, name) for name in names.split()}


MODEL = _fields("Model", "Version OperatorCodes Subgraphs Description Buffers MetadataBuffer Metadata SignatureDefs")
OPERATOR_CODE = _fields("OperatorCode", "DeprecatedBuiltinCode CustomCode Version BuiltinCode")
BUFFER = _fields("Buffer", "Data Offset Size")
SUBGRAPH = _fields("SubGraph", "Tensors Inputs Outputs Operators Name")
TENSOR = _fields("Tensor", "Shape Type Buffer Name Quantization IsVariable Sparsity ShapeSignature")
QUANTIZATION = _fields("QuantizationParameters", "Min Max Scale ZeroPoint DetailsType Details QuantizedDimension")
OPERATOR = _fields(
    "Operator",
    "OpcodeIndex Inputs Outputs BuiltinOptionsType BuiltinOptions CustomOptions "
    "MutatingVariableInputs Intermediates LargeCustomOptionsOffset LargeCustomOptionsSize "
    "BuiltinOptions2Type BuiltinOptions2",
)
METADATA = _fields("Metadata", "Name Buffer")
SIGNATURE = _fields("SignatureDef", "Inputs Outputs SignatureKey SubgraphIndex")
TENSOR_MAP = _fields("TensorMap", "Name TensorIndex")


def _enum_names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


TENSOR_TYPES: dict[int, str] = {code: name.lower() for code, name in _enum_names(_schema.TensorType).items()}
OP_NAMES: dict[int, str] = _enum_names(_schema.BuiltinOperator)
CUSTOM_CODE = _schema.BuiltinOperator.CUSTOM
_OPTION_TABLES = _enum_names(_schema.BuiltinOptions)
_OPTION2_TABLES = _enum_names(_schema.BuiltinOptions2)

# bits per element; 0 = variable size (strings, resources, variants)
_BITS = {
    "float32": 32,
    "float16": 16,
    "int32": 32,
    "uint8": 8,
    "int64": 64,
    "string": 0,
    "bool": 8,
    "int16": 16,
    "complex64": 64,
    "int8": 8,
    "float64": 64,
    "complex128": 128,
    "uint64": 64,
    "resource": 0,
    "variant": 0,
    "uint32": 32,
    "uint16": 16,
    "int4": 4,
    "bfloat16": 16,
    "int2": 2,
    "uint4": 4,
    "float8_e4m3fn": 8,
    "float8_e5m2": 8,
}
_ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
# builtin options whose fields are subgraph indices: options type -> fields
_SUBGRAPH_FIELDS = {
    _schema.BuiltinOptions.IfOptions: (
        schema_field("IfOptions", "ThenSubgraphIndex"),
        schema_field("IfOptions", "ElseSubgraphIndex"),
    ),
    _schema.BuiltinOptions.WhileOptions: (
        schema_field("WhileOptions", "CondSubgraphIndex"),
        schema_field("WhileOptions", "BodySubgraphIndex"),
    ),
    _schema.BuiltinOptions.CallOnceOptions: (schema_field("CallOnceOptions", "InitSubgraphIndex"),),
}


def _options(table: str, names: str) -> tuple[int, tuple[Field, ...]]:
    return getattr(_schema.BuiltinOptions, table), tuple(schema_field(table, n) for n in names.split())


_CONV = "StrideW StrideH DilationWFactor DilationHFactor"
_POOL = _options("Pool2DOptions", "StrideW StrideH FilterWidth FilterHeight")
# ops that divide by strides / dilations / window sizes: options type, fields that must be >= 1
_WINDOW_OPTIONS = {
    "CONV_2D": _options("Conv2DOptions", _CONV),
    "DEPTHWISE_CONV_2D": _options("DepthwiseConv2DOptions", _CONV),
    "AVERAGE_POOL_2D": _POOL,
    "MAX_POOL_2D": _POOL,
    "L2_POOL_2D": _POOL,
}
_REDUCE_OPS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL"})
_PAD_OPS = frozenset({"PAD", "PADV2", "MIRROR_PAD"})
# options the shape checks read: op -> (options type, ((param name, field), ...))
_PARAM_OPTIONS = {
    "CONCATENATION": (
        _schema.BuiltinOptions.ConcatenationOptions,
        (("axis", schema_field("ConcatenationOptions", "Axis")),),
    ),
    "DEPTHWISE_CONV_2D": (
        _schema.BuiltinOptions.DepthwiseConv2DOptions,
        (("depth_multiplier", schema_field("DepthwiseConv2DOptions", "DepthMultiplier")),),
    ),
    **{
        op: (_schema.BuiltinOptions.ReducerOptions, (("keep_dims", schema_field("ReducerOptions", "KeepDims")),))
        for op in _REDUCE_OPS
    },
}
# ops whose output has the shape and dtype of their first input
_SAME_SHAPE_OPS = frozenset(
    """
ABS CEIL COS ELU EXP FLOOR HARD_SWISH L2_NORMALIZATION LEAKY_RELU LOG LOGISTIC LOG_SOFTMAX NEG RELU
RELU6 RELU_N1_TO_1 RELU_0_TO_1 ROUND RSQRT SIN SOFTMAX SQRT SQUARE TANH ZEROS_LIKE
""".split()
)
_CAST_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "CAST"})  # same shape, another dtype
# ops that copy their input's bytes into the output: element sizes must match
_COPY_OPS = frozenset({"RESHAPE", "CONCATENATION", "PAD", "PADV2", "MIRROR_PAD"})
# the quantized integer types kernels mix (int8 -> int16 SOFTMAX, 16x8 ops)
_INTEGER_QUANTIZED = frozenset({"int8", "uint8", "int16"})
_BROADCAST_OPS = frozenset(
    """
ADD SUB MUL DIV MAXIMUM MINIMUM SQUARED_DIFFERENCE FLOOR_DIV FLOOR_MOD POW
""".split()
)


@dataclasses.dataclass(frozen=True)
class Note:
    """Something well-formed but unusual in a model, which each runtime may accept or refuse for itself.

    ``kind`` is a short key (``no_quantization``, ``mixed_dtypes``, ``quantized_dimension``, ``zero_points``,
    ``scale_count``, ``per_channel``, ``reshape_shape``, ``unknown_type``); ``subgraph`` / ``operator`` /
    ``tensor`` locate it (-1: not one). ``tfedge.inspect`` adds ``custom_op``, ``unknown_op`` and
    ``degenerate_scale``.
    """

    kind: str
    message: str
    subgraph: int = -1
    operator: int = -1
    tensor: int = -1


@dataclasses.dataclass(frozen=True)
class Signature:
    """A signature def: its key, subgraph, and (name, tensor index) of its inputs and outputs."""

    key: str
    subgraph: int
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph, as stored in the file."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None
    buffer: int
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int
    is_variable: bool
    sparse: bool
    data_size: int  # bytes of constant data (0: not a constant)

    @property
    def is_constant(self) -> bool:
        return self.data_size > 0


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator: its op name (``CONV_2D``, ``CUSTOM:Name``) and tensor indices (-1 = absent)."""

    index: int
    opcode_index: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...]
    params: tuple[tuple[str, int], ...] = ()  # the options the shape checks need (axis, keep_dims, ...)

    def param(self, name: str, default: int = 0) -> int:
        return dict(self.params).get(name, default)


@dataclasses.dataclass(frozen=True)
class Subgraph:
    name: str
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: tuple[Operator, ...]


@dataclasses.dataclass(frozen=True)
class OpCode:
    builtin_code: int
    name: str  # builtin name, or "CUSTOM:<custom_code>"
    custom_code: str | None
    version: int


@dataclasses.dataclass(frozen=True)
class Model:
    """A parsed, structurally checked TFLite model. ``buffers`` holds (start, size) of each data block.

    ``notes`` list what is well-formed but unusual (see :class:`Note`); ``layout`` holds, when
    ``parse(..., layout=True)`` asked for it, ``(start, size, part)`` of every table, vtable, vector and
    string (``part``: ``"Table.Field"`` that points at it, ``"Model"``, or ``"buffer:K"`` for buffer data).
    """

    size: int
    version: int
    description: str
    opcodes: tuple[OpCode, ...]
    subgraphs: tuple[Subgraph, ...]
    buffers: tuple[tuple[int, int], ...]
    metadata: tuple[tuple[str, int], ...]
    signature_keys: tuple[str, ...]
    content: bytes = dataclasses.field(repr=False)
    notes: tuple[Note, ...] = ()
    signatures: tuple[Signature, ...] = ()
    layout: tuple[tuple[int, int, str], ...] = dataclasses.field(default=(), repr=False)

    def buffer_data(self, index: int) -> memoryview:
        """The bytes of buffer ``index`` (empty for tensors without constant data)."""
        start, size = self.buffers[index]
        return memoryview(self.content)[start : start + size]


class _Reader:
    __slots__ = ("data", "n", "source", "budget", "notes", "spans", "per_channel")

    def __init__(self, data: bytes, source: str, layout: bool = False):
        self.data = data
        self.n = len(data)
        self.source = source
        self.notes: list[Note] = []
        # (subgraph, tensor) -> a per-channel quantization that a builtin kernel would index out of bounds
        self.per_channel: dict[tuple[int, int], str] = {}
        # (start, size, part) of every table, vtable, vector and string read, when the layout is asked for
        self.spans: list[tuple[int, int, str]] | None = [] if layout else None
        # Legitimate files read each element about once; aliased offsets in a crafted file must
        # not turn a small file into hours of work.
        self.budget = 2 * self.n + 65536

    def fail(self, problem: str) -> NoReturn:
        raise InputError(
            f"{self.source} is not a valid TFLite model: {problem}; the file is truncated or corrupted: "
            "convert the model again or copy the file again"
        )

    def spend(self, count: int, what: str) -> None:
        self.budget -= count + 1
        if self.budget < 0:
            self.fail(f"{what} re-reads the same bytes far more often than a real model does")

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            self.fail(f"{what} at byte {pos} (+{size} bytes) lies outside the {self.n:,}-byte file")

    def aligned(self, pos: int, align: int, what: str) -> None:
        if pos % align:
            self.fail(f"{what} at byte {pos} is not {align}-byte aligned")

    def unpack(self, fmt: str, pos: int, what: str):
        size = struct.calcsize(fmt)
        self.need(pos, size, what)
        return struct.unpack_from(fmt, self.data, pos)[0]

    def table(self, pos: int, what: str, part: str = "Model") -> _Table:
        return _Table(self, pos, what, part)

    def span(self, start: int, size: int, part: str) -> None:
        if self.spans is not None and size > 0:
            self.spans.append((start, size, part))

    def note(self, kind: str, message: str, subgraph: int = -1, operator: int = -1, tensor: int = -1) -> None:
        self.notes.append(Note(kind, message, subgraph, operator, tensor))


class _Table:
    __slots__ = ("r", "pos", "vt", "nfields", "size", "what")

    def __init__(self, r: _Reader, pos: int, what: str, part: str):
        r.spend(1, what)
        r.need(pos, 4, what)
        r.aligned(pos, 4, what)
        vt = pos - r.unpack("<i", pos, what)
        r.need(vt, 4, f"{what} vtable")
        r.aligned(vt, 2, f"{what} vtable")
        vsize = r.unpack("<H", vt, f"{what} vtable")
        tsize = r.unpack("<H", vt + 2, f"{what} vtable")
        if vsize < 4 or vsize % 2:
            r.fail(f"{what} vtable at byte {vt} has an impossible size {vsize}")
        r.need(vt, vsize, f"{what} vtable")
        if tsize < 4:
            r.fail(f"{what} at byte {pos} declares an impossible size {tsize}")
        r.need(pos, tsize, what)
        self.r, self.pos, self.vt, self.size, self.what = r, pos, vt, tsize, what
        self.nfields = (vsize - 4) // 2
        r.span(vt, vsize, part)
        r.span(pos, tsize, part)

    def _field(self, slot: int, size: int) -> int | None:
        if slot >= self.nfields:
            return None
        off = self.r.unpack("<H", self.vt + 4 + 2 * slot, f"{self.what} vtable")
        if off == 0:
            return None
        if off < 4 or off + size > self.size:
            self.r.fail(
                f"{self.what} field {slot} (offset {off}, {size} bytes) lies outside its {self.size}-byte table"
            )
        pos = self.pos + off
        self.r.aligned(pos, min(size, 8), f"{self.what} field {slot}")
        return pos

    def has(self, f: Field) -> bool:
        """True when the field is present (not left at its default)."""
        return self._field(f.slot, 4 if f.fmt is None else struct.calcsize(f.fmt)) is not None

    def scalar(self, f: Field) -> Any:
        """A scalar field's value, or the schema's default when absent."""
        assert f.fmt is not None, f"{f.table}.{f.name} is not a scalar"
        pos = self._field(f.slot, struct.calcsize(f.fmt))
        return f.default if pos is None else self.r.unpack(f.fmt, pos, f"{self.what} field {f.slot}")

    def _ref(self, f: Field, what: str) -> int | None:
        pos = self._field(f.slot, 4)
        if pos is None:
            return None
        target = pos + self.r.unpack("<I", pos, what)
        self.r.need(target, 4, what)
        return target

    def child(self, f: Field, what: str) -> _Table | None:
        target = self._ref(f, what)
        return None if target is None else _Table(self.r, target, what, f"{f.table}.{f.name}")

    def vector(self, f: Field, elem_size: int, what: str) -> tuple[int, int]:
        """(start, count) of a vector field; (0, 0) when absent."""
        target = self._ref(f, what)
        if target is None:
            return 0, 0
        r = self.r
        r.aligned(target, 4, what)
        count = r.unpack("<I", target, what)
        start = target + 4
        r.need(start, count * elem_size, f"{what} ({count:,} elements)")
        if elem_size > 1:
            r.aligned(start, min(elem_size, 8), what)
        r.spend(count, what)
        r.span(target, 4 + count * elem_size, f"{f.table}.{f.name}")
        return start, count

    def numbers(self, f: Field, fmt: str, what: str) -> tuple:
        """The elements of a vector of scalars (``fmt``: their struct code)."""
        start, count = self.vector(f, struct.calcsize(fmt), what)
        if not count:
            return ()
        return struct.unpack_from(f"<{count}{fmt}", self.r.data, start)

    def string(self, f: Field, what: str) -> str | None:
        target = self._ref(f, what)
        if target is None:
            return None
        start, count = self.vector(f, 1, what)
        self.r.need(start + count, 1, f"{what} terminator")
        if self.r.data[start + count] != 0:
            self.r.fail(f"{what} at byte {target} is not NUL-terminated")
        self.r.span(start + count, 1, f"{f.table}.{f.name}")
        return self.r.data[start : start + count].decode("utf-8", errors="replace")

    def tables(self, f: Field, what: str) -> list[_Table]:
        start, count = self.vector(f, 4, what)
        out = []
        for k in range(count):
            pos = start + 4 * k
            out.append(_Table(self.r, pos + self.r.unpack("<I", pos, what), f"{what}[{k}]", f"{f.table}.{f.name}"))
        return out


def _check_index(r: _Reader, value: int, limit: int, what: str, allow_minus_one: bool = False) -> None:
    if allow_minus_one and value == -1:
        return
    if not 0 <= value < limit:
        r.fail(f"{what} is {value}, out of range (0..{limit - 1})")


def _opcodes(r: _Reader, root: _Table) -> tuple[OpCode, ...]:
    codes = []
    for k, t in enumerate(root.tables(MODEL["OperatorCodes"], "operator code")):
        deprecated = t.scalar(OPERATOR_CODE["DeprecatedBuiltinCode"])
        builtin = t.scalar(OPERATOR_CODE["BuiltinCode"])
        code = max(deprecated, builtin)
        if code < 0:
            r.fail(f"operator code {k} has a negative builtin code {code}")
        custom = t.string(OPERATOR_CODE["CustomCode"], f"operator code {k} custom name")
        if code == CUSTOM_CODE:
            if not custom:
                r.fail(f"operator code {k} is a custom operator without a name")
            name = f"CUSTOM:{custom}"
        else:
            name = OP_NAMES.get(code, f"UNKNOWN_OP_{code}")
        codes.append(OpCode(code, name, custom, t.scalar(OPERATOR_CODE["Version"])))
    return tuple(codes)


def _buffers(r: _Reader, root: _Table) -> tuple[tuple[int, int], ...]:
    out = []
    for k, t in enumerate(root.tables(MODEL["Buffers"], "buffer")):
        start, size = t.vector(BUFFER["Data"], 1, f"buffer {k} data")
        offset, ext_size = t.scalar(BUFFER["Offset"]), t.scalar(BUFFER["Size"])
        if offset or ext_size:  # data stored after the flatbuffer (models over 2 GB)
            if size:
                r.fail(f"buffer {k} has both inline data and an external offset")
            r.need(offset, ext_size, f"buffer {k} external data")
            r.spend(ext_size, f"buffer {k}")
            start, size = offset, ext_size
            r.span(start, size, f"buffer:{k}")
        elif t.has(BUFFER["Data"]):
            r.span(start - 4, size + 4, f"buffer:{k}")
        out.append((start, size))
    return tuple(out)


def _quantization(r: _Reader, t: _Table, what: str, dtype: str, shape: tuple[int, ...], s: int, k: int):
    """Scales, zero points and quantized dimension. Only what a kernel would index out of bounds fails:
    fewer per-channel scales or zero points than channels, a per-channel dimension outside the shape, a
    zero point the dtype cannot hold. Odd but harmless values (a single scale with an out-of-range
    ``quantized_dimension``, one zero point for many scales, degenerate scale values) become notes."""
    q = t.child(TENSOR["Quantization"], f"{what} quantization")
    if q is None:
        return (), (), 0
    q.numbers(QUANTIZATION["Min"], "f", f"{what} min")
    q.numbers(QUANTIZATION["Max"], "f", f"{what} max")
    scale = q.numbers(QUANTIZATION["Scale"], "f", f"{what} scale")
    zero_point = q.numbers(QUANTIZATION["ZeroPoint"], "q", f"{what} zero point")
    if q.scalar(QUANTIZATION["DetailsType"]):
        q.child(QUANTIZATION["Details"], f"{what} quantization details")
    qdim = q.scalar(QUANTIZATION["QuantizedDimension"])
    if scale and not zero_point:
        r.fail(f"{what} has {len(scale)} scales but no zero point")
    if len(zero_point) not in (0, 1, len(scale)):
        r.fail(f"{what} has {len(scale)} scales but {len(zero_point)} zero points")
    if len(scale) > 1:
        if not 0 <= qdim < len(shape):  # an error if a builtin kernel reads the tensor (see _subgraph)
            r.per_channel[(s, k)] = f"{what} is quantized along dimension {qdim} of a rank-{len(shape)} tensor"
        elif len(scale) < shape[qdim]:
            r.per_channel[(s, k)] = f"{what} has {len(scale)} per-channel scales for {shape[qdim]} channels"
        elif len(scale) > shape[qdim]:
            r.note(
                "scale_count",
                f"{what} has {len(scale)} per-channel scales for {shape[qdim]} channels "
                "(the extra ones are never read)",
                s,
                tensor=k,
            )
        if len(zero_point) == 1:
            r.note(
                "zero_points",
                f"{what} has one zero point for its {len(scale)} per-channel scales: TFLite Micro "
                "reads it, LiteRT refuses the file",
                s,
                tensor=k,
            )
    elif scale and not 0 <= qdim < max(len(shape), 1):
        r.note(
            "quantized_dimension",
            f"{what} (rank {len(shape)}) declares quantized_dimension {qdim}: "
            "harmless with one scale; LiteRT refuses it, TFLite Micro ignores it",
            s,
            tensor=k,
        )
    elif zero_point and not scale:
        r.note("zero_points", f"{what} has zero points but no scales", s, tensor=k)
    lo_hi = _ZERO_POINT_RANGE.get(dtype)
    if lo_hi and any(not lo_hi[0] <= z <= lo_hi[1] for z in zero_point):
        r.fail(f"{what} has a zero point outside the {dtype} range {lo_hi}")
    return tuple(scale), tuple(zero_point), qdim


def _tensor(r: _Reader, t: _Table, k: int, where: str, buffers, s: int) -> Tensor:
    what = f"tensor {k} of {where}"
    shape = t.numbers(TENSOR["Shape"], "i", f"{what} shape")
    code = t.scalar(TENSOR["Type"])
    dtype = TENSOR_TYPES.get(code)
    if dtype is None:  # a type from a newer schema: read; no kernel here indexes it
        dtype = f"type_{code}"
        r.note("unknown_type", f"{what} has tensor type code {code}, unknown to this schema", s, tensor=k)
    buffer = t.scalar(TENSOR["Buffer"])
    _check_index(r, buffer, len(buffers), f"{what} buffer index")
    name = t.string(TENSOR["Name"], f"{what} name") or ""
    if any(d < 0 for d in shape):
        r.fail(f"{what} has a negative dimension in shape {list(shape)}")
    scale, zero_point, qdim = _quantization(r, t, what, dtype, shape, s, k)
    is_variable = bool(t.scalar(TENSOR["IsVariable"]))
    sparse = t.child(TENSOR["Sparsity"], f"{what} sparsity") is not None
    signature = (
        t.numbers(TENSOR["ShapeSignature"], "i", f"{what} shape signature") if t.has(TENSOR["ShapeSignature"]) else None
    )
    if signature is not None and (len(signature) != len(shape) or any(d < -1 for d in signature)):
        r.fail(f"{what} has shape signature {list(signature)} that does not fit shape {list(shape)}")
    elements = 0 if 0 in shape else 1
    for d in shape if elements else ():
        elements *= d
        if elements > MAX_TENSOR_BYTES:  # stop before the product grows huge on hostile dims
            break
    bits = _BITS.get(dtype, 0)
    nbytes = (elements * bits + 7) // 8
    if nbytes > MAX_TENSOR_BYTES or elements > MAX_TENSOR_BYTES:
        r.fail(f"{what} has shape {list(shape)}, over {MAX_TENSOR_BYTES:,} bytes")
    data_size = buffers[buffer][1] if buffer else 0
    if data_size and not sparse and bits >= 8 and data_size < nbytes:
        r.fail(f"{what} ({dtype}, shape {list(shape)}) needs {nbytes:,} bytes of data but its buffer has {data_size:,}")
    return Tensor(
        k,
        name,
        dtype,
        tuple(shape),
        None if signature is None else tuple(signature),
        buffer,
        scale,
        zero_point,
        qdim,
        is_variable,
        sparse,
        data_size,
    )


def _operator(r: _Reader, t: _Table, k: int, where: str, opcodes, ntensors: int, nsubgraphs: int) -> Operator:
    what = f"operator {k} of {where}"
    opcode_index = t.scalar(OPERATOR["OpcodeIndex"])
    _check_index(r, opcode_index, len(opcodes), f"{what} opcode index")
    inputs = t.numbers(OPERATOR["Inputs"], "i", f"{what} inputs")
    outputs = t.numbers(OPERATOR["Outputs"], "i", f"{what} outputs")
    for i in inputs:
        _check_index(r, i, ntensors, f"{what} input tensor", allow_minus_one=True)
    for i in outputs:
        _check_index(r, i, ntensors, f"{what} output tensor")
    options_type = t.scalar(OPERATOR["BuiltinOptionsType"])
    options = t.child(OPERATOR["BuiltinOptions"], f"{what} options") if options_type else None
    if options is not None:
        for field, size in option_vectors(_OPTION_TABLES.get(options_type, "")):  # e.g. ReshapeOptions.NewShape
            options.vector(field, size, f"{what} options {field.name}")
        for field in _SUBGRAPH_FIELDS.get(options_type, ()):
            _check_index(r, options.scalar(field), nsubgraphs, f"{what} subgraph reference")
    name = opcodes[opcode_index].name
    if name in _WINDOW_OPTIONS:
        expected, positive = _WINDOW_OPTIONS[name]
        if options is None or options_type != expected:
            r.fail(f"{what} ({name}) lacks its options table (strides, padding)")
        for field in positive:
            value = options.scalar(field)
            if value < 1:
                r.fail(f"{what} ({name}) has a stride, dilation or window size of {value}; it must be at least 1")
    t.vector(OPERATOR["CustomOptions"], 1, f"{what} custom options")
    t.vector(OPERATOR["MutatingVariableInputs"], 1, f"{what} mutating inputs")
    intermediates = t.numbers(OPERATOR["Intermediates"], "i", f"{what} intermediates")
    for i in intermediates:
        _check_index(r, i, ntensors, f"{what} intermediate tensor")
    large_offset = t.scalar(OPERATOR["LargeCustomOptionsOffset"])
    large_size = t.scalar(OPERATOR["LargeCustomOptionsSize"])
    if large_offset or large_size:
        r.need(large_offset, large_size, f"{what} large custom options")
        r.span(large_offset, large_size, "Operator.LargeCustomOptions")
    options2_type = t.scalar(OPERATOR["BuiltinOptions2Type"])
    options2 = t.child(OPERATOR["BuiltinOptions2"], f"{what} options (2)") if options2_type else None
    if options2 is not None:
        for field, size in option_vectors(_OPTION2_TABLES.get(options2_type, "")):
            options2.vector(field, size, f"{what} options (2) {field.name}")
    params: list[tuple[str, int]] = []
    if name in _PARAM_OPTIONS:
        expected, fields = _PARAM_OPTIONS[name]
        if options is None or options_type != expected:
            r.fail(f"{what} ({name}) lacks its options table")
        params = [(key, int(options.scalar(field))) for key, field in fields]
    return Operator(k, opcode_index, name, tuple(inputs), tuple(outputs), tuple(intermediates), tuple(params))


def _prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    out = []
    for x, y in itertools.zip_longest(reversed(a), reversed(b), fillvalue=1):
        if x != y and 1 not in (x, y):
            return None
        out.append(y if x == 1 else x)
    return tuple(reversed(out))


def _constant_ints(r: _Reader, t: Tensor, buffers) -> tuple[int, ...] | None:
    """The values of a constant int32 tensor, or None when it is not one."""
    if t.dtype != "int32" or not t.is_constant or t.sparse:
        return None
    start, _ = buffers[t.buffer]
    count = _prod(t.shape)  # _tensor checked the buffer holds this many
    r.spend(count, f"tensor {t.index} values")
    return struct.unpack_from(f"<{count}i", r.data, start)


class _OpCheck:
    """The tensors of one operator and the small rules its checker states: a broken bounds rule
    (:meth:`need`) fails the parse, anything else well-formed but unusual is a :meth:`note`."""

    def __init__(self, r: _Reader, op: Operator, tensors: tuple[Tensor, ...], buffers, where: str, s: int):
        self.r, self.op, self.buffers, self.s = r, op, buffers, s
        self.what = f"operator {op.index} of {where} ({op.op})"
        self.ins: list[Tensor | None] = [tensors[i] if i >= 0 else None for i in op.inputs]
        self.outs = [tensors[i] for i in op.outputs]

    def need(self, ok: bool, problem: str) -> None:
        if not ok:
            self.r.fail(f"{self.what} {problem}")

    def note(self, kind: str, message: str, tensor: int = -1) -> None:
        self.r.note(kind, f"{self.what} {message}", self.s, self.op.index, tensor)

    def io(self, n_in: int) -> tuple[list[Tensor], Tensor]:
        """The first ``n_in`` inputs (all present) and the first output."""
        ins, outs = self.ins, self.outs
        self.need(
            len(ins) >= n_in and all(t is not None for t in ins[:n_in]) and len(outs) >= 1,
            f"needs {n_in} input(s) and an output, has {len(ins)} and {len(outs)}",
        )
        return [t for t in ins[:n_in] if t is not None], outs[0]

    def optional_input(self, k: int) -> Tensor | None:
        return self.ins[k] if len(self.ins) > k else None

    def same_dtype(self, *ts: Tensor) -> None:
        """Mixed types are read (int8 -> int16 SOFTMAX is common) unless their element sizes differ where a
        kernel would index one tensor by another's type: a byte-copying op, or types outside int8/uint8/int16."""
        dtypes = [t.dtype for t in ts]
        if len(set(dtypes)) == 1:
            return
        sizes = {_BITS.get(d, 0) for d in dtypes}
        self.need(
            len(sizes) == 1 or (self.op.op not in _COPY_OPS and set(dtypes) <= _INTEGER_QUANTIZED),
            f"mixes tensor types {dtypes} of different sizes: a kernel indexing one by the other's type "
            "would read or write past its end",
        )
        self.note("mixed_dtypes", f"mixes tensor types {dtypes}")

    def bias_fits(self, channels: int) -> None:
        bias = self.optional_input(2)
        if bias is not None:
            self.need(
                _prod(bias.shape) == channels, f"has bias shape {list(bias.shape)} for {channels} output channels"
            )

    def constant_ints(self, t: Tensor) -> tuple[int, ...] | None:
        return _constant_ints(self.r, t, self.buffers)


def _check_quantized(c: _OpCheck) -> None:
    """A note for each int8 / uint8 / int16 tensor without quantization parameters: custom ops (the
    TFLite Micro signal ops) take raw integers; builtin quantized kernels need a scale and zero point."""
    seen = set()
    for t in (*c.ins, *c.outs):
        if t is not None and t.dtype in _ZERO_POINT_RANGE and not t.scale and t.index not in seen:
            seen.add(t.index)
            why = (
                "a custom op may take raw integers"
                if c.op.op.startswith("CUSTOM:")
                else "builtin quantized kernels need a scale and zero point"
            )
            c.note(
                "no_quantization",
                f"uses {t.dtype} tensor {t.index} '{t.name}' without quantization parameters ({why})",
                t.index,
            )


def _check_same_shape(c: _OpCheck) -> None:
    (x,), y = c.io(1)
    c.need(y.shape == x.shape, f"output shape {list(y.shape)} differs from input shape {list(x.shape)}")
    if c.op.op in _SAME_SHAPE_OPS:
        c.same_dtype(x, y)


def _check_broadcast(c: _OpCheck) -> None:
    (a, b), y = c.io(2)
    shape = _broadcast(a.shape, b.shape)
    c.need(shape is not None, f"inputs of shapes {list(a.shape)} and {list(b.shape)} do not broadcast")
    c.need(y.shape == shape, f"output shape {list(y.shape)} is not the broadcast shape {list(shape or ())}")
    c.same_dtype(a, b, y)


def _check_reshape(c: _OpCheck) -> None:
    (x,), y = c.io(1)
    c.need(_prod(x.shape) == _prod(y.shape), f"reshapes {list(x.shape)} into {list(y.shape)}: element counts differ")
    c.same_dtype(x, y)
    # the shape tensor: TFLite Micro sizes the output from the output tensor alone; LiteRT reads at most its
    # elements and checks the element count itself, so a disagreement is a note, not out of bounds
    target = c.optional_input(1)
    if target is not None:
        if not (target.dtype == "int32" and len(target.shape) == 1 and target.shape[0] == len(y.shape)):
            c.note(
                "reshape_shape",
                f"has a {target.dtype} shape tensor of shape {list(target.shape)} for a rank-{len(y.shape)} output",
                target.index,
            )
            return
        values = c.constant_ints(target)
        if values is not None and not (
            values.count(-1) <= 1 and all(v in (d, -1) for v, d in zip(values, y.shape, strict=False))
        ):
            c.note("reshape_shape", f"has new shape {list(values)} but output shape {list(y.shape)}", target.index)


def _check_reduce(c: _OpCheck) -> None:
    (x, axes), y = c.io(2)
    c.need(
        axes.dtype == "int32" and len(axes.shape) <= 1, f"has a {axes.dtype} axis tensor of shape {list(axes.shape)}"
    )
    rank = len(x.shape)
    values = c.constant_ints(axes)
    c.need(values is None or all(-rank <= v < rank for v in values), f"reduces axes {values} of a rank-{rank} input")
    if values is not None:
        reduced = {v % rank for v in values} if rank else set()
        keep = c.op.param("keep_dims")
        if keep:
            expected = tuple(1 if i in reduced else d for i, d in enumerate(x.shape))
        else:
            expected = tuple(d for i, d in enumerate(x.shape) if i not in reduced)
        c.need(
            y.shape == expected,
            f"reduces {list(x.shape)} over axes {list(values)} "
            f"{'keeping' if keep else 'dropping'} them, but declares output {list(y.shape)}",
        )
    c.same_dtype(x, y)


def _check_pad(c: _OpCheck) -> None:
    (x, pads), y = c.io(2)
    c.need(
        len(x.shape) == len(y.shape) and pads.shape == (len(x.shape), 2),
        f"pads input {list(x.shape)} to {list(y.shape)} with paddings of shape {list(pads.shape)}",
    )
    values = c.constant_ints(pads)
    if values is not None:
        c.need(
            all(v >= 0 for v in values)
            and all(y.shape[i] == x.shape[i] + values[2 * i] + values[2 * i + 1] for i in range(len(x.shape))),
            f"pads input {list(x.shape)} by {list(values)} but declares output {list(y.shape)}",
        )
    c.same_dtype(x, y)


def _check_concatenation(c: _OpCheck) -> None:
    c.need(len(c.ins) >= 1 and None not in c.ins and len(c.outs) >= 1, "needs inputs and an output")
    ins = [t for t in c.ins if t is not None]
    y = c.outs[0].shape
    given = c.op.param("axis")
    axis = given + len(y) if given < 0 else given
    shapes = [list(t.shape) for t in ins]
    c.need(
        0 <= axis < len(y) and all(len(t.shape) == len(y) for t in ins),
        f"concatenates along axis {given} tensors of shapes {shapes} into {list(y)}",
    )
    c.need(
        sum(t.shape[axis] for t in ins) == y[axis]
        and all(t.shape[:axis] + t.shape[axis + 1 :] == y[:axis] + y[axis + 1 :] for t in ins),
        f"concatenates {shapes} along axis {given} into {list(y)}: the shapes do not fit",
    )
    c.same_dtype(*ins, c.outs[0])


def _check_conv(c: _OpCheck) -> None:
    (inp, filt), out = c.io(2)
    x, w, y = inp.shape, filt.shape, out.shape
    c.need(len(x) == len(w) == len(y) == 4, f"needs 4-D input, filter and output, got {list(x)}, {list(w)}, {list(y)}")
    c.need(x[0] == y[0], f"changes the batch from {x[0]} to {y[0]}")
    if c.op.op == "CONV_2D":
        c.need(
            w[3] > 0 and x[3] % w[3] == 0 and w[0] % max(x[3] // w[3], 1) == 0,
            f"has {x[3]} input channels for a filter of shape {list(w)}",
        )
        c.need(y[3] == w[0], f"has {y[3]} output channels for a filter of shape {list(w)}")
    else:
        c.need(w[0] == 1 and y[3] == w[3], f"has output shape {list(y)} for a depthwise filter of shape {list(w)}")
        c.need(x[3] > 0 and y[3] % x[3] == 0, f"has {x[3]} input channels for {y[3]} output channels")
        multiplier = c.op.param("depth_multiplier")
        c.need(
            multiplier in (0, y[3] // x[3]),
            f"has depth multiplier {multiplier} for {x[3]} input and {y[3]} output channels",
        )
    c.bias_fits(y[3])
    c.same_dtype(inp, out)


def _check_fully_connected(c: _OpCheck) -> None:
    (inp, weights), out = c.io(2)
    x, w, y = inp.shape, weights.shape, out.shape
    c.need(len(w) == 2 and w[1] > 0 and len(y) >= 1, f"needs 2-D weights, got {list(w)} (output {list(y)})")
    c.need(
        _prod(x) % w[1] == 0 and y[-1] == w[0] and _prod(y) == _prod(x) // w[1] * w[0],
        f"maps input {list(x)} with weights {list(w)} to output {list(y)}: the shapes do not fit",
    )
    c.bias_fits(w[0])
    c.same_dtype(inp, out)


def _check_pool(c: _OpCheck) -> None:
    (inp,), out = c.io(1)
    x, y = inp.shape, out.shape
    c.need(
        len(x) == len(y) == 4 and x[0] == y[0] and x[3] == y[3],
        f"pools input {list(x)} into output {list(y)}: needs 4-D, same batch and channels",
    )
    c.same_dtype(inp, out)


def _family(ops: Iterable[str], check: Callable[[_OpCheck], None]) -> dict[str, Callable[[_OpCheck], None]]:
    return dict.fromkeys(ops, check)


#: op name -> the checker of its family (shape, dtype and parameter rules the kernels index memory by)
OP_CHECKERS: dict[str, Callable[[_OpCheck], None]] = {
    **_family(_SAME_SHAPE_OPS | _CAST_OPS, _check_same_shape),
    **_family(_BROADCAST_OPS, _check_broadcast),
    **_family(("RESHAPE",), _check_reshape),
    **_family(_REDUCE_OPS, _check_reduce),
    **_family(_PAD_OPS, _check_pad),
    **_family(("CONCATENATION",), _check_concatenation),
    **_family(("CONV_2D", "DEPTHWISE_CONV_2D"), _check_conv),
    **_family(("FULLY_CONNECTED",), _check_fully_connected),
    **_family(("MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"), _check_pool),
}


def _check_operator(r: _Reader, op: Operator, tensors: tuple[Tensor, ...], buffers, where: str, s: int) -> None:
    """Quantization parameters of every op (notes), then the rules of its family (:data:`OP_CHECKERS`)."""
    check = _OpCheck(r, op, tensors, buffers, where, s)
    _check_quantized(check)
    family = OP_CHECKERS.get(op.op)
    if family is not None:
        family(check)


def _subgraph(r: _Reader, t: _Table, s: int, opcodes, buffers, nsubgraphs: int) -> Subgraph:
    where = f"subgraph {s}"
    tensor_tables = t.tables(SUBGRAPH["Tensors"], f"{where} tensors")
    tensors = tuple(_tensor(r, tt, k, where, buffers, s) for k, tt in enumerate(tensor_tables))
    inputs = t.numbers(SUBGRAPH["Inputs"], "i", f"{where} inputs")
    outputs = t.numbers(SUBGRAPH["Outputs"], "i", f"{where} outputs")
    for i in (*inputs, *outputs):
        _check_index(r, i, len(tensors), f"{where} input/output tensor")
    operators = tuple(
        _operator(r, ot, k, where, opcodes, len(tensors), nsubgraphs)
        for k, ot in enumerate(t.tables(SUBGRAPH["Operators"], f"{where} operators"))
    )
    for op in operators:
        _check_operator(r, op, tensors, buffers, where, s)
    for op in operators:  # builtin kernels index per-channel scales by the declared dimension
        for i in (*op.inputs, *op.outputs, *op.intermediates):
            if (s, i) in r.per_channel and not op.op.startswith("CUSTOM:"):
                r.fail(f"{r.per_channel[(s, i)]}, and operator {op.index} ({op.op}) reads it")
    for (sub, k), problem in r.per_channel.items():
        if sub == s:  # only custom ops (e.g. TFLM_DECODE on LUT indices) or none read it: they ignore quantization
            r.note("per_channel", f"{problem} (read by custom ops only, which ignore it)", s, tensor=k)
    name = t.string(SUBGRAPH["Name"], f"{where} name") or ""
    return Subgraph(name, tensors, tuple(inputs), tuple(outputs), operators)


# ----------------------------------------------------------------------------------------------
# writing


def pack(model: Any, size_hint: int = 1024) -> bytes:
    """Serialize a schema ``ModelT`` (the generated object API) as a TFLite flatbuffer.

    Vectors whose values never depend on the weights are stored once and referenced by every table
    that holds them: the per-channel zero points (int64, all 0 for int8 weights) of every tensor with
    as many channels, and equal int32 vectors (shapes, operator inputs). A flatbuffer reads a child
    through an offset, so sharing changes no value a runtime reads; it saves 8 bytes per channel of
    every per-channel tensor but one per channel count. Scales and constant data are never shared, so
    a file's size still does not depend on the weights (the budget search measures before training).
    Byte vectors (constant data) start 16-byte aligned, as the converter writes them: TFLite Micro
    reads weights in place.

    >>> m = _schema.ModelT()
    >>> m.version = 3
    >>> _schema.ModelT.InitFromPackedBuf(bytearray(pack(m)), 0).version
    3
    """
    import flatbuffers
    import numpy as np

    class SharingBuilder(flatbuffers.Builder):
        def CreateNumpyVector(self, x: Any) -> int:  # what the generated Pack methods call for numpy vectors
            if not isinstance(x, np.ndarray) or x.ndim != 1:
                return super().CreateNumpyVector(x)
            if x.dtype == np.uint8 and x.size:
                self.StartVector(1, x.size, 16)
                self.head -= x.size
                self.Bytes[self.head : self.head + x.size] = x.tobytes()
                return self.EndVector()
            if not (x.dtype == np.int32 or (x.dtype == np.int64 and x.size > 1 and not x.any())):
                return super().CreateNumpyVector(x)
            key = (x.dtype.str, x.tobytes())
            if key not in shared:
                shared[key] = super().CreateNumpyVector(x)
            return shared[key]

    shared: dict[tuple[str, bytes], int] = {}
    builder = SharingBuilder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


def parse(content: bytes, source: str = "model", layout: bool = False) -> Model:
    """Check and read a TFLite flatbuffer; anything that would make a reader or kernel go out of bounds
    raises :class:`InputError`, anything well-formed but unusual is read and listed in ``notes``.
    ``layout=True`` also records where each part of the file lies (:attr:`Model.layout`)."""
    if isinstance(content, (bytearray, memoryview)):
        content = bytes(content)
    if not isinstance(content, bytes):
        raise InputError(f"{source}: expected the bytes of a .tflite model, got {type(content).__name__}")
    n = len(content)
    cap = _files.MAX_FILE_BYTES if MAX_FILE_BYTES is None else MAX_FILE_BYTES
    if n > cap:
        raise InputError(
            f"{source} is {n:,} bytes, over the {cap:,}-byte cap: "
            "pass a smaller model (or raise tfedge.files.MAX_FILE_BYTES if you trust it)"
        )
    if n < 24:
        raise InputError(
            f"{source} is not a TFLite model: only {n} bytes (a .tflite file is far larger); "
            "the file is empty or truncated"
        )
    if content[4:8] != IDENTIFIER:
        raise InputError(
            f"{source} is not a TFLite model: its file identifier is {content[4:8]!r}, expected "
            f"{IDENTIFIER!r}; pass a .tflite file made by the TFLite converter"
        )
    r = _Reader(content, source, layout)
    r.span(0, 8, "header")
    root = r.table(r.unpack("<I", 0, "root offset"), "model table")
    version = root.scalar(MODEL["Version"])
    if version != SCHEMA_VERSION:
        r.fail(f"schema version is {version}, expected {SCHEMA_VERSION}")
    opcodes = _opcodes(r, root)
    buffers = _buffers(r, root)
    subgraph_tables = root.tables(MODEL["Subgraphs"], "subgraph")
    if not subgraph_tables:
        r.fail("it has no subgraphs")
    subgraphs = tuple(_subgraph(r, t, s, opcodes, buffers, len(subgraph_tables)) for s, t in enumerate(subgraph_tables))
    if not subgraphs[0].inputs or not subgraphs[0].outputs:
        r.fail("its main subgraph has no inputs or no outputs")
    description = root.string(MODEL["Description"], "model description") or ""
    for b in root.numbers(MODEL["MetadataBuffer"], "i", "metadata buffer list"):
        _check_index(r, b, len(buffers), "metadata buffer index")
    metadata = []
    for k, t in enumerate(root.tables(MODEL["Metadata"], "metadata")):
        name = t.string(METADATA["Name"], f"metadata {k} name") or ""
        buffer = t.scalar(METADATA["Buffer"])
        _check_index(r, buffer, len(buffers), f"metadata {name[:40]!r} buffer index")
        metadata.append((name, buffer))
    signatures = []
    for k, t in enumerate(root.tables(MODEL["SignatureDefs"], "signature")):
        sub = t.scalar(SIGNATURE["SubgraphIndex"])
        _check_index(r, sub, len(subgraphs), f"signature {k} subgraph index")
        maps = []
        for io in (SIGNATURE["Inputs"], SIGNATURE["Outputs"]):
            entries = []
            for m in t.tables(io, f"signature {k} tensor map"):
                name = m.string(TENSOR_MAP["Name"], f"signature {k} tensor name") or ""
                index = m.scalar(TENSOR_MAP["TensorIndex"])
                _check_index(r, index, len(subgraphs[sub].tensors), f"signature {k} tensor index")
                entries.append((name, index))
            maps.append(tuple(entries))
        key = t.string(SIGNATURE["SignatureKey"], f"signature {k} key") or ""
        signatures.append(Signature(key, sub, maps[0], maps[1]))
    return Model(
        n,
        version,
        description,
        opcodes,
        subgraphs,
        buffers,
        tuple(metadata),
        tuple(sig.key for sig in signatures),
        content,
        tuple(r.notes),
        tuple(signatures),
        tuple(r.spans or ()),
    )


__all__ = [
    "parse",
    "pack",
    "Model",
    "Subgraph",
    "Tensor",
    "Operator",
    "OpCode",
    "Note",
    "Signature",
    "Field",
    "schema_field",
    "option_vectors",
    "OP_CHECKERS",
    "TENSOR_TYPES",
    "OP_NAMES",
    "IDENTIFIER",
    "MAX_TENSOR_BYTES",
    "DEGENERATE_SCALE",
]

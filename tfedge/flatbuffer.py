"""A bounds-checked reader for the part of the TFLite flatbuffer schema tfedge needs.

The ``flatbuffers`` Python library trusts every offset it reads, and TFLite Micro does too (it
segfaults on some corrupted files). :func:`parse` checks every offset, length and index before it
is used (Python integers, so nothing overflows), caps the work at a multiple of the file size so a
crafted file cannot make it hang, and raises :class:`~tfedge.errors.InputError` naming the problem
and the source; nothing else escapes it. Beyond the structure it checks what the common kernels
(conv, depthwise, fully connected, pools, reshape, reductions, pad, concatenation, elementwise)
index memory by: shapes, dtypes, strides, axes and quantization parameters. It does not replay
every kernel's arithmetic, so TFLite Micro still belongs in a child process.

>>> from tfedge.flatbuffer import parse
>>> parse(b"\\x10\\x00\\x00\\x00NOPE" + bytes(16), source="x.tflite")
Traceback (most recent call last):
...
tfedge.errors.InputError: x.tflite is not a TFLite model: its file identifier is b'NOPE', expected b'TFL3'; pass a .tflite file made by the TFLite converter
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import struct
from typing import NoReturn

from ai_edge_litert import schema_py_generated as _schema  # fast, TensorFlow-free import

from tfedge.errors import InputError
from tfedge import files as _files

IDENTIFIER = b"TFL3"
#: Size cap of :func:`parse`; None: ``tfedge.files.MAX_FILE_BYTES`` as it is when parse runs (raising it works).
MAX_FILE_BYTES: int | None = None
SCHEMA_VERSION = 3
#: Largest tensor (bytes) a model may declare; TFLite and TFLite Micro size tensors with 32-bit ints.
MAX_TENSOR_BYTES = 2**31 - 1
#: Quantization scales outside this range only come from corruption (kernels underflow on them).
MIN_SCALE, MAX_SCALE = 1e-30, 1e30


def _enum_names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


TENSOR_TYPES: dict[int, str] = {code: name.lower() for code, name in _enum_names(_schema.TensorType).items()}
OP_NAMES: dict[int, str] = _enum_names(_schema.BuiltinOperator)
CUSTOM_CODE = _schema.BuiltinOperator.CUSTOM

# bits per element; 0 = variable size (strings, resources, variants)
_BITS = {
    "float32": 32, "float16": 16, "int32": 32, "uint8": 8, "int64": 64, "string": 0, "bool": 8,
    "int16": 16, "complex64": 64, "int8": 8, "float64": 64, "complex128": 128, "uint64": 64,
    "resource": 0, "variant": 0, "uint32": 32, "uint16": 16, "int4": 4, "bfloat16": 16, "int2": 2,
    "uint4": 4, "float8_e4m3fn": 8, "float8_e5m2": 8,
}
_ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
# builtin options whose fields are subgraph indices: options type -> field slots
_SUBGRAPH_FIELDS = {
    _schema.BuiltinOptions.IfOptions: (0, 1),
    _schema.BuiltinOptions.WhileOptions: (0, 1),
    _schema.BuiltinOptions.CallOnceOptions: (0,),
}


# ops that divide by strides / dilations / window sizes: options type, (slot, default) that must be >= 1
_WINDOW_OPTIONS = {
    "CONV_2D": (_schema.BuiltinOptions.Conv2DOptions, ((1, 0), (2, 0), (4, 1), (5, 1))),
    "DEPTHWISE_CONV_2D": (_schema.BuiltinOptions.DepthwiseConv2DOptions, ((1, 0), (2, 0), (5, 1), (6, 1))),
    "AVERAGE_POOL_2D": (_schema.BuiltinOptions.Pool2DOptions, ((1, 0), (2, 0), (3, 0), (4, 0))),
    "MAX_POOL_2D": (_schema.BuiltinOptions.Pool2DOptions, ((1, 0), (2, 0), (3, 0), (4, 0))),
    "L2_POOL_2D": (_schema.BuiltinOptions.Pool2DOptions, ((1, 0), (2, 0), (3, 0), (4, 0))),
}
_REDUCE_OPS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL"})
_PAD_OPS = frozenset({"PAD", "PADV2", "MIRROR_PAD"})
# options the shape checks read: op -> (options type, ((param, slot, struct format, default), ...))
_PARAM_OPTIONS = {
    "CONCATENATION": (_schema.BuiltinOptions.ConcatenationOptions, (("axis", 0, "<i", 0),)),
    "DEPTHWISE_CONV_2D": (_schema.BuiltinOptions.DepthwiseConv2DOptions, (("depth_multiplier", 3, "<i", 0),)),
    **{op: (_schema.BuiltinOptions.ReducerOptions, (("keep_dims", 0, "<B", 0),)) for op in _REDUCE_OPS},
}
# ops whose output has the shape and dtype of their first input
_SAME_SHAPE_OPS = frozenset("""
ABS CEIL COS ELU EXP FLOOR HARD_SWISH L2_NORMALIZATION LEAKY_RELU LOG LOGISTIC LOG_SOFTMAX NEG RELU
RELU6 RELU_N1_TO_1 RELU_0_TO_1 ROUND RSQRT SIN SOFTMAX SQRT SQUARE TANH ZEROS_LIKE
""".split())
_CAST_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "CAST"})  # same shape, another dtype
_BROADCAST_OPS = frozenset("""
ADD SUB MUL DIV MAXIMUM MINIMUM SQUARED_DIFFERENCE FLOOR_DIV FLOOR_MOD POW
""".split())


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
    """A parsed, structurally checked TFLite model. ``buffers`` holds (start, size) of each data block."""

    size: int
    version: int
    description: str
    opcodes: tuple[OpCode, ...]
    subgraphs: tuple[Subgraph, ...]
    buffers: tuple[tuple[int, int], ...]
    metadata: tuple[tuple[str, int], ...]
    signature_keys: tuple[str, ...]
    content: bytes = dataclasses.field(repr=False)

    def buffer_data(self, index: int) -> memoryview:
        """The bytes of buffer ``index`` (empty for tensors without constant data)."""
        start, size = self.buffers[index]
        return memoryview(self.content)[start:start + size]


class _Reader:
    __slots__ = ("data", "n", "source", "budget")

    def __init__(self, data: bytes, source: str):
        self.data = data
        self.n = len(data)
        self.source = source
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

    def table(self, pos: int, what: str) -> "_Table":
        return _Table(self, pos, what)


class _Table:
    __slots__ = ("r", "pos", "vt", "nfields", "size", "what")

    def __init__(self, r: _Reader, pos: int, what: str):
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

    def _field(self, slot: int, size: int) -> int | None:
        if slot >= self.nfields:
            return None
        off = self.r.unpack("<H", self.vt + 4 + 2 * slot, f"{self.what} vtable")
        if off == 0:
            return None
        if off < 4 or off + size > self.size:
            self.r.fail(f"{self.what} field {slot} (offset {off}, {size} bytes) lies outside its {self.size}-byte table")
        pos = self.pos + off
        self.r.aligned(pos, min(size, 8), f"{self.what} field {slot}")
        return pos

    def scalar(self, slot: int, fmt: str, default):
        pos = self._field(slot, struct.calcsize(fmt))
        return default if pos is None else self.r.unpack(fmt, pos, f"{self.what} field {slot}")

    def _ref(self, slot: int, what: str) -> int | None:
        pos = self._field(slot, 4)
        if pos is None:
            return None
        target = pos + self.r.unpack("<I", pos, what)
        self.r.need(target, 4, what)
        return target

    def child(self, slot: int, what: str) -> "_Table | None":
        target = self._ref(slot, what)
        return None if target is None else _Table(self.r, target, what)

    def vector(self, slot: int, elem_size: int, what: str) -> tuple[int, int]:
        """(start, count) of a vector field; (0, 0) when absent."""
        target = self._ref(slot, what)
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
        return start, count

    def numbers(self, slot: int, fmt: str, what: str) -> tuple:
        start, count = self.vector(slot, struct.calcsize(fmt), what)
        if not count:
            return ()
        return struct.unpack_from(f"<{count}{fmt}", self.r.data, start)

    def string(self, slot: int, what: str) -> str | None:
        target = self._ref(slot, what)
        if target is None:
            return None
        start, count = self.vector(slot, 1, what)
        self.r.need(start + count, 1, f"{what} terminator")
        if self.r.data[start + count] != 0:
            self.r.fail(f"{what} at byte {target} is not NUL-terminated")
        return self.r.data[start:start + count].decode("utf-8", errors="replace")

    def tables(self, slot: int, what: str) -> list["_Table"]:
        start, count = self.vector(slot, 4, what)
        out = []
        for k in range(count):
            pos = start + 4 * k
            out.append(_Table(self.r, pos + self.r.unpack("<I", pos, what), f"{what}[{k}]"))
        return out


def _check_index(r: _Reader, value: int, limit: int, what: str, allow_minus_one: bool = False) -> None:
    if allow_minus_one and value == -1:
        return
    if not 0 <= value < limit:
        r.fail(f"{what} is {value}, out of range (0..{limit - 1})")


def _opcodes(r: _Reader, root: _Table) -> tuple[OpCode, ...]:
    codes = []
    for k, t in enumerate(root.tables(1, "operator code")):
        deprecated = t.scalar(0, "<b", 0)
        builtin = t.scalar(3, "<i", 0)
        code = max(deprecated, builtin)
        if code < 0:
            r.fail(f"operator code {k} has a negative builtin code {code}")
        custom = t.string(1, f"operator code {k} custom name")
        if code == CUSTOM_CODE:
            if not custom:
                r.fail(f"operator code {k} is a custom operator without a name")
            name = f"CUSTOM:{custom}"
        else:
            name = OP_NAMES.get(code, f"UNKNOWN_OP_{code}")
        codes.append(OpCode(code, name, custom, t.scalar(2, "<i", 1)))
    return tuple(codes)


def _buffers(r: _Reader, root: _Table) -> tuple[tuple[int, int], ...]:
    out = []
    for k, t in enumerate(root.tables(4, "buffer")):
        start, size = t.vector(0, 1, f"buffer {k} data")
        offset, ext_size = t.scalar(1, "<Q", 0), t.scalar(2, "<Q", 0)
        if offset or ext_size:  # data stored after the flatbuffer (models over 2 GB)
            if size:
                r.fail(f"buffer {k} has both inline data and an external offset")
            r.need(offset, ext_size, f"buffer {k} external data")
            r.spend(ext_size, f"buffer {k}")
            start, size = offset, ext_size
        out.append((start, size))
    return tuple(out)


def _quantization(r: _Reader, t: _Table, what: str, dtype: str, shape: tuple[int, ...]):
    q = t.child(4, f"{what} quantization")
    if q is None:
        return (), (), 0
    q.numbers(0, "f", f"{what} min")
    q.numbers(1, "f", f"{what} max")
    scale = q.numbers(2, "f", f"{what} scale")
    zero_point = q.numbers(3, "q", f"{what} zero point")
    if q.scalar(4, "<B", 0):
        q.child(5, f"{what} quantization details")
    qdim = q.scalar(6, "<i", 0)
    for s in scale:
        if not (math.isfinite(s) and s > 0):
            r.fail(f"{what} has quantization scale {s}; scales must be finite and positive")
        if not MIN_SCALE <= s <= MAX_SCALE:
            r.fail(f"{what} has quantization scale {s:g}, outside the plausible range [{MIN_SCALE:g}, {MAX_SCALE:g}]")
    if (scale or zero_point) and len(zero_point) != len(scale):
        r.fail(f"{what} has {len(scale)} scales but {len(zero_point)} zero points")
    if len(scale) > 1:
        if not 0 <= qdim < len(shape):
            r.fail(f"{what} is quantized along dimension {qdim} of a rank-{len(shape)} tensor")
        if shape[qdim] != len(scale):
            r.fail(f"{what} has {len(scale)} per-channel scales for {shape[qdim]} channels")
    lo_hi = _ZERO_POINT_RANGE.get(dtype)
    if lo_hi and any(not lo_hi[0] <= z <= lo_hi[1] for z in zero_point):
        r.fail(f"{what} has a zero point outside the {dtype} range {lo_hi}")
    return tuple(scale), tuple(zero_point), qdim


def _tensor(r: _Reader, t: _Table, k: int, where: str, buffers) -> Tensor:
    what = f"tensor {k} of {where}"
    shape = t.numbers(0, "i", f"{what} shape")
    code = t.scalar(1, "<b", 0)
    dtype = TENSOR_TYPES.get(code)
    if dtype is None:
        r.fail(f"{what} has unknown type code {code}")
    buffer = t.scalar(2, "<I", 0)
    _check_index(r, buffer, len(buffers), f"{what} buffer index")
    name = t.string(3, f"{what} name") or ""
    if any(d < 0 for d in shape):
        r.fail(f"{what} has a negative dimension in shape {list(shape)}")
    scale, zero_point, qdim = _quantization(r, t, what, dtype, shape)
    is_variable = bool(t.scalar(5, "<B", 0))
    sparse = t.child(6, f"{what} sparsity") is not None
    signature = t.numbers(7, "i", f"{what} shape signature") if t._field(7, 4) is not None else None
    if signature is not None and (len(signature) != len(shape) or any(d < -1 for d in signature)):
        r.fail(f"{what} has shape signature {list(signature)} that does not fit shape {list(shape)}")
    elements = 0 if 0 in shape else 1
    for d in shape if elements else ():
        elements *= d
        if elements > MAX_TENSOR_BYTES:  # stop before the product grows huge on hostile dims
            break
    nbytes = (elements * _BITS[dtype] + 7) // 8
    if nbytes > MAX_TENSOR_BYTES:
        r.fail(f"{what} has shape {list(shape)}, over {MAX_TENSOR_BYTES:,} bytes")
    data_size = buffers[buffer][1] if buffer else 0
    if data_size and not sparse and _BITS[dtype] >= 8 and data_size < nbytes:
        r.fail(f"{what} ({dtype}, shape {list(shape)}) needs {nbytes:,} bytes of data but its buffer has {data_size:,}")
    return Tensor(k, name, dtype, tuple(shape), None if signature is None else tuple(signature), buffer,
                  scale, zero_point, qdim, is_variable, sparse, data_size)


def _operator(r: _Reader, t: _Table, k: int, where: str, opcodes, ntensors: int, nsubgraphs: int) -> Operator:
    what = f"operator {k} of {where}"
    opcode_index = t.scalar(0, "<I", 0)
    _check_index(r, opcode_index, len(opcodes), f"{what} opcode index")
    inputs = t.numbers(1, "i", f"{what} inputs")
    outputs = t.numbers(2, "i", f"{what} outputs")
    for i in inputs:
        _check_index(r, i, ntensors, f"{what} input tensor", allow_minus_one=True)
    for i in outputs:
        _check_index(r, i, ntensors, f"{what} output tensor")
    options_type = t.scalar(3, "<B", 0)
    options = t.child(4, f"{what} options") if options_type else None
    if options is not None:
        for slot in _SUBGRAPH_FIELDS.get(options_type, ()):
            _check_index(r, options.scalar(slot, "<i", 0), nsubgraphs, f"{what} subgraph reference")
    name = opcodes[opcode_index].name
    if name in _WINDOW_OPTIONS:
        expected, positive = _WINDOW_OPTIONS[name]
        if options is None or options_type != expected:
            r.fail(f"{what} ({name}) lacks its options table (strides, padding)")
        for slot, default in positive:
            value = options.scalar(slot, "<i", default)
            if value < 1:
                r.fail(f"{what} ({name}) has a stride, dilation or window size of {value}; it must be at least 1")
    t.vector(5, 1, f"{what} custom options")
    t.vector(7, 1, f"{what} mutating inputs")
    intermediates = t.numbers(8, "i", f"{what} intermediates")
    for i in intermediates:
        _check_index(r, i, ntensors, f"{what} intermediate tensor")
    large_offset, large_size = t.scalar(9, "<Q", 0), t.scalar(10, "<Q", 0)
    if large_offset or large_size:
        r.need(large_offset, large_size, f"{what} large custom options")
    if t.scalar(11, "<B", 0):
        t.child(12, f"{what} options (2)")
    params: list[tuple[str, int]] = []
    if name in _PARAM_OPTIONS:
        expected, fields = _PARAM_OPTIONS[name]
        if options is None or options_type != expected:
            r.fail(f"{what} ({name}) lacks its options table")
        params = [(key, options.scalar(slot, fmt, default)) for key, slot, fmt, default in fields]
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


def _check_operator(r: _Reader, op: Operator, tensors: tuple[Tensor, ...], buffers, where: str) -> None:
    """Shape, dtype and parameter rules of the common ops: kernels index memory by these."""
    what = f"operator {op.index} of {where} ({op.op})"
    ins = [tensors[i] if i >= 0 else None for i in op.inputs]
    outs = [tensors[i] for i in op.outputs]

    def need(ok: bool, problem: str) -> None:
        if not ok:
            r.fail(f"{what} {problem}")

    for t in (*ins, *outs):  # quantized kernels read scale[0] / zero_point[0] unconditionally
        if t is not None and t.dtype in _ZERO_POINT_RANGE:
            need(len(t.scale) > 0, f"uses {t.dtype} tensor {t.index} without quantization parameters")

    def needs_io(n_in: int) -> None:
        need(len(ins) >= n_in and all(t is not None for t in ins[:n_in]) and len(outs) >= 1,
             f"needs {n_in} input(s) and an output, has {len(ins)} and {len(outs)}")

    def same_dtype(*ts: Tensor) -> None:
        need(len({t.dtype for t in ts}) == 1, f"mixes tensor types {[t.dtype for t in ts]}")

    def bias_fits(channels: int) -> None:
        if len(ins) > 2 and ins[2] is not None:
            need(ins[2].shape == (channels,), f"has bias shape {list(ins[2].shape)} for {channels} output channels")

    name = op.op
    if name in _SAME_SHAPE_OPS or name in _CAST_OPS:
        needs_io(1)
        need(outs[0].shape == ins[0].shape, f"output shape {list(outs[0].shape)} differs from input shape {list(ins[0].shape)}")
        if name in _SAME_SHAPE_OPS:
            same_dtype(ins[0], outs[0])
    elif name in _BROADCAST_OPS:
        needs_io(2)
        shape = _broadcast(ins[0].shape, ins[1].shape)
        need(shape is not None, f"inputs of shapes {list(ins[0].shape)} and {list(ins[1].shape)} do not broadcast")
        need(outs[0].shape == shape, f"output shape {list(outs[0].shape)} is not the broadcast shape {list(shape)}")
        same_dtype(ins[0], ins[1], outs[0])
    elif name == "RESHAPE":
        needs_io(1)
        need(_prod(ins[0].shape) == _prod(outs[0].shape),
             f"reshapes {list(ins[0].shape)} into {list(outs[0].shape)}: element counts differ")
        same_dtype(ins[0], outs[0])
        if len(ins) > 1 and ins[1] is not None:
            target = ins[1]
            need(target.dtype == "int32" and len(target.shape) == 1 and target.shape[0] == len(outs[0].shape),
                 f"has a {target.dtype} shape tensor of shape {list(target.shape)} for a rank-{len(outs[0].shape)} output")
            values = _constant_ints(r, target, buffers)
            if values is not None:
                need(values.count(-1) <= 1 and all(v in (d, -1) for v, d in zip(values, outs[0].shape)),
                     f"has new shape {list(values)} but output shape {list(outs[0].shape)}")
    elif name in _REDUCE_OPS:
        needs_io(2)
        axes = ins[1]
        need(axes.dtype == "int32" and len(axes.shape) <= 1, f"has a {axes.dtype} axis tensor of shape {list(axes.shape)}")
        x = ins[0].shape
        rank = len(x)
        values = _constant_ints(r, axes, buffers)
        need(values is None or all(-rank <= v < rank for v in values), f"reduces axes {values} of a rank-{rank} input")
        if values is not None:
            reduced = {v % rank for v in values} if rank else set()
            keep = op.param("keep_dims")
            expected = tuple(1 if i in reduced else d for i, d in enumerate(x)) if keep else \
                tuple(d for i, d in enumerate(x) if i not in reduced)
            need(outs[0].shape == expected, f"reduces {list(x)} over axes {list(values)} "
                 f"{'keeping' if keep else 'dropping'} them, but declares output {list(outs[0].shape)}")
        same_dtype(ins[0], outs[0])
    elif name in _PAD_OPS:
        needs_io(2)
        x, y, pads = ins[0].shape, outs[0].shape, ins[1]
        need(len(x) == len(y) and pads.shape == (len(x), 2),
             f"pads input {list(x)} to {list(y)} with paddings of shape {list(pads.shape)}")
        values = _constant_ints(r, pads, buffers)
        if values is not None:
            need(all(v >= 0 for v in values) and
                 all(y[i] == x[i] + values[2 * i] + values[2 * i + 1] for i in range(len(x))),
                 f"pads input {list(x)} by {list(values)} but declares output {list(y)}")
        same_dtype(ins[0], outs[0])
    elif name == "CONCATENATION":
        need(len(ins) >= 1 and None not in ins and len(outs) >= 1, "needs inputs and an output")
        y = outs[0].shape
        axis = op.param("axis") + len(y) if op.param("axis") < 0 else op.param("axis")
        need(0 <= axis < len(y) and all(len(t.shape) == len(y) for t in ins),
             f"concatenates along axis {op.param('axis')} tensors of shapes {[list(t.shape) for t in ins]} into {list(y)}")
        need(sum(t.shape[axis] for t in ins) == y[axis] and
             all(t.shape[:axis] + t.shape[axis + 1:] == y[:axis] + y[axis + 1:] for t in ins),
             f"concatenates {[list(t.shape) for t in ins]} along axis {op.param('axis')} into {list(y)}: the shapes do not fit")
        same_dtype(*ins, outs[0])
    elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        needs_io(2)
        x, w, y = ins[0].shape, ins[1].shape, outs[0].shape
        need(len(x) == len(w) == len(y) == 4, f"needs 4-D input, filter and output, got {list(x)}, {list(w)}, {list(y)}")
        need(x[0] == y[0], f"changes the batch from {x[0]} to {y[0]}")
        if name == "CONV_2D":
            need(w[3] > 0 and x[3] % w[3] == 0 and w[0] % max(x[3] // w[3], 1) == 0,
                 f"has {x[3]} input channels for a filter of shape {list(w)}")
            need(y[3] == w[0], f"has {y[3]} output channels for a filter of shape {list(w)}")
        else:
            need(w[0] == 1 and y[3] == w[3], f"has output shape {list(y)} for a depthwise filter of shape {list(w)}")
            need(x[3] > 0 and y[3] % x[3] == 0, f"has {x[3]} input channels for {y[3]} output channels")
            multiplier = op.param("depth_multiplier")
            need(multiplier in (0, y[3] // x[3]),
                 f"has depth multiplier {multiplier} for {x[3]} input and {y[3]} output channels")
        bias_fits(y[3])
        same_dtype(ins[0], outs[0])
    elif name == "FULLY_CONNECTED":
        needs_io(2)
        x, w, y = ins[0].shape, ins[1].shape, outs[0].shape
        need(len(w) == 2 and w[1] > 0 and len(y) >= 1, f"needs 2-D weights, got {list(w)} (output {list(y)})")
        need(_prod(x) % w[1] == 0 and y[-1] == w[0] and _prod(y) == _prod(x) // w[1] * w[0],
             f"maps input {list(x)} with weights {list(w)} to output {list(y)}: the shapes do not fit")
        bias_fits(w[0])
        same_dtype(ins[0], outs[0])
    elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"):
        needs_io(1)
        x, y = ins[0].shape, outs[0].shape
        need(len(x) == len(y) == 4 and x[0] == y[0] and x[3] == y[3],
             f"pools input {list(x)} into output {list(y)}: needs 4-D, same batch and channels")
        same_dtype(ins[0], outs[0])


def _subgraph(r: _Reader, t: _Table, s: int, opcodes, buffers, nsubgraphs: int) -> Subgraph:
    where = f"subgraph {s}"
    tensors = tuple(_tensor(r, tt, k, where, buffers) for k, tt in enumerate(t.tables(0, f"{where} tensors")))
    inputs = t.numbers(1, "i", f"{where} inputs")
    outputs = t.numbers(2, "i", f"{where} outputs")
    for i in (*inputs, *outputs):
        _check_index(r, i, len(tensors), f"{where} input/output tensor")
    operators = tuple(
        _operator(r, ot, k, where, opcodes, len(tensors), nsubgraphs)
        for k, ot in enumerate(t.tables(3, f"{where} operators"))
    )
    for op in operators:
        _check_operator(r, op, tensors, buffers, where)
    name = t.string(4, f"{where} name") or ""
    return Subgraph(name, tensors, tuple(inputs), tuple(outputs), operators)


def parse(content: bytes, source: str = "model") -> Model:
    """Check and read a TFLite flatbuffer; any structural problem raises :class:`InputError`."""
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
        raise InputError(f"{source} is not a TFLite model: only {n} bytes (a .tflite file is far larger); "
                         "the file is empty or truncated")
    if content[4:8] != IDENTIFIER:
        raise InputError(f"{source} is not a TFLite model: its file identifier is {content[4:8]!r}, expected "
                         f"{IDENTIFIER!r}; pass a .tflite file made by the TFLite converter")
    r = _Reader(content, source)
    root = r.table(r.unpack("<I", 0, "root offset"), "model table")
    version = root.scalar(0, "<I", 0)
    if version != SCHEMA_VERSION:
        r.fail(f"schema version is {version}, expected {SCHEMA_VERSION}")
    opcodes = _opcodes(r, root)
    buffers = _buffers(r, root)
    subgraph_tables = root.tables(2, "subgraph")
    if not subgraph_tables:
        r.fail("it has no subgraphs")
    subgraphs = tuple(_subgraph(r, t, s, opcodes, buffers, len(subgraph_tables)) for s, t in enumerate(subgraph_tables))
    if not subgraphs[0].inputs or not subgraphs[0].outputs:
        r.fail("its main subgraph has no inputs or no outputs")
    description = root.string(3, "model description") or ""
    for b in root.numbers(5, "i", "metadata buffer list"):
        _check_index(r, b, len(buffers), "metadata buffer index")
    metadata = []
    for k, t in enumerate(root.tables(6, "metadata")):
        name = t.string(0, f"metadata {k} name") or ""
        buffer = t.scalar(1, "<I", 0)
        _check_index(r, buffer, len(buffers), f"metadata {name[:40]!r} buffer index")
        metadata.append((name, buffer))
    keys = []
    for k, t in enumerate(root.tables(7, "signature")):
        sub = t.scalar(4, "<I", 0)
        _check_index(r, sub, len(subgraphs), f"signature {k} subgraph index")
        for slot in (0, 1):
            for m in t.tables(slot, f"signature {k} tensor map"):
                m.string(0, f"signature {k} tensor name")
                _check_index(r, m.scalar(1, "<I", 0), len(subgraphs[sub].tensors), f"signature {k} tensor index")
        keys.append(t.string(2, f"signature {k} key") or "")
    return Model(n, version, description, opcodes, subgraphs, buffers, tuple(metadata), tuple(keys), content)


__all__ = ["parse", "Model", "Subgraph", "Tensor", "Operator", "OpCode", "TENSOR_TYPES", "OP_NAMES",
           "IDENTIFIER", "MAX_TENSOR_BYTES"]

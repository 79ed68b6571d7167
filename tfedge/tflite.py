"""The one home of a TFLite model in tfedge: :class:`TFLiteModel`, the tensor description :class:`TensorInfo`,
:func:`model_bytes` (a path, bytes or model to verified bytes) and what every step reads from a flatbuffer
(its quantization mode, its non-int8 ops, readable tensor labels).

TensorFlow-free: numpy and tfedge's bounds-checked flatbuffer reader only, so inspection, the runtimes
and the TFLite Micro worker use it without paying for a TensorFlow import.

>>> model = TFLiteModel(tiny_int8_model())
>>> model.quantization, model.inputs[0].dtype, model.inputs[0].shape
('int8', 'int8', (1, 4))
>>> model.outputs[0].to_dict()["shape"]
[1, 2]
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from tfedge.errors import InputError, ModelError
from tfedge.files import PathLike, atomic_write_bytes, check_output_path, read_bytes
from tfedge.flatbuffer import Model, Subgraph, Tensor, pack, parse

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike

#: Conversion modes of ``tfedge.convert``: full integer (int8, or int16 activations with int8 weights),
#: float16 weights, dynamic-range (int8 weights, float math) and plain float32.
QUANTIZATION_MODES = ("int8", "int16x8", "int4", "float16", "dynamic", "float32")
#: Tensor dtypes that make a model not integer-only.
FLOAT_DTYPES = frozenset(
    {"float32", "float16", "float64", "bfloat16", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2"}
)
#: Dtypes allowed anywhere in a fully int8 model: int8 data, int32 biases / shapes, int64 / bool indices.
INT8_MODEL_DTYPES = frozenset({"int8", "int32", "int64", "bool"})


# ----------------------------------------------------------------------------------------------
# quantize / dequantize


def _check_scale(scale: Any, zero_point: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scale, dtype=np.float64)
    z = np.asarray(zero_point)
    if s.size == 0 or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise InputError(f"quantization scale must be a positive finite number, got {scale!r}")
    if z.size == 0 or not np.all(np.isfinite(z)) or not np.all(np.asarray(z, np.float64) == np.round(z)):
        raise InputError(f"quantization zero_point must be an integer, got {zero_point!r}")
    return s, z.astype(np.int64)


def quantize(x: ArrayLike, scale: float, zero_point: int, dtype: DTypeLike = np.int8) -> np.ndarray:
    """Map floats to integers of ``dtype``: ``round(x / scale) + zero_point``, clipped to the dtype's range.

    Rounds half away from zero, as TFLite's own QUANTIZE kernel does. Values outside the representable
    range (infinities included) are clipped; NaN is refused. Inside the range,
    ``dequantize(quantize(x))`` is within ``scale / 2`` of ``x`` (plus float32 rounding).

    >>> quantize([-1.0, 0.26, 0.25, -0.25, 100.0], scale=0.5, zero_point=0)
    array([ -2,   1,   1,  -1, 127], dtype=int8)
    """
    dt = np.dtype(dtype)
    if dt.kind not in "iu":
        raise InputError(f"quantize needs an integer dtype (int8, uint8, int16, ...), got {dt}")
    s, z = _check_scale(scale, zero_point)
    values = np.asarray(x, dtype=np.float64)
    if np.isnan(values).any():
        raise InputError(f"cannot quantize NaN: {int(np.isnan(values).sum())} input values are NaN; clean the data")
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = values / s
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + z
    info = np.iinfo(dt)
    return np.clip(rounded, info.min, info.max).astype(dt)


def dequantize(q: ArrayLike, scale: float, zero_point: int) -> np.ndarray:
    """Map quantized integers back to float32: ``(q - zero_point) * scale``.

    >>> dequantize(np.array([-128, 0, 127], np.int8), 0.5, -128)
    array([  0. ,  64. , 127.5], dtype=float32)
    """
    s, z = _check_scale(scale, zero_point)
    return ((np.asarray(q, dtype=np.float64) - z) * s).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# the tensor description


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, tensor index, shape, dtype and per-tensor quantization.

    ``scale == 0`` means the tensor is not quantized per tensor (float, or quantized per axis);
    :meth:`quantize` / :meth:`dequantize` then only cast. ``index`` is the tensor's index in the main
    subgraph (-1 when a runtime did not report it). ``to_dict()`` is the JSON form used by
    ``tfedge inspect --json`` and ``tfedge validate --json``.

    >>> info = TensorInfo(name="x", index=0, shape=(1, 4), dtype="int8", scale=0.5, zero_point=-1)
    >>> info.quantize([1.0, -0.25]), info.to_dict()["shape"]
    (array([ 1, -2], dtype=int8), [1, 4])
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample: without the leading batch dimension of 1, or the whole shape when the
        tensor has none (e.g. an audio front end's ``(16,)`` input). See :func:`sample_shape`."""
        return sample_shape(self.shape)

    @property
    def quantized(self) -> bool:
        """True for an integer tensor with a per-tensor scale."""
        return self.scale > 0 and np.dtype(self.dtype).kind in "iu"

    def quantize(self, x: ArrayLike) -> np.ndarray:
        """Float samples to what this tensor holds (the shared :func:`quantize`, or a cast)."""
        if self.quantized:
            return quantize(x, self.scale, self.zero_point, self.dtype)
        return np.asarray(x, dtype=self.dtype)

    def dequantize(self, q: ArrayLike) -> np.ndarray:
        """What this tensor holds to float32 (the shared :func:`dequantize`, or a cast)."""
        if self.quantized:
            return dequantize(q, self.scale, self.zero_point)
        return np.asarray(q, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: shape as a list, dtype as its name."""
        return {
            "name": self.name,
            "index": self.index,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }

    def details(self) -> dict[str, Any]:
        """The same fields in LiteRT's ``get_input_details`` style: a numpy dtype and a tuple shape."""
        return {
            "name": self.name,
            "index": self.index,
            "shape": self.shape,
            "dtype": np.dtype(self.dtype),
            "scale": self.scale,
            "zero_point": self.zero_point,
        }

    @classmethod
    def from_tensor(cls, t: Tensor, name: str | None = None) -> TensorInfo:
        """From a tensor of the parsed flatbuffer; ``name`` replaces an empty tensor name."""
        return cls(
            name=t.name or (name or ""),
            index=t.index,
            shape=tuple(int(d) for d in t.shape),
            dtype=t.dtype,
            scale=float(t.scale[0]) if len(t.scale) == 1 else 0.0,
            zero_point=int(t.zero_point[0]) if len(t.zero_point) == 1 else 0,
        )

    @classmethod
    def from_details(cls, d: dict, source: str, what: str) -> TensorInfo:
        """From a LiteRT / TFLite Micro details dict; per-axis quantized I/O is refused (``ModelError``)."""
        qp = d.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []), np.float64).reshape(-1)
        zps = np.asarray(qp.get("zero_points", []), np.int64).reshape(-1)
        if scales.size > 1:
            raise per_axis_error(source, what, scales.size)
        return cls(
            name=str(d.get("name", what)),
            index=int(d.get("index", -1)),
            shape=tuple(int(v) for v in np.asarray(d["shape"]).reshape(-1)),
            dtype=np.dtype(d["dtype"]).name,
            scale=float(scales[0]) if scales.size else 0.0,
            zero_point=int(zps[0]) if zps.size else 0,
        )


def sample_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """One sample of a tensor shaped ``shape``: the shape after a leading batch dimension of 1, else all of it.

    >>> sample_shape((1, 8, 8, 1)), sample_shape((16,)), sample_shape((1,))
    ((8, 8, 1), (16,), ())
    """
    dims = tuple(int(d) for d in shape)
    return dims[1:] if dims and dims[0] == 1 else dims


def per_axis_error(source: str, what: str, scales: int) -> ModelError:
    """The one message for a model input / output quantized per axis, which tfedge cannot feed."""
    return ModelError(
        f"{source}: the model {what} is quantized per axis ({scales} scales); tfedge handles "
        "per-tensor quantized inputs and outputs only: convert with tfedge.convert"
    )


# ----------------------------------------------------------------------------------------------
# what a flatbuffer says about itself


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
                found.append(
                    {
                        "subgraph": s,
                        "index": op.index,
                        "op": op.op,
                        "tensors": [[labels[t.index], t.dtype] for t in bad],
                    }
                )
        allowed = seen | boundary_in | boundary_out
        stray = [t for t in sub.tensors if t.index not in allowed and t.dtype not in INT8_MODEL_DTYPES]
        if stray:
            found.append(
                {
                    "subgraph": s,
                    "index": -1,
                    "op": "(no operator)",
                    "tensors": [[labels[t.index], t.dtype] for t in stray],
                }
            )
    return found


def guess_quantization(model: Model) -> str:
    """The conversion mode a model looks like: one of :data:`QUANTIZATION_MODES`, ``integer`` or ``mixed``.

    >>> guess_quantization(parse(tiny_int8_model()))
    'int8'
    """
    tensors = [t for sub in model.subgraphs for t in sub.tensors]
    float_io_only = not non_int8_ops(model, allow_float_io=True)
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


# ----------------------------------------------------------------------------------------------
# path, bytes or model -> verified bytes


def model_bytes(model_or_path: ModelSource, what: str = "model") -> tuple[bytes, str]:
    """Return ``(content, source)`` for a ``.tflite`` path, its bytes or a :class:`TFLiteModel`, verified.

    ``source`` names the model in messages: ``TFLite model 'PATH'``, ``TFLite model (bytes)`` or the
    model's own ``source``. Bytes and files go through the structural check of
    :func:`tfedge.flatbuffer.parse` before any runtime sees them; anything malformed, empty or of the
    wrong type raises :class:`~tfedge.errors.InputError` naming ``what``.

    >>> model_bytes(b"not a model")
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: TFLite model (bytes) is not a TFLite model: only 11 bytes ...
    """
    if isinstance(model_or_path, TFLiteModel):
        return model_or_path.content, model_or_path.source  # checked when it was made
    if isinstance(model_or_path, (bytes, bytearray, memoryview)):
        content, source = bytes(model_or_path), "TFLite model (bytes)"
    elif isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        content, source = read_bytes(path, what="TFLite model"), f"TFLite model '{path}'"
    elif hasattr(model_or_path, "predict") and hasattr(model_or_path, "layers"):
        raise InputError(
            f"{what} is a Keras model ({type(model_or_path).__name__}); this step reads TFLite files: "
            "convert it first with tfedge.convert(model, representative_data=x)"
        )
    else:
        raise InputError(
            f"{what} must be a .tflite path, its bytes or a tfedge.TFLiteModel, got {type(model_or_path).__name__}"
        )
    parse(content, source)
    return content, source


# ----------------------------------------------------------------------------------------------
# the model


class TFLiteModel:
    """A converted (or loaded) TFLite flatbuffer, structurally checked when created.

    ``content`` holds the bytes; ``inputs`` / ``outputs`` describe the main subgraph's tensors
    (:class:`TensorInfo`); ``input_details`` / ``output_details`` show them as LiteRT-style dicts
    (``name``, ``index``, ``shape`` tuple, numpy ``dtype``, ``scale``, ``zero_point``; scale 0.0 = not
    quantized). ``quantization`` is the mode it was converted in (read from the file when not given).

    >>> from tfedge.errors import InputError
    >>> try:
    ...     TFLiteModel.from_bytes(b"hello", source="upload")
    ... except InputError as exc:
    ...     print(exc)
    upload is not a TFLite model: only 5 bytes (a .tflite file is far larger); the file is empty or truncated
    """

    def __init__(
        self,
        content: bytes,
        *,
        quantization: str | None = None,
        notes: Iterable[str] = (),
        source: str = "TFLite model",
    ):
        parsed = parse(content, source)
        self._content = parsed.content
        self.source = source
        self.notes: tuple[str, ...] = tuple(notes)
        self._gzip_size: int | None = None
        main = parsed.subgraphs[0]
        self.inputs = tuple(TensorInfo.from_tensor(main.tensors[i]) for i in main.inputs)
        self.outputs = tuple(TensorInfo.from_tensor(main.tensors[i]) for i in main.outputs)
        self.quantization = guess_quantization(parsed) if quantization is None else quantization

    @property
    def content(self) -> bytes:
        """The flatbuffer bytes."""
        return self._content

    @property
    def input_details(self) -> list[dict[str, Any]]:
        """:attr:`inputs` as LiteRT-style dicts (see :meth:`TensorInfo.details`)."""
        return [t.details() for t in self.inputs]

    @property
    def output_details(self) -> list[dict[str, Any]]:
        """:attr:`outputs` as LiteRT-style dicts (see :meth:`TensorInfo.details`)."""
        return [t.details() for t in self.outputs]

    @property
    def size(self) -> int:
        """Size of the file in bytes."""
        return len(self._content)

    @property
    def gzip_size(self) -> int:
        """Size after gzip (level 9): what pruning's zeros buy on the wire and in flash images."""
        if self._gzip_size is None:
            self._gzip_size = gzip_size(self._content)
        return self._gzip_size

    @classmethod
    def from_bytes(cls, content: bytes, source: str = "TFLite model") -> TFLiteModel:
        """Wrap ``.tflite`` bytes after the structural checks (``InputError`` if malformed)."""
        return cls(content, source=source)

    @classmethod
    def from_file(cls, path: PathLike) -> TFLiteModel:
        """Read a ``.tflite`` file after the structural checks (``InputError`` if malformed)."""
        return cls(read_bytes(path, what="TFLite model"), source=f"TFLite model '{path}'")

    def save(self, path: PathLike) -> Path:
        """Write the model to ``path`` atomically: on any failure an existing file is left untouched."""
        p = check_output_path(path, what="output model")
        try:
            atomic_write_bytes(p, self._content)
        except OSError as exc:
            raise InputError(
                f"cannot write '{p}': {exc.strerror or exc}; any existing file there is unchanged"
            ) from None
        return p

    def __repr__(self) -> str:
        def fmt(tensors: Sequence[TensorInfo]) -> str:
            return ", ".join(f"{t.dtype}{list(t.shape)}" for t in tensors)

        return (
            f"TFLiteModel({self.quantization}, {self.size:,} bytes, inputs=[{fmt(self.inputs)}], "
            f"outputs=[{fmt(self.outputs)}])"
        )


#: What every step that reads a TFLite model accepts: a ``.tflite`` path, its bytes, or a ``TFLiteModel``.
ModelSource = Union[str, "os.PathLike[str]", bytes, TFLiteModel]


def gzip_size(content: bytes) -> int:
    """Bytes after gzip level 9 (no timestamp, so the figure is reproducible)."""
    return len(gzip.compress(content, compresslevel=9, mtime=0))


# ----------------------------------------------------------------------------------------------
# a model for examples


@functools.lru_cache(maxsize=1)
def tiny_int8_model() -> bytes:
    """A tiny fully int8 TFLite model, ``FULLY_CONNECTED`` 4 -> 2 with fixed weights, for examples and tests.

    Written with the flatbuffer schema that ``ai_edge_litert`` ships (no TensorFlow, a millisecond); the
    input takes floats in [-1, 1]. LiteRT and TFLite Micro both run it.

    >>> TFLiteModel(tiny_int8_model())
    TFLiteModel(int8, ... bytes, inputs=[int8[1, 4]], outputs=[int8[1, 2]])
    """
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name: str, shape: list[int], dtype: int, buffer: int, scale: float, zero_point: int):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, dtype, buffer
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [scale], [zero_point]
        return t

    def buffer(data: bytes | None):
        b = schema.BufferT()
        b.data = None if data is None else list(data)
        return b

    in_scale, w_scale, out_scale = 2 / 255, 1 / 127, 4 / 255
    weights = np.array([[64, -32, 127, 0], [-127, 96, 16, -64]], np.int8)  # (out, in), scale 1/127
    bias = np.array([12, -7], np.int32)  # scale in_scale * w_scale
    types = schema.TensorType
    sub = schema.SubGraphT()
    sub.tensors = [
        tensor("input", [1, 4], types.INT8, 0, in_scale, -1),
        tensor("weights", [2, 4], types.INT8, 1, w_scale, 0),
        tensor("bias", [2], types.INT32, 2, in_scale * w_scale, 0),
        tensor("output", [1, 2], types.INT8, 0, out_scale, 0),
    ]
    sub.inputs, sub.outputs = [0], [3]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = schema.FullyConnectedOptionsT()
    sub.operators = [op]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    code.version = 4
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [sub]
    model.buffers = [buffer(None), buffer(weights.tobytes()), buffer(bias.tobytes())]
    return pack(model)


__all__ = [
    "TFLiteModel",
    "TensorInfo",
    "ModelSource",
    "model_bytes",
    "quantize",
    "dequantize",
    "tensor_labels",
    "non_int8_ops",
    "guess_quantization",
    "gzip_size",
    "tiny_int8_model",
    "per_axis_error",
    "sample_shape",
    "QUANTIZATION_MODES",
    "FLOAT_DTYPES",
    "INT8_MODEL_DTYPES",
]

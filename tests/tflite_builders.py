"""Hand-built ``.tflite`` flatbuffers shaped like the files users really have (third-party, not made by tfedge).

Built with the object API of the schema that ``ai_edge_litert`` ships, so every file is well-formed by
construction; what makes each one unusual is named in its builder's docstring. Tests use them to check that
tfedge reads, runs and exports what a runtime runs, and names what a runtime refuses.

Each builder returns the model's bytes; ``TensorSpec`` keeps the tables short.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

T = schema.TensorType
Op = schema.BuiltinOperator
Opt = schema.BuiltinOptions

_NUMPY = {
    T.FLOAT32: np.float32,
    T.INT8: np.int8,
    T.UINT8: np.uint8,
    T.INT16: np.int16,
    T.INT32: np.int32,
    T.INT64: np.int64,
}


@dataclasses.dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: int = T.INT8
    scale: Sequence[float] | None = None  # None: no quantization parameters at all
    zero_point: Sequence[int] | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant data (a weight or bias)


@dataclasses.dataclass
class OpSpec:
    op: int | str  # a BuiltinOperator code, or a custom op's name
    inputs: Sequence[int]
    outputs: Sequence[int]
    options_type: int = 0
    options: object = None
    custom_options: bytes | None = None


def build(
    tensors: Sequence[TensorSpec],
    ops: Sequence[OpSpec],
    inputs: Sequence[int],
    outputs: Sequence[int],
    *,
    description: str = "hand-built",
    metadata: dict[str, bytes] | None = None,
    signature: bool = False,
) -> bytes:
    """A one-subgraph model from tensor and op specs (buffer 0 is the empty sentinel, as the converter does)."""
    model = schema.ModelT()
    model.version = 3
    model.description = description
    model.buffers = [schema.BufferT()]
    codes: list[tuple[int, str | None]] = []
    sub = schema.SubGraphT()
    sub.name = "main"
    sub.tensors = []
    for spec in tensors:
        t = schema.TensorT()
        t.name = spec.name
        t.shape = list(spec.shape)
        t.type = spec.dtype
        t.buffer = 0
        if spec.data is not None:
            buf = schema.BufferT()
            buf.data = list(np.ascontiguousarray(spec.data, dtype=_NUMPY[spec.dtype]).tobytes())
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        if spec.scale is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(s) for s in spec.scale]
            q.zeroPoint = [int(z) for z in (spec.zero_point if spec.zero_point is not None else [0] * len(q.scale))]
            q.quantizedDimension = spec.quantized_dimension
            t.quantization = q
        sub.tensors.append(t)
    sub.operators = []
    for spec in ops:
        key = (Op.CUSTOM, spec.op) if isinstance(spec.op, str) else (spec.op, None)
        if key not in codes:
            codes.append(key)
        o = schema.OperatorT()
        o.opcodeIndex = codes.index(key)
        o.inputs = list(spec.inputs)
        o.outputs = list(spec.outputs)
        o.builtinOptionsType = spec.options_type
        o.builtinOptions = spec.options
        if spec.custom_options is not None:
            o.customOptions = list(spec.custom_options)
        sub.operators.append(o)
    sub.inputs = list(inputs)
    sub.outputs = list(outputs)
    model.subgraphs = [sub]
    model.operatorCodes = []
    for code, custom in codes:
        oc = schema.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127)
        oc.customCode = custom
        oc.version = 1
        model.operatorCodes.append(oc)
    if metadata:
        model.metadata = []
        for name, data in metadata.items():
            buf = schema.BufferT()
            buf.data = list(data)
            model.buffers.append(buf)
            entry = schema.MetadataT()
            entry.name = name
            entry.buffer = len(model.buffers) - 1
            model.metadata.append(entry)
    if signature:
        sig = schema.SignatureDefT()
        sig.signatureKey = "serving_default"
        sig.subgraphIndex = 0
        sig.inputs = [_tensor_map(sub.tensors[i].name, i) for i in inputs]
        sig.outputs = [_tensor_map(sub.tensors[i].name, i) for i in outputs]
        model.signatureDefs = [sig]
    return pack(model)


def _tensor_map(name: str, index: int) -> schema.TensorMapT:
    m = schema.TensorMapT()
    m.name = name
    m.tensorIndex = index
    return m


def pack(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def repack(content: bytes, edit: Callable[[schema.ModelT], None]) -> bytes:
    """``content`` rebuilt through the object API after ``edit`` changed the model in place."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    edit(model)
    return pack(model)


def _fc_options() -> schema.FullyConnectedOptionsT:
    o = schema.FullyConnectedOptionsT()
    o.fusedActivationFunction = schema.ActivationFunctionType.NONE
    return o


def _softmax_options() -> schema.SoftmaxOptionsT:
    o = schema.SoftmaxOptionsT()
    o.beta = 1.0
    return o


def _fc_weights(units: int, features: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-127, 128, size=(units, features)).astype(np.int8)


def fc_softmax_int8_to_int16(features: int = 16, classes: int = 10) -> bytes:
    """Keyword-spotting style head: int8 FULLY_CONNECTED, then a SOFTMAX that reads int8 and writes int16."""
    tensors = [
        TensorSpec("input", (1, features), T.INT8, [0.05], [-3]),
        TensorSpec("weights", (classes, features), T.INT8, [0.01], [0], data=_fc_weights(classes, features)),
        TensorSpec("bias", (classes,), T.INT32, [0.0005], [0], data=np.arange(classes, dtype=np.int32) * 7),
        TensorSpec("logits", (1, classes), T.INT8, [0.2], [5]),
        TensorSpec("probs", (1, classes), T.INT16, [1 / 65536], [-32768]),
    ]
    ops = [
        OpSpec(Op.FULLY_CONNECTED, [0, 1, 2], [3], Opt.FullyConnectedOptions, _fc_options()),
        OpSpec(Op.SOFTMAX, [3], [4], Opt.SoftmaxOptions, _softmax_options()),
    ]
    return build(tensors, ops, [0], [4], description="int8 -> int16 softmax")


def fc_bias_quantized_dimension_3(features: int = 16, units: int = 4) -> bytes:
    """Person-detection style oddity: a rank-1 int32 bias whose quantization declares ``quantized_dimension`` 3."""
    tensors = [
        TensorSpec("input", (1, features), T.INT8, [0.05], [0]),
        TensorSpec("weights", (units, features), T.INT8, [0.01], [0], data=_fc_weights(units, features, 1)),
        TensorSpec(
            "bias",
            (units,),
            T.INT32,
            [0.0005],
            [0],
            quantized_dimension=3,
            data=np.array([5, -5, 50, -50][:units] + [0] * max(0, units - 4), dtype=np.int32),
        ),
        TensorSpec("output", (1, units), T.INT8, [0.1], [0]),
    ]
    ops = [OpSpec(Op.FULLY_CONNECTED, [0, 1, 2], [3], Opt.FullyConnectedOptions, _fc_options())]
    return build(tensors, ops, [0], [3], description="rank-1 bias, quantized_dimension 3")


def two_inputs_two_outputs(width: int = 8) -> bytes:
    """Two int8 inputs, ADD and SUB of them as two outputs (a multi-head model's shape)."""
    q = ([0.05], [2])
    tensors = [
        TensorSpec("left", (1, width), T.INT8, *q),
        TensorSpec("right", (1, width), T.INT8, *q),
        TensorSpec("sum", (1, width), T.INT8, [0.1], [0]),
        TensorSpec("difference", (1, width), T.INT8, [0.1], [-1]),
    ]
    add, sub = schema.AddOptionsT(), schema.SubOptionsT()
    ops = [OpSpec(Op.ADD, [0, 1], [2], Opt.AddOptions, add), OpSpec(Op.SUB, [0, 1], [3], Opt.SubOptions, sub)]
    return build(tensors, ops, [0, 1], [2, 3], description="two inputs, two outputs", signature=True)


def custom_op_int16_no_quantization(name: str = "SignalWindow", length: int = 16) -> bytes:
    """Audio front end style: a custom op between int16 tensors that carry no quantization parameters."""
    tensors = [
        TensorSpec("audio", (length,), T.INT16),
        TensorSpec("window", (length,), T.INT16, data=np.arange(length, dtype=np.int16) * 100),
        TensorSpec("windowed", (length,), T.INT16),
    ]
    ops = [OpSpec(name, [0, 1], [2], custom_options=b"\x00")]
    return build(tensors, ops, [0], [2], description="custom signal op, int16 without quantization")


def vendor_npu_custom_op() -> bytes:
    """An Ethos-U style file: one ``ethos-u`` custom op holding a command stream, uint8/int8 I/O, offline plan."""
    tensors = [
        TensorSpec("input", (1, 8, 8, 1), T.INT8, [0.0625], [-128]),
        TensorSpec("command_stream", (64,), T.UINT8, data=np.arange(64, dtype=np.uint8)),
        TensorSpec("scratch", (256,), T.UINT8),
        TensorSpec("output", (1, 10), T.INT8, [0.1], [0]),
    ]
    ops = [OpSpec("ethos-u", [1, 0, 2], [3], custom_options=b"")]
    plan = np.array([1, 0, 4, 0, -1, -1, -1, -1], dtype=np.int32).tobytes()  # version, subgraph, count, offsets
    return build(tensors, ops, [0], [3], description="vendor NPU", metadata={"OfflineMemoryAllocation": plan})


def fc_softmax_degenerate_scale(features: int = 16, classes: int = 10) -> bytes:
    """A softmax whose input calibrated to scale 7.8e-9 (a layer the calibration data never exercised)."""
    tensors = [
        TensorSpec("input", (1, features), T.INT8, [0.05], [0]),
        TensorSpec("weights", (classes, features), T.INT8, [0.01], [0], data=_fc_weights(classes, features, 2)),
        TensorSpec("bias", (classes,), T.INT32, [0.0005], [0], data=np.zeros(classes, dtype=np.int32)),
        TensorSpec("logits", (1, classes), T.INT8, [7.8e-9], [0]),
        TensorSpec("probs", (1, classes), T.INT8, [1 / 256], [-128]),
    ]
    ops = [
        OpSpec(Op.FULLY_CONNECTED, [0, 1, 2], [3], Opt.FullyConnectedOptions, _fc_options()),
        OpSpec(Op.SOFTMAX, [3], [4], Opt.SoftmaxOptions, _softmax_options()),
    ]
    return build(tensors, ops, [0], [4], description="degenerate softmax input scale")


def float_and_uint8_io() -> tuple[bytes, bytes]:
    """A float32 FC model and a uint8 one (the old TF1 quantized format), for the other-dtypes path."""
    features, units = 6, 3
    w = np.random.default_rng(3).normal(size=(units, features)).astype(np.float32)
    f32 = build(
        [
            TensorSpec("x", (1, features), T.FLOAT32),
            TensorSpec("w", (units, features), T.FLOAT32, data=w),
            TensorSpec("b", (units,), T.FLOAT32, data=np.zeros(units, np.float32)),
            TensorSpec("y", (1, units), T.FLOAT32),
        ],
        [OpSpec(Op.FULLY_CONNECTED, [0, 1, 2], [3], Opt.FullyConnectedOptions, _fc_options())],
        [0],
        [3],
        description="float32",
    )
    u8w = np.random.default_rng(4).integers(0, 256, size=(units, features)).astype(np.uint8)
    u8 = build(
        [
            TensorSpec("x", (1, features), T.UINT8, [0.02], [128]),
            TensorSpec("w", (units, features), T.UINT8, [0.01], [128], data=u8w),
            TensorSpec("b", (units,), T.INT32, [0.0002], [0], data=np.zeros(units, np.int32)),
            TensorSpec("y", (1, units), T.UINT8, [0.05], [128]),
        ],
        [OpSpec(Op.FULLY_CONNECTED, [0, 1, 2], [3], Opt.FullyConnectedOptions, _fc_options())],
        [0],
        [3],
        description="uint8",
    )
    return f32, u8


def fc_lut_compressed(features: int = 32, units: int = 8) -> bytes:
    """A LUT-compressed model as ``tflite_micro.compression`` writes it: FC weights with 4 distinct values
    as 2-bit packed indices plus a value table, expanded by a ``TFLM_DECODE`` custom op (TFLite Micro only)."""
    import warnings

    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    w = np.random.default_rng(5).choice(np.array([-90, -30, 30, 90], np.int8), size=(units, features))
    content = build(
        [
            TensorSpec("x", (1, features), T.INT8, [0.05], [0]),
            TensorSpec("w", (units, features), T.INT8, [0.01], [0], data=w),
            TensorSpec("b", (units,), T.INT32, [0.0005], [0], data=np.zeros(units, np.int32)),
            TensorSpec("y", (1, units), T.INT8, [0.1], [0]),
        ],
        [OpSpec(Op.FULLY_CONNECTED, [0, 1, 2], [3], Opt.FullyConnectedOptions, _fc_options())],
        [0],
        [3],
        description="LUT-compressed",
    )
    specs = compression.SpecBuilder()
    specs.add_tensor(subgraph=0, tensor=1).with_lut(index_bitwidth=2, mode=spec.PerTensor())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(compression.compress(content, specs.build()))


THIRD_PARTY = {
    "int8_to_int16_softmax": fc_softmax_int8_to_int16,
    "bias_quantized_dimension_3": fc_bias_quantized_dimension_3,
    "two_inputs_two_outputs": two_inputs_two_outputs,
    "custom_op_int16": custom_op_int16_no_quantization,
    "vendor_npu": vendor_npu_custom_op,
    "degenerate_scale": fc_softmax_degenerate_scale,
}

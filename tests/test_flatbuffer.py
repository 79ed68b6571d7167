"""tfedge's bounds-checked flatbuffer reader against the generated schema that ai_edge_litert ships.

Option tables and whole models are written with the generated builders / object API and read back
through tfedge's reader: the named field slots must be the schema's, and each op family's checker
must accept what is well formed and refuse what a kernel would index out of bounds. No TensorFlow.
"""

from __future__ import annotations

import inspect

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from tfedge import flatbuffer
from tfedge.errors import InputError
from tfedge.flatbuffer import OP_CHECKERS, OP_NAMES, parse, schema_field

# every field tfedge reads from an option table, with a value that is not the schema default
OPTION_VALUES = {
    "Conv2DOptions": {"StrideW": 2, "StrideH": 3, "DilationWFactor": 4, "DilationHFactor": 5},
    "DepthwiseConv2DOptions": {
        "StrideW": 2,
        "StrideH": 3,
        "DepthMultiplier": 6,
        "DilationWFactor": 4,
        "DilationHFactor": 5,
    },
    "Pool2DOptions": {"StrideW": 2, "StrideH": 3, "FilterWidth": 4, "FilterHeight": 5},
    "ConcatenationOptions": {"Axis": -2},
    "ReducerOptions": {"KeepDims": True},
    "IfOptions": {"ThenSubgraphIndex": 1, "ElseSubgraphIndex": 2},
    "WhileOptions": {"CondSubgraphIndex": 1, "BodySubgraphIndex": 2},
    "CallOnceOptions": {"InitSubgraphIndex": 3},
}


def _option_table(table: str, values: dict) -> bytes:
    """One option table written with the generated builder functions, as the root of a buffer."""
    builder = flatbuffers.Builder(64)
    getattr(schema, f"{table}Start")(builder)
    for name, value in values.items():
        getattr(schema, f"{table}Add{name}")(builder, value)
    builder.Finish(getattr(schema, f"{table}End")(builder))
    return bytes(builder.Output())


@pytest.mark.parametrize("table", sorted(OPTION_VALUES))
def test_named_option_fields_read_back_what_the_generated_builders_wrote(table):
    values = OPTION_VALUES[table]
    data = _option_table(table, values)
    reader = flatbuffer._Reader(data, "options")
    written = reader.table(reader.unpack("<I", 0, "root"), table)
    generated = getattr(schema, table)()
    generated.Init(data, int.from_bytes(data[:4], "little"))
    for name, value in values.items():
        field = schema_field(table, name)
        assert written.scalar(field) == value == getattr(generated, name)()
    # absent fields read as the schema's defaults, as the generated reader says
    empty = _option_table(table, {})
    reader = flatbuffer._Reader(empty, "options")
    absent = reader.table(reader.unpack("<I", 0, "root"), table)
    generated.Init(empty, int.from_bytes(empty[:4], "little"))
    for name in values:
        assert absent.scalar(schema_field(table, name)) == getattr(generated, name)()


def test_structural_field_slots_are_the_schemas():
    # the generated reader looks a field up at vtable offset 4 + 2 * slot
    for fields in (
        flatbuffer.MODEL,
        flatbuffer.TENSOR,
        flatbuffer.OPERATOR,
        flatbuffer.QUANTIZATION,
        flatbuffer.SUBGRAPH,
        flatbuffer.BUFFER,
        flatbuffer.OPERATOR_CODE,
    ):
        for field in fields.values():
            source = getattr(getattr(schema, field.table), field.name)
            assert f"self._tab.Offset({4 + 2 * field.slot})" in inspect.getsource(source), field


def test_every_checked_op_is_a_builtin_and_families_dispatch_by_name():
    builtins = set(OP_NAMES.values())
    assert set(OP_CHECKERS) <= builtins
    assert OP_CHECKERS["CONV_2D"] is OP_CHECKERS["DEPTHWISE_CONV_2D"]
    assert OP_CHECKERS["ADD"] is OP_CHECKERS["MUL"] and OP_CHECKERS["MEAN"] is OP_CHECKERS["SUM"]
    assert len(set(OP_CHECKERS.values())) == 9


# -- whole models, written with the object API ---------------------------------------------------------


def _tensor(name, shape, dtype=schema.TensorType.INT8, buffer=0, scale=0.5, zero_point=0):
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, buffer
    if scale is not None:
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [scale], [zero_point]
    return t


def _model(op_name: str, tensors, inputs, outputs, options_type=0, options=None, constants=()) -> bytes:
    """A one-op model: tensors, the op reading ``inputs`` and writing ``outputs``, constant buffers."""
    sub = schema.SubGraphT()
    sub.tensors = tensors
    sub.inputs = [i for i in inputs if not any(i == k for k, _ in constants)][:1]
    sub.outputs = list(outputs)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, list(inputs), list(outputs)
    op.builtinOptionsType, op.builtinOptions = options_type, options
    sub.operators = [op]
    code = schema.OperatorCodeT()
    code.builtinCode = getattr(schema.BuiltinOperator, op_name)
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    code.version = 1
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [sub]
    model.buffers = [schema.BufferT()]
    for tensor_index, data in constants:
        buffer = schema.BufferT()
        buffer.data = list(np.asarray(data).tobytes())
        tensors[tensor_index].buffer = len(model.buffers)
        model.buffers.append(buffer)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _conv(stride=1, dilation=1, depthwise=False, multiplier=0):
    options = schema.DepthwiseConv2DOptionsT() if depthwise else schema.Conv2DOptionsT()
    options.strideW = options.strideH = stride
    options.dilationWFactor = options.dilationHFactor = dilation
    if depthwise:
        options.depthMultiplier = multiplier
    kind = schema.BuiltinOptions.DepthwiseConv2DOptions if depthwise else schema.BuiltinOptions.Conv2DOptions
    filt = (1, 3, 3, 4) if depthwise else (4, 3, 3, 2)
    tensors = [_tensor("x", (1, 8, 8, 2)), _tensor("w", filt), _tensor("y", (1, 6, 6, 4))]
    return _model(
        "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D",
        tensors,
        [0, 1],
        [2],
        kind,
        options,
        constants=[(1, np.ones(filt, np.int8))],
    )


def test_conv_options_written_by_the_object_api_parse_and_zero_strides_are_refused():
    assert parse(_conv(stride=2, dilation=3)).subgraphs[0].operators[0].op == "CONV_2D"
    with pytest.raises(InputError, match=r"\(CONV_2D\) has a stride, dilation or window size of 0"):
        parse(_conv(stride=0))
    with pytest.raises(InputError, match=r"\(CONV_2D\) has a stride, dilation or window size of 0"):
        parse(_conv(dilation=0))


def test_depthwise_multiplier_is_read_from_its_named_field():
    op = parse(_conv(depthwise=True, multiplier=2)).subgraphs[0].operators[0]
    assert op.param("depth_multiplier") == 2
    with pytest.raises(InputError, match="has depth multiplier 3 for 2 input and 4 output channels"):
        parse(_conv(depthwise=True, multiplier=3))


@pytest.mark.parametrize("keep_dims, out_shape", [(True, (1, 1, 1, 3)), (False, (1, 3))])
def test_reducer_keep_dims_round_trips(keep_dims, out_shape):
    options = schema.ReducerOptionsT()
    options.keepDims = keep_dims
    tensors = [
        _tensor("x", (1, 4, 4, 3)),
        _tensor("axes", (2,), schema.TensorType.INT32, scale=None),
        _tensor("y", out_shape),
    ]
    content = _model(
        "MEAN",
        tensors,
        [0, 1],
        [2],
        schema.BuiltinOptions.ReducerOptions,
        options,
        constants=[(1, np.array([1, 2], np.int32))],
    )
    assert parse(content).subgraphs[0].operators[0].param("keep_dims") == int(keep_dims)
    options.keepDims = not keep_dims  # the same tensors now contradict the option
    content = _model(
        "MEAN",
        tensors,
        [0, 1],
        [2],
        schema.BuiltinOptions.ReducerOptions,
        options,
        constants=[(1, np.array([1, 2], np.int32))],
    )
    with pytest.raises(InputError, match=r"\(MEAN\) reduces \[1, 4, 4, 3\] over axes \[1, 2\]"):
        parse(content)


def test_concatenation_axis_round_trips_and_a_misfit_is_refused():
    options = schema.ConcatenationOptionsT()
    options.axis = -1
    tensors = [_tensor("a", (1, 2, 3)), _tensor("b", (1, 2, 5)), _tensor("y", (1, 2, 8))]
    content = _model("CONCATENATION", tensors, [0, 1], [2], schema.BuiltinOptions.ConcatenationOptions, options)
    assert parse(content).subgraphs[0].operators[0].param("axis") == -1
    options.axis = 1
    content = _model("CONCATENATION", tensors, [0, 1], [2], schema.BuiltinOptions.ConcatenationOptions, options)
    with pytest.raises(InputError, match=r"concatenates \[\[1, 2, 3\], \[1, 2, 5\]\] along axis 1"):
        parse(content)


def test_broadcast_and_same_shape_families():
    ok = [_tensor("a", (1, 4)), _tensor("b", (1, 1)), _tensor("y", (1, 4))]
    assert parse(_model("ADD", ok, [0, 1], [2])).subgraphs[0].operators[0].op == "ADD"
    bad = [_tensor("a", (1, 4)), _tensor("b", (1, 3)), _tensor("y", (1, 4))]
    with pytest.raises(InputError, match=r"\(ADD\) inputs of shapes \[1, 4\] and \[1, 3\] do not broadcast"):
        parse(_model("ADD", bad, [0, 1], [2]))
    with pytest.raises(InputError, match=r"\(RELU\) output shape \[1, 5\] differs from input shape \[1, 4\]"):
        parse(_model("RELU", [_tensor("x", (1, 4)), _tensor("y", (1, 5))], [0], [1]))


def _notes(content: bytes) -> list[tuple[str, str]]:
    return [(n.kind, n.message) for n in parse(content).notes]


def test_integer_tensors_without_quantization_are_read_with_a_note():
    tensors = [_tensor("x", (1, 4), scale=None), _tensor("y", (1, 4))]
    ((kind, message),) = _notes(_model("RELU", tensors, [0], [1]))
    assert kind == "no_quantization" and "(RELU) uses int8 tensor 0 'x' without quantization parameters" in message
    int16 = [
        _tensor("x", (1, 4), schema.TensorType.INT16, scale=None),
        _tensor("y", (1, 4), schema.TensorType.INT16, scale=None),
    ]
    assert [k for k, _ in _notes(_model("RELU", int16, [0], [1]))] == ["no_quantization"] * 2


def test_mixed_integer_types_are_notes_mixed_sizes_that_a_kernel_would_overrun_are_errors():
    T = schema.TensorType
    softmax = [_tensor("x", (1, 4)), _tensor("y", (1, 4), T.INT16, scale=1 / 65536, zero_point=-32768)]
    assert _notes(_model("SOFTMAX", softmax, [0], [1])) == [
        ("mixed_dtypes", "operator 0 of subgraph 0 (SOFTMAX) mixes tensor types ['int8', 'int16']")
    ]
    same_size = [
        _tensor("a", (1, 4), T.FLOAT32, scale=None),
        _tensor("b", (1, 4), T.INT32, scale=None),
        _tensor("y", (1, 4), T.FLOAT32, scale=None),
    ]
    assert [k for k, _ in _notes(_model("ADD", same_size, [0, 1], [2]))] == ["mixed_dtypes"]
    float_int8 = [_tensor("a", (1, 4), T.FLOAT32, scale=None), _tensor("b", (1, 4)), _tensor("y", (1, 4))]
    with pytest.raises(InputError, match=r"\(ADD\) mixes tensor types \['float32', 'int8', 'int8'\] of different"):
        parse(_model("ADD", float_int8, [0, 1], [2]))
    # a byte-copying op overruns its output whenever the element sizes differ, even int8 -> int16
    copy = [_tensor("x", (1, 4)), _tensor("y", (1, 4), T.INT16, scale=0.5)]
    with pytest.raises(InputError, match=r"\(RESHAPE\) mixes tensor types \['int8', 'int16'\] of different sizes"):
        parse(_model("RESHAPE", copy, [0], [1]))


def _per_channel_weights(scales: int, zero_points: int, channels: int = 4, dim: int = 0) -> bytes:
    w = _tensor("w", (channels, 3))
    w.quantization.scale = [0.01] * scales
    w.quantization.zeroPoint = [0] * zero_points
    w.quantization.quantizedDimension = dim
    tensors = [_tensor("x", (1, 3)), w, _tensor("y", (1, channels))]
    options = schema.FullyConnectedOptionsT()
    return _model(
        "FULLY_CONNECTED",
        tensors,
        [0, 1],
        [2],
        schema.BuiltinOptions.FullyConnectedOptions,
        options,
        constants=[(1, np.ones((channels, 3), np.int8))],
    )


def test_per_channel_counts_kernels_index_are_errors_the_rest_notes():
    assert _notes(_per_channel_weights(4, 4)) == []
    with pytest.raises(InputError, match="has 3 per-channel scales for 4 channels"):
        parse(_per_channel_weights(3, 3))
    with pytest.raises(InputError, match="has 4 scales but 2 zero points"):
        parse(_per_channel_weights(4, 2))
    with pytest.raises(InputError, match="quantized along dimension 5 of a rank-2 tensor"):
        parse(_per_channel_weights(4, 4, dim=5))
    ((kind, message),) = _notes(_per_channel_weights(4, 1))  # TFLite Micro's slimmed form
    assert kind == "zero_points" and "one zero point for its 4 per-channel scales" in message
    ((kind, message),) = _notes(_per_channel_weights(6, 6))
    assert kind == "scale_count" and "6 per-channel scales for 4 channels" in message


def test_degenerate_scales_and_unknown_types_are_read():
    tensors = [_tensor("x", (1, 4), scale=float("nan")), _tensor("y", (1, 4), scale=1e-40)]
    model = parse(_model("RELU", tensors, [0], [1]))
    assert np.isnan(model.subgraphs[0].tensors[0].scale[0]) and model.notes == ()
    odd = [_tensor("x", (1, 4), dtype=99, scale=None), _tensor("y", (1, 4), dtype=99, scale=None)]
    model = parse(_model("CAST", odd, [0], [1]))
    assert model.subgraphs[0].tensors[0].dtype == "type_99"
    assert [n.kind for n in model.notes] == ["unknown_type", "unknown_type"]


def test_layout_spans_lie_inside_the_file_and_cover_the_option_vectors():
    options = schema.ReshapeOptionsT()
    options.newShape = [1, 8]
    tensors = [_tensor("x", (1, 2, 4)), _tensor("y", (1, 8))]
    content = _model("RESHAPE", tensors, [0], [1], schema.BuiltinOptions.ReshapeOptions, options)
    model = parse(content, layout=True)
    assert all(0 <= start and start + size <= len(content) for start, size, _ in model.layout)
    parts = {part for _, _, part in model.layout}
    assert {"header", "Model", "ReshapeOptions.NewShape", "Tensor.Name", "QuantizationParameters.Scale"} <= parts
    assert parse(content).layout == ()

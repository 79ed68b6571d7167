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
    "DepthwiseConv2DOptions": {"StrideW": 2, "StrideH": 3, "DepthMultiplier": 6, "DilationWFactor": 4,
                               "DilationHFactor": 5},
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
    for fields in (flatbuffer.MODEL, flatbuffer.TENSOR, flatbuffer.OPERATOR, flatbuffer.QUANTIZATION,
                   flatbuffer.SUBGRAPH, flatbuffer.BUFFER, flatbuffer.OPERATOR_CODE):
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
    return _model("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", tensors, [0, 1], [2], kind, options,
                  constants=[(1, np.ones(filt, np.int8))])


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
    tensors = [_tensor("x", (1, 4, 4, 3)), _tensor("axes", (2,), schema.TensorType.INT32, scale=None),
               _tensor("y", out_shape)]
    content = _model("MEAN", tensors, [0, 1], [2], schema.BuiltinOptions.ReducerOptions, options,
                     constants=[(1, np.array([1, 2], np.int32))])
    assert parse(content).subgraphs[0].operators[0].param("keep_dims") == int(keep_dims)
    options.keepDims = not keep_dims  # the same tensors now contradict the option
    content = _model("MEAN", tensors, [0, 1], [2], schema.BuiltinOptions.ReducerOptions, options,
                     constants=[(1, np.array([1, 2], np.int32))])
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


def test_an_int8_tensor_without_quantization_parameters_is_refused():
    tensors = [_tensor("x", (1, 4), scale=None), _tensor("y", (1, 4))]
    with pytest.raises(InputError, match="uses int8 tensor 0 without quantization parameters"):
        parse(_model("RELU", tensors, [0], [1]))

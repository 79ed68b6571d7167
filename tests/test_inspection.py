"""tfedge.inspection / tfedge.flatbuffer: what inspect reports (checked against LiteRT and TFLite Micro)
and that malformed files raise InputError, never anything else, and never reach TFLite Micro."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

from tfedge._keras import tf

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from hypothesis import HealthCheck, given, settings, strategies as st

from tfedge import cli, keras
from tfedge.conversion import convert
from tfedge.errors import InputError
from tfedge.flatbuffer import parse
from tfedge.inspection import TFLM_BUILTIN_OPS, inspect, verify

L = keras.layers


@pytest.fixture(scope="module")
def int8_tfl(small_cnn, digits):
    return convert(small_cnn, digits.x_train, strip_metadata=False)


@pytest.fixture(scope="module")
def valid(int8_tfl) -> bytes:
    return int8_tfl.content


# ---------------------------------------------------------------------------------------------
# what inspect reports


def test_inspect_reports_ops_dtypes_io_and_sizes_like_litert(int8_tfl, tmp_path):
    info = inspect(int8_tfl)
    assert info.ops == {"CONV_2D": 1, "MAX_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1}
    assert info.fully_int8 and info.quantization == "int8" and info.non_int8_ops == []
    assert set(info.dtypes) == {"int8", "int32"}
    assert info.bytes == int8_tfl.size and info.gzip_bytes == int8_tfl.gzip_size < info.bytes
    assert info.tflm_unsupported_ops == [] and info.subgraphs == 1

    it = Interpreter(model_content=int8_tfl.content)
    litert = {d["index"]: d for d in it.get_tensor_details()}
    for t in info.tensors:  # every tensor: same name, dtype and shape as LiteRT reads them
        d = litert[t["index"]]
        assert (t["name"], t["dtype"], t["shape"]) == (d["name"], np.dtype(d["dtype"]).name, list(d["shape"]))
    for ours, theirs in ((info.inputs, it.get_input_details()), (info.outputs, it.get_output_details())):
        assert [(o["name"], o["shape"], o["dtype"]) for o in ours] == \
               [(t["name"], list(t["shape"]), np.dtype(t["dtype"]).name) for t in theirs]
        for o, t in zip(ours, theirs, strict=False):
            assert (o["scale"], o["zero_point"]) == pytest.approx(t["quantization"])

    path = tmp_path / "m.tflite"
    int8_tfl.save(path)
    for source in (path, str(path), int8_tfl.content):
        assert inspect(source).to_dict() | {"source": ""} == info.to_dict() | {"source": ""}
    assert json.loads(json.dumps(info.to_dict())) == info.to_dict()
    table = info.format_table()
    assert "fully int8: yes" in table and "CONV_2D" in table and "runs every op" in table


def test_sparsity_matches_the_zero_weights_litert_reads(small_cnn, digits):
    pruned = keras.models.clone_model(small_cnn)
    weights = small_cnn.get_weights()
    kernel = weights[2].copy()  # Dense kernel (72, 10)
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.6)] = 0.0
    pruned.set_weights([weights[0], weights[1], kernel, weights[3]])
    tfl = convert(pruned, digits.x_train, strip_metadata=False)
    info = inspect(tfl)

    it = Interpreter(model_content=tfl.content)
    it.allocate_tensors()
    expected, zeros, total = {}, 0, 0
    for d in it.get_tensor_details():
        if d["dtype"] == np.int8 and len(d["shape"]) >= 2 and d["name"] in info.weight_sparsity:
            values = it.get_tensor(d["index"])
            expected[d["name"]] = float(np.mean(values == 0))
            zeros, total = zeros + int(np.sum(values == 0)), total + values.size
    assert len(expected) == 2 == len(info.weight_sparsity)  # conv and dense kernels
    assert info.weight_sparsity == pytest.approx(expected, abs=1e-4)
    assert max(info.weight_sparsity.values()) >= 0.6  # the dense kernel we zeroed
    assert info.sparsity == pytest.approx(zeros / total, abs=1e-4)


class Atan2(keras.layers.Layer):
    """Converts to the ATAN2 builtin, which LiteRT runs and stock TFLite Micro does not."""

    def call(self, x):
        return tf.math.atan2(x, x + 1.0)


TFLM_TRY = textwrap.dedent(
    """
    import sys, numpy as np
    from tflite_micro.python.tflite_micro import runtime
    for path in sys.argv[1:]:
        try:
            it = runtime.Interpreter.from_bytes(open(path, "rb").read())
            d = it.get_input_details(0)
            it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
            it.invoke()
            print("RUNS", flush=True)
        except Exception as exc:
            print("FAILS", type(exc).__name__, flush=True)
    """
)


def test_tflm_unsupported_ops_are_exactly_those_tflite_micro_cannot_run(int8_tfl, tmp_path):
    model = keras.Sequential([L.Input((4,)), L.Dense(4), Atan2()])
    atan = convert(model, quantization="float32")
    half = convert(model, quantization="float16")
    assert inspect(atan).tflm_unsupported_ops == ["ATAN2"]
    assert inspect(half).tflm_unsupported_ops == ["DEQUANTIZE (float16)", "ATAN2"]
    assert inspect(int8_tfl).tflm_unsupported_ops == []
    paths = []
    for name, tfl in (("int8", int8_tfl), ("atan", atan), ("half", half)):
        tfl.save(tmp_path / f"{name}.tflite")
        paths.append(str(tmp_path / f"{name}.tflite"))
    out = subprocess.run([sys.executable, "-c", TFLM_TRY, *paths], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["RUNS", "FAILS", "FAILS"]


def test_tflm_op_list_matches_the_kernels_in_the_installed_tflite_micro():
    from tflite_micro.python.tflite_micro import runtime

    binary = (Path(runtime.__file__).parent / "_runtime.so").read_bytes()
    registered = {m.decode() for m in re.findall(rb"tflite5micro\d+Register_([A-Z0-9_]+)Ev", binary)}
    builtins = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    assert TFLM_BUILTIN_OPS == registered & builtins


def test_non_int8_ops_lists_every_float_op_of_a_float_model():
    model = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3, name="c"), L.Flatten(), L.Dense(3, name="d")])
    info = inspect(convert(model, quantization="float32"))
    assert not info.fully_int8 and info.quantization == "float32"
    assert [o["op"] for o in info.non_int8_ops] == [o["op"] for o in info.operators]
    assert all(d == "float32" for o in info.non_int8_ops for _, d in o["tensors"] if d != "int32")


# ---------------------------------------------------------------------------------------------
# malformed files


def test_valid_model_verifies(valid):
    assert verify(valid, "ok.tflite") is None


def test_every_truncation_raises_input_error(valid):
    for cut in [*range(0, len(valid), 7), len(valid) - 1]:
        with pytest.raises(InputError):
            inspect(valid[:cut])


def test_wrong_identifier_raises_input_error_naming_it(valid):
    with pytest.raises(InputError, match=r"file identifier is b'TFL2', expected b'TFL3'"):
        inspect(valid[:4] + b"TFL2" + valid[8:])
    with pytest.raises(InputError, match="is not a TFLite model"):
        verify(b"PK\x03\x04" + bytes(100), "model.zip")


@pytest.mark.parametrize("value", [0xFFFFFFFC, 0x7FFFFFFC, 0x80000000])
def test_out_of_range_root_offset_raises(valid, value):
    with pytest.raises(InputError, match="lies outside the .*-byte file"):
        verify(struct.pack("<I", value) + valid[4:], "bad.tflite")


def _edit(content: bytes, change) -> bytes:
    """Re-pack a model after ``change(model_t)``: a well-formed flatbuffer with planted bad values."""
    m = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    change(m)
    builder = flatbuffers.Builder(len(content))
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _set_tensor(index, **fields):
    """index: a tensor index, or (op, "in"/"out", k) for the k-th input / output of operator op."""

    def change(m):
        sub = m.subgraphs[0]
        i = index
        if isinstance(index, tuple):
            op, side, k = index
            i = int((sub.operators[op].inputs if side == "in" else sub.operators[op].outputs)[k])
        for name, value in fields.items():
            setattr(sub.tensors[i], name, value)
    return change


def _shrink_buffer_of_fc_weights(m):
    sub = m.subgraphs[0]
    fc = sub.operators[-1]  # FULLY_CONNECTED: inputs (activations, weights, bias)
    m.buffers[sub.tensors[int(fc.inputs[1])].buffer].data = np.zeros(3, np.uint8)


def _reshape_to_73(m):
    sub = m.subgraphs[0]
    reshape = sub.operators[2]  # CONV_2D, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED
    m.buffers[sub.tensors[int(reshape.inputs[1])].buffer].data = np.frombuffer(
        np.array([1, 73], "<i4").tobytes(), np.uint8)


def _set_op(index, **fields):
    def change(m):
        for name, value in fields.items():
            setattr(m.subgraphs[0].operators[index], name, value)
    return change


def _set_scale(index, value):
    def change(m):
        m.subgraphs[0].tensors[index].quantization.scale = np.array([value], np.float32)
    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set_tensor(0, buffer=999), "buffer index is 999, out of range"),
        (_set_op(0, opcodeIndex=77), "opcode index is 77, out of range"),
        (_set_op(1, inputs=np.array([500], np.int32)), "input tensor is 500, out of range"),
        (_set_op(1, outputs=np.array([-1], np.int32)), "output tensor is -1, out of range"),
        (_set_tensor((0, "out", 0), shape=np.array([1, -6, 6, 8], np.int32)), "negative dimension"),
        (_set_tensor((0, "out", 0), shape=np.array([1, 6000, 6000, 8000], np.int32)), "over 2,147,483,647 bytes"),
        (_set_scale(0, np.nan), "quantization scale nan; scales must be finite and positive"),
        (_set_scale(0, 0.0), "quantization scale 0.0"),
        (_set_scale(0, -np.inf), "quantization scale -inf"),
        (_set_scale(0, 1e-40), "outside the plausible range"),
        (_set_tensor((0, "out", 0), quantization=None), "without quantization parameters"),
        (_reshape_to_73, "has new shape [1, 73] but output shape [1, 72]"),
        (_set_tensor(0, type=99), "unknown type code 99"),
        (lambda m: setattr(m, "version", 2), "schema version is 2, expected 3"),
        (lambda m: setattr(m.subgraphs[0], "inputs", np.array([], np.int32)), "main subgraph has no inputs"),
        (_shrink_buffer_of_fc_weights, "(int8, shape [10, 72]) needs 720 bytes of data but its buffer has 3"),
        (lambda m: setattr(m.subgraphs[0].operators[0].builtinOptions, "strideW", 0),
         "stride, dilation or window size of 0"),
        (_set_tensor((0, "out", 0), shape=np.array([1, 6, 6, 9], np.int32)),
         "has 9 output channels for a filter of shape"),
        (_set_tensor((3, "out", 0), shape=np.array([3016, 10], np.int32)), "the shapes do not fit"),
    ],
)
def test_planted_bad_values_raise_input_error(valid, change, message):
    bad = _edit(valid, change)
    with pytest.raises(InputError) as info:
        verify(bad, "planted.tflite")
    assert message in str(info.value) and "planted.tflite" in str(info.value) and "\n" not in str(info.value)


def test_repacked_but_unchanged_model_still_verifies(valid):
    assert parse(_edit(valid, lambda m: None)).subgraphs[0].operators == parse(valid).subgraphs[0].operators


def test_size_cap_and_non_bytes(valid, monkeypatch):
    import tfedge.flatbuffer

    monkeypatch.setattr(tfedge.flatbuffer, "MAX_FILE_BYTES", len(valid) - 1)
    with pytest.raises(InputError, match="over the .*-byte cap"):
        verify(valid, "big.tflite")
    monkeypatch.undo()
    with pytest.raises(InputError, match="got int"):
        inspect(42)
    with pytest.raises(InputError, match="does not exist"):
        inspect("/no/such/model.tflite")


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_and_overwrites_raise_only_input_error(valid, data):
    content = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(content) - 1))
        if data.draw(st.booleans()):
            content[pos] ^= 1 << data.draw(st.integers(0, 7))
        else:
            pos -= pos % 4
            word = data.draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, len(content)]))
            struct.pack_into("<I", content, min(pos, len(content) - 4), word)
    try:
        info = inspect(bytes(content))
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert info.bytes == len(content)


TFLM_FUZZ = textwrap.dedent(
    """
    import sys, numpy as np
    from tflite_micro.python.tflite_micro import runtime
    blob = open(sys.argv[1], "rb").read()
    sizes = [int(s) for s in sys.argv[2].split(",")]
    start = 0
    for k, size in enumerate(sizes):
        content = blob[start:start + size]
        start += size
        print(k, flush=True)
        try:
            it = runtime.Interpreter.from_bytes(content, arena_size=64 * 1024)
            d = it.get_input_details(0)
            it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
            it.invoke()
        except Exception:
            pass
    print("done", flush=True)
    """
)


def test_corrupted_files_that_pass_verify_do_not_crash_tflite_micro(valid, tmp_path):
    """What verify() is for: a file it accepts must not segfault TFLite Micro (checked in a child)."""
    rng = np.random.default_rng(6)
    accepted = []
    while len(accepted) < 250:
        content = bytearray(valid)
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:
                content[rng.integers(len(content))] ^= 1 << int(rng.integers(8))
            else:
                content[rng.integers(len(content))] = int(rng.integers(256))
        try:
            verify(bytes(content))
        except InputError:
            continue
        accepted.append(bytes(content))
    (tmp_path / "blob").write_bytes(b"".join(accepted))
    sizes = ",".join(str(len(c)) for c in accepted)
    out = subprocess.run([sys.executable, "-c", TFLM_FUZZ, str(tmp_path / "blob"), sizes],
                         capture_output=True, text=True, timeout=300)
    last = out.stdout.split()[-1] if out.stdout.split() else "none"
    assert out.returncode == 0 and last == "done", f"TFLite Micro died (code {out.returncode}) on accepted file #{last}"


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_inspect_prints_a_table_json_and_one_line_errors(int8_tfl, tmp_path, capsys):
    path = tmp_path / "m.tflite"
    int8_tfl.save(path)
    assert cli.main(["inspect", str(path)]) == 0
    table = capsys.readouterr().out
    assert "fully int8: yes" in table and "FULLY_CONNECTED" in table
    assert cli.main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ops"]["CONV_2D"] == 1 and doc["inputs"][0]["dtype"] == "int8"

    broken = tmp_path / "broken.tflite"
    broken.write_bytes(int8_tfl.content[: int8_tfl.size // 2])
    assert cli.main(["inspect", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfedge: error: TFLite model '") and "broken.tflite" in err and err.count("\n") == 1

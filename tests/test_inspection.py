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

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from hypothesis import HealthCheck, given, settings, strategies as st
from tflite_builders import (
    THIRD_PARTY,
    custom_op_int16_no_quantization,
    fc_lut_compressed,
    float_and_uint8_io,
    repack,
)

from tfedge import cli, keras
from tfedge.conversion import convert
from tfedge.errors import InputError
from tfedge.flatbuffer import parse
from tfedge.inspection import BREAKDOWN_ROWS, TFLM_BUILTIN_OPS, TFLM_CUSTOM_OPS, inspect, verify

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
        assert [(o["name"], o["shape"], o["dtype"]) for o in ours] == [
            (t["name"], list(t["shape"]), np.dtype(t["dtype"]).name) for t in theirs
        ]
        for o, t in zip(ours, theirs, strict=False):
            assert (o["scale"], o["zero_point"]) == pytest.approx(t["quantization"])

    path = tmp_path / "m.tflite"
    int8_tfl.save(path)
    for source in (path, str(path), int8_tfl.content):
        assert inspect(source).to_dict() | {"source": ""} == info.to_dict() | {"source": ""}
    assert json.loads(json.dumps(info.to_dict())) == info.to_dict()
    table = info.format_table()
    assert "fully int8: yes" in table and "CONV_2D" in table and "TFLite Micro  predicted to run every op" in table


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
        np.array([1, 73], "<i4").tobytes(), np.uint8
    )


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
        (_set_tensor(0, type=99), "mixes tensor types ['type_99', 'int8'] of different sizes"),
        (lambda m: setattr(m, "version", 2), "schema version is 2, expected 3"),
        (lambda m: setattr(m.subgraphs[0], "inputs", np.array([], np.int32)), "main subgraph has no inputs"),
        (_shrink_buffer_of_fc_weights, "(int8, shape [10, 72]) needs 720 bytes of data but its buffer has 3"),
        (
            lambda m: setattr(m.subgraphs[0].operators[0].builtinOptions, "strideW", 0),
            "stride, dilation or window size of 0",
        ),
        (
            _set_tensor((0, "out", 0), shape=np.array([1, 6, 6, 9], np.int32)),
            "has 9 output channels for a filter of shape",
        ),
        (_set_tensor((3, "out", 0), shape=np.array([3016, 10], np.int32)), "the shapes do not fit"),
    ],
)
def test_planted_bad_values_raise_input_error(valid, change, message):
    bad = repack(valid, change)
    with pytest.raises(InputError) as info:
        verify(bad, "planted.tflite")
    assert message in str(info.value) and "planted.tflite" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "kind", "message"),
    [
        (_set_scale(0, np.nan), "degenerate_scale", "has quantization scale nan: degenerate"),
        (_set_scale(0, 0.0), "degenerate_scale", "has quantization scale 0: degenerate"),
        (_set_scale(0, -np.inf), "degenerate_scale", "has quantization scale -inf: degenerate"),
        (_set_scale(0, 1e-40), "degenerate_scale", "has quantization scale 1e-40: degenerate"),
        (_set_tensor((0, "out", 0), quantization=None), "no_quantization", "without quantization parameters"),
        (_reshape_to_73, "reshape_shape", "has new shape [1, 73] but output shape [1, 72]"),
    ],
)
def test_planted_unusual_values_are_read_with_a_note(valid, change, kind, message):
    """Well-formed but unusual: not corrupted; inspect reads it, says so, and each runtime decides."""
    info = inspect(repack(valid, change))
    assert any(n["kind"] == kind and message in n["message"] for n in info.notes), info.notes
    assert json.loads(json.dumps(info.to_dict(), allow_nan=False))["bytes"] == info.bytes  # strict JSON
    # TFLite Micro sizes a RESHAPE output from the output tensor alone; the other planted values put it at risk
    assert (info.tflm["prediction"] == "runs") == (kind == "reshape_shape")


def test_repacked_but_unchanged_model_still_verifies(valid):
    assert parse(repack(valid, lambda m: None)).subgraphs[0].operators == parse(valid).subgraphs[0].operators


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


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
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
    out = subprocess.run(
        [sys.executable, "-c", TFLM_FUZZ, str(tmp_path / "blob"), sizes], capture_output=True, text=True, timeout=300
    )
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


# ---------------------------------------------------------------------------------------------
# files as users have them (hand-built, third-party-like): read, with the right notes and TFLM prediction


def _kinds(info) -> list[str]:
    return [n["kind"] for n in info.notes]


def _check_int8_to_int16_softmax(info):
    assert "mixed_dtypes" in _kinds(info) and info.outputs[0]["dtype"] == "int16"
    assert info.tflm["prediction"] == "runs" and info.tflm_unsupported_ops == []


def _check_bias_quantized_dimension_3(info):
    (note,) = [n for n in info.notes if n["kind"] == "quantized_dimension"]
    assert "declares quantized_dimension 3" in note["message"] and note["tensor"] == 2
    assert info.tflm["prediction"] == "runs"


def _check_two_inputs_two_outputs(info):
    assert [t["name"] for t in info.inputs] == ["left", "right"]
    assert [t["name"] for t in info.outputs] == ["sum", "difference"]
    assert info.signature_defs == [
        {"key": "serving_default", "subgraph": 0, "inputs": ["left", "right"], "outputs": ["sum", "difference"]}
    ]
    assert info.signatures == ["serving_default"] and info.tflm["prediction"] == "runs" and info.notes == []


def _check_custom_op_int16(info):
    assert info.custom_ops == ["SignalWindow"] and info.ops == {"CUSTOM:SignalWindow": 1}
    assert _kinds(info).count("no_quantization") == 3 and "custom_op" in _kinds(info)
    assert info.tflm["prediction"] == "runs" and info.operators[0]["tflm"] == "yes"


def _check_vendor_npu(info):
    assert info.custom_ops == ["ethos-u"] and info.metadata == ["OfflineMemoryAllocation"]
    assert info.metadata_entries == [{"name": "OfflineMemoryAllocation", "buffer": 2, "bytes": 32}]
    assert info.tflm["prediction"] == "cannot run" and info.tflm_unsupported_ops == ["CUSTOM:ethos-u"]
    assert info.operators[0]["tflm_reason"] == "custom op 'ethos-u' is not registered in TFLite Micro"


def _check_degenerate_scale(info):
    (d,) = info.degenerate_scales
    assert (d["name"], d["read_by"], d["written_by"]) == ("logits", ["SOFTMAX#1"], "FULLY_CONNECTED#0")
    assert d["scale"] == pytest.approx(7.8e-9) and "calibration data never exercised that layer" in d["message"]
    assert info.tflm["prediction"] == "at risk"
    assert [o["tflm"] for o in info.operators] == ["risk", "risk"]


THIRD_PARTY_CHECKS = {
    "int8_to_int16_softmax": _check_int8_to_int16_softmax,
    "bias_quantized_dimension_3": _check_bias_quantized_dimension_3,
    "two_inputs_two_outputs": _check_two_inputs_two_outputs,
    "custom_op_int16": _check_custom_op_int16,
    "vendor_npu": _check_vendor_npu,
    "degenerate_scale": _check_degenerate_scale,
}


@pytest.mark.parametrize("kind", sorted(THIRD_PARTY))
def test_inspect_reads_third_party_files_with_notes_and_a_tflm_prediction(kind, tmp_path, capsys):
    content = THIRD_PARTY[kind]()
    info = inspect(content)
    THIRD_PARTY_CHECKS[kind](info)
    assert sum(info.bytes_breakdown.values()) == info.bytes == len(content)
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(content)
    assert cli.main(["inspect", str(path)]) == 0
    table = capsys.readouterr().out
    assert "where the bytes go" in table and re.search(rf"total\s+{len(content):,}\s+100.0%", table)
    if info.tflm["prediction"] == "runs":
        assert "TFLite Micro  predicted to run every op" in table
    else:  # never claimed for a file TFLite Micro refuses or aborts on
        assert "predicted to run every op" not in table and "runs every op" not in table
        assert re.search(r"TFLite Micro  (cannot run|may fail): ", table)
    for note in info.notes:
        if note["kind"] != "degenerate_scale" and info.notes.index(note) < 12:
            assert note["message"] in table
    for d in info.degenerate_scales:
        assert d["message"] in table
    assert cli.main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == info.to_dict() | {"source": doc["source"]}
    assert set(doc) >= {
        "ops",
        "inputs",
        "outputs",
        "tflm_unsupported_ops",
        "metadata",
        "signatures",
        "notes",
        "custom_ops",
        "tflm",
        "degenerate_scales",
        "bytes_breakdown",
        "metadata_entries",
        "signature_defs",
        "subgraph_details",
    }


TFLM_OUTCOME = textwrap.dedent(
    """
    import sys, numpy as np
    from tflite_micro.python.tflite_micro import runtime
    content = open(sys.argv[1], "rb").read()
    try:
        it = runtime.Interpreter.from_bytes(content, arena_size=256 * 1024)
        for k in range(int(sys.argv[2])):
            d = it.get_input_details(k)
            it.set_input(np.zeros(d["shape"], d["dtype"]), k)
        it.invoke()
        print("RUNS", flush=True)
    except Exception as exc:
        print("FAILS", str(exc).replace(chr(10), " ")[:200], flush=True)
    """
)


def test_tflm_prediction_matches_what_tflite_micro_does_with_each_file(tmp_path):
    """Predicted ``runs``: TFLite Micro runs it; ``cannot run``: it refuses cleanly; ``at risk``: it dies
    (the degenerate scale aborts it). Each file in its own child process."""
    f32, u8 = float_and_uint8_io()
    files = {kind: make() for kind, make in THIRD_PARTY.items()} | {"float32": f32, "uint8": u8}
    for kind, content in sorted(files.items()):
        path = tmp_path / f"{kind}.tflite"
        path.write_bytes(content)
        inputs = str(len(inspect(path).inputs))
        out = subprocess.run(
            [sys.executable, "-c", TFLM_OUTCOME, str(path), inputs], capture_output=True, text=True, timeout=120
        )
        outcome = "crash" if out.returncode < 0 else (out.stdout.split() or ["none"])[0]
        expected = {"runs": "RUNS", "cannot run": "FAILS", "at risk": "crash"}[inspect(path).tflm["prediction"]]
        assert outcome == expected, (kind, out.returncode, out.stdout[-300:], out.stderr[-300:])


def test_tflm_custom_op_list_is_what_the_installed_tflite_micro_registers(tmp_path):
    from tflite_micro.python.tflite_micro import runtime

    binary = (Path(runtime.__file__).parent / "_runtime.so").read_bytes()
    assert all(name.encode() + b"\0" in binary for name in TFLM_CUSTOM_OPS)
    probe = textwrap.dedent(
        """
        import sys
        from tflite_micro.python.tflite_micro import runtime
        try:
            runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=65536)
        except Exception:
            pass
        print("loaded", flush=True)
        """
    )
    for name in ("SignalWindow", "SignalFramer", "TFLM_DECODE", "ethos-u", "NoSuchOp"):
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(custom_op_int16_no_quantization(name))
        out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
        # TFLite Micro logs this when it has no kernel for the op; a crash happens inside a registered kernel
        registered = "Failed to get registration" not in out.stdout + out.stderr
        assert registered == (name in TFLM_CUSTOM_OPS), (name, out.stdout, out.stderr[-300:])
        assert (inspect(path).tflm["prediction"] == "runs") == registered


# ---------------------------------------------------------------------------------------------
# where the bytes go


def _expected_parts(content: bytes) -> dict[str, int]:
    """What the generated schema's object API says some parts must take: constant data, scales, names."""
    m = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    meta = {e.buffer for e in m.metadata or []}
    used = {t.buffer for sub in m.subgraphs for t in sub.tensors}
    data = sum(
        4 + len(b.data)
        for k, b in enumerate(m.buffers)
        if b.data is not None and len(b.data) and k in used and k not in meta
    )
    tensors = [t for sub in m.subgraphs for t in sub.tensors]
    scales = sum(
        4 + 4 * len(t.quantization.scale)
        for t in tensors
        if t.quantization is not None and t.quantization.scale is not None
    )
    names = sum(4 + len(t.name) + 1 for t in tensors if t.name is not None)
    names += sum(4 + len(sub.name) + 1 for sub in m.subgraphs if sub.name is not None)
    return {"data": data, "scales": scales, "names": names}


def _breakdown_models(int8_tfl) -> dict[str, bytes]:
    corpus = Path(__file__).parent / "fuzz_corpus"
    return {
        "keras_cnn_int8_with_metadata": int8_tfl.content,
        "depthwise_int8": (corpus / "seed_dwconv_int8.tflite").read_bytes(),
        "cnn_float32": (corpus / "seed_cnn_float32.tflite").read_bytes(),
        "lut_compressed": fc_lut_compressed(),
        **{kind: make() for kind, make in THIRD_PARTY.items()},
    }


def test_bytes_breakdown_adds_up_and_matches_the_schema(int8_tfl):
    for name, content in _breakdown_models(int8_tfl).items():
        b = inspect(content).bytes_breakdown
        assert list(b) == list(BREAKDOWN_ROWS) and sum(b.values()) == len(content), name
        assert b["other"] == 0 and b["padding"] < 0.08 * len(content), (name, b)  # every part is read
        expected = _expected_parts(content)
        data = b["weights"] + b["biases"] + b["constants"] + b["lut_indices"] + b["lut_tables"]
        assert (data, b["scales"], b["names"]) == (expected["data"], expected["scales"], expected["names"]), name
    cnn = inspect(int8_tfl).bytes_breakdown
    assert cnn["signatures"] > 0 and cnn["metadata"] > 0 and cnn["weights"] > cnn["biases"] > 0
    lut = inspect(fc_lut_compressed()).bytes_breakdown
    assert lut["lut_indices"] == 4 + 8 * 32 * 2 // 8 and lut["lut_tables"] > 0 and lut["weights"] == 0


def test_inspect_reads_several_subgraphs_every_tensor_type_and_each_signature():
    import copy

    from tflite_builders import repack

    types = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}

    def edit(m):
        second = copy.deepcopy(m.subgraphs[0])
        second.name = "train"
        for code, name in sorted(types.items()):  # one tensor of every type, used by no op
            t = schema.TensorT()
            t.name, t.shape, t.type, t.buffer = f"t_{name.lower()}", [2], code, 0
            second.tensors.append(t)
        m.subgraphs.append(second)
        sig = copy.deepcopy(m.signatureDefs[0])
        sig.signatureKey, sig.subgraphIndex = b"train", 1
        m.signatureDefs.append(sig)

    info = inspect(repack(THIRD_PARTY["two_inputs_two_outputs"](), edit))
    assert info.subgraphs == 2 and [d["name"] for d in info.subgraph_details] == ["main", "train"]
    assert info.signatures == ["serving_default", "train"] and info.signature_defs[1]["subgraph"] == 1
    assert {name.lower() for name in types.values()} <= set(info.dtypes)
    assert [(o["subgraph"], o["op"], o["tflm"]) for o in info.operators] == [
        (0, "ADD", "yes"),
        (0, "SUB", "yes"),
        (1, "ADD", "yes"),
        (1, "SUB", "yes"),
    ]
    assert info.ops == {"ADD": 2, "SUB": 2} and sum(info.bytes_breakdown.values()) == info.bytes
    table = info.format_table()
    assert "subgraphs    0: main (2 ops), 1: train (2 ops)" in table and "train(left, right)" in table

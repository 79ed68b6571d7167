"""Fidelity across kernel sets (issue 15) and the files users really have (issue 14, validate side).

Real models where the kernels really differ (residual Add, depthwise, average pooling, a requantizing
Concatenate, trained briefly on digits), hand-built third-party-like flatbuffers (tests/tflite_builders.py),
every runtime really run: XNNPACK, LiteRT's reference kernels and TFLite Micro.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import tflite_builders as tb

import tfedge
import tfedge.cli
from tfedge import keras
from tfedge.errors import ValidationError
from tfedge.runtimes import LiteRTReference, RuntimeCrashed, RuntimeRefused, TFLiteMicro, open_runtime
from tfedge.surgery import graph_ops, prefix, traced
from tfedge.validation import validate

L = keras.layers


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tfedge.cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _residual_model() -> keras.Model:
    """Issue 15's model: Conv-BN-ReLU, a depthwise conv, a residual Add, AveragePool, GAP."""
    inp = L.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    y = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
    x = L.Add()([x, L.Conv2D(16, 1)(y)])
    x = L.AveragePooling2D(2)(x)
    x = L.GlobalAveragePooling2D()(L.Conv2D(24, 3, padding="same", activation="relu")(x))
    return keras.Model(inp, L.Dense(10)(x))


def _train(model: keras.Model, digits, epochs: int) -> keras.Model:
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def residual(digits, tmp_path_factory):
    """Issue 15's model as it measured (seed 0, 12 epochs), its file and the test split as an .npz."""
    keras.utils.set_random_seed(0)
    model = _train(_residual_model(), digits, epochs=12)
    folder = tmp_path_factory.mktemp("fidelity")
    path = folder / "residual.tflite"
    tfedge.convert(model, representative_data=digits.x_train, quantization="int8").save(path)
    npz = folder / "test.npz"
    np.savez(npz, x=digits.x_test, y=digits.y_test)
    return path, npz


@pytest.fixture(scope="module")
def residual_result(residual, digits):
    return validate(residual[0], digits.x_test, digits.y_test, trace=True, verbose=0)


def test_xnnpack_differs_from_the_reference_kernels_and_the_default_rule_passes(residual, residual_result):
    r = residual_result
    assert r.runtimes == ("litert", "litert-ref", "tflm")
    reference = r.pair("litert-ref", "tflm")
    assert reference["top1_agreement"] == 1.0 and reference["max_raw_diff"] <= 1
    xnnpack = r.pair("litert", "litert-ref")
    assert xnnpack["bit_identical"] < 0.5 and xnnpack["max_raw_diff"] >= 1  # the kernels really differ
    assert 0.99 <= xnnpack["top1_agreement"] < 1.0
    assert r.failed_checks() == []
    strict = r.failed_checks(min_agreement=1.0)
    assert strict and all(f.startswith("rule 'optimized kernels within tolerance' failed: litert vs") for f in strict)
    assert "LiteRT XNNPACK kernels and LiteRT reference kernels agree on" in r.claim()

    code, out, err = _cli("validate", str(residual[0]), "--data", str(residual[1]), "--json", "--trace")
    assert code == 0, err
    data = json.loads(out)
    assert data["matrix"] == json.loads(json.dumps(r.matrix))
    assert [t["first_op"] for t in data["trace"]] == [t["first_op"] for t in r.trace]
    code, _, err = _cli("validate", str(residual[0]), "--data", str(residual[1]), "--min-agreement", "1.0")
    assert code == 1 and "rule 'optimized kernels within tolerance' failed" in err


def test_trace_names_the_first_op_that_differs(residual, residual_result):
    ops = graph_ops(residual[0].read_bytes())
    labels = [op.label() for op in ops]
    assert {"ADD", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"} <= {op.name for op in ops}
    traces = {(t["a"], t["b"]): t for t in residual_result.trace}
    assert set(traces) == {(m["a"], m["b"]) for m in residual_result.matrix if m["bit_identical"] < 1}
    for t in traces.values():
        assert [row["op"] for row in t["ops"]] == labels
        first = next(row for row in t["ops"] if row["differ"] > 0)
        assert t["first_op"] == first["op"] in labels
        assert t["summary"].startswith(f"first difference at {first['op']}: ")
    xnnpack = traces[("litert", "litert-ref")]
    assert xnnpack["ops"][-1]["differ"] > 0  # down to the output, which differs
    # each op's own error, every op fed the same inputs: the first op reads the model input, so its own
    # error is all of its error; XNNPACK rounds on its own in some ops, not in every one
    for t in traces.values():
        assert t["ops"][0]["local_differ"] == t["ops"][0]["differ"]
        assert all(row["local_differ"] is not None for row in t["ops"])
    own = [row for row in xnnpack["ops"] if row["local_differ"] > 0]
    assert 0 < len(own) < len(xnnpack["ops"]) and "differ on the same inputs, most " in xnnpack["summary"]
    table = residual_result.format_table()
    assert "trace litert vs litert-ref: first difference at" in table and "own: differ" in table


def test_traced_model_keeps_the_ops_and_the_final_output(residual, digits):
    content = residual[0].read_bytes()
    model, pairs = traced(content)
    assert [op.index for op, _ in pairs] == list(range(len(graph_ops(content))))
    x = digits.x_test[:40]
    plain = open_runtime("litert-ref", content).run(x)
    every = open_runtime("litert-ref", model).run(x)
    assert len(every.all_outputs) == len(pairs)
    np.testing.assert_array_equal(every.all_outputs[-1], plain.outputs)
    # a prefix ends at the op asked for
    cut = open_runtime("tflm", prefix(content, 2)).run(x, measure_arena=False)
    np.testing.assert_array_equal(cut.outputs, every.all_outputs[1])


def test_requantizing_concatenate_model_validates_with_trace(digits):
    keras.utils.set_random_seed(1)
    inp = L.Input((8, 8, 1))
    a = L.Conv2D(8, 3, padding="same", activation="relu6")(inp)
    b = L.Conv2D(8, 3, padding="same")(inp)  # a wider range: Concatenate must requantize one side
    x = L.Concatenate()([a, L.Lambda(lambda t: t * 4.0)(b)])
    x = L.GlobalAveragePooling2D()(L.Conv2D(12, 3, activation="relu")(x))
    model = _train(keras.Model(inp, L.Dense(10)(x)), digits, epochs=3)
    tfl = tfedge.convert(model, representative_data=digits.x_train, quantization="int8")
    assert "CONCATENATION" in {op.name for op in graph_ops(tfl.content)}
    result = validate(tfl, digits.x_test, digits.y_test, reference=model, trace=True, verbose=0)
    assert result.status["tflm"] == {"status": "ran"}
    assert result.pair("litert-ref", "tflm")["top1_agreement"] == 1.0
    labels = {op.label() for op in graph_ops(tfl.content)}
    for t in result.trace:
        assert t["first_op"] in labels
    assert set(result.reference_agreement) == set(result.runtimes)


def test_several_inputs_and_outputs(tmp_path):
    content = tb.two_inputs_two_outputs()
    rng = np.random.default_rng(0)
    left, right = rng.uniform(-1, 1, (30, 8)), rng.uniform(-1, 1, (30, 8))
    by_name = validate(content, {"left": left, "right": right}, output="difference", verbose=0)
    assert [t["name"] for t in by_name.inputs] == ["left", "right"]
    assert [t["name"] for t in by_name.outputs] == ["sum", "difference"]
    assert by_name.output_index == 1 and by_name.output["name"] == "difference"
    assert {(m["a"], m["b"], m["output"]) for m in by_name.matrix} == {
        (a, b, o)
        for a, b in (("litert", "litert-ref"), ("litert", "tflm"), ("litert-ref", "tflm"))
        for o in ("sum", "difference")
    }
    # the sum is what the two runtimes compute from the same quantized inputs
    raw = open_runtime("tflm", content).run([left, right], measure_arena=False)
    q = ([0.05], [2])
    expected = np.clip(
        np.round(
            (
                (np.clip(np.round(left / q[0][0]) + 2, -128, 127) - 2)
                + (np.clip(np.round(right / q[0][0]) + 2, -128, 127) - 2)
            )
            * 0.05
            / 0.1
        ),
        -128,
        127,
    )
    assert np.max(np.abs(raw.all_outputs[0].astype(int) - expected)) <= 1
    by_position = validate(content, [left, right], verbose=0)
    assert by_position.matrix[0] == {**by_name.matrix[0]}
    assert by_position.failed_checks() == []

    npz = tmp_path / "two.npz"
    np.savez(npz, x0=left, x1=right)
    path = tmp_path / "two.tflite"
    path.write_bytes(content)
    code, out, err = _cli("validate", str(path), "--data", str(npz), "--output", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["output"]["name"] == "difference"
    code, _, err = _cli("validate", str(path), "--data", str(npz), "--output", "logits")
    assert code == 2 and "output must name one of the outputs" in err and "'sum', 'difference'" in err
    with pytest.raises(tfedge.errors.InputError, match="has 2 inputs .*pass a list of 2 arrays"):
        validate(content, left, verbose=0)


@pytest.mark.parametrize("digit", [0, 1])
def test_two_output_keras_model_classification_and_regression_heads(digit, digits):
    """The file's outputs come in the Keras model's order, whichever head comes first (the converter had put the
    second head first)."""
    keras.utils.set_random_seed(2)
    inp = L.Input((8, 8, 1))
    h = L.Flatten()(L.Conv2D(8, 3, activation="relu")(inp))
    heads = [L.Dense(10, name="digit")(h), L.Dense(1, name="ink")(h)]
    losses = [keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"]
    ink = digits.x_train.reshape(len(digits.x_train), -1).mean(axis=1, keepdims=True)
    targets = [digits.y_train, ink]
    if digit == 1:
        heads, losses, targets = heads[::-1], losses[::-1], targets[::-1]
    model = keras.Model(inp, heads)
    model.compile("adam", losses)
    model.fit(digits.x_train, targets, epochs=3, batch_size=32, verbose=0)
    tfl = tfedge.convert(model, representative_data=digits.x_train, quantization="int8")
    assert [int(np.prod(t.shape[1:])) for t in tfl.outputs] == [int(o.shape[-1]) for o in model.outputs]
    assert tfl.outputs[digit].shape[-1] == 10
    result = validate(tfl, digits.x_test, digits.y_test, output=digit, reference=model, verbose=0)
    assert result.output_index == digit and result.accuracy["tflm"] > 0.5
    kinds = {m["output_index"]: m["kind"] for m in result.matrix}
    assert kinds == {digit: "classification", 1 - digit: "regression"}
    regression = [m for m in result.matrix if m["kind"] == "regression"]
    assert all(m["top1_agreement"] is None and m["max_abs_diff"] >= 0 for m in regression)
    assert all(m["snr_db"] is None or m["snr_db"] > 20 for m in regression)
    assert result.failed_checks() == []


def test_refused_runtime_is_listed_not_fatal(tmp_path):
    content = tb.fc_bias_quantized_dimension_3()
    x = np.random.default_rng(0).uniform(-1, 1, (10, 16))
    result = validate(content, x, verbose=0)
    assert result.runtimes == ("tflm",)
    for name in ("litert", "litert-ref"):
        assert result.status[name]["status"] == "refused"
        assert result.status[name]["reason"].startswith("quantized_dimension must be in range [0, 1). Was 3.")
    assert result.failed_checks() == [] and "litert refused" in result.claim()
    with pytest.raises(RuntimeRefused, match=r"not a loadable TFLite model: LiteRT says quantized_dimension must be"):
        open_runtime("litert", content).run(x)


def test_crash_names_the_signal_and_the_op_and_the_process_survives(tmp_path):
    content = tb.fc_softmax_degenerate_scale()
    x = np.random.default_rng(0).uniform(-1, 1, (5, 16))
    for runtime in (TFLiteMicro(content), LiteRTReference(content)):
        with pytest.raises(RuntimeCrashed) as info:
            runtime.run(x)
        assert info.value.signal_name == "SIGABRT"
        assert runtime.locate_crash(runtime.quantize_inputs(x)) == "SOFTMAX (op 1)"
    with pytest.raises(ValidationError) as info:
        validate(content, x, verbose=0)
    message = str(info.value)
    assert message.startswith("no runtime ran TFLite model (bytes): litert refused (")
    assert "litert-ref crashed (SIGABRT in SOFTMAX (op 1))" in message
    assert "tflm crashed (SIGABRT in SOFTMAX (op 1))" in message
    path, npz = tmp_path / "degenerate.tflite", tmp_path / "x.npz"
    path.write_bytes(content)
    np.savez(npz, x=x)
    code, _, err = _cli("validate", str(path), "--data", str(npz), "--runtimes", "tflm")
    assert code == 2 and "TFLite Micro crashed (signal 6, SIGABRT) in SOFTMAX (op 1) on" in err


def test_float32_uint8_and_16x8_models_run_and_compare(small_cnn, digits):
    f32, u8 = tb.float_and_uint8_io()
    x = np.random.default_rng(0).uniform(-1, 1, (20, 6))
    result = validate(f32, x, verbose=0)
    assert result.runtimes == ("litert", "litert-ref", "tflm") and result.input["dtype"] == "float32"
    assert all(m["kind"] == "regression" and m["integer"] is False for m in result.matrix)
    assert result.pair("litert-ref", "tflm")["max_abs_diff"] < 1e-4 and result.failed_checks() == []

    result = validate(u8, x, verbose=0)
    assert result.input["dtype"] == result.output["dtype"] == "uint8"
    assert result.runtimes == ("litert", "litert-ref") and result.status["tflm"]["status"] == "refused"
    expected = open_runtime("litert-ref", u8).run(x).outputs
    assert result.pair("litert", "litert-ref")["max_raw_diff"] == float(
        np.max(np.abs(open_runtime("litert", u8).run(x).outputs.astype(int) - expected.astype(int)))
    )

    tfl = tfedge.convert(small_cnn, representative_data=digits.x_train, quantization="int16x8")
    result = validate(tfl, digits.x_test[:100], digits.y_test[:100], verbose=0)
    assert result.input["dtype"] == "int16" and result.status["tflm"] == {"status": "ran"}
    assert result.pair("litert-ref", "tflm")["top1_agreement"] == 1.0
    assert min(result.accuracy.values()) > 0.8


def test_lut_compressed_model_runs_on_tflm_and_litert_is_skipped(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [L.Input((8, 8, 1)), L.DepthwiseConv2D(3, depth_multiplier=4), L.GlobalAveragePooling2D(), L.Dense(10)]
    )  # few weights per channel: LUT-able
    compressed = tfedge.lut_compress(
        tfedge.convert(model, representative_data=digits.x_train[:100]), bits="auto", tensors="all"
    )
    result = validate(compressed, digits.x_test[:30], digits.y_test[:30], verbose=0)
    assert result.runtimes == ("tflm",) and result.status["tflm"] == {"status": "ran"}
    for name in ("litert", "litert-ref"):
        assert result.status[name]["status"] == "skipped" and "TFLM_DECODE" in result.status[name]["reason"]
    assert result.failed_checks() == [] and "litert skipped" in result.claim()


# Third-party-like files (tests/tflite_builders.py): what each runtime did with them, measured on the real ones.
THIRD_PARTY_STATUS = {
    "int8_to_int16_softmax": {"litert": "ran", "litert-ref": "ran", "tflm": "ran"},
    "bias_quantized_dimension_3": {"litert": "refused", "litert-ref": "refused", "tflm": "ran"},
    "two_inputs_two_outputs": {"litert": "ran", "litert-ref": "ran", "tflm": "ran"},
    "custom_op_int16": {"litert": "refused", "litert-ref": "refused", "tflm": "ran"},
}


@pytest.mark.parametrize("name", sorted(THIRD_PARTY_STATUS))
def test_third_party_files_run_on_every_runtime_that_accepts_them_and_export_with_their_arena(name, tmp_path):
    content = tb.THIRD_PARTY[name]()
    inputs = tfedge.TFLiteModel(content).inputs
    rng = np.random.default_rng(0)
    x = {f"x{k}": rng.uniform(-1, 1, size=(6, *t.sample_shape)).astype(np.float32) for k, t in enumerate(inputs)}
    result = validate(content, x if len(inputs) > 1 else x["x0"], verbose=0)
    assert {k: v["status"] for k, v in result.status.items()} == THIRD_PARTY_STATUS[name]
    for runtime, status in result.status.items():  # a refusal carries the runtime's own reason, on one line
        assert status["status"] == "ran" or (status["reason"] and "\n" not in status["reason"]), runtime
    files = tfedge.export_c_array(content, tmp_path / "model")
    assert files.arena_bytes is not None and 512 <= files.arena_bytes < 8192, files.arena_bytes
    assert f"constexpr unsigned int model_arena_size = {files.arena_bytes};" in (tmp_path / "model.h").read_text()

"""tfedge/lut.py and ``tfedge lut``: TFLite Micro LUT compression on real models, checked on the real runtimes."""

from __future__ import annotations

import numpy as np
import pytest

import tfedge
from tfedge import cli, keras
from tfedge.errors import InputError, ValidationError
from tfedge.flatbuffer import parse
from tfedge.runtimes import LiteRT, TFLiteMicro

from conftest import compile_classifier

L = keras.layers


def fit(model: keras.Model, x, y, epochs: int = 1, lr: float = 1e-3) -> keras.Model:
    compile_classifier(model, lr=lr)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def tflm_outputs(model, x) -> np.ndarray:
    return TFLiteMicro(model).run(x, measure_arena=False).outputs


@pytest.fixture(scope="module")
def cqat_cnn(small_cnn, digits):
    """small_cnn -> 16 clusters (per conv channel) -> CQAT -> int8: per-channel conv, per-tensor dense."""
    copy = keras.models.clone_model(small_cnn)
    copy.set_weights(small_cnn.get_weights())
    clustered = fit(tfedge.cluster(copy, clusters=16, preserve_sparsity=False), digits.x_train, digits.y_train, lr=3e-4)
    qat = fit(
        tfedge.quantize_aware(tfedge.strip_clustering(clustered), preserve_clusters=True),
        digits.x_train,
        digits.y_train,
        lr=1e-4,
    )
    return tfedge.convert(qat, representative_data=digits.x_train)


@pytest.fixture(scope="module")
def plain_int8(small_cnn, digits):
    return tfedge.convert(small_cnn, representative_data=digits.x_train)


# -------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "bits, message",
    [
        (0, "bits must be an integer in [1, 7], got 0"),
        (8, "bits must be an integer in [1, 7], got 8"),
        ("4", "bits must be an integer, got '4'"),
        (True, "bits must be an integer, got True"),
    ],
)
def test_bits_outside_1_to_7_is_an_input_error(plain_int8, bits, message):
    with pytest.raises(InputError) as info:
        tfedge.lut_compress(plain_int8, bits=bits)
    assert message in str(info.value)


def test_too_many_values_names_the_tensor_its_count_and_clustering(plain_int8):
    with pytest.raises(InputError) as info:
        tfedge.lut_compress(plain_int8, bits=2, tensors="all")
    message = str(info.value)
    counts = {}
    model = parse(plain_int8.content)
    for t in model.subgraphs[0].tensors:
        if t.shape == (10, 72):
            data = np.frombuffer(model.buffer_data(t.buffer), np.int8).reshape(t.shape)
            counts = {len(np.unique(ch)) for ch in np.moveaxis(data, t.quantized_dimension, 0)}
    assert "FULLY_CONNECTED#3.input1" in message and f"holds {max(counts)} distinct values" in message
    assert "more than the 4 that 2-bit indices address" in message and "tfedge.cluster(model, clusters=4)" in message
    assert "\n" not in message


def test_unknown_tensor_and_compressed_input_are_refused(cqat_cnn):
    with pytest.raises(InputError, match="tensors names 'kernel', which is not a constant int8 weight tensor"):
        tfedge.lut_compress(cqat_cnn, tensors=["kernel"])
    compressed = tfedge.lut_compress(cqat_cnn, bits=4, tensors="all")
    with pytest.raises(InputError, match="already LUT-compressed"):
        tfedge.lut_compress(compressed)


# ------------------------------------------------------------------------------------ behaviour
def test_cnn_per_channel_conv_and_per_tensor_dense_bit_exact(cqat_cnn, digits):
    plan = {t.op: t for t in tfedge.lut.lut_plan(cqat_cnn, bits=4, tensors="all")}
    assert plan["CONV_2D"].mode == "per-channel(0)" and plan["FULLY_CONNECTED"].mode == "per-tensor"
    assert plan["FULLY_CONNECTED"].distinct <= 16 and plan["CONV_2D"].distinct <= 9
    report = tfedge.lut.lut_report(cqat_cnn, bits=4, tensors="all", data=digits.x_test[:100])
    compressed = report.model
    ops = {c.name for c in parse(compressed.content).opcodes}
    assert tfedge.lut.DECODE_OP in ops
    x = digits.x_test
    np.testing.assert_array_equal(tflm_outputs(compressed, x), tflm_outputs(cqat_cnn, x))
    assert report.flash_before == cqat_cnn.size and report.flash_after == compressed.size
    assert report.arena_after > report.arena_before  # the decoded kernels live in the arena
    notes = " | ".join(compressed.notes)
    assert "TFLite Micro only" in notes and f"flash {cqat_cnn.size:,} -> {compressed.size:,} bytes" in notes
    assert f"arena {report.arena_before:,} -> {report.arena_after:,} bytes" in notes and "bit-identical" in notes


def test_auto_refuses_when_the_arena_grows_more_than_flash_shrinks(cqat_cnn, digits):
    # the small CNN's activations are tiny: a decoded kernel would add more arena than it saves flash
    assert tfedge.lut.lut_plan(cqat_cnn, bits=4) == []
    with pytest.raises(InputError, match="no weight tensor of .* is worth LUT compression at bits=4"):
        tfedge.lut_compress(cqat_cnn, bits=4)
    everything = tfedge.lut.lut_report(cqat_cnn, bits=4, tensors="all", data=digits.x_test[:20])
    assert everything.arena_after - everything.arena_before > everything.flash_before - everything.flash_after


def test_litert_refuses_a_compressed_model_with_one_line(cqat_cnn):
    compressed = tfedge.lut_compress(cqat_cnn, bits=4, tensors="all")
    with pytest.raises(ValidationError) as info:
        LiteRT(compressed)
    assert "TFLM_DECODE" in str(info.value) and "\n" not in str(info.value)
    reason = tfedge.lut.tflm_only_reason(compressed)
    assert "only TFLite Micro can run" in reason and tfedge.lut.tflm_only_reason(cqat_cnn) is None


def test_depthwise_model_per_channel_on_the_last_axis(digits):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(8, 3, padding="same", activation="relu"),
            L.DepthwiseConv2D(3, activation="relu"),
            L.Conv2D(16, 1, activation="relu"),
            L.GlobalAveragePooling2D(),
            L.Dense(10),
        ]
    )
    fit(model, digits.x_train, digits.y_train)
    tfl = tfedge.convert(model, representative_data=digits.x_train)
    plan = {t.op: t for t in tfedge.lut.lut_plan(tfl, bits="auto", tensors="all")}
    depthwise = plan["DEPTHWISE_CONV_2D"]
    assert depthwise.shape == (1, 3, 3, 8) and depthwise.mode == "per-channel(3)"
    assert depthwise.distinct <= 9 and depthwise.bits == 4  # 9 weights per channel: 4 bits are always lossless
    compressed = tfedge.lut_compress(tfl, bits="auto", tensors="all", data=digits.x_test[:50])
    np.testing.assert_array_equal(tflm_outputs(compressed, digits.x_test), tflm_outputs(tfl, digits.x_test))


def test_conv1d_model_bit_exact(digits):
    keras.utils.set_random_seed(4)
    x_train, x_test = digits.x_train.reshape(-1, 64, 1), digits.x_test.reshape(-1, 64, 1)
    model = keras.Sequential(
        [
            L.Input((64, 1)),
            L.Conv1D(8, 5, activation="relu"),
            L.MaxPooling1D(4),
            L.Conv1D(16, 3, activation="relu"),
            L.GlobalAveragePooling1D(),
            L.Dense(10),
        ]
    )
    fit(model, x_train, digits.y_train)
    tfl = tfedge.convert(model, representative_data=x_train)
    report = tfedge.lut.lut_report(tfl, bits="auto", tensors="all")  # generated inputs
    assert {t.op for t in report.tensors} == {"CONV_2D", "FULLY_CONNECTED"} and report.samples == 32
    np.testing.assert_array_equal(tflm_outputs(report.model, x_test), tflm_outputs(tfl, x_test))


# ------------------------------------------------------------------------------------------- CLI
def test_cli_lut_writes_a_verified_file(cqat_cnn, digits, tmp_path, capsys):
    src, out, data = tmp_path / "m.tflite", tmp_path / "m_lut.tflite", tmp_path / "x.npz"
    cqat_cnn.save(src)
    tfedge.datasets.save_npz(data, digits.x_test[:40])
    assert cli.main(["lut", str(src), "--bits", "4", "--tensors", "all", "--data", str(data), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "TFLite Micro only" in text
    written = tfedge.TFLiteModel.from_file(out)
    np.testing.assert_array_equal(tflm_outputs(written, digits.x_test[:40]), tflm_outputs(cqat_cnn, digits.x_test[:40]))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bits", "9"], "bits must be an integer in [1, 7], got 9"),
        (["--bits", "four"], "--bits must be an integer from 1 to 7 or 'auto', got 'four'"),
        (["--bits", "1", "--tensors", "all"], "distinct values"),
    ],
)
def test_cli_lut_bad_input_exits_2_with_one_line(cqat_cnn, tmp_path, capsys, args, message):
    src = tmp_path / "m.tflite"
    cqat_cnn.save(src)
    assert cli.main(["lut", str(src), *args, "--out", str(tmp_path / "o.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfedge: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o.tflite").exists()


def test_budget_search_candidates_cluster_int8_then_auto_lut(digits):
    """The two candidate functions a budget search composes: cluster_int8, then lut_report prices it.

    A wide conv sets the arena peak; the 2,048-weight dense kernel after global pooling decodes about at
    it, so auto compresses it (its flash saving is not eaten by arena), and not the conv kernel (32 tables).
    """
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(32, 3, padding="same", activation="relu"),
            L.GlobalAveragePooling2D(),
            L.Dense(64, activation="relu", name="hidden"),
            L.Dense(10),
        ]
    )
    fit(model, digits.x_train, digits.y_train, epochs=3, lr=3e-3)
    float_accuracy = float(np.mean(np.argmax(model.predict(digits.x_test, verbose=0), axis=-1) == digits.y_test))
    tfl = tfedge.candidates.cluster_int8(model, digits.x_train, digits.y_train, clusters=16, epochs=1, qat_epochs=1)
    report = tfedge.lut.lut_report(tfl, bits="auto", data=digits.x_test[:50])
    chosen = {t.shape: t for t in report.tensors}
    assert (64, 32) in chosen and {(t.op, t.mode) for t in report.tensors} == {("FULLY_CONNECTED", "per-tensor")}
    assert chosen[(64, 32)].bits <= 4 and all(t.arena_added < t.saved for t in report.tensors)
    assert report.flash_before - report.flash_after > max(0, report.arena_after - report.arena_before)
    x = digits.x_test
    lut_out, int8_out = tflm_outputs(report.model, x), tflm_outputs(tfl, x)
    np.testing.assert_array_equal(lut_out, int8_out)
    # 16 clusters + cluster-preserving QAT cost the float model little accuracy
    assert float(np.mean(np.argmax(lut_out, axis=-1) == digits.y_test)) > float_accuracy - 0.1

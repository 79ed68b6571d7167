"""tfedge/targets.py and ``convert(..., target=...)``: files for both runtimes, TFLite Micro only, or LiteRT,
checked on the real runtimes (TFLite Micro in its child process)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from tflite_builders import repack

import tfedge
from tfedge import cli, keras
from tfedge.errors import ConversionError, InputError, ValidationError
from tfedge.flatbuffer import parse
from tfedge.runtimes import LiteRT, TFLiteMicro
from tfedge.targets import TFLM_MARKER, missing_kernel, tflm_only_reason

from conftest import compile_classifier

L = keras.layers


def fit(model: keras.Model, x, y, epochs: int = 1) -> keras.Model:
    compile_classifier(model)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def depthwise(digits):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(8, 3, padding="same", activation="relu"),
            L.DepthwiseConv2D(3, activation="relu"),
            L.Conv2D(12, 1),
            L.GlobalAveragePooling2D(),
            L.Dense(10),
        ]
    )
    return fit(model, digits.x_train, digits.y_train, epochs=2), digits.x_train, digits.x_test


@pytest.fixture(scope="module")
def conv1d(digits):
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            L.Input((8, 8)),
            L.Conv1D(12, 3, activation="relu"),
            L.Conv1D(8, 3, activation="relu"),
            L.Flatten(),
            L.Dense(10),
        ]
    )
    return fit(model, digits.x_train[..., 0], digits.y_train, epochs=2), digits.x_train[..., 0], digits.x_test[..., 0]


@pytest.fixture(scope="module")
def cnn(small_cnn, digits):
    return small_cnn, digits.x_train, digits.x_test


def tflm(model, x) -> np.ndarray:
    return TFLiteMicro(model).run(x, measure_arena=False).outputs


# ------------------------------------------------------------------------------------ both / tflm
def test_both_is_the_default_and_runs_on_litert(small_cnn, digits):
    default = tfedge.convert(small_cnn, representative_data=digits.x_train)
    both = tfedge.convert(small_cnn, representative_data=digits.x_train, target="both")
    assert both.content == default.content
    assert parse(both.content).description == "" and tflm_only_reason(both.content) is None
    LiteRT(both).run(digits.x_test[:5])


@pytest.mark.parametrize("arch", ["cnn", "depthwise", "conv1d"])
def test_tflm_file_is_smaller_bit_identical_on_tflm_and_refused_by_litert(arch, request):
    model, x_train, x_test = request.getfixturevalue(arch)
    both = tfedge.convert(model, representative_data=x_train)
    slim = tfedge.convert(model, representative_data=x_train, target="tflm")
    # 'both' stores the all-zero per-channel zero points once per channel count; the slim file one 0 per tensor
    per_channel = [t for t in parse(both.content).subgraphs[0].tensors if len(t.scale) > 1]
    shared = sum(8 * n + 4 for n in {len(t.zero_point) for t in per_channel})  # the vectors 'both' stores
    zero_points = [tfedge.inspect(m).bytes_breakdown["zero_points"] for m in (both, slim)]
    assert shared >= 2 * (8 * 8 + 4) and zero_points[0] - zero_points[1] >= shared - 12 * len(per_channel) > 0
    assert slim.size < both.size
    np.testing.assert_array_equal(tflm(slim, x_test), tflm(both, x_test))
    assert any("bit-identical to the target='both' file on TFLite Micro" in n for n in slim.notes)
    parsed = parse(slim.content)
    assert parsed.description == TFLM_MARKER
    assert any(len(t.scale) > 1 and len(t.zero_point) == 1 for t in parsed.subgraphs[0].tensors)
    with pytest.raises(ValueError, match="has 1 zero_point values and [0-9]+ scale values"):
        Interpreter(model_content=slim.content)  # LiteRT itself
    with pytest.raises(ValidationError) as info:  # tfedge's LiteRT runner says why before starting it
        LiteRT(slim)
    assert "slimmed for TFLite Micro" in str(info.value) and "\n" not in str(info.value)
    reason = tflm_only_reason(slim.content, "slim.tflite")
    assert reason.startswith("slim.tflite is slimmed for TFLite Micro: tensor ") and "LiteRT refuses" in reason
    assert tfedge.lut.tflm_only_reason(slim) is not None  # the old home still answers
    # inspect and validate know the file: a tflm_only note, LiteRT skipped with the reason, TFLite Micro runs it
    assert [n["kind"] for n in tfedge.inspect(slim).notes].count("tflm_only") == 1
    result = tfedge.validate(slim, x_test[:40], runtimes=("litert", "tflm"), verbose=0)
    assert (
        result.status["litert"]["status"] == "skipped"
        and "slimmed for TFLite Micro" in result.status["litert"]["reason"]
    )
    assert result.status["tflm"]["status"] == "ran"


@pytest.fixture(scope="module")
def residual(digits):
    keras.utils.set_random_seed(3)
    x = L.Input((8, 8, 1))
    y = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu")(L.Conv2D(32, 1, activation="relu")(y))
    y = L.Add()([y, L.Conv2D(16, 1)(h)])
    y = L.Dense(10)(L.GlobalAveragePooling2D()(y))
    return fit(keras.Model(x, y), digits.x_train, digits.y_train), digits.x_train, digits.x_test


@pytest.mark.parametrize("arch", ["residual", "depthwise", "conv1d"])
def test_equal_vectors_are_stored_once_and_run_the_same_everywhere(arch, request):
    """The default file stores each per-channel zero-point vector once per channel count (they are all 0):
    smaller than the same model packed vector by vector, with identical outputs on the three kernel sets."""
    model, x_train, x_test = request.getfixturevalue(arch)
    shared = tfedge.convert(model, representative_data=x_train)
    plain = repack(shared.content, lambda m: None)  # the flatbuffers library's own packing: a vector per table
    per_channel = [t for t in parse(plain).subgraphs[0].tensors if len(t.scale) > 1]
    assert len({len(t.zero_point) for t in per_channel}) < len(per_channel)  # some channel counts repeat
    saved = len(plain) - shared.size
    assert saved >= 8 * (sum(len(t.zero_point) for t in per_channel) - sum({len(t.zero_point) for t in per_channel}))
    for runtime in ("litert", "litert-ref", "tflm"):
        a, b = (tfedge.runtimes.open_runtime(runtime, m, "m").run(x_test[:64]).outputs for m in (shared.content, plain))
        np.testing.assert_array_equal(a, b, err_msg=runtime)


def test_marker_alone_marks_a_file_tflm_only(small_cnn, digits):
    """A float32 file has no per-channel zero points to drop: the description says what it is for."""
    slim = tfedge.convert(small_cnn, quantization="float32", target="tflm")
    both = tfedge.convert(small_cnn, quantization="float32")
    assert slim.size < both.size
    reason = tflm_only_reason(slim.content, "f.tflite")
    assert reason == (
        "f.tflite was converted for TFLite Micro only (target='tflm', marked 'tfedge:tflm'); run it on "
        "TFLite Micro (runtimes=('tflm',)), or give LiteRT a file converted with target='both'"
    )
    np.testing.assert_array_equal(tflm(slim, digits.x_test[:50]), tflm(both, digits.x_test[:50]))


# ------------------------------------------------------------------------------------ litert
def test_litert_keeps_the_signature_and_io_names(small_cnn, digits):
    both = tfedge.convert(small_cnn, representative_data=digits.x_train)
    lite = tfedge.convert(small_cnn, representative_data=digits.x_train, target="litert")
    assert Interpreter(model_content=both.content).get_signature_list() == {}
    it = Interpreter(model_content=lite.content)
    assert it.get_signature_list() == {"serving_default": {"inputs": ["input"], "outputs": ["output_0"]}}
    assert it.get_input_details()[0]["name"] == "serving_default_input:0"
    runner = it.get_signature_runner("serving_default")
    q = lite.inputs[0].quantize(digits.x_test[:1])
    np.testing.assert_array_equal(runner(input=q)["output_0"][0], LiteRT(both).run(digits.x_test[:1]).outputs[0])
    assert lite.size < tfedge.convert(small_cnn, representative_data=digits.x_train, strip_metadata=False).size
    assert tflm_only_reason(lite.content) is None


# ------------------------------------------------------------------------------------ 16x8
def test_int16x8_runs_on_both_runtimes_and_slims_for_tflm(depthwise):
    model, x_train, x_test = depthwise
    both = tfedge.convert(model, representative_data=x_train, quantization="int16x8")
    assert both.inputs[0].dtype == "int16"
    assert "int16x8 runs on LiteRT and TFLite Micro (checked on 4 samples)" in both.notes
    keras_top1 = np.argmax(model.predict(x_test, verbose=0), axis=-1)
    for runtime in (LiteRT(both), TFLiteMicro(both)):
        top1 = np.argmax(runtime.run(x_test).outputs, axis=-1)
        assert np.mean(top1 == keras_top1) > 0.97, runtime.name
    slim = tfedge.convert(model, representative_data=x_train, quantization="int16x8", target="tflm")
    assert slim.size < both.size - 150  # names and the per-channel zero points (stored once per channel count)
    np.testing.assert_array_equal(tflm(slim, x_test), tflm(both, x_test))


def test_int16x8_without_a_tflite_micro_kernel_names_the_op(digits):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(8, 3), L.GlobalMaxPooling2D(), L.Dense(10)])
    with pytest.raises(ConversionError) as info:
        tfedge.convert(model, representative_data=digits.x_train, quantization="int16x8", target="tflm")
    message = str(info.value)
    assert message.startswith("TFLite Micro has no int16 kernel for REDUCE_MAX (operator ") and "\n" not in message
    assert message.endswith("use int8 for this model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        both = tfedge.convert(model, representative_data=digits.x_train, quantization="int16x8")
    assert any("no int16 kernel for REDUCE_MAX" in str(w.message) for w in caught)
    assert any("runs on LiteRT only" in n for n in both.notes)
    LiteRT(both).run(digits.x_test[:3])
    with pytest.raises(ValidationError):
        TFLiteMicro(both).run(digits.x_test[:3])


def test_missing_kernel_reads_both_runtimes_logs():
    assert (
        missing_kernel("LiteRT", "Node number 7 (MEAN) failed to prepare.", "int16x8")
        == "LiteRT has no int16 kernel for MEAN (operator 7): use int8 for this model"
    )
    assert missing_kernel("TFLite Micro", "Interpreter invocation failed.", "int16x8") is None


# ------------------------------------------------------------------------------------ int4
def four_bit_qat(digits) -> keras.Model:
    """Conv2D + Dense with TF-MOT 4-bit weight quantizers (per channel for the conv), 8-bit activations."""
    import tensorflow_model_optimization as tfmot

    q = tfmot.quantization.keras

    class FourBitWeights(q.QuantizeConfig):
        def __init__(self, per_axis: bool = False):
            self.per_axis = per_axis

        def get_weights_and_quantizers(self, layer):
            return [
                (
                    layer.kernel,
                    q.quantizers.LastValueQuantizer(
                        num_bits=4, symmetric=True, narrow_range=True, per_axis=self.per_axis
                    ),
                )
            ]

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, weights):
            layer.kernel = weights[0]

        def set_quantize_activations(self, layer, activations):
            pass

        def get_output_quantizers(self, layer):
            return [
                q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
            ]

        def get_config(self):
            return {"per_axis": self.per_axis}

    keras.utils.set_random_seed(4)
    annotated = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            q.quantize_annotate_layer(L.Conv2D(8, 3, activation="relu"), FourBitWeights(True)),
            L.Flatten(),
            q.quantize_annotate_layer(L.Dense(10), FourBitWeights()),
        ]
    )
    with q.quantize_scope({"FourBitWeights": FourBitWeights}):
        model = q.quantize_apply(q.quantize_annotate_model(annotated))
    return fit(model, digits.x_train, digits.y_train, epochs=3)


def test_int4_weights_run_on_both_runtimes_and_slim_for_tflm(digits):
    model = four_bit_qat(digits)
    tfl = tfedge.convert(model, representative_data=digits.x_train, quantization="int4")
    weights = {t.shape: t for t in parse(tfl.content).subgraphs[0].tensors if t.dtype == "int4"}
    assert set(weights) == {(8, 3, 3, 1), (10, 288)}
    assert weights[(10, 288)].data_size == 10 * 288 // 2  # packed two per byte
    assert "int4: 2 weight tensor(s) stored in 4 bits (packed two per byte), 0 in 8 bits" in tfl.notes
    assert "int4 runs on LiteRT and TFLite Micro (checked on 4 samples)" in tfl.notes
    keras_top1 = np.argmax(model.predict(digits.x_test, verbose=0), axis=-1)
    lite, micro = LiteRT(tfl).run(digits.x_test).outputs, tflm(tfl, digits.x_test)
    assert np.mean(np.argmax(lite, -1) == keras_top1) > 0.97 and np.mean(np.argmax(micro, -1) == keras_top1) > 0.97
    with pytest.raises(ConversionError, match="weights of 2 op.s. in 4 bits.*use quantization='int4'"):
        tfedge.convert(model, representative_data=digits.x_train, quantization="int8")
    slim = tfedge.convert(model, representative_data=digits.x_train, quantization="int4", target="tflm")
    assert slim.size < tfl.size
    np.testing.assert_array_equal(tflm(slim, digits.x_test), micro)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": "micro"}, "target must be one of both, tflm, litert, got 'micro'"),
        ({"target": None}, "target must be one of both, tflm, litert, got None"),
        ({"target": "tflm", "strip_metadata": False}, "target='tflm' writes a stripped file, but strip_metadata=False"),
    ],
)
def test_bad_target_is_one_line(small_cnn, digits, kwargs, message):
    with pytest.raises(InputError) as info:
        tfedge.convert(small_cnn, representative_data=digits.x_train, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def cli_files(small_cnn, digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("targets_cli")
    model, data = folder / "cnn.keras", folder / "calib.npz"
    tfedge.models.save_model(small_cnn, model)
    np.savez(data, x=digits.x_train[:300])
    return model, data


def test_cli_convert_target_tflm(cli_files, tmp_path, capsys, digits):
    model, data = cli_files
    out = tmp_path / "slim.tflite"
    assert cli.main(["convert", str(model), "--data", str(data), "--target", "tflm", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "target tflm" in stdout and "TFLite Micro only" in stdout
    reason = tflm_only_reason(out.read_bytes(), str(out))
    assert reason is not None and "LiteRT refuses" in reason


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--target", "litert", "--lut", "4"],
            "--lut writes a TFLite-Micro-only file (LiteRT has no TFLM_DECODE kernel), but --target is 'litert'",
        ),
        (["--lut", "9"], "--lut must be auto or a number of bits from 1 to 7, got '9'"),
        (["--lut", "four"], "--lut must be auto or a number of bits from 1 to 7, got 'four'"),
    ],
)
def test_cli_convert_bad_lut_exits_2_with_one_line(cli_files, tmp_path, capsys, args, message):
    model, data = cli_files
    out = tmp_path / "o.tflite"
    assert cli.main(["convert", str(model), "--data", str(data), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfedge: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_cli_convert_lut_on_a_clustered_model(digits, tmp_path, capsys):
    """--lut auto: a clustered, cluster-preserving QAT model converted, slimmed and LUT-compressed in one call."""
    keras.utils.set_random_seed(5)
    model = fit(
        keras.Sequential(
            [
                L.Input((8, 8, 1)),
                L.Conv2D(32, 3, padding="same", activation="relu"),
                L.GlobalAveragePooling2D(),
                L.Dense(64, activation="relu"),
                L.Dense(10),
            ]
        ),
        digits.x_train,
        digits.y_train,
        epochs=2,
    )
    clustered = fit(tfedge.cluster(model, clusters=16, preserve_sparsity=False), digits.x_train, digits.y_train)
    qat = fit(
        tfedge.quantize_aware(tfedge.strip_clustering(clustered), preserve_clusters=True),
        digits.x_train,
        digits.y_train,
    )
    path, data, out = tmp_path / "cqat.keras", tmp_path / "calib.npz", tmp_path / "lut.tflite"
    tfedge.models.save_model(qat, path)
    np.savez(data, x=digits.x_train[:200])
    assert cli.main(["convert", str(path), "--data", str(data), "--lut", "auto", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "target tflm, LUT" in stdout
    written = parse(out.read_bytes())
    assert "CUSTOM:TFLM_DECODE" in {c.name for c in written.opcodes} and written.description == TFLM_MARKER
    plain = tfedge.convert(qat, representative_data=digits.x_train[:200])
    assert written.size < plain.size
    np.testing.assert_array_equal(tflm(out.read_bytes(), digits.x_test), tflm(plain, digits.x_test))

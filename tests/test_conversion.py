"""tfedge.conversion: every mode on real models, run on LiteRT (and TFLite Micro), the int8 audit,
calibration-data checks, metadata stripping and atomic saving."""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap

from tfedge._keras import tf

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tfedge
from tfedge import cli, keras
from tfedge.conversion import MODES, TFLiteModel, convert
from tfedge.errors import ConversionError, InputError, ModelError
from tfedge.flatbuffer import parse
from tfedge.inspection import inspect

from conftest import accuracy, compile_classifier

# TF-MOT only after tfedge._keras has chosen Keras 2 (TF_USE_LEGACY_KERAS=1)
tfmot = importlib.import_module("tensorflow_model_optimization")

L = keras.layers
MOMENTUM = 0.7  # batch-norm statistics settle within a short training run


def build_block_cnn() -> keras.Model:
    """Conv-BN-ReLU -> DepthwiseConv-BN-ReLU -> Conv, a residual Add, GlobalAveragePooling, Dense."""
    inp = L.Input((8, 8, 1), name="image")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inp)
    x = L.BatchNormalization(momentum=MOMENTUM, name="bn")(x)
    x = L.ReLU(name="relu")(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = L.BatchNormalization(momentum=MOMENTUM, name="dw_bn")(y)
    y = L.ReLU(name="dw_relu")(y)
    y = L.Conv2D(16, 3, padding="same", name="pw")(y)  # 2,304 weights: big enough for dynamic range
    z = L.Add(name="add")([x, y])
    z = L.GlobalAveragePooling2D(name="gap")(z)
    return keras.Model(inp, L.Dense(10, name="logits")(z), name="block_cnn")


@pytest.fixture(scope="module")
def block_cnn(digits):
    keras.utils.set_random_seed(1)
    model = compile_classifier(build_block_cnn(), lr=1e-2)
    model.fit(digits.x_train, digits.y_train, epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_logits(small_cnn, block_cnn, digits):
    return {
        name: m.predict(digits.x_test, batch_size=450, verbose=0)
        for name, m in (("small_cnn", small_cnn), ("block_cnn", block_cnn))
    }


@pytest.fixture(scope="module")
def qat_cnn(small_cnn, digits):
    """TF-MOT quantize_model on a copy of the trained digits CNN, fine-tuned briefly."""
    keras.utils.set_random_seed(2)
    clone = keras.models.clone_model(small_cnn)
    clone.set_weights(small_cnn.get_weights())
    qat = compile_classifier(tfmot.quantization.keras.quantize_model(clone), lr=1e-3)
    qat.fit(digits.x_train, digits.y_train, epochs=2, batch_size=64, verbose=0)
    return qat


def run_litert(content: bytes, x: np.ndarray) -> np.ndarray:
    """Float logits for every sample of ``x``, (de)quantizing at the boundary as the file says."""
    it = Interpreter(model_content=content)
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    results = []
    for sample in x:
        if in_scale:
            info = np.iinfo(inp["dtype"])
            sample = np.clip(np.round(sample / in_scale + in_zero), info.min, info.max)
        it.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"])[0].astype(np.float32)
        results.append((y - out_zero) * out_scale if out_scale else y)
    return np.stack(results)


# ---------------------------------------------------------------------------------------------
# every mode, two architectures


@pytest.mark.parametrize("mode", [m for m in MODES if m != "int4"])  # int4: a 4-bit QAT model (test_targets)
@pytest.mark.parametrize("arch", ["small_cnn", "block_cnn"])
def test_every_mode_converts_and_runs_on_litert(arch, mode, request, digits, keras_logits):
    model = request.getfixturevalue(arch)
    tfl = convert(model, representative_data=digits.x_train, quantization=mode)
    assert tfl.quantization == mode
    assert any("batch dimension pinned to 1" in n for n in tfl.notes)
    assert tfl.input_details[0]["shape"] == (1, 8, 8, 1)
    info = inspect(tfl)
    expected_io = {"int8": "int8", "int16x8": "int16"}.get(mode, "float32")
    assert tfl.input_details[0]["dtype"] == expected_io and tfl.output_details[0]["dtype"] == expected_io
    assert info.fully_int8 == (mode == "int8")

    logits = run_litert(tfl.content, digits.x_test)
    reference = keras_logits[arch]
    keras_acc, lite_acc = accuracy(reference, digits.y_test), accuracy(logits, digits.y_test)
    print(f"{arch} {mode}: Keras {keras_acc:.4f}, LiteRT {lite_acc:.4f}, {tfl.size:,} bytes")
    assert keras_acc > 0.8
    if mode == "float32":
        np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)
    elif mode == "float16":
        np.testing.assert_allclose(logits, reference, rtol=0.02, atol=0.05)
    else:
        assert abs(lite_acc - keras_acc) <= 0.03, (keras_acc, lite_acc)
        assert np.mean(np.argmax(logits, 1) == np.argmax(reference, 1)) >= 0.95
    if mode == "dynamic" and arch == "block_cnn":
        assert info.quantization == "dynamic" and any("int8" in n for n in tfl.notes)


def test_int8_with_float_io_keeps_quantize_dequantize_at_the_boundary_only(small_cnn, digits, keras_logits):
    tfl = convert(small_cnn, digits.x_train, "int8", int8_io=False)
    info = inspect(tfl)
    assert tfl.input_details[0]["dtype"] == np.float32
    assert info.ops["QUANTIZE"] == 1 and info.ops["DEQUANTIZE"] == 1
    assert info.operators[0]["op"] == "QUANTIZE" and info.operators[-1]["op"] == "DEQUANTIZE"
    assert not info.fully_int8 and info.quantization == "int8"
    logits = run_litert(tfl.content, digits.x_test)
    assert abs(accuracy(logits, digits.y_test) - accuracy(keras_logits["small_cnn"], digits.y_test)) <= 0.03


# ---------------------------------------------------------------------------------------------
# the int8 audit and QAT


class NoQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """A QuantizeConfig that quantizes nothing: TF-MOT leaves the layer float."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


def test_int8_audit_names_the_float_layer_tfmot_left_behind():
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    annotated = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            annotate(L.Conv2D(8, 3, activation="relu", name="conv")),
            annotate(L.Flatten(name="flatten")),
            annotate(L.Dense(16, activation="relu", name="hidden"), quantize_config=NoQuantizeConfig()),
            annotate(L.Dense(10, name="logits")),
        ]
    )
    with tfmot.quantization.keras.quantize_scope({"NoQuantizeConfig": NoQuantizeConfig}):
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    with pytest.raises(ConversionError) as info:
        convert(qat, quantization="int8")  # QAT: no calibration data, ranges from training only
    msg = str(info.value)
    assert "\n" not in msg
    assert "FULLY_CONNECTED" in msg and "float32" in msg
    assert "Keras layer 'hidden' (Dense)" in msg
    assert "Fix:" in msg


def test_qat_model_converts_within_half_a_point_of_keras(qat_cnn, digits):
    keras_acc = accuracy(qat_cnn.predict(digits.x_test, batch_size=450, verbose=0), digits.y_test)
    tfl = convert(qat_cnn, quantization="int8")  # no representative data: ranges come from training
    assert inspect(tfl).fully_int8
    lite_acc = accuracy(run_litert(tfl.content, digits.x_test), digits.y_test)
    print(f"QAT digits CNN: Keras {keras_acc:.4f}, int8 LiteRT {lite_acc:.4f}")
    assert keras_acc > 0.85
    assert abs(lite_acc - keras_acc) <= 0.005, (keras_acc, lite_acc)


# ---------------------------------------------------------------------------------------------
# strip_metadata


TFLM_RUN = textwrap.dedent(
    """
    import sys, numpy as np
    from tflite_micro.python.tflite_micro import runtime
    x = np.load(sys.argv[1])
    outs = []
    for path in sys.argv[2:]:
        it = runtime.Interpreter.from_bytes(open(path, "rb").read())
        rows = []
        for sample in x:
            it.set_input(sample[None], 0)
            it.invoke()
            rows.append(it.get_output(0)[0].copy())
        outs.append(np.stack(rows))
    print("SAME" if all(np.array_equal(outs[0], o) for o in outs[1:]) else "DIFFERENT")
    """
)


def test_strip_metadata_shrinks_the_file_and_runs_identically_on_litert_and_tflm(small_cnn, digits, tmp_path):
    full = convert(small_cnn, digits.x_train, strip_metadata=False)
    slim = convert(small_cnn, digits.x_train)
    saved = full.size - slim.size
    print(f"strip_metadata saves {saved} of {full.size} bytes on the digits CNN")
    (note,) = [n for n in slim.notes if n.startswith("debug info stripped")]
    assert 0 < int(note.split(": ")[1].split(" ")[0].replace(",", "")) <= saved
    assert saved >= 300
    before, after = inspect(full), inspect(slim)
    assert before.signatures == ["serving_default"] and after.signatures == [] and after.metadata == []
    assert any(t["name"].startswith("sequential") or "/" in t["name"] for t in before.tensors)
    io = {d["name"] for d in (*after.inputs, *after.outputs)}
    # every other tensor lost its name: inspect labels it by the op that makes or reads it
    assert all(t["name"] in io or re.fullmatch(r"[A-Z0-9_]+#\d+\.(input|output)\d+", t["name"]) for t in after.tensors)
    assert before.ops == after.ops and before.dtypes == after.dtypes and before.sparsity == after.sparsity
    assert all(start % 16 == 0 for start, size in parse(slim.content).buffers if size)

    x = digits.x_test[:60]
    np.testing.assert_array_equal(run_litert(full.content, x), run_litert(slim.content, x))
    scale, zero = slim.input_details[0]["scale"], slim.input_details[0]["zero_point"]
    xq = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    np.save(tmp_path / "x.npy", xq)
    full.save(tmp_path / "full.tflite")
    slim.save(tmp_path / "slim.tflite")
    # TFLite Micro in a child process: it segfaults on bad files instead of raising
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            TFLM_RUN,
            str(tmp_path / "x.npy"),
            str(tmp_path / "full.tflite"),
            str(tmp_path / "slim.tflite"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("SAME")


# ---------------------------------------------------------------------------------------------
# representative data


def test_float64_data_is_converted_and_gives_the_same_model(small_cnn, digits):
    x = digits.x_train[:200]
    assert convert(small_cnn, x.astype(np.float64)).content == convert(small_cnn, x).content


def test_dataset_and_callable_feed_the_same_samples_as_an_array(small_cnn, digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    reference = convert(small_cnn, x).content
    labelled = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    assert convert(small_cnn, labelled).content == reference

    def batches():
        for start in range(0, 200, 50):
            yield x[start : start + 50]

    assert convert(small_cnn, batches).content == reference


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "int8 conversion needs representative_data"),
        (np.zeros((50, 8, 8), np.float32), "samples have shape 8x8, the model expects 8x8x1"),
        (np.ones((5, 8, 8, 1), np.float32), "has 5 sample(s); int8 calibration needs at least 10"),
        ("digits.npz", "must be a numpy array, a dict of arrays, a tf.data.Dataset or a callable"),
        (np.array([["a"]] * 20), "has dtype <U1"),
    ],
)
def test_bad_calibration_data_is_refused_before_conversion(small_cnn, data, message):
    with pytest.raises(InputError) as info:
        convert(small_cnn, data)
    assert message in str(info.value)


def test_nan_and_inf_are_refused_naming_how_many(small_cnn, digits):
    x = digits.x_train[:100].copy()
    x[3, 0, 0, 0] = x[7, 1, 1, 0] = x[9, 2, 2, 0] = np.nan
    x[50, 4, 4, 0] = np.inf
    with pytest.raises(InputError, match="holds 4 NaN or Inf value"):
        convert(small_cnn, x)


def test_constant_data_is_warned_about_but_converts(small_cnn):
    with pytest.warns(UserWarning, match="is constant"):
        tfl = convert(small_cnn, np.full((20, 8, 8, 1), 0.5, np.float32))
    assert any("is constant" in n for n in tfl.notes)
    assert any("all 20 samples" in n for n in tfl.notes)


def test_several_inputs_need_data_keyed_by_input_name(digits):
    image = L.Input((8, 8, 1), name="image")
    extra = L.Input((4,), name="extra")
    merged = L.Concatenate()([L.Flatten()(image), extra])
    model = keras.Model([image, extra], L.Dense(10)(merged))
    x = digits.x_train[:64]
    e = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    tfl = convert(model, {"image": x, "extra": e})
    assert sorted(d["shape"] for d in tfl.input_details) == [(1, 4), (1, 8, 8, 1)]
    assert inspect(tfl).fully_int8
    with pytest.raises(InputError, match=r"has 2 inputs \['image', 'extra'\]: pass representative_data as a dict"):
        convert(model, x)
    with pytest.raises(InputError, match="use exactly the input names as keys"):
        convert(model, {"image": x, "other": e})


def test_unknown_non_batch_dimension_is_a_model_error():
    model = keras.Sequential([L.Input((None, 3)), L.Dense(2)])
    with pytest.raises(ModelError, match="unknown dimension besides the batch"):
        convert(model, quantization="float32")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"quantization": "int2"},
            "quantization must be one of int8, int16x8, int4, float16, dynamic, float32, got 'int2'",
        ),
        (
            {"quantization": "int4"},
            "int4 weights come from quantization-aware training with 4-bit weight quantizers "
            "(a TF-MOT QuantizeConfig with LastValueQuantizer(num_bits=4)), and this model is "
            "not quantization-aware: use quantization='int8', or train the model 4-bit first",
        ),
        ({"calibration_samples": 3}, "calibration_samples must be an integer >= 10, got 3"),
        ({"int8_io": "yes"}, "int8_io must be True or False, got 'yes'"),
    ],
)
def test_bad_arguments_are_refused(small_cnn, digits, kwargs, message):
    with pytest.raises(InputError) as info:
        convert(small_cnn, digits.x_train, **kwargs)
    assert str(info.value) == message


def test_unstripped_pruning_wrappers_are_refused():
    model = keras.Sequential([L.Input((4,)), L.Dense(2)])
    with pytest.raises(ModelError, match=r"call tfedge.strip\(model\) before converting"):
        convert(tfmot.sparsity.keras.prune_low_magnitude(model), quantization="float32")


def test_non_keras_model_is_refused():
    with pytest.raises(InputError, match="must be a Keras model"):
        convert(object(), quantization="float32")


# ---------------------------------------------------------------------------------------------
# TFLiteModel, saving, CLI


def test_tflite_model_details_match_litert(small_cnn, digits, tmp_path):
    tfl = convert(small_cnn, digits.x_train)
    it = Interpreter(model_content=tfl.content)
    for ours, theirs in ((tfl.input_details, it.get_input_details()), (tfl.output_details, it.get_output_details())):
        assert len(ours) == len(theirs) == 1
        assert ours[0]["name"] == theirs[0]["name"] and ours[0]["index"] == theirs[0]["index"]
        assert list(ours[0]["shape"]) == list(theirs[0]["shape"])
        assert ours[0]["dtype"] == theirs[0]["dtype"]
        assert (ours[0]["scale"], ours[0]["zero_point"]) == pytest.approx(theirs[0]["quantization"])
    path = tfl.save(tmp_path / "m.tflite")
    loaded = TFLiteModel.from_file(path)
    assert loaded.content == tfl.content and loaded.quantization == "int8"
    assert loaded.size == path.stat().st_size and 0 < loaded.gzip_size < loaded.size
    assert repr(loaded).startswith("TFLiteModel(int8, ")
    with pytest.raises(InputError, match="is not a TFLite model"):
        TFLiteModel.from_bytes(tfl.content[:4] + b"XXXX" + tfl.content[8:], source="upload")


def test_failed_save_leaves_the_existing_file_untouched(small_cnn, digits, tmp_path, monkeypatch):
    tfl = convert(small_cnn, digits.x_train)
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous model")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", disk_full)
        with pytest.raises(InputError, match="No space left on device"):
            tfl.save(target)
    with monkeypatch.context() as m:

        def interrupted(src, dst):
            raise KeyboardInterrupt

        m.setattr(os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            tfl.save(target)
    assert target.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_cli_convert_writes_a_valid_file_and_a_failing_conversion_keeps_the_old_one(
    small_cnn, digits, tmp_path, capsys
):
    model_path = tmp_path / "cnn.keras"
    tfedge.save_model(small_cnn, model_path)
    good, bad = tmp_path / "calib.npz", tmp_path / "bad.npz"
    tfedge.datasets.save_npz(good, digits.x_train[:100])
    np.savez(bad, x=np.zeros((100, 8, 8), np.float32))  # wrong sample shape
    out = tmp_path / "digits.tflite"

    assert cli.main(["convert", str(model_path), "--data", str(good), "--quantization", "int8", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    written = out.read_bytes()
    assert inspect(out).fully_int8

    code = cli.main(["convert", str(model_path), "--data", str(bad), "--quantization", "int8", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tfedge: error: ") and err.count("\n") == 1
    assert out.read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "calib.npz", "cnn.keras", "digits.tflite"]

    assert cli.main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fully_int8"] is True

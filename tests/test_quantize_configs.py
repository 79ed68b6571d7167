"""tfedge.quantize_configs: QAT for the layers TF-MOT 0.8.1 leaves float, checked on digits (1-D layers on
digits read as sequences, 8 steps x 8 channels) against the int8 flatbuffer on LiteRT and TFLite Micro."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tfedge
from tfedge import keras, quantize_configs as qc
from tfedge.quantization import QuantizationWarning

from conftest import accuracy, compile_classifier

L = keras.layers
BATCH = 32


def quantization_warnings(fn, *args, **kwargs):
    """fn(*args, **kwargs) and the text of every warning of tfedge's (QuantizationWarning, ...) it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [
        str(w.message)
        for w in caught
        if issubclass(w.category, QuantizationWarning) or w.category.__module__.startswith("tfedge")
    ]


def inner_types(qat: keras.Model) -> dict[str, tuple[str, str]]:
    """Layer name -> (class of the layer, class of its QuantizeConfig) for each layer wrapped for QAT."""
    return {
        layer.layer.name: (type(layer.layer).__name__, type(layer.quantize_config).__name__)
        for layer in qat.layers
        if hasattr(layer, "quantize_config")
    }


# ------------------------------------------------------------------------------------ the models
def _sequence_kws(inp):
    """Conv1D-BN-ReLU blocks, 1-D pooling, a Permute and a Normalization: the 1-D layers in one model."""
    h = L.Rescaling(2.0, offset=-1.0, name="rescale_offset")(inp)
    h = L.Conv1D(16, 3, padding="same", use_bias=False, name="conv_bn")(h)
    h = L.BatchNormalization(name="bn_folded")(h)
    h = L.ReLU(name="relu1")(h)
    h = L.MaxPooling1D(2, name="maxpool1d")(h)
    h = L.Conv1D(16, 3, padding="same", activation="relu", name="conv_relu")(h)
    h = L.AveragePooling1D(2, padding="same", name="avgpool1d")(h)
    h = L.Permute((2, 1), name="permute")(h)
    h = L.Conv1D(16, 3, padding="same", name="conv_then_relu")(h)
    h = L.ReLU(name="relu2")(h)
    return L.GlobalAveragePooling1D(name="gap1d")(h)


def _sequence_norm(inp):
    h = L.Normalization(name="normalization")(inp)
    h = L.Conv1D(16, 3, padding="same", activation="relu", name="conv")(h)
    h = L.BatchNormalization(name="bn_standalone")(h)
    h = L.Reshape((4, 32), name="reshape")(h)
    return L.GlobalMaxPooling1D(name="gmp1d")(h)


def _image(inp):
    h = L.Rescaling(2.0, name="rescale")(inp)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(h)
    h = L.BatchNormalization(name="bn_standalone")(h)
    h = L.MaxPooling2D(2, name="pool")(h)
    h = L.UpSampling2D(interpolation="bilinear", name="up_bilinear")(h)
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="down")(h)
    h = L.UpSampling2D(name="up_nearest")(h)
    h = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu", name="deconv")(h)
    h = L.Conv2D(8, 3, strides=2, activation="relu", name="conv_out")(h)
    return L.Flatten(name="flat")(h)


GROUPS = {
    # body, 1-D input, layers that must be quantization-aware (with tfedge's or TF-MOT's config)
    "sequence_kws": (
        _sequence_kws,
        True,
        [
            "rescale_offset",
            "conv_bn",
            "bn_folded",
            "maxpool1d",
            "conv_relu",
            "avgpool1d",
            "permute",
            "conv_then_relu",
            "gap1d",
        ],
    ),
    "sequence_norm": (_sequence_norm, True, ["normalization", "conv", "bn_standalone", "reshape", "gmp1d"]),
    "image": (_image, False, ["rescale", "conv", "bn_standalone", "up_bilinear", "up_nearest", "deconv"]),
}


def as_sequences(x: np.ndarray) -> np.ndarray:
    """Digits read as sequences: 8 steps (rows) x 8 channels (columns)."""
    return x[..., 0]


@pytest.fixture(scope="module", params=list(GROUPS))
def group(request, digits):
    """(name, float model, trained QAT model, its quantize_aware warnings, x_test) for one group of layers."""
    body, sequence, _ = GROUPS[request.param]
    x_train, x_test = digits.x_train, digits.x_test
    if sequence:
        x_train, x_test = as_sequences(x_train), as_sequences(x_test)
    keras.utils.set_random_seed(4)
    inp = L.Input(x_train.shape[1:])
    model = keras.Model(inp, L.Dense(10, name="logits")(body(inp)), name=request.param)
    for layer in model.layers:
        if isinstance(layer, L.Normalization):
            layer.adapt(x_train)
    compile_classifier(model).fit(x_train, digits.y_train, epochs=10, batch_size=BATCH, verbose=0)
    qat, warned = quantization_warnings(tfedge.quantize_aware, model)
    compile_classifier(qat, lr=1e-3).fit(x_train, digits.y_train, epochs=3, batch_size=BATCH, verbose=0)
    return request.param, model, qat, warned, x_test


def test_every_layer_is_quantization_aware_and_int8_agrees_with_keras_on_litert_and_tflm(group, digits):
    name, model, qat, warned, x_test = group
    assert warned == []  # no layer named in a "cannot be quantized" warning
    wrapped = inner_types(qat)
    missing = [layer for layer in GROUPS[name][2] if layer not in wrapped]
    assert missing == [], (missing, wrapped)
    assert len(wrapped) == len(model.layers) - 1  # every layer but the input

    tfl = tfedge.convert(qat, quantization="int8")  # raises ConversionError unless the audit finds it fully int8
    info = tfedge.inspect(tfl)
    assert info.fully_int8 and not info.tflm_unsupported_ops, (info.non_int8_ops, info.tflm_unsupported_ops)
    assert "QUANTIZE" not in info.ops, info.ops  # no requantize op QAT did not model
    result = tfedge.validate(tfl, x_test, digits.y_test, reference=qat, runtimes=("litert", "tflm"), verbose=0)
    assert result.reference_agreement["litert"] >= 0.99, result.reference_agreement
    assert result.reference_agreement["tflm"] >= 0.98, result.reference_agreement
    if name == "sequence_kws":  # the three Conv1D kernels: int8, per output channel, as (out, 1, width, in)
        details = Interpreter(model_content=tfl.content).get_tensor_details()
        per_channel = [
            t["name"]
            for t in details
            if t["dtype"] == np.int8
            and list(t["shape"][1:3]) == [1, 3]
            and len(t["quantization_parameters"]["scales"]) == t["shape"][0] > 1
        ]
        assert len(per_channel) == 3, per_channel
    float_acc = accuracy(model.predict(x_test, verbose=0), digits.y_test)
    assert result.accuracy["litert"] >= float_acc - 0.02, (result.accuracy, float_acc)
    assert result.accuracy["tflm"] >= float_acc - 0.02, (result.accuracy, float_acc)


def test_tfedge_configs_are_the_ones_chosen(group):
    name, _, qat, _, _ = group
    wrapped = inner_types(qat)
    if name == "sequence_kws":
        assert wrapped["conv_bn"] == ("Conv1DAsConv2D", "Conv1DQuantizeConfig")
        assert qat.get_layer("quant_conv_bn").quantize_config.quantize_output is False  # BN and ReLU fuse into it
        assert wrapped["bn_folded"] == ("BatchNormalization", "PassThroughQuantizeConfig")
        assert qat.get_layer("quant_conv_relu").quantize_config.quantize_output is True
        assert qat.get_layer("quant_conv_then_relu").quantize_config.quantize_output is False
        assert wrapped["rescale_offset"] == ("AffineRescaling", "OutputQuantizeConfig")
        assert wrapped["maxpool1d"][1] == wrapped["avgpool1d"][1] == "PassThroughQuantizeConfig"
    elif name == "sequence_norm":
        assert wrapped["bn_standalone"] == ("AffineBatchNormalization", "OutputQuantizeConfig")
        assert wrapped["normalization"] == ("AffineNormalization", "OutputQuantizeConfig")
    else:
        assert wrapped["up_bilinear"] == ("UpSampling2D", "PassThroughQuantizeConfig")
        assert wrapped["up_nearest"][1] == "Default8BitQuantizeConfig"  # TF-MOT's own, kept
        assert wrapped["deconv"][1] == "Default8BitConvTransposeQuantizeConfig"
        assert wrapped["rescale"] == ("Rescaling", "OutputQuantizeConfig")


def test_qat_model_with_tfedge_configs_saves_and_loads_without_a_scope(group, tmp_path):
    name, _, qat, _, x_test = group
    path = tmp_path / f"{name}.keras"
    tfedge.save_model(qat, path)
    loaded = tfedge.load_model(path)
    assert inner_types(loaded) == inner_types(qat)
    np.testing.assert_allclose(
        loaded.predict(x_test[:64], verbose=0), qat.predict(x_test[:64], verbose=0), rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- fast unit checks
def test_affine_layers_compute_what_the_layers_they_replace_compute():
    rng = np.random.default_rng(0)
    for shape in ((5, 6), (5, 4, 6), (5, 3, 4, 6)):
        x = rng.normal(size=shape).astype("float32")
        bn = L.BatchNormalization()
        bn.build(shape)
        bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.1, 3, 6)])
        affine = qc.AffineBatchNormalization.from_config(bn.get_config())
        affine.build(shape)
        affine.set_weights(bn.get_weights())
        np.testing.assert_allclose(affine(x, training=True), bn(x, training=False), rtol=1e-5, atol=1e-5)
        norm = L.Normalization()
        norm.adapt(x)
        same = qc.AffineNormalization.from_config(norm.get_config())
        same.build(shape)
        same.set_weights(norm.get_weights())  # read at call time (a plain Normalization would not see them)
        np.testing.assert_allclose(same(x), norm(x), rtol=1e-5, atol=1e-5)
        rescale = L.Rescaling(0.5, offset=-1.0)
        np.testing.assert_allclose(qc.AffineRescaling.from_config(rescale.get_config())(x), rescale(x), atol=1e-6)
    conv = L.Conv1D(4, 3, strides=2, dilation_rate=1, padding="causal")
    x = rng.normal(size=(2, 9, 3)).astype("float32")
    expected = conv(x)
    same = qc.Conv1DAsConv2D.from_config(conv.get_config())
    same.build(x.shape)
    same.set_weights(conv.get_weights())
    np.testing.assert_allclose(same(x), expected, rtol=1e-5, atol=1e-5)


def test_configs_round_trip_through_keras_serialization():
    for config in (
        qc.Conv1DQuantizeConfig(quantize_output=False, keep_zeros=True),
        qc.OutputQuantizeConfig(),
        qc.PassThroughQuantizeConfig(),
    ):
        saved = keras.utils.serialize_keras_object(config)
        assert saved["class_name"].startswith("tfedge>") or saved.get("registered_name", "").startswith("tfedge>")
        again = keras.utils.deserialize_keras_object(saved)  # no scope: registered under "tfedge"
        assert type(again) is type(config) and again.get_config() == config.get_config()


def test_skip_keeps_a_covered_layer_float_and_unlowered():
    inp = L.Input((8, 8))
    h = L.Conv1D(4, 3, name="conv1d")(inp)
    h = L.BatchNormalization(name="bn")(L.ReLU(name="relu")(h))
    model = keras.Model(inp, L.Dense(10, name="logits")(L.Flatten(name="flat")(h)))
    qat, warned = quantization_warnings(tfedge.quantize_aware, model, skip=["conv1d", "bn"])
    assert warned == []
    assert type(qat.get_layer("conv1d")) is L.Conv1D and type(qat.get_layer("bn")) is L.BatchNormalization


# ------------------------------------------------------------------- done when: pruned, then PQAT
def _kws(inp):
    h = inp
    for i, filters in enumerate((16, 16, 32)):
        h = L.Conv1D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = L.BatchNormalization(name=f"bn{i}")(h)
        h = L.ReLU(name=f"relu{i}")(h)
        if i == 1:
            h = L.MaxPooling1D(2, name="pool")(h)
    return L.GlobalAveragePooling1D(name="gap")(h)


def _mobilenet_v2_style(inp):
    h = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
    h = L.ReLU(6.0, name="stem_relu")(L.BatchNormalization(name="stem_bn")(h))
    for block in range(2):
        x = L.Conv2D(48, 1, use_bias=False, name=f"b{block}_expand")(h)
        x = L.ReLU(6.0, name=f"b{block}_expand_relu")(L.BatchNormalization(name=f"b{block}_expand_bn")(x))
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"b{block}_dw")(x)
        x = L.ReLU(6.0, name=f"b{block}_dw_relu")(L.BatchNormalization(name=f"b{block}_dw_bn")(x))
        x = L.Conv2D(16, 1, use_bias=False, name=f"b{block}_project")(x)
        x = L.BatchNormalization(name=f"b{block}_project_bn")(x)
        h = L.Add(name=f"b{block}_add")([h, x])
    return L.GlobalAveragePooling2D(name="gap")(h)


def _kernels(model: keras.Model) -> dict[str, np.ndarray]:
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        for weight in layer.weights:
            if weight.name.split("/")[-1] in ("kernel:0", "depthwise_kernel:0") and isinstance(
                inner, (L.Conv1D, L.Conv2D, L.DepthwiseConv2D)
            ):
                out[inner.name] = weight.numpy()
    return out


@pytest.mark.parametrize(
    "body,sequence", [(_kws, True), (_mobilenet_v2_style, False)], ids=["conv1d_kws", "mobilenet_v2_style"]
)
def test_pruned_model_trains_quantization_aware_keeping_zeros_and_accuracy_in_int8(body, sequence, digits):
    x_train, x_test = digits.x_train, digits.x_test
    if sequence:
        x_train, x_test = as_sequences(x_train), as_sequences(x_test)
    keras.utils.set_random_seed(5)
    inp = L.Input(x_train.shape[1:])
    model = keras.Model(inp, L.Dense(10, name="logits")(body(inp)))
    compile_classifier(model).fit(x_train, digits.y_train, epochs=8, batch_size=BATCH, verbose=0)
    steps = math.ceil(len(x_train) / BATCH)
    pruned = compile_classifier(tfedge.prune(model, target_sparsity=0.5, epochs=4, steps_per_epoch=steps), lr=1e-3)
    pruned.fit(x_train, digits.y_train, epochs=4, batch_size=BATCH, verbose=0, callbacks=[tfedge.PruningCallback()])
    stripped = tfedge.strip(pruned)
    report = tfedge.sparsity_report(stripped)
    assert report["overall"] >= 0.49, report
    before = _kernels(stripped)
    if not sequence:
        assert {"b0_dw", "b1_dw"} <= {name for name, k in before.items() if np.mean(k == 0) >= 0.45}
    pruned_acc = accuracy(stripped.predict(x_test, verbose=0), digits.y_test)

    qat, warned = quantization_warnings(tfedge.quantize_aware, stripped, preserve_sparsity=True)
    assert warned == []
    compile_classifier(qat, lr=1e-3)
    _, fit_warnings = quantization_warnings(qat.fit, x_train, digits.y_train, epochs=3, batch_size=BATCH, verbose=0)
    assert fit_warnings == []
    after = _kernels(qat)
    assert after.keys() == before.keys()
    for name, kernel in before.items():  # every pruned weight still exactly zero, the others trained
        assert np.all(after[name][kernel == 0] == 0), name
        assert not np.array_equal(after[name], kernel), f"{name} did not train"

    tfl = tfedge.convert(qat, quantization="int8")
    info = tfedge.inspect(tfl)
    assert info.fully_int8
    conv_tensors = {k: v for k, v in info.weight_sparsity.items() if "logits" not in k and "MatMul" not in k}
    assert conv_tensors and min(conv_tensors.values()) >= 0.45, info.weight_sparsity  # zeros kept in int8
    result = tfedge.validate(tfl, x_test, digits.y_test, reference=qat, runtimes=("litert", "tflm"), verbose=0)
    assert result.accuracy["litert"] >= pruned_acc - 0.02, (result.accuracy, pruned_acc)
    assert result.accuracy["tflm"] >= pruned_acc - 0.02, (result.accuracy, pruned_acc)
    assert result.reference_agreement["litert"] >= 0.99, result.reference_agreement


def test_depthwise_and_transposed_conv_zeros_are_kept_under_preserve_sparsity(digits):
    inp = L.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(h)
    h = L.Conv2DTranspose(4, 3, activation="relu", name="deconv")(h)
    model = keras.Model(inp, L.Dense(10, name="logits")(L.Flatten(name="flat")(h)))
    for layer in (model.get_layer("dw"), model.get_layer("deconv")):  # zero half the input channels
        kernel = layer.get_weights()[0]
        kernel[:, :, ::2] = 0 if layer.name == "dw" else kernel[:, :, ::2]
        kernel[..., ::2] = kernel[..., ::2] if layer.name == "dw" else 0
        layer.set_weights([kernel, *layer.get_weights()[1:]])
    qat, warned = quantization_warnings(tfedge.quantize_aware, model, preserve_sparsity=True)
    assert warned == []
    assert inner_types(qat)["dw"][1] == inner_types(qat)["deconv"][1] == "PrunePreserveQuantizeConfig"
    compile_classifier(qat).fit(digits.x_train[:512], digits.y_train[:512], epochs=1, batch_size=BATCH, verbose=0)
    kernels = _kernels(qat)
    assert np.all(kernels["dw"][:, :, ::2] == 0) and np.any(kernels["dw"][:, :, 1::2] != 0)
    assert np.all(kernels["deconv"][..., ::2] == 0) and np.any(kernels["deconv"][..., 1::2] != 0)
    assert tfedge.inspect(tfedge.convert(qat, quantization="int8")).fully_int8

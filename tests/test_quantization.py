"""tfedge.quantization: QAT on real architectures, sparsity kept into the int8 flatbuffer, unsupported
layers named, save / load, distributed training."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

from tfedge._keras import tf

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tfedge
from tfedge import keras
from tfedge.errors import InputError, ModelError
from tfedge.quantization import PrunePreserveQuantizeConfig, QuantizationWarning

from conftest import accuracy, compile_classifier

L = keras.layers
BATCH = 64


# ------------------------------------------------------------------------------------------ helpers
def clone(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def quantize_quietly(model: keras.Model, **kwargs) -> tuple[keras.Model, list[str]]:
    """quantize_aware, returning the model and the text of every QuantizationWarning it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = tfedge.quantize_aware(model, **kwargs)
    return qat, [str(w.message) for w in caught if issubclass(w.category, QuantizationWarning)]


def litert_run(content: bytes, x: np.ndarray) -> np.ndarray:
    """Run a .tflite on LiteRT sample by sample; int8 input / output are (de)quantized here."""
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    results = []
    for sample in x:
        value = sample[None].astype(np.float32)
        if inp["dtype"] == np.int8:
            value = np.clip(np.round(value / in_scale + in_zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])[0]
        if out["dtype"] == np.int8:
            result = (result.astype(np.float32) - out_zero) * out_scale
        results.append(result)
    return np.stack(results)


def kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """Dense / Conv2D kernels by layer name (unwrapping QAT wrappers)."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, (L.Dense, L.Conv2D)):
            variable = next(w for w in layer.weights if w.name.split("/")[-1] == "kernel:0")
            out[inner.name] = variable.numpy()
    return out


def zero_fraction(arrays) -> float:
    arrays = list(arrays)
    return sum(int(np.sum(a == 0)) for a in arrays) / sum(a.size for a in arrays)


# ------------------------------------------------------- done-when 1: dense -> QAT -> int8 accuracy
@pytest.fixture(scope="module")
def qat_trained(small_cnn, digits) -> keras.Model:
    keras.utils.set_random_seed(1)
    qat = compile_classifier(tfedge.quantize_aware(clone(small_cnn)), lr=1e-3)
    qat.fit(digits.x_train, digits.y_train, epochs=2, batch_size=BATCH, verbose=0)
    return qat


def test_qat_fit_then_int8_keeps_float_accuracy_within_one_point(qat_trained, small_cnn, digits):
    float_acc = accuracy(small_cnn.predict(digits.x_test, verbose=0), digits.y_test)
    tfl = tfedge.convert(qat_trained, quantization="int8")  # a QAT model needs no calibration data
    info = tfedge.inspect(tfl)
    assert info.fully_int8, info.non_int8_ops
    int8_logits = litert_run(tfl.content, digits.x_test)
    int8_acc = accuracy(int8_logits, digits.y_test)
    assert int8_acc >= float_acc - 0.01, (int8_acc, float_acc)
    # the QAT model in Keras predicts what the int8 flatbuffer computes
    agree = np.mean(np.argmax(qat_trained.predict(digits.x_test, verbose=0), -1) == np.argmax(int8_logits, -1))
    assert agree >= 0.98, agree


def test_copy_has_the_float_weights_and_the_input_model_is_left_untouched(small_cnn):
    before = [w.copy() for w in small_cnn.get_weights()]
    layers = [layer.name for layer in small_cnn.layers]
    qat = tfedge.quantize_aware(small_cnn)
    for original in small_cnn.layers:
        if original.weights:
            inner = qat.get_layer(f"quant_{original.name}").layer
            np.testing.assert_array_equal(inner.bias.numpy(), original.bias.numpy())
            assert np.array_equal(kernels(qat)[original.name], original.kernel.numpy())
    qat.layers[1].layer.bias.assign(qat.layers[1].layer.bias + 1.0)  # training the copy ...
    assert [layer.name for layer in small_cnn.layers] == layers  # ... changes nothing in the original
    assert all(np.array_equal(a, b) for a, b in zip(before, small_cnn.get_weights()))
    assert qat.optimizer is None


# ---------------------------------------- done-when 2: prune 0.75 -> strip -> PQAT -> int8 sparsity
@pytest.fixture(scope="module")
def pruned_pair(small_cnn, digits) -> tuple[keras.Model, keras.Model]:
    """(pruned model with its wrappers, the same stripped) at 75 % sparsity, via tfedge's own pruning."""
    keras.utils.set_random_seed(2)
    steps = math.ceil(len(digits.x_train) / BATCH)
    pruned = tfedge.prune(clone(small_cnn), target_sparsity=0.75, epochs=3, steps_per_epoch=steps)
    compile_classifier(pruned, lr=1e-3)
    pruned.fit(
        digits.x_train, digits.y_train, epochs=3, batch_size=BATCH, verbose=0, callbacks=[tfedge.PruningCallback()]
    )
    return pruned, tfedge.strip(pruned)


@pytest.fixture(scope="module")
def pqat_trained(pruned_pair, digits) -> keras.Model:
    keras.utils.set_random_seed(3)
    qat = compile_classifier(tfedge.quantize_aware(pruned_pair[1], preserve_sparsity=True), lr=1e-3)
    qat.fit(digits.x_train, digits.y_train, epochs=2, batch_size=BATCH, verbose=0)
    return qat


def test_pruned_then_sparsity_preserving_qat_keeps_sparsity_in_int8_flatbuffer(pruned_pair, pqat_trained, digits):
    stripped = kernels(pruned_pair[1])
    assert zero_fraction(stripped.values()) >= 0.74
    trained = kernels(pqat_trained)
    assert trained.keys() == stripped.keys()
    for name, before in stripped.items():  # every pruned weight is still exactly zero after QAT training
        assert np.all(trained[name][before == 0] == 0), name
        assert not np.array_equal(trained[name], before), f"{name} did not train"
    tfl = tfedge.convert(pqat_trained, quantization="int8")
    info = tfedge.inspect(tfl)
    assert info.fully_int8, info.non_int8_ops
    assert info.sparsity >= 0.74, info.weight_sparsity  # measured in the flatbuffer's int8 weights
    assert accuracy(litert_run(tfl.content, digits.x_test), digits.y_test) >= 0.85


def test_without_preserve_sparsity_qat_training_refills_the_zeros(pruned_pair, digits):
    """The control: the default scheme does not keep zeros, so preserve_sparsity is what does."""
    qat = compile_classifier(tfedge.quantize_aware(pruned_pair[1]), lr=1e-3)
    qat.fit(digits.x_train[:512], digits.y_train[:512], epochs=1, batch_size=BATCH, verbose=0)
    assert zero_fraction(kernels(qat).values()) < 0.1


def test_pruning_wrappers_are_stripped_first(pruned_pair, digits):
    pruned, stripped = pruned_pair
    qat = tfedge.quantize_aware(pruned, preserve_sparsity=True)
    names = [type(getattr(layer, "layer", layer)).__name__ for layer in qat.layers]
    assert "PruneLowMagnitude" not in names and "Conv2D" in names
    for name, before in kernels(stripped).items():  # the stripped weights, zeros and all
        assert np.array_equal(kernels(qat)[name], before)
    same = tfedge.quantize_aware(stripped, preserve_sparsity=True)
    x = digits.x_test[:128]
    for model in (qat, same):
        model(x, training=True)  # learn the input's quantization range (TF-MOT starts it at [0, 0])
    np.testing.assert_allclose(qat(x, training=False), same(x, training=False), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------- supported architectures, one by one
def _conv_bn_relu(i):
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(i)
    x = L.BatchNormalization(name="bn")(x)
    return L.ReLU(name="relu")(x)


def _depthwise(i):
    x = L.Conv2D(8, 1, name="expand")(i)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    return L.ReLU(6.0, name="relu6")(x)


def _residual_add(i):
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(i)
    y = L.Conv2D(8, 3, padding="same", name="c2")(x)
    return L.ReLU(name="relu")(L.Add(name="add")([x, y]))


def _concatenate(i):
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(i)
    b = L.Conv2D(4, 1, padding="same", activation="relu", name="b")(i)
    return L.Concatenate(name="concat")([a, b])


def _pooling(i):
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(i)
    x = L.MaxPooling2D(2, name="maxpool")(x)
    return L.AveragePooling2D(2, name="avgpool")(x)


def _global_average_pooling(i):
    x = L.Conv2D(8, 3, activation="relu", name="conv")(i)
    return L.GlobalAveragePooling2D(name="gap")(x)


def _dense(i):
    x = L.Flatten(name="flat")(i)
    return L.Dense(32, activation="relu", name="hidden")(x)


def _relu_relu6_activations(i):
    x = L.Conv2D(8, 3, padding="same", name="conv")(i)
    x = L.Activation(tf.nn.relu6, name="act_relu6")(x)
    x = L.Conv2D(8, 3, padding="same", name="conv2")(x)
    return L.Activation("relu", name="act_relu")(x)


def _upsampling_transpose_separable(i):
    """Listed as unsupported in older TF-MOT; 0.8.1 quantizes all three (checked here for real)."""
    x = L.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(i)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.UpSampling2D(name="up")(x)
    return L.Conv2DTranspose(4, 3, name="deconv")(x)


PATTERNS = [
    _conv_bn_relu,
    _depthwise,
    _residual_add,
    _concatenate,
    _pooling,
    _global_average_pooling,
    _dense,
    _relu_relu6_activations,
    _upsampling_transpose_separable,
]


@pytest.mark.parametrize("body", PATTERNS, ids=lambda f: f.__name__.strip("_"))
def test_supported_pattern_is_quantized_and_converts_to_int8_that_matches_keras(body, digits):
    inp = L.Input((8, 8, 1))
    x = body(inp)
    if len(x.shape) > 2:
        x = L.Flatten(name="flatten_out")(x)
    wide = keras.initializers.VarianceScaling(scale=32.0)  # logits spread over many int8 steps
    model = keras.Model(inp, L.Dense(10, kernel_initializer=wide, name="logits")(x))
    qat, warned = quantize_quietly(model)
    assert warned == []
    wrapped = {layer.layer.name for layer in qat.layers if isinstance(layer, tfmot_wrapper())}
    expected = {layer.name for layer in model.layers if not isinstance(layer, L.InputLayer)}
    if body is _upsampling_transpose_separable:  # TF-MOT rewrites SeparableConv2D as depthwise + 1x1 conv
        expected.discard("sep")
        assert "sep" not in {layer.name for layer in qat.layers}
        inner = [type(layer.layer) for layer in qat.layers if isinstance(layer, tfmot_wrapper())]
        assert L.DepthwiseConv2D in inner and inner.count(L.Conv2D) == 1
    assert expected <= wrapped, expected - wrapped

    calibration = digits.x_train[:256]
    qat(calibration, training=True)  # one training-mode pass sets the quantization ranges, as fit would
    tfl = tfedge.convert(qat, quantization="int8", strip_metadata=False)
    info = tfedge.inspect(tfl)
    assert info.fully_int8, info.non_int8_ops
    if body is _conv_bn_relu:  # BatchNorm folded into the conv, as TF-MOT folds it: no separate op
        conv_activation = qat.get_layer("quant_conv").layer.activation  # TF-MOT's QuantizeAwareActivation
        assert type(conv_activation.activation).__name__ == "NoOpActivation"  # no fake-quant before the BN
        assert not {"MUL", "ADD", "SUB"} & set(info.ops), info.ops
    keras_out = qat(digits.x_test[:32], training=False).numpy()
    int8_out = litert_run(tfl.content, digits.x_test[:32])
    out_scale = info.outputs[0]["scale"]
    assert np.ptp(keras_out) >= 20 * out_scale, np.ptp(keras_out)  # outputs vary: the check below is not trivial
    worst = np.max(np.abs(keras_out - int8_out))
    assert worst <= 4 * out_scale + 1e-6, (worst, out_scale)


def tfmot_wrapper():
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.QuantizeWrapperV2


# --------------------------------------------------------------------- layers TF-MOT cannot quantize
class Doubler(L.Layer):
    def call(self, x):
        return x * 2.0


def _subtract(x):
    return L.Subtract(name="odd")([x, x]), "Subtract"


def _lambda(x):
    return L.Lambda(lambda t: t * 2.0, name="odd")(x), "Lambda"


def _custom(x):
    return Doubler(name="odd")(x), "Doubler"


def _grouped_conv1d(x):  # tfedge quantizes a Conv1D (tests/test_quantize_configs.py), but not a grouped one
    x = L.Reshape((64, 4), name="to_1d")(x)
    return L.Conv1D(4, 3, groups=2, name="odd")(x), "Conv1D"


def _layer_norm(x):
    return L.LayerNormalization(name="odd")(x), "LayerNormalization"


def _batchnorm_not_on_last_axis(x):  # a standalone one on the channels is quantized (tests/test_quantize_configs.py)
    x = L.ReLU(name="r")(x)
    return L.BatchNormalization(axis=1, name="odd")(x), "BatchNormalization"


def _elu_activation(x):
    return L.Activation("elu", name="odd")(x), "Activation"


def _conv_with_fused_relu6(x):
    return L.Conv2D(4, 3, activation="relu6", name="odd")(x), "Conv2D"


def _prelu(x):
    return L.PReLU(name="odd")(x), "PReLU"


def _multiply(x):
    return L.Multiply(name="odd")([x, x]), "Multiply"


def _resizing(x):
    return L.Resizing(4, 4, name="odd")(x), "Resizing"


def _nested_model(x):
    inner = keras.Sequential([L.Input((8, 8, 4)), L.Conv2D(4, 1, name="inner_conv")], name="odd")
    return inner(x), "Sequential"


UNSUPPORTED = [
    _subtract,
    _lambda,
    _custom,
    _grouped_conv1d,
    _layer_norm,
    _batchnorm_not_on_last_axis,
    _elu_activation,
    _conv_with_fused_relu6,
    _prelu,
    _multiply,
    _resizing,
    _nested_model,
]


@pytest.mark.parametrize("odd", UNSUPPORTED, ids=lambda f: f.__name__.strip("_"))
def test_unsupported_layer_stays_float_with_one_warning_or_strict_error(odd, digits):
    inp = L.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inp)
    x, cls = odd(x)
    model = keras.Model(inp, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    qat, warned = quantize_quietly(model)

    assert len(warned) == 1, warned
    message = warned[0]
    entry = f"'odd' ({cls}: "
    assert message.startswith(f"1 layer of model '{model.name}' cannot be quantized by TF-MOT 0.8.1: {entry}"), message
    assert "the converted model will not be fully int8" in message
    assert "calibration data alone" in message and "stay float" in message and "skip=['odd']" in message
    float_layer = qat.get_layer("odd")
    assert type(float_layer).__name__ == cls  # unwrapped: it stays float ...
    wrapped = {layer.layer.name for layer in qat.layers if isinstance(layer, tfmot_wrapper())}
    assert {"conv", "logits"} <= wrapped  # ... while the rest is quantization-aware
    out = qat(digits.x_test[:8], training=False).numpy()
    assert out.shape == (8, 10) and np.all(np.isfinite(out))

    with pytest.raises(ModelError) as err:
        tfedge.quantize_aware(model, strict=True)
    listing = message.split(": ", 1)[1].split("; cost:")[0]
    assert listing.startswith(entry) and listing in str(err.value)
    assert "strict=True" in str(err.value) and "skip=['odd']" in str(err.value)
    assert "\n" not in str(err.value) and "quantize_annotate_layer" not in str(err.value)  # not TF-MOT's own


def test_conv2d_transpose_is_quantized_under_the_sparsity_preserving_scheme_too():
    """TF-MOT's prune-preserving scheme lacks it; tfedge gives it the 8-bit config with its zeros kept."""
    inp = L.Input((8, 8, 1))
    x = L.Conv2DTranspose(4, 3, name="deconv")(inp)
    model = keras.Model(inp, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    assert quantize_quietly(model)[1] == []
    qat, warned = quantize_quietly(model, preserve_sparsity=True)
    assert warned == []
    assert isinstance(qat.get_layer("quant_deconv").quantize_config, PrunePreserveQuantizeConfig)
    assert isinstance(qat.get_layer("quant_logits").quantize_config, PrunePreserveQuantizeConfig)


def test_several_unsupported_layers_are_listed_in_one_warning_and_the_model_trains(digits):
    inp = L.Input((8, 8, 1))
    x = L.Resizing(8, 8, name="scale")(inp)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    x = L.LayerNormalization(name="norm")(x)
    x = L.Conv2D(8, 3, activation="elu", name="elu_conv")(x)
    out = L.Dense(10, name="logits")(L.Flatten(name="flat")(x))
    qat, warned = quantize_quietly(keras.Model(inp, out))
    assert len(warned) == 1
    assert warned[0].startswith("3 layers of model")
    entries = ("'scale' (Resizing: ", "'norm' (LayerNormalization: ", "'elu_conv' (Conv2D: fused activation 'elu'")
    positions = [warned[0].find(entry) for entry in entries]
    assert -1 not in positions and positions == sorted(positions), positions  # each named, in model order
    assert "skip=['scale', 'norm', 'elu_conv']" in warned[0]
    compile_classifier(qat)
    history = qat.fit(digits.x_train[:512], digits.y_train[:512], epochs=2, batch_size=BATCH, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_skip_keeps_named_layers_float_without_warning():
    inp = L.Input((8, 8, 1))
    x = L.Conv2D(4, 3, name="conv")(inp)
    x = L.Rescaling(0.5, name="half")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(16, name="hidden")(x)
    model = keras.Model(inp, L.Dense(10, name="logits")(x))
    qat, warned = quantize_quietly(model, skip=["half", "hidden"])
    assert warned == []
    assert type(qat.get_layer("hidden")) is L.Dense and type(qat.get_layer("half")) is L.Rescaling
    assert isinstance(qat.get_layer("quant_logits"), tfmot_wrapper())
    by_class, warned = quantize_quietly(model, skip=[L.Rescaling])
    assert warned == [] and type(by_class.get_layer("half")) is L.Rescaling
    with pytest.raises(InputError, match="skip names layer 'nope', which model .* does not have"):
        tfedge.quantize_aware(model, skip=["nope"])
    with pytest.raises(InputError, match="skip must hold layer names"):
        tfedge.quantize_aware(model, skip=[3])
    with pytest.raises(ModelError, match="no layer of model .* is left to quantize"):
        tfedge.quantize_aware(model, skip=["conv", "half", "flat", "hidden", "logits"])


# ----------------------------------------------------------------------------- models it refuses
class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(10)

    def call(self, x):
        return self.dense(x)


def test_subclassed_model_is_refused_with_class_name_and_fix():
    model = Subclassed()
    model(np.zeros((1, 4), np.float32))
    with pytest.raises(ModelError, match=r"subclassed model \(Subclassed\).*keras\.Sequential"):
        tfedge.quantize_aware(model)


def test_bad_arguments_and_models_are_refused_clearly(small_cnn):
    with pytest.raises(InputError, match="must be a Keras model built with `from tfedge import keras`, got str"):
        tfedge.quantize_aware("model.keras")
    with pytest.raises(InputError, match="strict must be True or False, got 'yes'"):
        tfedge.quantize_aware(small_cnn, strict="yes")
    with pytest.raises(InputError, match="preserve_sparsity must be True or False, got 1"):
        tfedge.quantize_aware(small_cnn, preserve_sparsity=1)
    with pytest.raises(ModelError, match="is not built"):
        tfedge.quantize_aware(keras.Sequential([L.Dense(3)]))
    qat = tfedge.quantize_aware(small_cnn)
    with pytest.raises(ModelError, match="already quantization-aware .* QuantizeLayer"):
        tfedge.quantize_aware(qat)


# -------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_qat_model_saves_and_loads_without_custom_object_scope(qat_trained, digits, tmp_path, suffix):
    path = tmp_path / f"qat{suffix}"
    tfedge.save_model(qat_trained, path)
    loaded = tfedge.load_model(path, trust=suffix == ".h5")
    x = digits.x_test[:128]
    np.testing.assert_array_equal(loaded(x, training=False), qat_trained(x, training=False))
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in qat_trained.layers]
    if suffix == ".keras":  # a reloaded model trains on, and saves again in both formats
        compile_classifier(loaded, lr=1e-4).fit(digits.x_train[:256], digits.y_train[:256], batch_size=BATCH, verbose=0)
        tfedge.save_model(loaded, tmp_path / "again.h5")
        again = tfedge.load_model(tmp_path / "again.h5", trust=True)
        np.testing.assert_array_equal(again(x, training=False), loaded(x, training=False))


def test_pruned_then_qat_model_loads_and_keeps_its_zeros_when_training_on(pqat_trained, digits, tmp_path):
    x = digits.x_test[:128]
    tfedge.save_model(pqat_trained, tmp_path / "pqat.h5")
    from_h5 = tfedge.load_model(tmp_path / "pqat.h5", trust=True)
    np.testing.assert_array_equal(from_h5(x, training=False), pqat_trained(x, training=False))
    tfedge.save_model(pqat_trained, tmp_path / "pqat.keras")
    loaded = tfedge.load_model(tmp_path / "pqat.keras")
    np.testing.assert_array_equal(loaded(x, training=False), pqat_trained(x, training=False))
    assert all(
        isinstance(layer.quantize_config, PrunePreserveQuantizeConfig)
        for layer in loaded.layers
        if type(getattr(layer, "layer", None)) in (L.Conv2D, L.Dense)
    )
    before = kernels(loaded)
    compile_classifier(loaded, lr=1e-3).fit(digits.x_train[:512], digits.y_train[:512], batch_size=BATCH, verbose=0)
    after = kernels(loaded)
    for name, kernel in before.items():
        assert np.all(after[name][kernel == 0] == 0), name
        assert not np.array_equal(after[name], kernel), name
    assert zero_fraction(after.values()) >= 0.74


# ---------------------------------------------------------------------------------- distributed fit
def test_sparsity_preserving_qat_trains_under_mirrored_strategy(pruned_pair, digits):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        qat = compile_classifier(tfedge.quantize_aware(pruned_pair[1], preserve_sparsity=True), lr=1e-3)
    assert strategy.num_replicas_in_sync == 2
    assert all(isinstance(w, tf.distribute.DistributedValues) for w in qat.trainable_weights)
    before = kernels(qat)
    history = qat.fit(digits.x_train, digits.y_train, epochs=2, batch_size=2 * BATCH, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] and history.history["accuracy"][-1] >= 0.8
    after = kernels(qat)
    for name, kernel in before.items():
        assert np.all(after[name][kernel == 0] == 0) and not np.array_equal(after[name], kernel), name


# ------------------------------------------------ a fresh process: Keras 3 refused, saved model loads
CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import tensorflow as tf
    k3 = tf.keras.Sequential([tf.keras.layers.Input((4,)), tf.keras.layers.Dense(2)])  # Keras 3 (legacy off)
    import tfedge
    out = {}
    try:
        tfedge.quantize_aware(k3)
    except tfedge.InputError as exc:
        out["keras3"] = str(exc)
    folder = sys.argv[1]
    deadline = time.time() + 600
    while not os.path.exists(os.path.join(folder, "ready")) and time.time() < deadline:
        time.sleep(0.2)
    model = tfedge.load_model(os.path.join(folder, "pqat.keras"))  # tfedge alone: no custom-object scope
    out["pred"] = model.predict(np.load(os.path.join(folder, "x.npy")), verbose=0).tolist()
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module", autouse=True)
def child(tmp_path_factory):
    """Started with the module so that its TensorFlow import overlaps the tests; it then waits for a
    saved model (written by ``child_result``)."""
    folder = tmp_path_factory.mktemp("child")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], stdout=out, stderr=err, env=env)
    yield proc, folder
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def child_result(child, pqat_trained) -> dict:
    proc, folder = child
    x = np.linspace(0, 1, 2 * 64, dtype=np.float32).reshape(2, 8, 8, 1)
    np.save(folder / "x.npy", x)
    tfedge.save_model(pqat_trained, folder / "pqat.keras")
    (folder / "ready").write_text("go")
    proc.wait(timeout=300)
    assert proc.returncode == 0, (folder / "stderr").read_text()[-3000:]
    result = json.loads((folder / "stdout").read_text().split("RESULT", 1)[1])
    result["expected"] = pqat_trained(x, training=False).numpy()
    return result


def test_keras3_model_is_refused_with_input_error(child_result):
    message = child_result["keras3"]
    assert message.startswith("model to quantize is a Keras 3 model"), message
    assert "from tfedge import keras" in message


def test_saved_qat_model_loads_in_a_fresh_process_with_tfedge_only(child_result):
    np.testing.assert_allclose(np.array(child_result["pred"]), child_result["expected"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_channel", [True, False])
def test_per_channel_false_gives_one_scale_per_conv_kernel_and_fewer_bytes(digits, per_channel):
    from tfedge.flatbuffer import parse

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="c"),
            keras.layers.DepthwiseConv2D(3, activation="relu", name="dw"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    qat = compile_classifier(tfedge.quantize_aware(model, per_channel=per_channel), lr=3e-3)
    qat.fit(digits.x_train, digits.y_train, epochs=6, batch_size=32, verbose=0)
    tfl = tfedge.convert(qat, representative_data=digits.x_train[:100])
    parsed = parse(tfl.content)
    sub = parsed.subgraphs[0]
    kernels = [sub.tensors[op.inputs[1]] for op in sub.operators if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(kernels) == 2
    assert all(len(k.scale) == (8 if per_channel else 1) for k in kernels)
    logits = tfedge.runtimes.LiteRT(tfl).run(digits.x_test[:200]).dequantized()
    assert accuracy(logits, digits.y_test[:200]) >= 0.8


def test_per_channel_false_refuses_the_preserving_schemes(small_cnn):
    with pytest.raises(InputError, match="per_channel=False works with TF-MOT's default 8-bit scheme only"):
        tfedge.quantize_aware(small_cnn, per_channel=False, preserve_sparsity=True)
    with pytest.raises(InputError, match="per_channel must be True or False, got 0"):
        tfedge.quantize_aware(small_cnn, per_channel=0)


@pytest.mark.parametrize("functional", [False, True])
def test_separable_conv_beside_names_keras_would_give_next(functional, digits):
    """A model loaded from another session can already hold the names this session's Keras hands out next; TF-MOT's
    SeparableConv2D split then made a second 'conv2d_N' (a Sequential model refused, a functional one rebuilt
    forever). quantize_aware moves Keras's counter past the model's names first."""
    following = [keras.layers.Conv2D(1, 1).name, keras.layers.DepthwiseConv2D(1).name]  # what comes next, and after
    conv, dw = (name.rsplit("_", 1)[0] if name[-1].isdigit() else name for name in following)
    number = [int(name.rsplit("_", 1)[1]) if name[-1].isdigit() else 0 for name in following]
    layers = [
        L.Conv2D(8, 3, padding="same", activation="relu", name=f"{conv}_{number[0] + 1}"),
        L.SeparableConv2D(16, 3, padding="same", activation="relu", name="separable"),
        L.DepthwiseConv2D(3, padding="same", name=f"{dw}_{number[1] + 1}"),
        L.Conv2D(24, 1, activation="relu", name=f"{conv}_{number[0] + 2}"),
        L.GlobalAveragePooling2D(),
        L.Dense(10),
    ]
    if functional:
        x = inputs = keras.Input((8, 8, 1))
        for layer in layers:
            x = layer(x)
        model = keras.Model(inputs, x)
    else:
        model = keras.Sequential([keras.Input((8, 8, 1)), *layers])
    qat = tfedge.quantize_aware(model, strict=True)
    names = [layer.name for layer in qat.layers]
    assert len(names) == len(set(names))
    tfl = tfedge.convert(qat, representative_data=digits.x_train)
    assert tfedge.inspect(tfl).fully_int8

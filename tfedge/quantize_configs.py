"""QuantizeConfigs for the layers TF-MOT 0.8.1 leaves float, chosen by :func:`tfedge.quantize_aware`.

They go through TF-MOT's own extension point (a ``QuantizeConfig`` given to
``quantize_annotate_layer``), are registered with Keras under the ``tfedge`` package (a saved QAT
model loads with no custom-object scope) and fake-quantize exactly what the TFLite converter will
quantize, so that the Keras model in training and the int8 flatbuffer compute the same thing:

* ``Conv1D``: per-output-channel symmetric int8 weights (the converter lowers it to a ``CONV_2D``
  with per-channel weights); its output is quantized after its activation, or not at all when a
  BatchNormalization / ReLU that the converter fuses into it follows (then they quantize it);
* ``MaxPooling1D``, ``AveragePooling1D``, ``UpSampling2D(interpolation="bilinear")``: pass-through, no
  quantizer of their own: TFLite's int8 ``MAX_POOL_2D`` / ``AVERAGE_POOL_2D`` / ``RESIZE_BILINEAR`` keep
  the input's scale (TF-MOT 0.8.1 gives average pooling and bilinear upsampling their own output range,
  and the converter then adds a requantize op before them that QAT never modelled);
* ``Rescaling`` without offset: output quantized (one int8 ``MUL``);
* a standalone ``BatchNormalization``, a ``Normalization`` and a ``Rescaling`` with an offset: the
  converter would lower them to a ``MUL`` and an ``ADD`` / ``SUB`` whose intermediate tensor QAT never
  saw (the conversion is then not fully int8), so :func:`lowered` replaces them by
  :class:`AffineBatchNormalization` / :class:`AffineNormalization` / :class:`AffineRescaling`, the same
  per-channel ``x * a + b`` computed as a 1x1 depthwise convolution (one int8 op), output quantized.
  The batch normalization's statistics are frozen during QAT (its moving mean and variance; gamma and
  beta still train), as is usual when fine-tuning a trained model quantization-aware.

TF-MOT 0.8.1 itself (checked in its registry, and by tests/test_quantize_configs.py) already
quantizes GlobalAveragePooling1D, GlobalMaxPooling1D, Conv2DTranspose,
UpSampling2D (nearest), Reshape and Permute; those keep TF-MOT's config.

>>> import tfedge
>>> from tfedge import keras
>>> model = keras.Sequential([keras.layers.Input((8, 8)), keras.layers.Conv1D(4, 3, activation="relu"),
...                           keras.layers.MaxPooling1D(2), keras.layers.Flatten(), keras.layers.Dense(10)])
>>> qat = tfedge.quantize_aware(model)  # no warning: every layer is quantization-aware
>>> [type(layer.quantize_config).__name__ for layer in qat.layers[1:3]]
['Conv1DQuantizeConfig', 'PassThroughQuantizeConfig']
"""

from __future__ import annotations

from typing import Any

from tfedge._keras import keras, tf

import tensorflow_model_optimization as tfmot  # after tfedge._keras chose Keras 2
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantizers as _d8q,
)

L: Any = keras.layers  # Any: mypy cannot see tf_keras' layer classes through a module alias
_QuantizeConfig: Any = tfmot.quantization.keras.QuantizeConfig
_register = keras.utils.register_keras_serializable(package="tfedge")


def _activation_quantizer():
    """TF-MOT's 8-bit activation quantizer: asymmetric, per tensor, range by moving average."""
    return tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False
    )


class _Conv1DWeightsQuantizer(_d8q.Default8BitConvWeightsQuantizer):
    """Per-output-channel weights of a Conv1D kernel ``(width, in, out)``, as the converter quantizes them.

    Returns the ``(1, width, in, out)`` Conv2D kernel the converter makes of it, fake-quantized per
    channel, for :class:`Conv1DAsConv2D` to use as it is. (TF-MOT's per-channel quantizer fails on a
    3-D tensor, "cannot access local variable 'reduce_dims'"; and a per-channel fake-quant on the 3-D
    kernel, reshaped by the convolution afterwards, makes the converter fail or write an empty file.)
    With ``keep_zeros`` weights that are zero stay zero (no gradient reaches them), checked at every
    step so that the mask is right after a reload too.
    """

    def __init__(self, keep_zeros: bool = False):
        super().__init__()
        self.keep_zeros = keep_zeros

    def __call__(self, inputs, training, weights, **kwargs):
        if self.keep_zeros:
            inputs = inputs * tf.stop_gradient(tf.cast(tf.not_equal(inputs, 0), inputs.dtype))
        return super().__call__(tf.expand_dims(inputs, 0), training, weights, **kwargs)

    def get_config(self):
        return {"keep_zeros": self.keep_zeros}


@_register
class Conv1DAsConv2D(L.Conv1D):
    """A Conv1D computed as the Conv2D the TFLite converter makes of it (same config, weights and outputs).

    :func:`tfedge.quantize_aware` puts it in place of a Conv1D so that the per-channel fake-quantized
    kernel (4-D, from :class:`Conv1DQuantizeConfig`) feeds the convolution directly, as it must for
    the converter to keep per-channel weights. A 3-D kernel works too (a plain Conv1D).
    """

    def convolution_op(self, inputs, kernel):
        if kernel.shape.rank == 3:
            kernel = tf.expand_dims(kernel, 0)
        padding = "VALID" if self.padding == "causal" else self.padding.upper()  # causal: padded by call()
        outputs = tf.nn.conv2d(
            tf.expand_dims(inputs, 1),
            kernel,
            strides=(1, 1, self.strides[0], 1),
            padding=padding,
            dilations=(1, 1, self.dilation_rate[0], 1),
        )
        return tf.squeeze(outputs, 1)


@_register
class Conv1DQuantizeConfig(_QuantizeConfig):
    """Conv1D: per-channel int8 kernel; output quantized after the activation unless ``quantize_output=False``.

    ``quantize_output=False`` is for a Conv1D whose BatchNormalization / ReLU the converter fuses into
    it (the converter keeps no tensor between them, so neither may QAT). ``keep_zeros=True`` keeps
    pruned weights zero (``quantize_aware(..., preserve_sparsity=True)``).
    """

    def __init__(self, quantize_output: bool = True, keep_zeros: bool = False):
        self.quantize_output = bool(quantize_output)
        self.keep_zeros = bool(keep_zeros)
        self.weight_quantizer = _Conv1DWeightsQuantizer(self.keep_zeros)
        self.activation_quantizer = _activation_quantizer()

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, self.weight_quantizer)]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, self.activation_quantizer)] if self.quantize_output else []

    def set_quantize_weights(self, layer, quantize_weights):
        (layer.kernel,) = quantize_weights

    def set_quantize_activations(self, layer, quantize_activations):
        if self.quantize_output:
            (layer.activation,) = quantize_activations

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"quantize_output": self.quantize_output, "keep_zeros": self.keep_zeros}


class DelegatingQuantizeConfig(_QuantizeConfig):
    """A QuantizeConfig that wraps TF-MOT's own config of a layer (``self.config``), so that a subclass
    can swap its weight quantizer and save it with the model (the prune- and cluster-preserving configs)."""

    config: Any

    def get_weights_and_quantizers(self, layer):
        return self.config.get_weights_and_quantizers(layer)

    def get_activations_and_quantizers(self, layer):
        return self.config.get_activations_and_quantizers(layer)

    def set_quantize_weights(self, layer, quantize_weights):
        self.config.set_quantize_weights(layer, quantize_weights)

    def set_quantize_activations(self, layer, quantize_activations):
        self.config.set_quantize_activations(layer, quantize_activations)

    def get_output_quantizers(self, layer):
        return self.config.get_output_quantizers(layer)


class _NoWeightsConfig(_QuantizeConfig):
    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_config(self):
        return {}


@_register
class OutputQuantizeConfig(_NoWeightsConfig):
    """A layer without weights (or with weights the converter folds away) whose output gets its own int8 range."""

    def get_output_quantizers(self, layer):
        return [_activation_quantizer()]


@_register
class PassThroughQuantizeConfig(_NoWeightsConfig):
    """A layer whose int8 TFLite op keeps its input's scale (max pooling, bilinear resize), or whose output
    the converter fuses into the next op: no quantizer of its own."""

    def get_output_quantizers(self, layer):
        return []


def _affine_as_depthwise(inputs, scale, offset):
    """``inputs * scale + offset`` per channel (last axis) as a 1x1 depthwise convolution plus bias.

    The converter lowers it to one int8 ``DEPTHWISE_CONV_2D`` (per-channel weights, int32 bias), where
    a multiply and an add would leave an intermediate tensor that quantization-aware training never saw.
    """
    rank = inputs.shape.rank
    x = inputs
    if rank == 2:
        x = tf.expand_dims(tf.expand_dims(x, 1), 1)
    elif rank == 3:
        x = tf.expand_dims(x, 1)
    kernel = tf.reshape(tf.cast(scale, x.dtype), (1, 1, -1, 1))
    y = tf.nn.bias_add(
        tf.nn.depthwise_conv2d(x, kernel, strides=(1, 1, 1, 1), padding="VALID"), tf.cast(offset, x.dtype)
    )
    if rank == 2:
        return tf.squeeze(y, (1, 2))
    if rank == 3:
        return tf.squeeze(y, 1)
    return y


def _channels_last(layer: keras.layers.Layer) -> bool:
    try:
        shape = layer.input_shape
    except AttributeError:  # a layer called on several inputs (shared): left as it is
        return False
    return isinstance(shape, tuple) and len(shape) in (2, 3, 4) and shape[-1] is not None


@_register
class AffineBatchNormalization(L.BatchNormalization):
    """A BatchNormalization computed with its moving statistics as one per-channel multiply-add.

    :func:`tfedge.quantize_aware` puts it in place of a standalone BatchNormalization (one TF-MOT
    cannot fold into a convolution): it computes what the trained layer computes at inference, in
    training too (statistics frozen, gamma and beta trainable), as the one int8 op TFLite will run.
    """

    def call(self, inputs, training=None):
        variance = tf.cast(self.moving_variance, inputs.dtype)
        scale = tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            scale = scale * tf.cast(self.gamma, inputs.dtype)
        offset = -tf.cast(self.moving_mean, inputs.dtype) * scale
        if self.center:
            offset = offset + tf.cast(self.beta, inputs.dtype)
        return _affine_as_depthwise(inputs, scale, offset)


@_register
class AffineRescaling(L.Rescaling):
    """A Rescaling with an offset, computed as one per-channel multiply-add (one int8 op in TFLite)."""

    def call(self, inputs):
        channels = inputs.shape[-1]
        scale = tf.broadcast_to(tf.cast(self.scale, inputs.dtype), (channels,))
        offset = tf.broadcast_to(tf.cast(self.offset, inputs.dtype), (channels,))
        return _affine_as_depthwise(inputs, scale, offset)


@_register
class AffineNormalization(L.Normalization):
    """A Normalization computed as one per-channel multiply-add (one int8 op in TFLite).

    It reads its statistics from its variables at every call: a plain Normalization copied with
    ``set_weights`` (as TF-MOT copies every layer) keeps using the statistics it was built with.
    """

    def call(self, inputs):
        inputs = tf.cast(inputs, self.compute_dtype)
        if self.input_mean is None:
            mean, variance = self.adapt_mean, self.adapt_variance
        else:
            mean, variance = self.mean, self.variance
        channels = inputs.shape[-1]
        mean = tf.broadcast_to(tf.reshape(tf.cast(mean, inputs.dtype), (-1,)), (channels,))
        variance = tf.broadcast_to(tf.reshape(tf.cast(variance, inputs.dtype), (-1,)), (channels,))
        scale = 1.0 / tf.maximum(tf.sqrt(variance), keras.backend.epsilon())
        return _affine_as_depthwise(inputs, scale, -mean * scale)


def _per_last_axis(layer: keras.layers.Layer) -> bool:
    """A Normalization with one statistic, or one per channel of the last axis, that normalizes (not inverts)."""
    rank = len(layer.input_shape)
    return not layer.invert and list(getattr(layer, "_keep_axis", [None])) in ([], [rank - 1])


#: Layer classes TF-MOT folds a following BatchNormalization into (with a linear activation), and ours.
_FOLDS_BATCHNORM = (
    L.Conv2D,
    L.DepthwiseConv2D,
    L.Dense,
    L.SeparableConv2D,
    L.SeparableConv1D,
    L.Conv1D,
    Conv1DAsConv2D,
)
_FUSED_RELU = ("relu", "relu6")


def _consumers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return [node.outbound_layer for node in layer._outbound_nodes]


def _producer(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        return None
    inbound = tf.nest.flatten(nodes[0].inbound_layers)
    return inbound[0] if len(inbound) == 1 else None


def _only_consumer(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    consumers = _consumers(layer)
    return consumers[0] if len(consumers) == 1 else None


def _is_linear(layer: keras.layers.Layer) -> bool:
    return getattr(getattr(layer, "activation", None), "__name__", "") == "linear"


def _is_relu(layer: keras.layers.Layer | None) -> bool:
    """A ReLU / ReLU6 layer, the activations the converter fuses into a preceding conv."""
    if isinstance(layer, L.ReLU):
        return layer.negative_slope == 0 and layer.threshold == 0 and layer.max_value in (None, 6.0)
    return isinstance(layer, L.Activation) and getattr(layer.activation, "__name__", "") in _FUSED_RELU


def _folded_batchnorm(layer: keras.layers.Layer) -> bool:
    """A BatchNormalization right after a conv / dense with a linear activation, whose only consumer it is."""
    before = _producer(layer)
    return type(before) in _FOLDS_BATCHNORM and _is_linear(before) and _only_consumer(before) is layer


def lowered(model: keras.Model, skip: set[str]) -> keras.Model:
    """``model`` with each Conv1D, standalone BatchNormalization and Rescaling with an offset (not in ``skip``)
    replaced by the form the converter gives it (:class:`Conv1DAsConv2D`, :class:`AffineBatchNormalization`,
    :class:`AffineRescaling`), same names and weights; ``model`` itself when there is none.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Rescaling(2.0, offset=-1.0)])
    >>> type(lowered(model, skip=set()).layers[-1]).__name__
    'AffineRescaling'
    """
    swap: dict[str, Any] = {}
    for layer in model.layers:
        if layer.name in skip or not _channels_last(layer):
            continue
        if type(layer) is L.BatchNormalization and not _folded_batchnorm(layer):
            axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            if list(axis) in ([-1], [len(layer.input_shape) - 1]):
                swap[layer.name] = AffineBatchNormalization
        elif type(layer) is L.Rescaling and _nonzero(layer.offset):
            swap[layer.name] = AffineRescaling
        elif type(layer) is L.Normalization and _per_last_axis(layer):
            swap[layer.name] = AffineNormalization
        elif type(layer) is L.Conv1D and layer.groups == 1 and layer.data_format == "channels_last":
            swap[layer.name] = Conv1DAsConv2D
    if not swap:
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        return swap.get(layer.name, type(layer)).from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _nonzero(value: Any) -> bool:
    return bool(tf.reduce_any(tf.not_equal(tf.cast(value, tf.float32), 0.0)))


def _bilinear_upsampling(layer: keras.layers.Layer) -> bool:
    return type(layer) is L.UpSampling2D and layer.interpolation == "bilinear"


def quantize_configs(model: keras.Model, names: set[str], preserve_sparsity: bool) -> dict[str, _QuantizeConfig]:
    """The tfedge QuantizeConfig of each layer in ``names`` that TF-MOT 0.8.1 leaves float (by layer name).

    Layers TF-MOT quantizes itself are not in the result: they keep TF-MOT's config.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((8, 3)), keras.layers.Conv1D(4, 3, name="conv"),
    ...                           keras.layers.ReLU(name="relu")])
    >>> model = lowered(model, skip=set())
    >>> quantize_configs(model, {"conv", "relu"}, preserve_sparsity=False)["conv"].get_config()
    {'quantize_output': False, 'keep_zeros': False}
    """
    configs: dict[str, _QuantizeConfig] = {}
    for layer in model.layers:
        if layer.name not in names:
            continue
        after, before = _only_consumer(layer), _producer(layer)
        if type(layer) is Conv1DAsConv2D:
            fused = (
                _is_linear(layer)
                and after is not None
                and after.name in names
                and (_is_relu(after) or (type(after) is L.BatchNormalization and _folded_batchnorm(after)))
            )
            configs[layer.name] = Conv1DQuantizeConfig(quantize_output=not fused, keep_zeros=preserve_sparsity)
        elif (
            type(layer) is L.BatchNormalization
            and type(before) is Conv1DAsConv2D
            and before is not None
            and before.name in names
            and _folded_batchnorm(layer)
        ):
            relu_next = after is not None and _is_relu(after) and after.name in names
            configs[layer.name] = PassThroughQuantizeConfig() if relu_next else OutputQuantizeConfig()
        elif type(layer) in (L.MaxPooling1D, L.AveragePooling1D) or _bilinear_upsampling(layer):
            configs[layer.name] = PassThroughQuantizeConfig()
        elif type(layer) in (L.Rescaling, AffineRescaling, AffineNormalization, AffineBatchNormalization):
            configs[layer.name] = OutputQuantizeConfig()
    return configs


def load_objects() -> dict:
    """This module's classes by their registered names (they also load without it, being registered).

    >>> sorted(load_objects())[:2]
    ['tfedge>AffineBatchNormalization', 'tfedge>AffineNormalization']
    """
    classes = (
        Conv1DQuantizeConfig,
        Conv1DAsConv2D,
        OutputQuantizeConfig,
        PassThroughQuantizeConfig,
        AffineBatchNormalization,
        AffineRescaling,
        AffineNormalization,
    )
    return {f"tfedge>{cls.__name__}": cls for cls in classes}


__all__ = [
    "AffineBatchNormalization",
    "AffineNormalization",
    "AffineRescaling",
    "Conv1DAsConv2D",
    "Conv1DQuantizeConfig",
    "OutputQuantizeConfig",
    "PassThroughQuantizeConfig",
    "load_objects",
    "lowered",
    "quantize_configs",
]

"""Quantization-aware training (QAT) with TF-MOT's 8-bit scheme, optionally keeping pruned zeros.

:func:`quantize_aware` wraps every layer TF-MOT 0.8.1 can quantize and leaves the others in float,
naming them in one :class:`QuantizationWarning` (or a :class:`~tfedge.errors.ModelError` with
``strict=True``). Which layers those are was checked on TF-MOT 0.8.1 one by one (most of them in
``tests/test_quantization.py``), not taken from its docs:

* quantized by TF-MOT: Dense, Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, UpSampling2D
  (nearest), BatchNormalization right after a Conv2D / DepthwiseConv2D / Dense with a linear activation
  (folded into it), ReLU (``ReLU(6.0)`` too), Activation relu / relu6, Add, Concatenate, Max / Average /
  GlobalAverage / GlobalMax pooling (1-D average and global pooling too), ZeroPadding2D, Reshape,
  Permute, Flatten, Dropout, Softmax;
* quantized by tfedge's own QuantizeConfigs (:mod:`tfedge.quantize_configs`): Conv1D (with a following
  BatchNormalization / ReLU fused as the converter fuses them), MaxPooling1D, UpSampling2D (bilinear),
  Rescaling, Normalization, a standalone BatchNormalization (statistics frozen during QAT); with
  ``preserve_sparsity=True`` the zeros of Conv1D, DepthwiseConv2D and Conv2DTranspose are kept too;
* left in float: Conv3D, Resizing, LayerNormalization, PReLU, ELU, Activation elu, a fused activation
  other than linear / relu / softmax / sigmoid / tanh / swish / gelu (``Conv2D(activation="relu6")``
  too: use a ``ReLU(6.0)`` layer), Multiply, Subtract, Maximum, Average, Lambda, custom layers, models
  nested in the model.

>>> import tfedge
>>> from tfedge import keras
>>> model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
...                           keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(10)])
>>> qat = tfedge.quantize_aware(model)
>>> [type(layer).__name__ for layer in qat.layers]
['QuantizeLayer', 'QuantizeWrapperV2', 'QuantizeWrapperV2', 'QuantizeWrapperV2', 'QuantizeWrapperV2']
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from tfedge._keras import keras, next_layer_name, tf

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_annotate as _qannotate,
    quantize_aware_activation as _qaa,
    quantize_layer as _qlayer,
    quantize_wrapper as _qwrapper,
    utils as _qutils,
)
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
    prune_preserve_quantize_registry as _ppq,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry as _d8,
)
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as _pwrapper

from tfedge import clustering, quantize_configs as _qconfigs
from tfedge.checks import check_bool
from tfedge.errors import InputError, ModelError, first_line
from tfedge.graph import check_graph_model, unwrap, walk_layers
from tfedge.pruning import strip
from tfedge.quantize_configs import DelegatingQuantizeConfig

#: Activation functions TF-MOT can fake-quantize when they are fused into a Dense / Conv layer.
_FUSED_ACTIVATIONS = frozenset(
    _qaa.QuantizeAwareActivation._PRE_QUANT_ACTIVATIONS
    | _qaa.QuantizeAwareActivation._POST_QUANT_ACTIVATIONS
    | _qaa.QuantizeAwareActivation._NO_QUANTIZE_ACTIVATIONS
)

_COST = (
    "cost: they get no quantization-aware training, so the int8 conversion either keeps them in float "
    "(the converted model will not be fully int8, and int8-only targets such as TFLite Micro cannot run it) "
    "or quantizes them from calibration data alone, with the accuracy loss QAT is meant to avoid"
)


class QuantizationWarning(UserWarning):
    """Some layers of a model were left in float by :func:`quantize_aware`."""


@dataclasses.dataclass(frozen=True)
class _Unsupported:
    name: str
    cls: str
    reason: str

    def __str__(self) -> str:
        return f"'{self.name}' ({self.cls}: {self.reason})"


def quantize_aware(
    model: keras.Model,
    *,
    preserve_sparsity: bool = False,
    preserve_clusters: bool = False,
    per_channel: bool = True,
    skip: Iterable[str | type] | None = None,
    strict: bool = False,
) -> keras.Model:
    """Return a quantization-aware copy of ``model`` (TF-MOT's default 8-bit scheme) to train with ``fit``.

    ``preserve_sparsity=True`` uses TF-MOT's prune-preserving scheme: weights that are zero now stay
    zero through QAT training and into the int8 flatbuffer (prune, then :func:`tfedge.strip`, then
    this). ``preserve_clusters=True`` uses TF-MOT's cluster-preserving scheme (CQAT; with
    ``preserve_sparsity=True`` too, PCQAT): the clustered kernels of Dense and Conv2D layers keep their
    few values through training, so the int8 file holds at most that many per channel (cluster with
    :func:`tfedge.cluster`, then this; TF-MOT keeps no DepthwiseConv2D clusters). ``per_channel=False``
    gives Conv2D / DepthwiseConv2D kernels one scale per tensor instead of one per output channel: 12
    bytes less per channel in the int8 file (a float32 scale and an int64 zero point), often at no cost
    in accuracy on small models; fold a BatchNormalization into the conv before, or TF-MOT's
    Conv-BN pattern keeps it per channel. TF-MOT's sparsity- and cluster-preserving schemes are per
    channel only. Pruning and
    clustering wrappers still in ``model`` are stripped first. ``skip`` names layers (or layer
    classes) to keep in float on purpose. Layers TF-MOT cannot quantize stay float with one
    :class:`QuantizationWarning` naming each, or raise :class:`~tfedge.errors.ModelError` when
    ``strict=True``. ``model`` itself is not changed; the copy has no optimizer: compile it.
    Train it before predicting or converting: its quantization ranges are learnt by training (TF-MOT
    starts the input's at [0, 0], so an untrained copy maps every input to the same output).
    Call it inside ``strategy.scope()`` to train with a ``tf.distribute`` strategy.

    >>> import tfedge
    >>> from tfedge import keras
    >>> inp = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    >>> x = keras.layers.Rescaling(0.5, name="half")(x)
    >>> out = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(x))
    >>> qat = tfedge.quantize_aware(keras.Model(inp, out), skip=["half"])
    >>> [type(layer).__name__ for layer in qat.layers][-3:]
    ['Rescaling', 'QuantizeWrapperV2', 'QuantizeWrapperV2']
    """
    check_bool(preserve_sparsity, "preserve_sparsity")
    check_bool(preserve_clusters, "preserve_clusters")
    check_bool(per_channel, "per_channel")
    check_bool(strict, "strict")
    if not per_channel and (preserve_sparsity or preserve_clusters):
        raise InputError(
            "per_channel=False works with TF-MOT's default 8-bit scheme only, not with "
            "preserve_sparsity or preserve_clusters: keep per_channel=True for those"
        )
    check_graph_model(model, "model to quantize")
    _refuse_already_quantized(model)

    with _scope(model):
        base = _strip_pruning(model)
        reserve_layer_names(base)

        if clustering.is_clustered(base):
            base = clustering.strip_clustering(base)
        skipped = _resolve_skip(base, skip)
        base = _qconfigs.lowered(base, skipped)
        scheme = (
            clustering.cqat_scheme(preserve_sparsity) if preserve_clusters else _scheme(preserve_sparsity, per_channel)
        )
        candidates = [
            layer.name
            for layer in base.layers
            if not isinstance(layer, keras.layers.InputLayer) and layer.name not in skipped
        ]
        configs = _qconfigs.quantize_configs(base, set(candidates), preserve_sparsity)
        unsupported = _find_unsupported(base, candidates, scheme, preserve_sparsity, configs)
        problem = ""
        if unsupported:
            names = [u.name for u in unsupported]
            problem = (
                f"{len(names)} layer{'s' if len(names) > 1 else ''} of model '{model.name}' cannot be "
                f"quantized by TF-MOT {_tfmot_version()}: {', '.join(map(str, unsupported))}; {_COST}"
            )
            if strict:
                raise ModelError(
                    f"strict=True and {problem}: replace them with supported layers, or pass "
                    f"skip={names!r} (or strict=False) to keep them float"
                )
        annotate = set(candidates) - {u.name for u in unsupported}
        if not annotate:
            raise ModelError(
                f"no layer of model '{model.name}' is left to quantize (skipped: {sorted(skipped) or 'none'}, "
                f"unsupported: {len(unsupported)}): skip fewer layers, or quantize a model with Dense / Conv2D layers"
            )
        if problem:
            warnings.warn(
                QuantizationWarning(
                    f"{problem}. They stay float: pass skip={names!r} to do so without this warning, or "
                    "strict=True to make it an error"
                ),
                stacklevel=2,
            )
        return _rebuilt(_apply(base, annotate, scheme, preserve_sparsity, configs))


def _tfmot_version() -> str:
    return getattr(tfmot, "__version__", "")


@contextlib.contextmanager
def _scope(model: keras.Model) -> Iterator[None]:
    """TF-MOT rebuilds models from their config: let it find every layer class the model uses.

    Safe mode is off only for rebuilding layers that are already in this process (a ``Lambda``'s
    code is the caller's own); nothing is read from a file here.
    """
    layers = [inner for _, outer in walk_layers(model, models=True) for inner in (outer, unwrap(outer))]
    classes = {
        type(layer).__name__: type(layer)
        for layer in layers
        if not type(layer).__module__.startswith(("tf_keras.", "tensorflow_model_optimization."))
    }
    with (
        quantize_scope(),
        keras.utils.custom_object_scope(classes),
        keras.src.saving.serialization_lib.SafeModeScope(False),
    ):
        yield


def _refuse_already_quantized(model: keras.Model) -> None:
    done = (_qwrapper.QuantizeWrapper, _qlayer.QuantizeLayer, _qannotate.QuantizeAnnotate)
    for layer in model.layers:
        if isinstance(layer, done):
            raise ModelError(
                f"model '{model.name}' is already quantization-aware (layer '{layer.name}' is a "
                f"{type(layer).__name__}): train it as it is, or call quantize_aware on the float model"
            )


def _strip_pruning(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with its own weights; pruning wrappers are stripped (:func:`tfedge.strip`, zeros kept)."""
    if any(isinstance(layer, _pwrapper.PruneLowMagnitude) for _, layer in walk_layers(model)):
        return strip(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _resolve_skip(model: keras.Model, skip: Iterable[str | type] | None) -> set[str]:
    if skip is None:
        return set()
    if isinstance(skip, (str, type)):
        skip = [skip]
    try:
        items = list(skip)
    except TypeError:
        raise InputError(f"skip must be a list of layer names or layer classes, got {skip!r}") from None
    names = {layer.name for layer in model.layers}
    chosen: set[str] = set()
    for item in items:
        if isinstance(item, str):
            if item not in names:
                known = ", ".join(sorted(names))
                raise InputError(
                    f"skip names layer '{item}', which model '{model.name}' does not have "
                    f"(its layers: {known[:400]}): check the name"
                )
            chosen.add(item)
        elif isinstance(item, type) and issubclass(item, keras.layers.Layer):
            layer_class: Any = item
            found = {layer.name for layer in model.layers if isinstance(layer, layer_class)}
            if not found:
                raise InputError(
                    f"skip names layer class {item.__name__}, but model '{model.name}' has "
                    "no such layer: check the class"
                )
            chosen |= found
        else:
            raise InputError(f"skip must hold layer names (str) or keras layer classes, got {item!r}")
    return chosen


def _scheme(preserve_sparsity: bool, per_channel: bool = True):
    if preserve_sparsity:
        return tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme(disable_per_axis=not per_channel)


def _function_name(fn: object) -> str:
    """The name of an activation function (``relu``), or of the class of a callable object."""
    return getattr(fn, "__name__", type(fn).__name__)


def reserve_layer_names(model: keras.Model) -> None:
    """Advance Keras's automatic layer names past every name ``model`` uses.

    TF-MOT's transforms add layers (a SeparableConv2D becomes a DepthwiseConv2D and a Conv2D) named by Keras's
    counter of this session, which knows nothing of a model loaded from a file: a new ``conv2d_3`` beside the
    model's own ``conv2d_3`` made a Sequential model refuse and a functional one rebuild forever.

    >>> m = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2, name="dense_1000")])
    >>> reserve_layer_names(m)
    >>> int(keras.layers.Dense(2).name.rsplit("_", 1)[1]) > 1000
    True
    """
    highest: dict[str, int] = {}
    for layer in model.layers:
        found = re.fullmatch(r"(.+?)(?:_(\d+))?", layer.name)
        if found:
            prefix, number = found.group(1), int(found.group(2) or 0)
            highest[prefix] = max(highest.get(prefix, -1), number)
    for prefix, number in highest.items():
        while True:
            name = next_layer_name(prefix)
            if int(name[len(prefix) + 1 :] or 0) >= number:
                break


def _find_unsupported(
    model: keras.Model, candidates: list[str], scheme, preserve_sparsity: bool, configs: dict
) -> list[_Unsupported]:
    """Layers among ``candidates`` that TF-MOT would refuse, found with TF-MOT's own transforms and registry
    (``configs``: tfedge's QuantizeConfigs by layer name, as :func:`_apply` will annotate them)."""
    by_name = {layer.name: layer for layer in model.layers}
    found: dict[str, _Unsupported] = {}

    def refuse(layer: keras.layers.Layer, reason: str) -> None:
        found.setdefault(layer.name, _Unsupported(layer.name, type(layer).__name__, reason))

    # Checks TF-MOT's transforms would hide (they rename what they rewrite) or cannot run at all.
    for name in candidates:
        layer = by_name[name]
        if isinstance(layer, keras.Model):
            refuse(
                layer,
                "a model nested in the model; TF-MOT quantizes only flat models, so build one model from its layers",
            )
        elif isinstance(layer, keras.layers.Lambda):
            refuse(layer, "TF-MOT cannot see the code inside a Lambda")
        elif not isinstance(layer, keras.layers.Activation) and callable(getattr(layer, "activation", None)):
            act = _function_name(layer.activation)
            if act not in _FUSED_ACTIVATIONS:
                refuse(
                    layer,
                    f"fused activation '{act}' has no quantization-aware version; use a separate "
                    f"activation layer (e.g. keras.layers.ReLU(6.0) for relu6)",
                )

    # The rest: run TF-MOT's layout transforms (BatchNorm folding, ...) and ask its registry.
    layer_map = {name: {"quantize_config": configs.get(name)} for name in candidates if name not in found}
    for inp in model._input_layers:
        if any(node.outbound_layer.name in layer_map for node in inp._outbound_nodes):
            layer_map[inp.name] = {}
    try:
        transformed, layer_map = scheme.get_layout_transformer().apply(model, layer_map)
    except Exception as exc:  # TF-MOT raises many types; report them as ours
        raise ModelError(
            f"TF-MOT could not analyse model '{model.name}' for quantization: "
            f"{first_line(exc)}; pass the offending layers in skip=[...]"
        ) from None
    registry = _RegistryView(scheme.get_quantize_registry(), set(), preserve_sparsity)
    for layer in transformed.layers:
        if layer.name not in layer_map or isinstance(layer, (keras.layers.InputLayer, _qlayer.QuantizeLayer)):
            continue
        original = by_name.get(layer.name, layer)
        config = layer_map[layer.name].get("quantize_config")
        if config is None:
            if not registry.supports(layer):
                refuse(original, _registry_reason(layer, preserve_sparsity))
                continue
            try:
                config = registry.get_quantize_config(layer)
            except Exception as exc:
                refuse(original, f"TF-MOT has no quantize config for it ({first_line(exc)})")
                continue
        try:
            config.get_output_quantizers(layer)
            for fn, _ in config.get_activations_and_quantizers(layer):
                if _function_name(fn) not in _FUSED_ACTIVATIONS:
                    raise ValueError(f"activation '{_function_name(fn)}' has no quantization-aware version")
        except Exception as exc:
            reason = first_line(exc)
            if isinstance(layer, keras.layers.Activation):
                reason = f"activation '{_function_name(layer.activation)}' has no int8 QAT support"
            refuse(original, reason)
    return [found[name] for name in candidates if name in found]


def _registry_reason(layer: keras.layers.Layer, preserve_sparsity: bool) -> str:
    if isinstance(layer, keras.layers.BatchNormalization):
        return (
            "tfedge quantizes a BatchNormalization that normalizes the last axis of a 2-D to 4-D input "
            "(or one right after a conv / dense with a linear activation)"
        )
    if (
        preserve_sparsity
        and tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme().get_quantize_registry().supports(layer)
    ):
        return "TF-MOT's sparsity-preserving scheme (preserve_sparsity=True) does not support it"
    if not type(layer).__module__.startswith("tf_keras"):
        return "a custom layer; TF-MOT has no quantize config for it"
    return f"not in TF-MOT {_tfmot_version()}'s 8-bit layer registry"


class QuantizeLayer(_qlayer.QuantizeLayer):
    """TF-MOT's ``QuantizeLayer`` (same name in saved files), built once, by the model's own call.

    TF-MOT 0.8.1's never sets ``built``, so loading a ``.keras`` file built it twice and failed
    ("expected 5 variables, but received 3").
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.built = True

    def build_from_config(self, config):
        """Skip the early build of a file load: the model's call builds it, in its name scope."""


class QuantizeWrapperV2(_qwrapper.QuantizeWrapperV2):
    """TF-MOT's ``QuantizeWrapperV2`` (same name in saved files) that builds the layer it wraps itself.

    TF-MOT's, when deserialized, gets its layer already built and then tracks some variables twice:
    the ``.keras`` file holds more values than a reloaded wrapper has variables, and the load fails.
    """

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("layer"), dict):
            config["layer"] = {k: v for k, v in config["layer"].items() if k != "build_config"}
        return super().from_config(config)

    def build_from_config(self, config):
        """Skip the early build of a file load: the model's call builds it, in its name scope."""

    def build(self, input_shape):
        # The wrapped layer's weights come first, as in a wrapper made around a built layer, so that a
        # rebuilt or reloaded wrapper lists its weights in the same order when its quantizer adds
        # trainable ones too (the cluster-preserving quantizer's centroids).
        if not self.layer.built:
            self.layer.build(input_shape)
        super().build(input_shape)


class _KeepZeros:
    """Weight quantizer mixin: weights that are zero stay zero (no gradient reaches them).

    TF-MOT's prune-preserving quantizers take the zero mask once, when built; this one takes it at
    every step, so the mask is right after a model is rebuilt or loaded from a file too.
    """

    def __call__(self, inputs, training, weights, **kwargs):
        mask = tf.stop_gradient(tf.cast(tf.not_equal(inputs, 0), inputs.dtype))
        return super().__call__(inputs, training, dict(weights, sparsity_mask=mask), **kwargs)


class _KeepZerosWeightsQuantizer(_KeepZeros, _ppq.PrunePreserveDefault8BitWeightsQuantizer):
    pass


class _KeepZerosConvWeightsQuantizer(_KeepZeros, _ppq.PrunePreserveDefault8BitConvWeightsQuantizer):
    pass


@keras.utils.register_keras_serializable(package="tfedge", name="PrunePreserveQuantizeConfig")
class PrunePreserveQuantizeConfig(DelegatingQuantizeConfig):
    """TF-MOT's 8-bit config of a Dense / Conv2D layer whose zero weights stay zero; saved with the model.

    (TF-MOT's prune-preserving scheme does not save its weight quantizer: a reloaded model lost it.)
    """

    def __init__(self, config):
        if isinstance(config, dict):
            config = _qutils.deserialize_keras_object(config, module_objects=_d8._types_dict())
        self.config = config
        conv = isinstance(config, _d8.Default8BitConvQuantizeConfig)
        config.weight_quantizer = _KeepZerosConvWeightsQuantizer() if conv else _KeepZerosWeightsQuantizer()

    def get_config(self):
        return {"config": _qutils.serialize_keras_object(self.config)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def load_objects() -> dict:
    """The classes tfedge's QAT models need to load, by the names saved files use (see :func:`quantize_scope`).

    >>> sorted(load_objects())[:3]
    ['ClusterWeights', 'ClusterWeightsMHA', 'ClusterWeightsRNN']
    """
    return {
        "QuantizeLayer": QuantizeLayer,
        "QuantizeWrapperV2": QuantizeWrapperV2,
        "tfedge>PrunePreserveQuantizeConfig": PrunePreserveQuantizeConfig,
        **clustering.load_objects(),
    }


@contextlib.contextmanager
def quantize_scope() -> Iterator[None]:
    """Scope in which quantization-aware models deserialize: TF-MOT's quantize scope with tfedge's fixed
    wrapper and input quantizer (:func:`load_objects`). :func:`tfedge.load_model` enters it for you.
    """
    with tfmot.quantization.keras.quantize_scope(), keras.utils.custom_object_scope(load_objects()):
        yield


class _AnnotatedOnly(tfmot.quantization.keras.QuantizeScheme):
    """``scheme``, except that layers left unannotated stay fully float, and zeros stay zero if asked.

    TF-MOT otherwise adds an output quantizer to an unannotated layer its registry knows when it
    feeds an annotated one, which crashes for a refused activation and is not "float" for a skipped one.
    """

    def __init__(self, scheme, keep_float: set[str], preserve_sparsity: bool):
        self._scheme = scheme
        self._keep_float = keep_float
        self._preserve_sparsity = preserve_sparsity

    def get_layout_transformer(self):
        return self._scheme.get_layout_transformer()

    def get_quantize_registry(self):
        return _RegistryView(self._scheme.get_quantize_registry(), self._keep_float, self._preserve_sparsity)


class _RegistryView(tfmot.quantization.keras.QuantizeRegistry):
    def __init__(self, registry, keep_float: set[str], preserve_sparsity: bool):
        self._registry = registry
        self._keep_float = keep_float
        self._preserve_sparsity = preserve_sparsity

    def supports(self, layer):
        if layer.name in self._keep_float:
            return False
        return self._registry.supports(layer) or self._keeps_zeros_itself(layer)

    def _keeps_zeros_itself(self, layer) -> bool:
        """Layers TF-MOT's prune-preserving scheme does not keep the zeros of (nor quantizes at all, for
        Conv2DTranspose), while its 8-bit scheme quantizes them: tfedge keeps their zeros."""
        return self._preserve_sparsity and type(layer) in (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)

    def get_quantize_config(self, layer):
        if self._keeps_zeros_itself(layer):
            # Same config as the 8-bit scheme's, zeros kept. (Conv2DTranspose's kernel is per tensor, so
            # the plain weight quantizer equals TF-MOT's transposing one.)
            return PrunePreserveQuantizeConfig(_d8.Default8BitQuantizeRegistry().get_quantize_config(layer))
        config = clustering.cluster_preserving_config(
            self._registry.get_quantize_config(layer), self._preserve_sparsity
        )
        if self._preserve_sparsity and isinstance(
            getattr(config, "weight_quantizer", None), _ppq.PrunePreserveDefaultWeightsQuantizer
        ):
            return PrunePreserveQuantizeConfig(config)
        return config


def _apply(model: keras.Model, annotate: set[str], scheme, preserve_sparsity: bool, configs: dict) -> keras.Model:
    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in annotate:  # tfedge's own QuantizeConfig for the layers TF-MOT leaves float
            return tfmot.quantization.keras.quantize_annotate_layer(layer, configs.get(layer.name))
        return layer

    keep_float = {layer.name for layer in model.layers} - annotate
    try:
        annotated = keras.models.clone_model(model, clone_function=wrap)
        return tfmot.quantization.keras.quantize_apply(annotated, _AnnotatedOnly(scheme, keep_float, preserve_sparsity))
    except Exception as exc:  # never hand TF-MOT's bare error to the user
        raise ModelError(
            f"TF-MOT could not quantize model '{model.name}': {first_line(exc)}; "
            "pass the layer it names in skip=[...] to keep it float"
        ) from None


def _rebuilt(qat: keras.Model) -> keras.Model:
    """``qat`` with TF-MOT's wrapper and input quantizer replaced by the fixed ones above (same weights).

    It saves and reloads exactly (``.keras`` and ``.h5``), and a reloaded model is built the same way.
    """
    fixed: dict[type, Any] = {_qwrapper.QuantizeWrapperV2: QuantizeWrapperV2, _qlayer.QuantizeLayer: QuantizeLayer}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        return fixed.get(type(layer), type(layer)).from_config(layer.get_config())

    fresh = keras.models.clone_model(qat, clone_function=clone)
    before, after = [tuple(w.shape) for w in qat.weights], [tuple(w.shape) for w in fresh.weights]
    if before != after:  # never seen; refuse rather than mix up weights
        raise ModelError(
            f"quantization-aware model '{qat.name}' did not rebuild with the same weights "
            f"({len(before)} vs {len(after)}): please report this model"
        )
    fresh.set_weights(qat.get_weights())
    return fresh


__all__ = ["quantize_aware", "QuantizationWarning", "PrunePreserveQuantizeConfig", "load_objects", "quantize_scope"]

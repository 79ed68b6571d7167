"""Weight clustering (TF-MOT, k-means++ centroids) and the pieces that keep clusters through QAT.

:func:`cluster` wraps a trained model so that each kernel holds at most ``clusters`` distinct values
(per output channel for Conv2D with ``per_channel=True``); train it with the usual ``fit``, then
:func:`strip_clustering` gives plain Keras layers whose kernels hold those few values. Quantization-aware
training that keeps them is ``tfedge.quantize_aware(stripped, preserve_clusters=True)`` (CQAT; with
``preserve_sparsity=True`` too, PCQAT): the int8 kernels of the converted file then hold at most
``clusters`` distinct values per channel, which is what TFLite Micro's LUT compression
(:func:`tfedge.lut_compress`) stores in ``log2(clusters)`` bits per weight.

>>> import tfedge
>>> from tfedge import keras
>>> model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
...                           keras.layers.Flatten(), keras.layers.Dense(10, name="logits")])
>>> clustered = tfedge.cluster(model, clusters=4)
>>> [type(layer).__name__ for layer in clustered.layers]
['ClusterWeights', 'ClusterWeights', 'ClusterWeights']
>>> plain = tfedge.strip_clustering(clustered)
>>> tfedge.clustering.distinct_weights(plain)["logits"]
4
"""

from __future__ import annotations

import warnings
from typing import Any

from tfedge._keras import keras, tf

import numpy as np
import tensorflow_model_optimization as tfmot  # after tfedge._keras chose Keras 2
from tensorflow_model_optimization.python.core.clustering.keras import (
    cluster_wrapper as _cwrapper,
)
from tensorflow_model_optimization.python.core.quantization.keras import (
    utils as _qutils,
)
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
    cluster_preserve_quantize_registry as _cpq,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry as _d8,
)
from tensorflow_model_optimization.python.core.sparsity.keras import (
    pruning_wrapper as _pwrapper,
)

from tfedge.checks import check_bool, check_int
from tfedge.errors import ModelError, first_line
from tfedge.graph import check_graph_model
from tfedge.pruning import strip
from tfedge.quantize_configs import DelegatingQuantizeConfig

#: Most clusters tfedge asks for: an int8 kernel cannot hold more distinct values than 256.
MAX_CLUSTERS = 256


def cluster(
    model: keras.Model,
    clusters: int = 16,
    *,
    preserve_sparsity: bool = True,
    per_channel: bool = True,
) -> keras.Model:
    """Return a copy of a trained ``model`` whose kernels are clustered to ``clusters`` values while you ``fit`` it.

    TF-MOT's weight clustering with k-means++ centroid initialization wraps every layer it can
    cluster (Dense, Conv1D/2D/3D, DepthwiseConv2D, ...); ``per_channel=True`` clusters each output
    channel of a Conv2D on its own (the way int8 Conv2D kernels are quantized, so the same index
    bits buy more accuracy), ``preserve_sparsity=True`` keeps weights that are zero at zero (prune,
    strip, then cluster). Compile and fit the result as usual (a few epochs at a low learning rate
    recover the accuracy), then call :func:`strip_clustering`. Pruning wrappers still in ``model``
    are stripped first; ``model`` itself is not changed. ``tfedge.save_model`` / ``load_model``
    handle the wrapped model.

    >>> import tfedge
    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    >>> tfedge.cluster(model, clusters=1)
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: clusters must be an integer in [2, 256], got 1: e.g. 16 (4-bit LUT) or 4 (2-bit)
    """
    clusters = check_int(clusters, "clusters", minimum=2, maximum=MAX_CLUSTERS, hint="e.g. 16 (4-bit LUT) or 4 (2-bit)")
    preserve_sparsity = check_bool(preserve_sparsity, "preserve_sparsity")
    per_channel = check_bool(per_channel, "per_channel")
    check_graph_model(model, "model to cluster")
    if any(isinstance(layer, _cwrapper.ClusterWeights) for layer in model.layers):
        raise ModelError(
            f"model '{model.name}' is already clustered: train it as it is, or call "
            "tfedge.strip_clustering(model) first to cluster it again"
        )
    base = _plain_copy(model)
    with keras.utils.custom_object_scope(_user_classes(base)):
        try:
            return tfmot.clustering.keras.cluster_weights(
                base,
                number_of_clusters=clusters,
                cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
                preserve_sparsity=preserve_sparsity,
                cluster_per_channel=per_channel,
            )
        except tf.errors.InvalidArgumentError as exc:  # k-means++ asked for more centroids than weights
            raise ModelError(
                f"TF-MOT cannot place {clusters} clusters in model '{model.name}': a kernel (one channel of it with "
                f"per_channel=True, each sign of it with preserve_sparsity=True) has fewer weights than that "
                f"({first_line(exc)}); ask for fewer clusters, or pass per_channel=False"
            ) from None
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise ModelError(
                f"TF-MOT cannot cluster model '{model.name}': {first_line(exc)}; replace that layer "
                "with a built-in Dense / Conv layer, or cluster a model without it"
            ) from None


def strip_clustering(model: keras.Model) -> keras.Model:
    """Plain Keras layers holding the clustered weights of a :func:`cluster` model (what you convert or CQAT).

    A model without clustering wrappers comes back as a copy with the same weights.
    """
    check_graph_model(model, "model to strip")
    if not any(isinstance(layer, _cwrapper.ClusterWeights) for layer in model.layers):
        return _plain_copy(model)
    with keras.utils.custom_object_scope(_user_classes(model)):
        return tfmot.clustering.keras.strip_clustering(model)


def distinct_weights(model: keras.Model) -> dict[str, int]:
    """Per layer, the most distinct values any output channel of its kernel holds (kernels of wrapped
    layers included): what a LUT must index. Layers without a kernel are left out.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((2,)), keras.layers.Dense(2, name="d")])
    >>> model.set_weights([np.array([[1, 2], [1, 3]], "float32"), np.zeros(2, "float32")])
    >>> distinct_weights(model)
    {'d': 2}
    """
    out = {}
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, keras.layers.Wrapper) else layer
        if isinstance(layer, _cwrapper.ClusterWeights):
            layer.update_clustered_weights_associations()
            kernels = [
                keras.backend.get_value(layer.get_weight_from_layer(name))
                for name in layer.position_original_weights.values()
            ]
        else:  # QAT wrappers hold the kernel variable under the layer's name
            kernels = [
                keras.backend.get_value(w)
                for w in layer.weights
                if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")
            ]
        if kernels:
            out[inner.name] = max(max(len(np.unique(ch)) for ch in np.moveaxis(k, -1, 0)) for k in kernels)
    return out


def _user_classes(model: keras.Model) -> dict[str, type]:
    return {
        type(layer).__name__: type(layer)
        for layer in model.layers
        if not type(layer).__module__.startswith(("tf_keras.", "tensorflow_model_optimization."))
    }


def _plain_copy(model: keras.Model) -> keras.Model:
    """A copy with its own weights; pruning wrappers stripped (zeros kept)."""
    if any(isinstance(layer, _pwrapper.PruneLowMagnitude) for layer in model.layers):
        return strip(model)
    with keras.utils.custom_object_scope(_user_classes(model)):
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def is_clustered(model: keras.Model) -> bool:
    """True when ``model`` still holds TF-MOT clustering wrappers (call :func:`strip_clustering`)."""
    return any(isinstance(layer, _cwrapper.ClusterWeights) for layer in model.layers)


# --------------------------------------------------------------------------------------------------
# cluster-preserving QAT (used by tfedge.quantize_aware(..., preserve_clusters=True))


def cqat_scheme(preserve_sparsity: bool):
    """TF-MOT's cluster-preserving 8-bit scheme (``preserve_sparsity=True``: the PCQAT one)."""
    return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve_sparsity)


class _SavedClusters:
    """Weight quantizer mixin that makes TF-MOT's cluster-preserving quantizer save and load.

    TF-MOT's builds its variables from the kernel it finds when built: the number of distinct values
    sets the centroid variable's shape. A model being loaded is built with a freshly initialized
    kernel, so the shapes differ from the saved ones and loading fails. This one records the shape
    in the config and, when built from a config, first gives the kernel a placeholder with that many
    values (the saved values replace it). Its sparsity and centroid masks are recomputed at every
    call, from the (saved) weights, instead of being frozen at build time.
    """

    def __init__(self, preserve_sparsity: bool, centroids_shape: Any = "unknown"):
        super().__init__(preserve_sparsity)  # type: ignore[call-arg]  # a mixin: the quantizer after it in the MRO
        self.centroids_shape = centroids_shape  # "unknown": built from a live model; None: no clusters

    def build(self, tensor_shape, name, layer):
        if self.centroids_shape != "unknown":
            kernel = getattr(layer.layer, name)
            kernel.assign(_placeholder(tuple(kernel.shape), self.centroids_shape, self.preserve_sparsity))
        with warnings.catch_warnings():  # "no clustering performed" for a layer that was not clustered
            warnings.simplefilter("ignore")
            result = super().build(tensor_shape, name, layer)
        centroids = result.get(_cpq.CLUSTER_CENTROIDS)
        self.centroids_shape = None if centroids is None else [int(d) for d in centroids.shape]
        return result

    def __call__(self, inputs, training, weights, **kwargs):
        if self.preserve_sparsity and _cpq.ORIGINAL_WEIGHTS in weights:
            original = weights[_cpq.ORIGINAL_WEIGHTS]
            centroids = weights[_cpq.CLUSTER_CENTROIDS]
            weights = dict(weights)
            weights[_cpq.SPARSITY_MASK] = tf.stop_gradient(tf.cast(tf.not_equal(original, 0), original.dtype))
            zero = tf.argmin(tf.abs(centroids), axis=-1)
            weights[_cpq.CENTROIDS_MASK] = tf.stop_gradient(1.0 - tf.one_hot(zero, tf.shape(centroids)[-1]))
        elif self.preserve_sparsity:
            weights = dict(
                weights, **{_cpq.SPARSITY_MASK: tf.stop_gradient(tf.cast(tf.not_equal(inputs, 0), inputs.dtype))}
            )
        return super().__call__(inputs, training, weights, **kwargs)

    def get_config(self):
        return {"preserve_sparsity": self.preserve_sparsity, "centroids_shape": self.centroids_shape}


def _placeholder(shape: tuple[int, ...], centroids_shape: list[int] | None, zero: bool) -> np.ndarray:
    """Kernel values from which TF-MOT derives centroids of ``centroids_shape`` (None: no clusters)."""
    if centroids_shape is None:
        return np.zeros(shape, np.float32)
    count = centroids_shape[-1]
    values = np.linspace(0.0 if zero else 0.1, 1.0, count, dtype=np.float32)
    if len(centroids_shape) == 2:  # per channel (last axis): every channel holds all ``count`` values
        per_channel = int(np.prod(shape[:-1]))
        column = values[np.arange(per_channel) % count]
        return np.repeat(column[:, None], shape[-1], axis=1).reshape(shape)
    flat = values[np.arange(int(np.prod(shape))) % count].reshape(shape)
    if len(shape) == 4:  # TF-MOT reads a Conv2D kernel whose channels hold equally many values as per channel
        flat[..., 0] = values[0]
    return flat


class _Weights(_SavedClusters, _cpq.ClusterPreserveDefault8BitWeightsQuantizer):
    pass


class _ConvWeights(_SavedClusters, _cpq.ClusterPreserveDefault8BitConvWeightsQuantizer):
    pass


@keras.utils.register_keras_serializable(package="tfedge", name="ClusterPreserveQuantizeConfig")
class ClusterPreserveQuantizeConfig(DelegatingQuantizeConfig):
    """TF-MOT's 8-bit config of a Dense / Conv2D layer whose clustered weights stay clustered; saved with the model.

    (TF-MOT's cluster-preserving scheme saves neither its weight quantizer nor the shape of its
    variables: a reloaded model lost the first and could not load the second.)
    """

    def __init__(self, config, preserve_sparsity: bool = False, quantizer: dict | None = None):
        if isinstance(config, dict):
            config = _qutils.deserialize_keras_object(config, module_objects=_d8._types_dict())
        self.config = config
        cls = _ConvWeights if isinstance(config, _d8.Default8BitConvQuantizeConfig) else _Weights
        self.config.weight_quantizer = cls(**(quantizer or {"preserve_sparsity": preserve_sparsity}))

    def get_config(self):
        return {
            "config": _qutils.serialize_keras_object(self.config),
            "quantizer": self.config.weight_quantizer.get_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def cluster_preserving_config(config, preserve_sparsity: bool):
    """``config`` with tfedge's saveable cluster-preserving weight quantizer, when TF-MOT gave it one."""
    if isinstance(getattr(config, "weight_quantizer", None), _cpq.ClusterPreserveDefaultWeightsQuantizer):
        return ClusterPreserveQuantizeConfig(config, preserve_sparsity)
    return config


class ClusterWeights(_cwrapper.ClusterWeights):  # same class name: Keras files locate weights by it
    """TF-MOT's ``ClusterWeights`` (same name in saved files) that loads a sparsity-preserving wrapper right.

    With ``preserve_sparsity=True`` TF-MOT derives the index of the zero centroid and the mask of
    weights held at zero once, when the wrapper is built. A wrapper being loaded is built around a
    freshly initialized kernel, so both came from random numbers and a reloaded model zeroed another
    centroid (other outputs, in ``.keras`` and ``.h5`` files alike). This one derives them from the
    centroids and indices it holds each time it updates the clustered weights: the same values for
    a saved model, and a weight that joins the zero cluster while training stays there.
    """

    def update_clustered_weights_associations(self):
        if self.preserve_sparsity:
            for name, algorithm in self.clustering_algorithms.items():
                self.zero_idx[name] = tf.argmin(tf.abs(self.cluster_centroids[name]), axis=-1)
                clustered = algorithm.get_clustered_weight(
                    self.pulling_indices[name], self.original_clusterable_weights[name]
                )
                self.sparsity_masks[name] = tf.cast(tf.math.not_equal(clustered, 0), tf.float32)
        return super().update_clustered_weights_associations()


def load_objects() -> dict:
    """The classes clustered and CQAT models need to load (merged into :func:`tfedge.models.custom_objects`)."""
    return {
        "ClusterWeights": ClusterWeights,
        "ClusterWeightsRNN": _cwrapper.ClusterWeightsRNN,
        "ClusterWeightsMHA": _cwrapper.ClusterWeightsMHA,
        "tfedge>ClusterPreserveQuantizeConfig": ClusterPreserveQuantizeConfig,
    }


__all__ = [
    "MAX_CLUSTERS",
    "ClusterPreserveQuantizeConfig",
    "cluster",
    "cluster_preserving_config",
    "cqat_scheme",
    "distinct_weights",
    "is_clustered",
    "load_objects",
    "strip_clustering",
]

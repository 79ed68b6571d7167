"""The channel dependency graph of a Keras 2 Sequential or Functional model.

Every channel of every tensor in the model gets an id. A producer (Conv1D/2D/3D, Dense, the
pointwise half of SeparableConv) makes fresh ids for its output channels; channel-wise layers
(BatchNormalization, activations, pooling, Dropout, ZeroPadding, DepthwiseConv with depth
multiplier 1, global pooling, a Reshape that keeps the channel axis) pass their input ids on;
element-wise merges (Add, Subtract, Multiply, Maximum, Minimum, Average) join the ids of their
inputs position by position (union-find), so coupled channels become one *coupled channel*;
Concatenate concatenates the id vectors (channel offsets); Flatten tiles them over the spatial
positions, so that a Dense after it sees each channel at every position. Channels of model inputs
and outputs, and every channel a layer the graph does not know touches, are *frozen*: they are
never removed.

Coupled channels made by the same set of producers form a *group*: the unit that one ratio applies
to and inside which channels are ranked.

>>> from tfedge import keras
>>> x = keras.layers.Input((8, 8, 1))
>>> a = keras.layers.Conv2D(4, 3, name="a")(x)
>>> b = keras.layers.Conv2D(4, 3, name="b")(x)
>>> y = keras.layers.Add()([a, b])
>>> y = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(y))
>>> graph = ChannelGraph(keras.Model(x, y))
>>> [(g.producers, g.size, g.prunable) for g in graph.groups]   # a model output is never pruned
[(('a', 'b'), 4, True), (('out',), 2, False)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from tfedge._keras import keras

import numpy as np

#: Layers whose output channel i depends only on input channel i and that hold no weights.
PASS_THROUGH = frozenset(
    {
        "ReLU",
        "LeakyReLU",
        "ELU",
        "ThresholdedReLU",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
        "Identity",
    }
)
#: Producers: a kernel whose second-to-last axis reads the input channels and last axis makes new ones.
PRODUCERS = frozenset({"Conv1D", "Conv2D", "Conv3D", "Dense"})
SEPARABLE = frozenset({"SeparableConv1D", "SeparableConv2D"})
DEPTHWISE = frozenset({"DepthwiseConv1D", "DepthwiseConv2D"})
MERGES = frozenset({"Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"})
#: Activations that mix channels (all others in Keras act element by element).
_MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax"})


def _activation_name(layer: keras.layers.Layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else "linear"


def _channels_last(layer: keras.layers.Layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


@dataclasses.dataclass
class LayerChannels:
    """How one layer's weights and config relate to channel ids.

    ``kind``: producer, separable, channelwise (weights indexed by channel: BatchNorm, Depthwise,
    PReLU), passthrough, merge, concat, flatten, reshape, input or unknown. ``in_ids`` / ``out_ids``:
    the channel id of each entry of the last axis of the (first) input / the output (empty if none).
    """

    name: str
    kind: str
    in_ids: np.ndarray
    out_ids: np.ndarray


@dataclasses.dataclass(frozen=True)
class Group:
    """Coupled channels made by the same producers: one ratio, one ranking.

    ``channels[k]`` is the root id of the k-th coupled channel, in the order of the first producer's
    filters. ``prunable`` is False when any of them is frozen.
    """

    producers: tuple[str, ...]
    channels: tuple[int, ...]
    prunable: bool

    @property
    def size(self) -> int:
        return len(self.channels)


class ChannelGraph:
    """Trace ``model`` (Keras 2 Sequential or Functional, built) into coupled channels and groups.

    ``unknown`` lists the layers the graph could not reason about (their channels are frozen).
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self._parent: list[int] = []
        self._origin: list[tuple[str, int]] = []  # (producer layer, output channel) of each id, ("", -1) if none
        self._frozen: set[int] = set()
        self.layers: dict[str, LayerChannels] = {}
        self.unknown: list[str] = []
        self._trace()
        self.groups = self._make_groups()

    # -- union-find over channel ids -------------------------------------------------------------

    def _fresh(self, n: int, producer: str = "", frozen: bool = False) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        self._origin.extend((producer, i) if producer else ("", -1) for i in range(n))
        ids = np.arange(start, start + n, dtype=np.int64)
        if frozen:
            self._frozen.update(ids.tolist())
        return ids

    def root(self, i: int) -> int:
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.root(int(i)) for i in ids], dtype=np.int64)

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def _freeze(self, ids: np.ndarray) -> None:
        self._frozen.update(int(i) for i in ids)

    def frozen(self, root: int) -> bool:
        return root in self._frozen_roots

    # -- tracing ---------------------------------------------------------------------------------

    def _nodes(self) -> list[Any]:
        model = self.model
        view = keras.Model(model.inputs, model.outputs) if isinstance(model, keras.Sequential) else model
        by_depth = view._nodes_by_depth
        return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]

    def _trace(self) -> None:
        nodes = self._nodes()
        calls: dict[str, int] = {}
        for node in nodes:
            calls[node.layer.name] = calls.get(node.layer.name, 0) + 1
        tensors: dict[tuple[str, int, int], np.ndarray] = {}

        def key(kt: Any) -> tuple[str, int, int]:
            h = kt._keras_history
            return h.layer.name, h.node_index, h.tensor_index

        for node in nodes:
            layer = node.layer
            outputs = [t for t in _flatten(node.outputs)]
            if isinstance(layer, keras.layers.InputLayer):
                for t in outputs:
                    tensors[key(t)] = self._fresh(_last_dim(t), frozen=True)
                self.layers[layer.name] = LayerChannels(layer.name, "input", _NONE, tensors[key(outputs[0])])
                continue
            inputs = [tensors[key(t)] for t in node.keras_inputs]
            if calls[layer.name] > 1 or len(outputs) != 1:
                out = self._unknown(layer, inputs, outputs)
            else:
                out = self._step(layer, node, inputs, outputs[0])
            for t in outputs:
                tensors[key(t)] = out if len(outputs) == 1 else self._fresh(_last_dim(t), frozen=True)
        for t in _flatten(self.model.outputs):
            self._freeze(tensors[key(t)])
        self._frozen_roots = {self.root(i) for i in self._frozen}

    def _unknown(self, layer: keras.layers.Layer, inputs: list[np.ndarray], outputs: list[Any]) -> np.ndarray:
        for ids in inputs:
            self._freeze(ids)
        if layer.name not in self.unknown:  # a shared layer is met once per call
            self.unknown.append(layer.name)
        out = self._fresh(_last_dim(outputs[0]), frozen=True)
        self.layers[layer.name] = LayerChannels(layer.name, "unknown", inputs[0] if inputs else _NONE, out)
        return out

    def _step(self, layer: keras.layers.Layer, node: Any, inputs: list[np.ndarray], output: Any) -> np.ndarray:
        cls = type(layer).__name__
        name = layer.name
        first = inputs[0] if inputs else _NONE
        n_out = _last_dim(output)

        def record(kind: str, out: np.ndarray, in_ids: np.ndarray = first) -> np.ndarray:
            self.layers[name] = LayerChannels(name, kind, in_ids, out)
            return out

        if isinstance(layer, keras.Model) or len(inputs) != 1 and cls not in MERGES | {"Concatenate"}:
            return self._unknown(layer, inputs, [output])
        if cls in PRODUCERS and _channels_last(layer) and getattr(layer, "groups", 1) == 1:
            out = self._fresh(n_out, producer=name, frozen=_activation_name(layer) in _MIXING_ACTIVATIONS)
            return record("producer", out)
        if cls in SEPARABLE and _channels_last(layer):
            out = self._fresh(n_out, producer=name, frozen=_activation_name(layer) in _MIXING_ACTIVATIONS)
            return record("separable", out)
        if (
            cls in DEPTHWISE
            and _channels_last(layer)
            and layer.depth_multiplier == 1
            and _activation_name(layer) not in _MIXING_ACTIVATIONS
        ):
            return record("channelwise", first)
        if cls == "BatchNormalization" and _norm_axis_is_last(layer):
            return record("channelwise", first)
        if cls == "PReLU" and layer.alpha.shape[-1] == len(first):
            return record("channelwise", first)
        if cls in PASS_THROUGH and _channels_last(layer) and n_out == len(first):
            return record("passthrough", first)
        if cls == "Activation" and _activation_name(layer) not in _MIXING_ACTIVATIONS:
            return record("passthrough", first)
        if cls in MERGES and len({len(ids) for ids in inputs}) == 1 and n_out == len(first):
            for ids in inputs[1:]:
                for a, b in zip(first, ids):
                    self._union(int(a), int(b))
            return record("merge", first)
        if cls == "Concatenate":
            rank = len(output.shape)
            if layer.axis in (-1, rank - 1):
                return record("concat", np.concatenate(inputs))
            if len({len(ids) for ids in inputs}) == 1:  # joined along another axis: the channels line up
                for ids in inputs[1:]:
                    for a, b in zip(first, ids):
                        self._union(int(a), int(b))
                return record("merge", first)
        if cls == "Flatten" and _channels_last(layer):
            spatial = n_out // len(first) if len(first) else 0
            if spatial * len(first) == n_out:
                return record("flatten", np.tile(first, spatial))
        if cls == "Reshape":
            target = tuple(layer.target_shape)
            if target[-1] == len(first) and len(output.shape) >= 2:
                return record("reshape", first)
            if len(target) == 1 and n_out % len(first) == 0 and len(node.keras_inputs[0].shape) >= 2:
                return record("reshape", np.tile(first, n_out // len(first)))
        return self._unknown(layer, inputs, [output])

    # -- groups ----------------------------------------------------------------------------------

    def _make_groups(self) -> list[Group]:
        members: dict[int, list[tuple[str, int]]] = {}
        for i, origin in enumerate(self._origin):
            if origin[0]:
                members.setdefault(self.root(i), []).append(origin)
        by_producers: dict[tuple[str, ...], list[tuple[int, int]]] = {}
        for root, origins in members.items():
            producers = tuple(sorted({p for p, _ in origins}))
            first_index = min(c for p, c in origins if p == producers[0])
            by_producers.setdefault(producers, []).append((first_index, root))
        groups = []
        for producers, entries in by_producers.items():
            channels = tuple(root for _, root in sorted(entries))
            prunable = not any(self.frozen(r) for r in channels)
            groups.append(Group(producers, channels, prunable))
        order = {name: k for k, name in enumerate(self.layers)}
        return sorted(groups, key=lambda g: min(order[p] for p in g.producers))

    def groups_of(self, layer_name: str) -> list[Group]:
        """The groups whose channels ``layer_name``'s output carries."""
        lc = self.layers[layer_name]
        roots = set(self.roots(lc.out_ids).tolist())
        return [g for g in self.groups if roots.intersection(g.channels)]


_NONE = np.empty(0, dtype=np.int64)  # the ids of no channels


def _flatten(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _last_dim(tensor: Any) -> int:
    shape = tensor.shape
    if len(shape) == 0 or shape[-1] is None:
        return 0
    return int(shape[-1])


def _norm_axis_is_last(layer: keras.layers.Layer) -> bool:
    axis = layer.axis
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    ndim = len(layer.input_shape)
    return len(axes) == 1 and axes[0] in (-1, ndim - 1)


def channel_axes(layer: keras.layers.Layer, kind: str) -> list[tuple[int, int, str]]:
    """``(weight index, axis, side)`` for each weight axis indexed by channels; side is ``in``, ``out``,
    ``chan`` (a channel-wise layer: input = output) or ``in*m`` (a separable pointwise kernel, whose
    input axis holds ``depth_multiplier`` entries per input channel)."""
    weights = layer.weights
    index = {id(w): k for k, w in enumerate(weights)}
    out: list[tuple[int, int, str]] = []
    if kind == "producer":
        out.append((index[id(layer.kernel)], -2, "in"))
        out.append((index[id(layer.kernel)], -1, "out"))
        if layer.use_bias:
            out.append((index[id(layer.bias)], 0, "out"))
    elif kind == "separable":
        out.append((index[id(layer.depthwise_kernel)], -2, "in"))
        out.append((index[id(layer.pointwise_kernel)], -2, "in*m"))
        out.append((index[id(layer.pointwise_kernel)], -1, "out"))
        if layer.use_bias:
            out.append((index[id(layer.bias)], 0, "out"))
    elif kind == "channelwise":
        for k, w in enumerate(weights):
            out.append((k, -2 if w is getattr(layer, "depthwise_kernel", None) else -1, "chan"))
    return out


def expand(keep: np.ndarray, multiplier: int) -> np.ndarray:
    """Indices of a separable pointwise kernel's input axis for kept input channels ``keep``."""
    return (np.asarray(keep)[:, None] * multiplier + np.arange(multiplier)[None, :]).reshape(-1)


def names(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


__all__ = ["ChannelGraph", "Group", "LayerChannels", "channel_axes", "expand"]

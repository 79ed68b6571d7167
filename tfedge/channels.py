"""Structured channel pruning: remove whole filters and units so the dense model gets smaller.

Magnitude sparsity leaves a ``.tflite`` and its TFLite Micro arena as large as before; removing
channels gives a smaller dense model (fewer weight bytes, smaller activations, faster everywhere).
:func:`prune_channels` ranks the channels of each group of coupled channels (see
:mod:`tfedge.channel_graph`) and rebuilds the model without the least important ones;
:class:`ChannelPruningCallback` does it gradually during ``fit``; :func:`channel_report` shows
what it bought.

>>> import numpy as np, tfedge
>>> from tfedge import keras
>>> model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="conv"),
...                           keras.layers.Flatten(), keras.layers.Dense(10, name="logits")])
>>> small = tfedge.prune_channels(model, ratio=0.5)
>>> small.get_layer("conv").filters, small.output_shape, model.get_layer("conv").filters
(4, (None, 10), 8)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tfedge._keras import keras, tf

import numpy as np

from tfedge.channel_graph import ChannelGraph, Group, channel_axes, expand, names
from tfedge.checks import check_bool, check_choice, check_fraction, check_int
from tfedge.conversion import convert
from tfedge.distillation import Distiller
from tfedge.errors import InputError, ModelError
from tfedge.graph import check_graph_model
from tfedge.runtimes import TFLiteMicro
from tfedge.tables import format_table

#: Channel importance criteria. ``l2`` / ``l1``: norm of the producers' filters; ``bn_gamma``:
#: ``|gamma|`` of the BatchNormalization after them (``l2`` for groups without one); ``taylor``:
#: first-order Taylor estimate of the loss change, ``(sum w * dL/dw)^2`` over the channel's weights,
#: on ``data``.
IMPORTANCES = ("l2", "l1", "bn_gamma", "taylor")
#: Samples of ``data`` used by the ``taylor`` criterion.
TAYLOR_SAMPLES = 512
_NEEDS = "channel pruning traces the layer graph"


class ChannelPruningWarning(UserWarning):
    """Layers whose channels prune_channels keeps because it cannot trace them."""


# -- planning ------------------------------------------------------------------------------------


def _check_ratios(graph: ChannelGraph, ratio: Any) -> dict[int, float]:
    """Ratio per group index (prunable groups only)."""
    if isinstance(ratio, Mapping):
        chosen: dict[int, float] = {}
        for name, value in ratio.items():
            if not isinstance(name, str) or name not in graph.layers:
                known = [n for n, lc in graph.layers.items() if lc.kind != "input"]
                listed = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                raise InputError(
                    f"ratio names layer {name!r}, which is not in model '{graph.model.name}': "
                    f"use one of its layer names ({listed})"
                )
            r = check_fraction(value, f"ratio[{name!r}]", high_open=True, hint="the fraction of channels to remove")
            groups = [k for k, g in enumerate(graph.groups) if g.prunable and g in graph.groups_of(name)]
            if not groups:
                raise InputError(
                    f"ratio names layer '{name}', whose channels cannot be removed (a model output, or "
                    "fed to a layer tfedge cannot trace): leave it out of ratio"
                )
            for k in groups:
                chosen[k] = min(r, chosen.get(k, r))
        return chosen
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)):
        raise InputError(f"ratio must be a number in [0, 1) or a dict of layer name -> ratio, got {ratio!r}: e.g. 0.5")
    r = check_fraction(ratio, "ratio", high_open=True, hint="the fraction of channels to remove, e.g. 0.5")
    return {k: r for k, g in enumerate(graph.groups) if g.prunable}


def _keep_count(group: Group, ratio: float, round_to: int) -> int:
    n = group.size
    keep = n - int(n * ratio + 0.5)
    if keep <= 0:
        largest = (n - 1) / n if n > 1 else 0.0
        raise InputError(
            f"ratio {ratio:g} would leave layer '{group.producers[0]}' with 0 of its {n} channels: "
            f"use a ratio below {largest + 0.5 / n:.3g} for it (a dict ratio sets one per layer)"
        )
    if round_to > 1:
        keep = min(n, -(-keep // round_to) * round_to)
    return keep


def _removal(
    graph: ChannelGraph,
    ratios: Mapping[int, float],
    scores: Mapping[int, float],
    round_to: int,
    already: Iterable[int] = (),
) -> set[int]:
    """Root ids to remove: in each group, the least important, those in ``already`` first."""
    done = set(already)
    removed: set[int] = set()
    for k, r in ratios.items():
        group = graph.groups[k]
        drop = group.size - _keep_count(group, r, round_to)
        # stable ranking: earlier removals first, then importance, then filter order
        order = sorted(
            range(group.size), key=lambda i: (group.channels[i] not in done, scores.get(group.channels[i], 0.0), i)
        )
        removed.update(group.channels[i] for i in order[:drop])
    return removed


# -- importance ----------------------------------------------------------------------------------


def _per_channel(w: np.ndarray, axis: int) -> np.ndarray:
    """``w`` as a (positions, channels) matrix for channel axis ``axis``."""
    moved = np.moveaxis(w, axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _split_data(data: Any) -> tuple[np.ndarray, Any]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0], dtype=np.float32), data[1]
    if isinstance(data, np.ndarray):
        return data.astype(np.float32, copy=False), None
    raise InputError(
        f"data must be an array of inputs or an (x, y) tuple, got {type(data).__name__}: e.g. data=(x_train, y_train)"
    )


def _loss(model: keras.Model, outputs: Any, y: Any) -> tf.Tensor:
    outs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    total = tf.constant(0.0)
    for k, out in enumerate(outs):
        layer = model.outputs[k]._keras_history.layer
        probabilities = (
            getattr(getattr(layer, "activation", None), "__name__", "") == "softmax"
            or type(layer).__name__ == "Softmax"
        )
        target = y if (y is not None and len(outs) == 1) else None
        if len(out.shape) == 2 and out.shape[-1] > 1:
            labels = tf.argmax(out, axis=-1) if target is None else tf.reshape(tf.cast(target, tf.int64), [-1])
            total += tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, out, from_logits=not probabilities)
            )
        elif target is not None:
            total += tf.reduce_mean(tf.square(out - tf.cast(tf.reshape(target, tf.shape(out)), out.dtype)))
        else:
            total += 0.5 * tf.reduce_mean(tf.square(out))
    return total


def channel_importance(
    model: keras.Model, graph: ChannelGraph, importance: str = "l2", data: Any = None
) -> dict[int, float]:
    """Importance of each coupled channel (root id -> score) under ``importance``; higher is kept first."""
    importance = check_choice(importance, "importance", IMPORTANCES)
    sq: dict[int, float] = {}
    absolute: dict[int, float] = {}
    gamma: dict[int, float] = {}

    def add(target: dict[int, float], ids: np.ndarray, values: np.ndarray) -> None:
        for root, v in zip(graph.roots(ids), values):
            target[int(root)] = target.get(int(root), 0.0) + float(v)

    for name, lc in graph.layers.items():
        if lc.kind not in ("producer", "separable", "channelwise"):
            continue
        layer = model.get_layer(name)
        weights = layer.get_weights()
        if lc.kind == "channelwise" and type(layer).__name__ == "BatchNormalization" and layer.scale:
            add(gamma, lc.in_ids, np.abs(layer.gamma.numpy()))
        for k, axis, side in channel_axes(layer, lc.kind):
            if side == "out" and axis == -1 and weights[k].ndim > 1:
                m = _per_channel(weights[k], axis)
                add(sq, lc.out_ids, np.sum(m * m, axis=0))
                add(absolute, lc.out_ids, np.sum(np.abs(m), axis=0))
    if importance == "l2":
        return {r: float(np.sqrt(v)) for r, v in sq.items()}
    if importance == "l1":
        return absolute
    if importance == "bn_gamma":
        scores = {r: float(np.sqrt(v)) for r, v in sq.items()}
        for group in graph.groups:
            if any(r in gamma for r in group.channels):
                scores.update({r: gamma.get(r, 0.0) for r in group.channels})
        return scores
    return _taylor(model, graph, data)


def _taylor(model: keras.Model, graph: ChannelGraph, data: Any) -> dict[int, float]:
    if data is None:
        raise InputError("importance='taylor' needs data: pass data=x_train or data=(x_train, y_train)")
    x, y = _split_data(data)
    x = x[:TAYLOR_SAMPLES]
    y = None if y is None else np.asarray(y)[:TAYLOR_SAMPLES]
    entries = []  # (variable, axis, ids)
    for name, lc in graph.layers.items():
        if lc.kind not in ("producer", "separable", "channelwise"):
            continue
        layer = model.get_layer(name)
        for k, axis, side in channel_axes(layer, lc.kind):
            if side in ("out", "chan") and layer.weights[k].trainable:
                entries.append((layer.weights[k], axis, lc.out_ids if side == "out" else lc.in_ids))
    variables = [v for v, _, _ in entries]
    scores: dict[int, float] = {}
    for start in range(0, len(x), 64):
        with tf.GradientTape() as tape:
            out = model(x[start : start + 64], training=False)
            loss = _loss(model, out, None if y is None else y[start : start + 64])
        grads = tape.gradient(loss, variables)
        batch: dict[int, float] = {}
        for (v, axis, ids), g in zip(entries, grads):
            if g is None:
                continue
            contrib = np.sum(_per_channel(v.numpy() * g.numpy(), axis), axis=0)
            for root, c in zip(graph.roots(ids), contrib):
                batch[int(root)] = batch.get(int(root), 0.0) + float(c)
        for root, c in batch.items():
            scores[root] = scores.get(root, 0.0) + c * c
    return scores


# -- rebuilding ----------------------------------------------------------------------------------


def _custom_objects(model: keras.Model) -> dict[str, type]:
    objects: dict[str, type] = {}
    for layer in model.submodules:
        if isinstance(layer, keras.layers.Layer):
            objects[type(layer).__name__] = type(layer)
    return objects


def _sliced_weights(
    layer: keras.layers.Layer, kind: str, in_keep: np.ndarray, out_keep: np.ndarray
) -> list[np.ndarray]:
    weights = layer.get_weights()
    for k, axis, side in channel_axes(layer, kind):
        if side == "in":
            index = in_keep
        elif side == "in*m":
            index = expand(in_keep, int(layer.depth_multiplier))
        elif side == "out":
            index = out_keep
        else:  # chan: a channel-wise layer's weights follow its input channels
            index = in_keep
        weights[k] = np.take(weights[k], index, axis=axis)
    return weights


def rebuild(model: keras.Model, graph: ChannelGraph, removed: set[int]) -> keras.Model:
    """A new model like ``model`` without the coupled channels ``removed`` (root ids), weights copied."""

    def keep(ids: np.ndarray) -> np.ndarray:
        return np.array([i for i, r in enumerate(graph.roots(ids)) if int(r) not in removed], dtype=np.int64)

    config = copy.deepcopy(model.get_config())
    layer_configs = {entry["config"]["name"]: entry["config"] for entry in config["layers"]}
    for entry in config["layers"]:
        entry.pop("build_config", None)  # it holds the old input shapes; the new layers build from their inputs
    plan: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, lc in graph.layers.items():
        in_keep, out_keep = keep(lc.in_ids), keep(lc.out_ids)
        plan[name] = (in_keep, out_keep)
        cfg = layer_configs.get(name)
        if cfg is None:
            continue
        if lc.kind in ("producer", "separable"):
            cfg["units" if "units" in cfg else "filters"] = len(out_keep)
        elif lc.kind == "reshape":
            cfg["target_shape"] = [*list(cfg["target_shape"])[:-1], len(out_keep)]
    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    new = cls.from_config(config, custom_objects=_custom_objects(model))
    for layer in model.layers:
        found = graph.layers.get(layer.name)
        target = new.get_layer(layer.name)
        if found is not None and found.kind in ("producer", "separable", "channelwise"):
            target.set_weights(_sliced_weights(layer, found.kind, *plan[layer.name]))
        else:
            target.set_weights(layer.get_weights())
    return new


def _trace(model: Any, strict: bool, what: str = "model") -> ChannelGraph:
    check_graph_model(model, what, needs=_NEEDS)
    graph = ChannelGraph(model)
    if graph.unknown:
        listed = names(graph.unknown)
        if strict:
            raise ModelError(
                f"{what} '{model.name}' has layers whose channels tfedge cannot trace: {listed}; "
                "replace them with supported layers, or pass strict=False to keep their channels"
            )
        warnings.warn(
            f"prune_channels keeps the channels around {len(graph.unknown)} layer(s) it cannot trace: "
            f"{listed} (strict=True refuses them)",
            ChannelPruningWarning,
            stacklevel=3,
        )
    return graph


def prune_channels(
    model: keras.Model,
    ratio: float | Mapping[str, float] = 0.5,
    importance: str = "l2",
    round_to: int = 1,
    data: Any = None,
    strict: bool = False,
) -> keras.Model:
    """A new, smaller plain Keras model: the least important channels of ``model`` removed, kept weights copied.

    ``ratio``: the fraction of channels to remove from every group of coupled channels (a float in
    [0, 1)), or ``{layer_name: ratio}`` for some layers only (coupled layers take the smallest ratio
    given). ``importance``: ``"l2"``, ``"l1"``, ``"bn_gamma"`` or ``"taylor"`` (needs ``data``: ``x``
    or ``(x, y)``; without labels the model's own top-1 stands in). ``round_to``: kept channel counts
    are rounded up to a multiple of it. Coupled channels (Add, Concatenate, Flatten -> Dense, depthwise
    layers ...) are removed together; model inputs and outputs keep their shapes; layers the graph
    cannot trace keep their channels (one warning, or :class:`~tfedge.errors.ModelError` with
    ``strict=True``). ``model`` is not modified; the new model is not compiled.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(6, name="hidden"),
    ...                           keras.layers.Dense(2, name="out")])
    >>> prune_channels(model, {"hidden": 0.5}).get_layer("hidden").units
    3
    >>> prune_channels(model, 1.0)
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: ratio must be in [0, 1), got 1.0: the fraction of channels to remove, e.g. 0.5
    """
    check_graph_model(model, needs=_NEEDS)
    importance = check_choice(importance, "importance", IMPORTANCES, hint="e.g. 'l2'")
    round_to = check_int(round_to, "round_to", minimum=1, hint="e.g. 8 to keep SIMD-friendly channel counts")
    strict = check_bool(strict, "strict")
    if importance == "taylor" and data is None:
        raise InputError("importance='taylor' needs data: pass data=x_train or data=(x_train, y_train)")
    graph = _trace(model, strict)
    ratios = _check_ratios(graph, ratio)
    if not any(ratios.values()):
        return rebuild(model, graph, set())
    scores = channel_importance(model, graph, importance, data)
    return rebuild(model, graph, _removal(graph, ratios, scores, round_to))


# -- gradual pruning during fit ------------------------------------------------------------------


class ChannelPruningCallback(keras.callbacks.Callback):
    """Rank channels during ``fit`` and remove the least important at its end (or step by step).

    At each epoch end the channel importance (``importance``, normalized within each group) is added
    up. With ``prune_at`` (epoch numbers, counted from 1), the ratio is reached in steps: after each of
    those epochs the next share of the channels is zeroed (their filters, the next layers' inputs
    from them) and held at zero, so the model learns to do without them. At the end of training
    :attr:`pruned_model` holds the smaller model (the removal is exact for channels held at zero).
    Fitting a :class:`tfedge.Distiller`, the student is pruned.

    >>> import numpy as np
    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(8, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> model.compile("adam", "mse")
    >>> callback = ChannelPruningCallback(ratio=0.5)
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=2, verbose=0, callbacks=[callback])
    >>> callback.pruned_model.layers[0].units
    4
    """

    def __init__(
        self,
        ratio: float | Mapping[str, float] = 0.5,
        importance: str = "l2",
        *,
        prune_at: Sequence[int] | None = None,
        round_to: int = 1,
        data: Any = None,
        strict: bool = False,
        verbose: int = 0,
    ):
        super().__init__()
        self.importance = check_choice(importance, "importance", IMPORTANCES, hint="e.g. 'l2'")
        self.round_to = check_int(round_to, "round_to", minimum=1)
        self.strict = check_bool(strict, "strict")
        if self.importance == "taylor" and data is None:
            raise InputError("importance='taylor' needs data: pass data=x_train or data=(x_train, y_train)")
        if not isinstance(ratio, Mapping):
            check_fraction(ratio, "ratio", high_open=True, hint="the fraction of channels to remove, e.g. 0.5")
        steps = [] if prune_at is None else list(prune_at)
        for e in steps:
            check_int(e, "prune_at epoch", minimum=1, hint="epoch numbers counted from 1, e.g. prune_at=[2, 4]")
        if steps != sorted(set(steps)):
            raise InputError(f"prune_at must list increasing epoch numbers, got {prune_at!r}: e.g. [2, 4]")
        self.ratio = ratio
        self.prune_at = tuple(int(e) for e in steps)
        self.data = data
        self.verbose = int(verbose)
        self.pruned_model: keras.Model | None = None
        self.removed: set[int] = set()
        self._graph: Any = None  # ChannelGraph of the model being trained, set in on_train_begin
        self._target: Any = None
        self._scores: dict[int, float] = {}
        self._masks: list[tuple[Any, tf.Tensor]] = []

    def _model(self) -> keras.Model:
        return self.model.student if isinstance(self.model, Distiller) else self.model

    def on_train_begin(self, logs=None):
        target = self._model()
        if target is not self._target:  # a resumed fit on the same model keeps its ranking
            self._target = target
            self._graph = _trace(target, self.strict)
            self._ratios = _check_ratios(self._graph, self.ratio)
            # a ratio that would empty a layer fails now, not after training
            _removal(self._graph, self._ratios, {}, self.round_to)
            self._scores, self.removed, self._masks = {}, set(), []

    def _accumulate(self) -> None:
        graph = self._graph
        scores = channel_importance(self._target, graph, self.importance, self.data)
        for group in graph.groups:
            top = max((scores.get(r, 0.0) for r in group.channels), default=0.0) or 1.0
            for r in group.channels:
                self._scores[r] = self._scores.get(r, 0.0) + scores.get(r, 0.0) / top

    def _mask(self, removed: set[int]) -> None:
        """Zero the removed channels' weights (and the next layers' inputs from them) from now on."""
        self.removed = removed
        self._masks = []
        for name, lc in self._graph.layers.items():
            if lc.kind not in ("producer", "separable", "channelwise"):
                continue
            layer = self._target.get_layer(name)
            for k, axis, side in channel_axes(layer, lc.kind):
                ids = lc.out_ids if side == "out" else lc.in_ids
                dead = np.array([int(r) in removed for r in self._graph.roots(ids)])
                if side == "in*m":
                    dead = np.repeat(dead, int(layer.depth_multiplier))
                if not dead.any():
                    continue
                var = layer.weights[k]
                shape = [1] * len(var.shape)
                shape[axis] = len(dead)
                self._masks.append((var, tf.constant((~dead).reshape(shape), dtype=var.dtype)))
        self._apply_masks()

    def _apply_masks(self) -> None:
        for var, mask in self._masks:
            var.assign(var * mask)

    def on_train_batch_end(self, batch, logs=None):
        if self._masks:
            self._apply_masks()

    def on_epoch_end(self, epoch, logs=None):
        self._accumulate()
        done = epoch + 1
        if done in self.prune_at:
            share = (self.prune_at.index(done) + 1) / len(self.prune_at)
            ratios = {k: r * share for k, r in self._ratios.items()}
            self._mask(_removal(self._graph, ratios, self._scores, self.round_to, self.removed))
            if self.verbose:
                print(f"\nChannelPruningCallback: {len(self.removed)} coupled channels held at zero after epoch {done}")

    def on_train_end(self, logs=None):
        if not self._scores:
            self._accumulate()
        removed = _removal(self._graph, self._ratios, self._scores, self.round_to, self.removed)
        self._mask(removed)
        self.pruned_model = rebuild(self._target, self._graph, removed)


# -- report --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerChannelRow:
    """One layer before and after: output channels, parameters, and int8 weight bytes (estimated as one
    byte per weight and four per bias, BatchNormalization folded into the layer before it)."""

    name: str
    type: str
    channels_before: int | None
    channels_after: int | None
    params_before: int
    params_after: int
    int8_bytes_before: int
    int8_bytes_after: int


@dataclasses.dataclass(frozen=True)
class ChannelReport:
    """What :func:`channel_report` measured: per-layer rows, and for the whole model the parameters,
    the size of the full-int8 ``.tflite`` and the smallest TFLite Micro arena (``None`` if not measured)."""

    layers: tuple[LayerChannelRow, ...]
    params_before: int
    params_after: int
    int8_bytes_before: int | None
    int8_bytes_after: int | None
    arena_before: int | None
    arena_after: int | None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        out = dataclasses.asdict(self)
        out["layers"] = [dataclasses.asdict(row) for row in self.layers]
        out["notes"] = list(self.notes)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_table(self) -> str:
        """Per-layer table and whole-model totals, as plain text."""

        def pair(a: Any, b: Any) -> str:
            return "-" if a is None else f"{a:,} -> {b:,}"

        def ratio(a: int | None, b: int | None) -> str:
            return "-" if not a or b is None else f"{b / a:.2f}x"

        rows = [
            [
                r.name,
                r.type,
                pair(r.channels_before, r.channels_after),
                pair(r.params_before, r.params_after),
                pair(r.int8_bytes_before, r.int8_bytes_after),
            ]
            for r in self.layers
        ]
        rows.append(["total", "", "", pair(self.params_before, self.params_after), ""])
        table = format_table(rows, ["layer", "type", "channels", "params", "int8 weight bytes"])
        totals = format_table(
            [
                ["params", pair(self.params_before, self.params_after), ratio(self.params_before, self.params_after)],
                [
                    "int8 .tflite bytes",
                    pair(self.int8_bytes_before, self.int8_bytes_after),
                    ratio(self.int8_bytes_before, self.int8_bytes_after),
                ],
                [
                    "TFLite Micro arena",
                    pair(self.arena_before, self.arena_after),
                    ratio(self.arena_before, self.arena_after),
                ],
            ],
            ["model", "before -> after", "after/before"],
        )
        return "\n\n".join([table, totals, *self.notes])


def _int8_weight_bytes(layer: keras.layers.Layer) -> int:
    if type(layer).__name__ == "BatchNormalization":
        return 0
    total = 0
    for w in layer.weights:
        n = int(np.prod(w.shape))
        total += 4 * n if len(w.shape) == 1 else n
    return total


def _int8_figures(model: keras.Model, data: Any, arena: bool, notes: list[str]) -> tuple[int | None, int | None]:
    if data is None:
        shapes = [tuple(1 if d is None else d for d in t.shape) for t in model.inputs]
        rng = np.random.default_rng(0)
        data = [rng.uniform(0.0, 1.0, (64, *s[1:])).astype(np.float32) for s in shapes]
        data = data[0] if len(data) == 1 else data
    tfl = convert(model, representative_data=data, quantization="int8")
    if not arena:
        return tfl.size, None
    try:
        return tfl.size, TFLiteMicro(tfl.content).measure_arena()
    except ModelError as exc:  # several inputs or outputs: the TFLite Micro runner takes one of each
        notes.append(f"{model.name}: arena not measured ({exc})")
        return tfl.size, None


def channel_report(
    before: keras.Model, after: keras.Model, data: Any = None, *, arena: bool = True, int8: bool = True
) -> ChannelReport:
    """Compare a model with its channel-pruned copy: per-layer channels, parameters and int8 weight bytes,
    plus the measured full-int8 ``.tflite`` size and TFLite Micro arena of each.

    ``data`` calibrates the int8 conversion (uniform noise in [0, 1) if ``None``: sizes and arenas do
    not depend on it). ``int8=False`` skips conversion, ``arena=False`` the TFLite Micro measure.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(8, name="hidden"),
    ...                           keras.layers.Dense(2, name="out")])
    >>> report = channel_report(model, prune_channels(model, 0.5), int8=False)
    >>> report.layers[0].channels_before, report.layers[0].channels_after, report.params_after
    (8, 4, 30)
    """
    for m, what in ((before, "before"), (after, "after")):
        check_graph_model(m, what, needs=_NEEDS)
    rows = []
    for layer in before.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            other = after.get_layer(layer.name)
        except ValueError:
            raise InputError(
                f"layer '{layer.name}' of '{before.name}' is not in '{after.name}': pass a model "
                "and its prune_channels copy"
            ) from None

        def channels(lay: keras.layers.Layer) -> int | None:
            shape = lay.output_shape
            return int(shape[-1]) if isinstance(shape, tuple) and shape and shape[-1] is not None else None

        rows.append(
            LayerChannelRow(
                layer.name,
                type(layer).__name__,
                channels(layer),
                channels(other),
                layer.count_params(),
                other.count_params(),
                _int8_weight_bytes(layer),
                _int8_weight_bytes(other),
            )
        )
    notes: list[str] = []
    if int8:
        bytes_before, arena_before = _int8_figures(before, data, arena, notes)
        bytes_after, arena_after = _int8_figures(after, data, arena, notes)
    else:
        bytes_before = bytes_after = arena_before = arena_after = None
    return ChannelReport(
        tuple(rows),
        before.count_params(),
        after.count_params(),
        bytes_before,
        bytes_after,
        arena_before,
        arena_after,
        tuple(notes),
    )


__all__ = [
    "IMPORTANCES",
    "ChannelPruningCallback",
    "ChannelPruningWarning",
    "ChannelReport",
    "LayerChannelRow",
    "channel_importance",
    "channel_report",
    "prune_channels",
    "rebuild",
]

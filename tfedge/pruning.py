"""Magnitude pruning you can trust: TF-MOT wrappers with a schedule sized to the run, a callback that
checks the sparsity reached, ``strip`` and a sparsity report.

The pruning schedule is derived from the training length (``epochs`` x ``steps_per_epoch``, given
here or learnt by :class:`PruningCallback` at the start of ``fit``), so the target is reached by
``end`` (a fraction of training) however short the run: TF-MOT's default ``frequency=100`` would
leave a run of fewer than ~100 steps at zero sparsity without a word.

>>> import numpy as np
>>> import tfedge
>>> from tfedge import keras
>>> model = keras.Sequential([keras.layers.Input((16,)), keras.layers.Dense(8, name="dense")])
>>> pruned = tfedge.prune(model, 0.75, epochs=1, steps_per_epoch=2)
>>> pruned.compile("adam", "mse")
>>> x, y = np.ones((64, 16), "float32"), np.zeros((64, 8), "float32")
>>> _ = pruned.fit(x, y, batch_size=32, epochs=1, callbacks=[tfedge.PruningCallback()], verbose=0)
>>> tfedge.sparsity_report(tfedge.strip(pruned))["layers"]["dense"]["sparsity"]
0.75
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from tfedge._keras import keras, tf

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow.core.framework import summary_pb2
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

# TF-MOT keeps its wrapper class (what prune_low_magnitude returns) out of its public namespace.
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from tfedge.checks import check_bool, check_choice, check_fraction, check_int
from tfedge.errors import CheckFailed, InputError, ModelError, first_line
from tfedge.graph import check_graph_model, is_layer_wrapper, walk_layers
from tfedge.tables import format_table

#: Tolerance of the end-of-training check: a layer below ``target - TOLERANCE`` is reported.
TOLERANCE = 0.01
#: The schedule aims at about this many mask updates between its begin and end steps.
MASK_UPDATES = 20
_SCHEDULES = ("polynomial", "constant")
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


class PruningWarning(UserWarning):
    """A pruned model did not reach its target sparsity (an error with ``PruningCallback(strict=True)``)."""


# --------------------------------------------------------------------------------------------------
# scope and argument checks


@contextlib.contextmanager
def prune_scope() -> Iterator[None]:
    """Scope in which pruned models deserialize: TF-MOT's pruning wrapper (which Keras does not know).

    tfedge's own classes (:class:`AdaptiveSchedule`, :class:`PrunableDepthwiseConv2D`) are registered
    with Keras when this module is imported. :func:`tfedge.load_model` enters this scope for you.
    """
    with tfmot.sparsity.keras.prune_scope():
        yield


def _check_count(name: str, value: Any) -> int | None:
    """A training length: a positive integer, or None for "learn it from fit"."""
    return None if value is None else check_int(value, name, minimum=1, hint="or None to take it from fit")


def _check_run_fractions(begin: Any, end: Any) -> tuple[float, float]:
    begin = check_fraction(begin, "begin", high_open=True)
    end = check_fraction(end, "end", low_open=True)
    if begin > end:
        raise InputError(f"begin must not be after end, got begin={begin} and end={end}")
    return begin, end


# --------------------------------------------------------------------------------------------------
# schedule


@keras.utils.register_keras_serializable(package="tfedge")
class AdaptiveSchedule(tfmot.sparsity.keras.PruningSchedule):
    """A TF-MOT pruning schedule whose step numbers are derived from the training length.

    ``kind="polynomial"`` ramps sparsity from 0 to ``target_sparsity`` between ``begin`` and ``end``
    (fractions of training) along TF-MOT's cubic curve; ``kind="constant"`` prunes to the target
    at ``begin``. The steps live in ``tf.Variable`` s, read when the schedule runs inside the
    training graph, so :meth:`configure` can set them after the model was built (at the start of
    ``fit``) and a model saved before its first ``fit`` keeps ``begin_step = -1`` (unset).

    >>> s = AdaptiveSchedule(0.8, epochs=2, steps_per_epoch=10)
    >>> s.begin_step, s.end_step, s.frequency
    (1, 14, 1)
    >>> [round(float(s(step)[1]), 3) for step in (1, 14, 20)]
    [0.0, 0.8, 0.8]
    """

    def __init__(
        self,
        target_sparsity: float,
        kind: str = "polynomial",
        begin: float = 0.0,
        end: float = 0.7,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        begin_step: int = -1,
        end_step: int = -1,
        frequency: int = 1,
        power: int = 3,
        m_by_n: Sequence[int] | None = None,
    ):
        self.kind = check_choice(kind, "schedule", _SCHEDULES)
        self.target_sparsity = check_fraction(target_sparsity, "target_sparsity", low_open=True, high_open=True)
        self.begin, self.end = _check_run_fractions(begin, end)
        self.epochs = _check_count("epochs", epochs)
        self.steps_per_epoch = _check_count("steps_per_epoch", steps_per_epoch)
        self.power = int(power)
        self.m_by_n = tuple(m_by_n) if m_by_n else None
        with tf.init_scope():  # plain eager variables even if built inside a tf.function
            self._steps = tf.Variable(
                [begin_step, end_step, frequency], dtype=tf.int64, trainable=False, name="tfedge_pruning_schedule"
            )
        if begin_step < 0 and epochs and steps_per_epoch:
            self.configure(epochs * steps_per_epoch)

    # step numbers, as Python ints
    @property
    def begin_step(self) -> int:
        return int(keras.backend.get_value(self._steps)[0])

    @property
    def end_step(self) -> int:
        return int(keras.backend.get_value(self._steps)[1])

    @property
    def frequency(self) -> int:
        return int(keras.backend.get_value(self._steps)[2])

    @property
    def configured(self) -> bool:
        return self.begin_step >= 1

    def configure(self, total_steps: int, start_step: int = 0) -> None:
        """Fit the schedule to a run of ``total_steps`` training steps after ``start_step``."""
        total = int(total_steps)
        if total < 1:
            raise InputError(f"a pruning run needs at least 1 training step, got {total}")
        eps = 1e-9  # 0.7 * 10 is 7.000000000000001 in floating point: do not round that up to 8
        begin_step = start_step + 1 + min(total - 1, int(math.floor(self.begin * total + eps)))
        end_step = min(start_step + total, max(begin_step, start_step + int(math.ceil(self.end * total - eps))))
        frequency = max(1, min(100, (end_step - begin_step) // MASK_UPDATES))
        self._steps.assign([begin_step, end_step, frequency])

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        steps = self._steps.read_value()
        begin, end, frequency = steps[0], steps[1], steps[2]
        in_range = tf.logical_and(tf.logical_and(begin >= 1, step >= begin), step <= end)
        turn = tf.logical_or(tf.equal(tf.math.floormod(step - begin, frequency), 0), tf.equal(step, end))
        should_prune = tf.logical_and(in_range, turn)
        target = tf.constant(self.target_sparsity, tf.float32)
        if self.kind == "constant":
            return should_prune, target
        span = tf.cast(tf.maximum(end - begin, 1), tf.float32)
        progress = tf.clip_by_value(tf.cast(step - begin, tf.float32) / span, 0.0, 1.0)
        progress = tf.where(end <= begin, 1.0, progress)
        return should_prune, target * (1.0 - tf.pow(1.0 - progress, float(self.power)))

    def get_config(self) -> dict:
        begin_step, end_step, frequency = (int(v) for v in keras.backend.get_value(self._steps))
        config = {
            "target_sparsity": self.target_sparsity,
            "kind": self.kind,
            "begin": self.begin,
            "end": self.end,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "begin_step": begin_step,
            "end_step": end_step,
            "frequency": frequency,
            "power": self.power,
            "m_by_n": list(self.m_by_n) if self.m_by_n else None,
        }
        # TF-MOT's wrapper stores {"class_name", "config"} and resolves class_name through the
        # Keras registry on load, so class_name is the registered name.
        name = keras.utils.get_registered_name(type(self))
        return {"class_name": name, "registered_name": name, "config": config}


# --------------------------------------------------------------------------------------------------
# DepthwiseConv2D, which TF-MOT's registry lists with no prunable weights


@keras.utils.register_keras_serializable(package="tfedge")
class PrunableDepthwiseConv2D(keras.layers.DepthwiseConv2D, tfmot.sparsity.keras.PrunableLayer):
    """A ``DepthwiseConv2D`` whose ``depthwise_kernel`` TF-MOT prunes (never its bias).

    TF-MOT 0.8.1's ``PruneRegistry`` gives ``DepthwiseConv2D`` no prunable weights, so its wrapper
    would leave it dense. :func:`prune` puts this subclass (same config, same weights) in its place
    through TF-MOT's documented extension point, ``PrunableLayer.get_prunable_weights``, and
    :func:`strip` turns it back into a plain ``keras.layers.DepthwiseConv2D``.
    """

    def get_prunable_weights(self) -> list:
        return [self.depthwise_kernel]


#: Built-in layers TF-MOT's registry does not prune, with the weights tfedge prunes in them and the
#: prunable subclass :func:`prune` substitutes; :func:`strip` maps the subclass back.
_EXTRA_PRUNABLE = {keras.layers.DepthwiseConv2D: (("depthwise_kernel",), PrunableDepthwiseConv2D)}
_PLAIN_CLASS = {sub: plain for plain, (_, sub) in _EXTRA_PRUNABLE.items()}


def _plain_class(layer: keras.layers.Layer) -> type:
    """The Keras class ``layer`` stands for: ``DepthwiseConv2D`` for tfedge's prunable subclass."""
    return _PLAIN_CLASS.get(type(layer), type(layer))


# --------------------------------------------------------------------------------------------------
# finding layers


def pruned_layers(model: keras.Model) -> list[tuple[str, Any]]:
    """Every TF-MOT ``PruneLowMagnitude`` wrapper in ``model`` with its name, nested models included.

    Works for models that hold a pruned model as an attribute (a distillation model's ``student``).
    """
    seen: set[int] = set()
    found = []
    for name, layer in walk_layers(model):
        if isinstance(layer, PruneLowMagnitude) and id(layer) not in seen:
            seen.add(id(layer))
            found.append((name, layer))
    return found


def _registry_weights(layer: keras.layers.Layer, extra: Sequence = ()) -> list:
    """The weights TF-MOT would prune in ``layer`` (kernels; never biases or BatchNorm), without changing it.

    ``extra``: more variables to look the weights up in (a QAT wrapper holds its layer's kernel).
    """
    if isinstance(layer, PruneLowMagnitude):
        return [w for w, _, _ in layer.pruning_vars]
    if is_layer_wrapper(layer):
        return _registry_weights(layer.layer, extra=layer.weights)
    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    registry = prune_registry.PruneRegistry
    names = (
        _EXTRA_PRUNABLE[type(layer)][0]
        if type(layer) in _EXTRA_PRUNABLE
        else registry._LAYERS_WEIGHTS_MAP.get(type(layer))
    )
    if names is not None:
        return [w for w in (_variable(layer, name, extra) for name in names) if w is not None]
    if type(layer) in registry._RNN_LAYERS and registry.supports(layer):
        weights = []
        for cell in registry._get_rnn_cells(layer):
            if hasattr(cell, "get_prunable_weights"):
                weights += list(cell.get_prunable_weights())
            else:
                weights += [getattr(cell, n) for n in registry._RNN_CELLS_WEIGHTS_MAP[type(cell)]]
        return weights
    return []


def _variable(layer: keras.layers.Layer, path: str, extra: Sequence = ()) -> Any:
    """The variable at attribute ``path`` ("kernel", "_query_dense.kernel") of ``layer``, or None.

    TF-MOT's QAT wrapper replaces ``kernel`` by its fake-quantized tensor and keeps the variable
    itself, so fall back to a weight of that name in the layer or in ``extra``.
    """
    owner, _, attr = path.rpartition(".")
    obj = layer
    for part in owner.split(".") if owner else []:
        obj = getattr(obj, part, None)
    value = getattr(obj, attr, None) if obj is not None else None
    if isinstance(value, tf.Variable) or hasattr(value, "assign"):
        return value
    for weight in [*getattr(obj, "weights", []), *extra]:
        if weight.name.split("/")[-1].split(":")[0] == attr:
            return weight
    return None


def _is_prunable(layer: keras.layers.Layer, m_by_n: tuple | None) -> bool:
    weights = _registry_weights(layer)
    if not weights:
        return False
    if m_by_n and (_plain_class(layer) in _EXTRA_PRUNABLE or any(len(w.shape) not in (2, 4) for w in weights)):
        return False  # TF-MOT's m-by-n masks exist for Dense and Conv2D-like kernels only (not depthwise)
    return prune_registry.PruneRegistry.supports(layer) or hasattr(layer, "get_prunable_weights")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, type)):
        return [value]
    return list(value)


def _matches(entry: Any, layer: keras.layers.Layer) -> bool:
    if isinstance(entry, str):
        return entry == layer.name or entry == type(layer).__name__
    if isinstance(entry, type):
        return isinstance(layer, entry)
    raise InputError(f"layers= and skip= take layer names or layer classes, got {entry!r} ({type(entry).__name__})")


def _select(model: keras.Model, layers: Any, skip: Any, m_by_n: tuple | None) -> set[int]:
    """ids of the layers to wrap, with clear errors for names that match nothing."""
    all_layers = [layer for _, layer in walk_layers(model)]
    names = ", ".join(layer.name for layer in all_layers)
    prunable = [layer for layer in all_layers if _is_prunable(layer, m_by_n)]
    kinds = (
        "Conv1D/2D/3D, Dense, DepthwiseConv2D, SeparableConv pointwise kernels, Embedding, RNN and attention kernels"
    )
    if not prunable:
        raise ModelError(
            f"model '{model.name}' has no layer TF-MOT can prune (layers: {names}); prunable layers "
            f"are {kinds}{' with 2-D or 4-D kernels for m_by_n' if m_by_n else ''}"
        )
    prunable_names = ", ".join(layer.name for layer in prunable)
    chosen = prunable
    if layers is not None:
        chosen = []
        for entry in _as_list(layers):
            matched = [layer for layer in all_layers if _matches(entry, layer)]
            label = entry if isinstance(entry, str) else entry.__name__
            if not matched:
                raise InputError(f"layers= names '{label}', which is not in the model; layers: {names}")
            ok = [layer for layer in matched if layer in prunable]
            if not ok:
                what = type(matched[0]).__name__
                why = (
                    "which TF-MOT cannot prune m-by-n (Dense and Conv2D-like kernels only, not depthwise)"
                    if m_by_n and _registry_weights(matched[0])
                    else "which has no weights TF-MOT can prune"
                )
                raise InputError(f"layers= names '{label}' ({what}), {why}; prunable layers: {prunable_names}")
            chosen += [layer for layer in ok if layer not in chosen]
    for entry in _as_list(skip):
        matched = [layer for layer in all_layers if _matches(entry, layer)]
        if not matched:
            label = entry if isinstance(entry, str) else entry.__name__
            raise InputError(f"skip= names '{label}', which is not in the model; layers: {names}")
        chosen = [layer for layer in chosen if layer not in matched]
    if not chosen:
        raise InputError(f"layers= / skip= leave nothing to prune; prunable layers: {prunable_names}")
    return {id(layer) for layer in chosen}


# --------------------------------------------------------------------------------------------------
# prune / strip


def _check_m_by_n(m_by_n: Any, target: float) -> tuple[int, int] | None:
    if m_by_n is None:
        return None
    try:
        m, n = m_by_n
    except (TypeError, ValueError):
        raise InputError(f"m_by_n must be a pair (m, n) such as (2, 4), got {m_by_n!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (m, n)) or not 0 < m < n:
        raise InputError(f"m_by_n must be two integers 0 < m < n such as (2, 4), got {m_by_n!r}")
    if abs(target - m / n) > 1e-6:
        raise InputError(
            f"with m_by_n=({m}, {n}) every block of {n} weights holds {m} zeros, a sparsity of {m / n:g}: "
            f"pass target_sparsity={m / n:g}, got {target}"
        )
    return int(m), int(n)


def prune(
    model: keras.Model,
    target_sparsity: float,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    begin: float = 0.0,
    end: float = 0.7,
    schedule: str = "polynomial",
    layers: Any = None,
    skip: Any = None,
    m_by_n: Sequence[int] | None = None,
) -> keras.Model:
    """Return a copy of ``model`` with its prunable layers wrapped by TF-MOT's ``prune_low_magnitude``.

    Sparsity ramps (``schedule="polynomial"``) or jumps (``"constant"``) to ``target_sparsity``
    between ``begin`` and ``end``, fractions of the run of ``epochs`` x ``steps_per_epoch`` steps;
    what is not given here :class:`PruningCallback` takes from the first ``fit`` (pass ``epochs``
    when training is split over several ``fit`` calls). ``layers`` / ``skip`` select
    layers by name or class; biases and BatchNorm are never pruned. A ``DepthwiseConv2D``, which
    TF-MOT's registry leaves dense, has its depthwise kernel pruned through a
    :class:`PrunableDepthwiseConv2D` put in its place (:func:`strip` gives the plain layer back).
    ``m_by_n=(2, 4)`` prunes 2 of every 4 weights along the input channels (TF-MOT's structured
    sparsity, Dense and Conv2D-like kernels only; ``target_sparsity`` must then be 0.5). The input
    model is left untouched. Train with :class:`PruningCallback`.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, name="d")])
    >>> [type(layer).__name__ for layer in prune(model, 0.5).layers]
    ['PruneLowMagnitude']
    >>> prune(model, 1.5)
    Traceback (most recent call last):
    tfedge.errors.InputError: target_sparsity must be in (0, 1), got 1.5
    """
    check_graph_model(model)
    target = check_fraction(target_sparsity, "target_sparsity", low_open=True, high_open=True)
    epochs = _check_count("epochs", epochs)
    steps_per_epoch = _check_count("steps_per_epoch", steps_per_epoch)
    begin, end = _check_run_fractions(begin, end)
    check_choice(schedule, "schedule", _SCHEDULES)
    pair = _check_m_by_n(m_by_n, target)
    wrapped = pruned_layers(model)
    if wrapped:
        raise InputError(
            f"model '{model.name}' is already pruned (wrapped layers: {', '.join(n for n, _ in wrapped)}): "
            "train it as it is, or tfedge.strip() it first"
        )
    chosen = _select(model, layers, skip, pair)
    sched = AdaptiveSchedule(
        target, kind=schedule, begin=begin, end=end, epochs=epochs, steps_per_epoch=steps_per_epoch, m_by_n=pair
    )
    copies: list[tuple[keras.layers.Layer, list]] = []

    def clone(layer):
        if isinstance(layer, keras.Model):
            check_graph_model(layer, f"nested model '{layer.name}'")
            return keras.models.clone_model(layer, clone_function=clone)
        prunable = _EXTRA_PRUNABLE.get(type(layer), (None, None))[1] if id(layer) in chosen else None
        new = _copy_layer(layer, prunable)
        copies.append((new, layer.get_weights()))
        if id(layer) in chosen:
            return tfmot.sparsity.keras.prune_low_magnitude(new, pruning_schedule=sched, sparsity_m_by_n=pair)
        return new

    out = keras.models.clone_model(model, clone_function=clone)
    for new, weights in copies:
        new.set_weights(weights)
    return out


def _copy_layer(layer: keras.layers.Layer, cls: Any = None) -> keras.layers.Layer:
    """A new, unbuilt layer like ``layer``, of class ``cls`` if given (weights are copied once the model is rebuilt)."""
    try:
        return (cls or layer.__class__).from_config(layer.get_config())
    except Exception as exc:  # custom layers fail in many ways
        first = first_line(exc, 200)
        raise ModelError(
            f"layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt from its config ({first}): "
            "give the class a get_config() that returns its constructor arguments"
        ) from None


def _masked_weights(wrapper) -> list[np.ndarray]:
    """The wrapped layer's weights with every pruned weight multiplied by its mask."""
    masks = {id(w): m for w, m, _ in wrapper.pruning_vars}
    values = keras.backend.batch_get_value(list(wrapper.layer.weights))
    out = []
    for var, value in zip(wrapper.layer.weights, values):
        if id(var) in masks:
            value = value * keras.backend.get_value(masks[id(var)]).astype(value.dtype)
        out.append(value)
    return out


def strip(model: keras.Model) -> keras.Model:
    """Return a copy of ``model`` without pruning wrappers: plain Keras layers, pruned weights exactly zero.

    Predicts what the wrapped model predicts. A model without wrappers comes back as a plain copy.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, name="d")])
    >>> [layer.name for layer in strip(prune(model, 0.5)).layers]
    ['d']
    """
    if isinstance(model, keras.Model) and not (isinstance(model, keras.Sequential) or model._is_graph_network):
        inside = pruned_layers(model)
        if inside:
            raise ModelError(
                f"model is a subclassed model ({type(model).__name__}) holding pruned layers "
                f"({', '.join(n for n, _ in inside)}): strip the pruned model inside it, "
                "e.g. tfedge.strip(distiller.student)"
            )
    check_graph_model(model)
    copies: list[tuple[keras.layers.Layer, list]] = []

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        if isinstance(layer, PruneLowMagnitude):
            new = _copy_layer(layer.layer, _plain_class(layer.layer))
            copies.append((new, _masked_weights(layer)))
            return new
        new = _copy_layer(layer, _plain_class(layer))
        copies.append((new, layer.get_weights()))
        return new

    out = keras.models.clone_model(model, clone_function=clone)
    for new, weights in copies:
        new.set_weights(weights)
    return out


# --------------------------------------------------------------------------------------------------
# report


class SparsityReport(dict):
    """A plain dict ``{"overall", "zeros", "weights", "layers": {name: {...}}}`` that prints as a table."""

    def format_table(self) -> str:
        rows: list[list[Any]] = [
            [
                name,
                info["class"],
                f"{info['weights']:,}",
                f"{info['zeros']:,}",
                f"{info['sparsity']:.3f}",
                None if info["target"] is None else f"{info['target']:.2f}",
            ]
            for name, info in self["layers"].items()
        ]
        rows.append(["overall", "", f"{self['weights']:,}", f"{self['zeros']:,}", f"{self['overall']:.3f}", None])
        return format_table(rows, ["layer", "class", "weights", "zeros", "sparsity", "target"])

    def __str__(self) -> str:
        return self.format_table()


def _schedule_target(wrapper) -> float | None:
    sched = wrapper.pruning_schedule
    for attr in ("target_sparsity", "final_sparsity"):
        if hasattr(sched, attr):
            return float(getattr(sched, attr))
    return None


def sparsity_report(model: keras.Model) -> SparsityReport:
    """Per-layer and overall weight sparsity (fraction of zeros) of the prunable kernels of ``model``.

    Works on wrapped (then ``target`` is the layer's schedule target; masks applied) and stripped
    models, and on models nesting other models.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2, name="d")])
    >>> model.set_weights([np.array([[0, 1], [0, 2], [3, 0], [0, 0]], "float32"), np.ones(2, "float32")])
    >>> report = sparsity_report(model)
    >>> report["overall"], report["layers"]["d"]["zeros"]
    (0.625, 5)
    >>> print(report)
    layer    class  weights  zeros  sparsity  target
    -------  -----  -------  -----  --------  ------
    d        Dense        8      5     0.625       -
    overall               8      5     0.625       -
    """
    ensure = getattr(model, "layers", None)
    if ensure is None:
        raise InputError(f"sparsity_report needs a Keras model, got {type(model).__name__}")
    layers: dict[str, dict] = {}
    total = zeros = 0
    for name, layer in walk_layers(model):
        if isinstance(layer, PruneLowMagnitude):
            if not layer.built:
                continue
            masks = {id(w): m for w, m, _ in layer.pruning_vars}
            weights = [
                keras.backend.get_value(w) * keras.backend.get_value(masks[id(w)]) for w, _, _ in layer.pruning_vars
            ]
            cls, target = _plain_class(layer.layer).__name__, _schedule_target(layer)
        else:
            if not layer.built:
                continue
            weights = [keras.backend.get_value(w) for w in _registry_weights(layer)]
            cls, target = _plain_class(layer.layer if is_layer_wrapper(layer) else layer).__name__, None
        if not weights:
            continue
        size = int(sum(w.size for w in weights))
        nz = int(sum(w.size - np.count_nonzero(w) for w in weights))
        layers[name] = {
            "class": cls,
            "weights": size,
            "zeros": nz,
            "sparsity": nz / size if size else 0.0,
            "target": target,
        }
        total += size
        zeros += nz
    return SparsityReport(overall=zeros / total if total else 0.0, zeros=zeros, weights=total, layers=layers)


# --------------------------------------------------------------------------------------------------
# callback


def _m_by_n_ok(kernel: np.ndarray, m: int, n: int) -> bool:
    """True if every block of ``n`` consecutive input-channel weights holds at least ``m`` zeros.

    Blocks run along the input channels as in TF-MOT / TFLite (Dense ``[in, out]``, Conv2D
    ``[h, w, in, out]``); a short last block counts its missing weights as zeros.
    """
    if kernel.ndim == 2:
        rows = kernel.T
    elif kernel.ndim == 4:
        rows = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    else:
        return False
    pad = (-rows.shape[1]) % n
    rows = np.pad(rows, ((0, 0), (0, pad)))
    blocks = rows.reshape(rows.shape[0], -1, n)
    return bool(np.all(np.sum(blocks == 0, axis=-1) >= m))


class PruningCallback(keras.callbacks.Callback):
    """The callback to train a pruned model with (it replaces TF-MOT's ``UpdatePruningStep``).

    At the start of ``fit`` it sets the step counters of a fresh model to 0 (a reloaded model
    continues from its saved step) and sizes any schedule that is not sized yet to this run
    (``params["steps"]``). Every epoch it re-applies the masks, adds the overall sparsity of the
    pruned layers to the logs as ``sparsity`` (History, progress bar) and, with ``log_dir``,
    writes per-layer TensorBoard scalars ``sparsity/<layer>``. At the end it checks every
    pruned layer: one below its target by more than 0.01 gives a :class:`PruningWarning` naming
    the layers and the fix, or :class:`~tfedge.errors.CheckFailed` with ``strict=True``.
    Pruned models nested in another model (a distillation model's ``student``) are found too.

    >>> PruningCallback(log_dir=3)
    Traceback (most recent call last):
    tfedge.errors.InputError: log_dir must be a folder path or None, got 3
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, strict: bool = False):
        super().__init__()
        if log_dir is not None and (not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir)):
            raise InputError(f"log_dir must be a folder path or None, got {log_dir!r}")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.strict = check_bool(strict, "strict")
        self._layers: list[tuple[str, Any]] = []
        self._writer: Any = None  # a tf.summary writer while training with log_dir
        self._sized = False

    # -- helpers
    def _steps(self) -> list[int]:
        return [int(v) for v in keras.backend.batch_get_value([w.pruning_step for _, w in self._layers])]

    def _adaptive_schedules(self) -> list[AdaptiveSchedule]:
        seen, out = set(), []
        for _, wrapper in self._layers:
            sched = wrapper.pruning_schedule
            if isinstance(sched, AdaptiveSchedule) and id(sched) not in seen:
                seen.add(id(sched))
                out.append(sched)
        return out

    def _sparsities(self) -> dict[str, tuple[int, int]]:
        """``{name: (zeros, size)}`` of the pruned weights of every wrapper that prunes something."""
        counts = {}
        for name, wrapper in self._layers:
            if not wrapper.pruning_vars:  # TF-MOT also wraps pooling, Flatten, ...: nothing to prune
                continue
            size = nz = 0
            for weight, _, _ in wrapper.pruning_vars:
                size += int(np.prod(weight.shape))
                nz += int(tf.math.count_nonzero(weight))
            counts[name] = (size - nz, size)
        return counts

    # -- Keras hooks
    def on_train_begin(self, logs=None):
        self._layers = pruned_layers(self.model)
        if not self._layers:
            raise InputError(
                f"PruningCallback: model '{self.model.name}' has no pruning wrappers: "
                "wrap it with tfedge.prune(model, target_sparsity) before fit"
            )
        for name, wrapper in self._layers:
            if isinstance(wrapper.pruning_schedule, str):  # loaded before tfedge registered its schedule
                raise InputError(
                    f"pruned layer '{name}' lost its pruning schedule when loaded (got the name "
                    f"'{wrapper.pruning_schedule}'): load the model with tfedge.load_model"
                )
        for _, wrapper in self._layers:  # TF-MOT does not save sparsity_m_by_n: restore it from the schedule
            m_by_n = getattr(wrapper.pruning_schedule, "m_by_n", None)
            if m_by_n and not wrapper.sparsity_m_by_n:
                wrapper.sparsity_m_by_n = tuple(m_by_n)
                wrapper.pruning_obj._sparsity_m_by_n = tuple(m_by_n)
        fresh = [w.pruning_step for (_, w), step in zip(self._layers, self._steps()) if step < 0]
        if fresh:
            keras.backend.batch_set_value([(v, 0) for v in fresh])
        self._sized = False
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        if self._sized:
            return
        self._sized = True
        pending = [s for s in self._adaptive_schedules() if not s.configured]
        if not pending:
            return
        steps = self.params.get("steps")
        start = max(self._steps())
        for sched in pending:
            per_epoch = sched.steps_per_epoch or steps
            if not per_epoch:
                raise InputError(
                    "PruningCallback cannot size the pruning schedule: fit does not know its steps per epoch "
                    "(a dataset of unknown length); pass steps_per_epoch= to fit or to tfedge.prune"
                )
            n_epochs = sched.epochs or max(1, int(self.params.get("epochs") or 1) - int(epoch))
            sched.configure(n_epochs * int(per_epoch), start_step=start)

    def on_epoch_end(self, epoch, logs=None):
        for _, wrapper in self._layers:  # re-mask: weights saved after this epoch hold the zeros
            wrapper.pruning_obj.weight_mask_op()
        counts = self._sparsities()
        zeros = sum(z for z, _ in counts.values())
        total = sum(s for _, s in counts.values())
        overall = zeros / total if total else 0.0
        if logs is not None:
            logs["sparsity"] = overall
        if self._writer is not None:
            values = {name: z / s if s else 0.0 for name, (z, s) in counts.items()}
            self._write_scalars({**values, "overall": overall}, step=max(self._steps()))

    def _write_scalars(self, values: dict[str, float], step: int) -> None:
        # tf.summary.write with the scalars plugin tag: what tf.summary.scalar writes, without
        # needing the tensorboard package installed.
        with self._writer.as_default():
            for name, value in values.items():
                tf.summary.write(
                    f"sparsity/{name}", tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA
                )
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._layers:
            return
        problem = self._check()
        if problem:
            if self.strict:
                raise CheckFailed(problem)
            warnings.warn(problem, PruningWarning, stacklevel=2)

    def _check(self) -> str | None:
        """A one-line message when a pruned layer is below its target, else None."""
        counts = self._sparsities()
        below, targets, broken = [], set(), []
        for name, wrapper in self._layers:
            if wrapper.sparsity_m_by_n:
                m, n = wrapper.sparsity_m_by_n
                for weight, _, _ in wrapper.pruning_vars:
                    if not _m_by_n_ok(keras.backend.get_value(weight), m, n):
                        broken.append(name)
                continue
            target = _schedule_target(wrapper)
            if name not in counts:
                continue
            zeros, size = counts[name]
            reached = zeros / size if size else 0.0
            if target is not None and reached < target - TOLERANCE:
                below.append((name, reached, target))
                targets.add(round(target, 4))
        if broken:
            return (
                f"pruned layers break their m-by-n pattern: {', '.join(broken)}; train with "
                "tfedge.PruningCallback from the first step (the 2:4 masks are set at step 1)"
            )
        if not below:
            return None
        if len(targets) == 1:
            head = f"pruned layers below target {below[0][2]:.2f}: " + ", ".join(f"{n} ({r:.2f})" for n, r, _ in below)
        else:
            head = "pruned layers below target: " + ", ".join(f"{n} ({r:.2f} < {t:.2f})" for n, r, t in below)
        step = max(self._steps())
        ends = [s.end_step for s in self._adaptive_schedules() if s.configured]
        ends += [
            int(w.pruning_schedule.end_step)
            for _, w in self._layers
            if not isinstance(w.pruning_schedule, AdaptiveSchedule) and getattr(w.pruning_schedule, "end_step", -1) >= 0
        ]
        if ends and step < max(ends):
            return (
                f"{head}; training stopped at pruning step {step}, before the schedule ends at step "
                f"{max(ends)}: keep training (a saved model resumes from its step) or lower end= in tfedge.prune"
            )
        raw = [w.pruning_schedule for _, w in self._layers if not isinstance(w.pruning_schedule, AdaptiveSchedule)]
        if raw:
            sched = raw[0]
            return (
                f"{head}; the TF-MOT {type(sched).__name__} schedule prunes every "
                f"{getattr(sched, 'frequency', '?')} steps from step {getattr(sched, 'begin_step', '?')} and "
                f"training stopped at step {step}: use tfedge.prune, which sizes the schedule to the run"
            )
        return f"{head}; train longer or lower end= in tfedge.prune"


__all__ = [
    "prune",
    "strip",
    "sparsity_report",
    "PruningCallback",
    "AdaptiveSchedule",
    "SparsityReport",
    "PruningWarning",
    "pruned_layers",
    "prune_scope",
    "TOLERANCE",
]

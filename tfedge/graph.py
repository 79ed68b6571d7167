"""Small helpers over a Keras model's layer graph, shared by the feature modules (pruning,
quantization, distillation) and conversion: is it a model TF-MOT can rebuild, and one walk over its
layers.

>>> from tfedge import keras
>>> inner = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, name="d")], name="cnn")
>>> model = keras.Sequential([keras.layers.Input((4,)), inner, keras.layers.Dense(2, name="head")])
>>> [name for name, _ in walk_layers(model)]
['cnn/d', 'head']
>>> check_graph_model(model)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tfedge._keras import ensure_keras2_model, keras

from tfedge.errors import ModelError


def check_graph_model(
    model: Any,
    what: str = "model",
    *,
    needs: str = "TF-MOT can only wrap Sequential or Functional models",
    built: bool = True,
) -> None:
    """Raise :class:`ModelError` unless ``model`` is a Keras 2 Sequential or Functional model (and, with
    ``built``, has a known input shape). ``needs`` says why, in the message."""
    ensure_keras2_model(model, what)
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ModelError(
            f"{what} is a subclassed model ({type(model).__name__}); {needs}: rebuild it with "
            "keras.Sequential([...]) or keras.Model(inputs, outputs)"
        )
    if built and (not model.built or not model.inputs):
        raise ModelError(
            f"{what} '{model.name}' is not built (its input shape is unknown): start it with "
            "keras.layers.Input(shape) or call model.build((None, *shape)) first"
        )


def classes_of(model: Any, what: str = "model") -> int:
    """The number of classes of a one-output classifier whose output is ``(batch, classes)``; else a
    :class:`ModelError` naming what the model outputs and what works instead.

    >>> classes_of(keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(4)]))
    4
    """
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) != 1:
        names = ", ".join(f"'{name}'" for name in getattr(model, "output_names", []) or [])
        raise ModelError(
            f"{what} has {len(outputs)} outputs ({names}); compressing needs a classifier with one "
            "output: build a model of the output to compress (keras.Model(inputs, model.get_layer(NAME).output)); "
            "tfedge convert and validate (--output) take several outputs"
        )
    shape = tuple(outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None or shape[-1] < 2:
        raise ModelError(
            f"{what} outputs shape {shape}; compressing needs a classifier whose output is "
            "(batch, classes), classes >= 2: end it with a Dense(classes) (after a Flatten or global pooling)"
        )
    return int(shape[-1])


def is_layer_wrapper(layer: Any) -> bool:
    """True for wrappers whose ``.layer`` is the layer that computes (TF-MOT pruning / QAT wrappers).

    ``Bidirectional`` is a ``Wrapper`` too, but computes with two layers: it counts as a layer.
    """
    return isinstance(layer, keras.layers.Wrapper) and not isinstance(layer, keras.layers.Bidirectional)


def unwrap(layer: Any) -> Any:
    """The layer inside any number of ``keras.layers.Wrapper`` s (TF-MOT pruning / quantization wrappers)."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def walk_layers(
    model: Any, *, models: bool = False, _prefix: str = "", _prefixes: dict | None = None
) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, layer)`` for every layer of ``model`` but its inputs, recursing into nested models.

    Layers of nested models are named ``"<model>/<layer>"``; two different nested models with the
    same name (a teacher and a student both called "cnn") get ``"cnn"`` and ``"cnn_2"``. A wrapper
    (:func:`is_layer_wrapper`) is yielded itself, named after the layer it wraps. With ``models=True``
    the nested models are yielded too, before their layers.
    """
    prefixes = {} if _prefixes is None else _prefixes
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            base = f"{_prefix}{layer.name}"
            key, k = base, 1
            while prefixes.get(key, id(layer)) != id(layer):
                k += 1
                key = f"{base}_{k}"
            prefixes[key] = id(layer)
            if models:
                yield key, layer
            yield from walk_layers(layer, models=models, _prefix=f"{key}/", _prefixes=prefixes)
        elif is_layer_wrapper(layer):
            yield f"{_prefix}{layer.layer.name}", layer
        elif not isinstance(layer, keras.layers.InputLayer):
            yield f"{_prefix}{layer.name}", layer


__all__ = ["check_graph_model", "is_layer_wrapper", "unwrap", "walk_layers"]

"""tfedge.graph: the model checks and the one layer walk the feature modules share (fast, no training)."""

from __future__ import annotations

import pytest

import tfedge
from tfedge import keras
from tfedge.errors import InputError, ModelError
from tfedge.graph import check_graph_model, is_layer_wrapper, unwrap, walk_layers


def _dense(name: str, units: int = 3) -> keras.Model:
    return keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(units, name="d")], name=name)


def test_walk_names_nested_layers():
    inp = keras.Input((4,))
    out = keras.layers.Dense(2, name="head")(_dense("cnn")(inp))
    model = keras.Model(inp, out)
    assert [name for name, _ in walk_layers(model)] == ["cnn/d", "head"]
    assert [name for name, _ in walk_layers(model, models=True)] == ["cnn", "cnn/d", "head"]


def test_walk_tells_two_models_with_one_name_apart():
    class Pair(keras.Model):  # what a Distiller holds: a teacher and a student that may share a name
        def __init__(self):
            super().__init__()
            self.first, self.second = _dense("cnn"), _dense("cnn")

    assert [name for name, _ in walk_layers(Pair())] == ["cnn/d", "cnn_2/d"]


def test_walk_yields_wrappers_named_after_their_layer_and_unwrap_reaches_it():
    pruned = tfedge.prune(_dense("m"), 0.5)
    ((name, wrapper),) = walk_layers(pruned)
    assert name == "d" and is_layer_wrapper(wrapper)
    assert isinstance(unwrap(wrapper), keras.layers.Dense) and unwrap(unwrap(wrapper)) is unwrap(wrapper)
    bidirectional = keras.layers.Bidirectional(keras.layers.LSTM(2))
    assert not is_layer_wrapper(bidirectional)  # computes with two layers: a layer, not a wrapper


def test_check_graph_model_names_what_is_wrong():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelError, match=r"student is a subclassed model \(Net\); the Distiller needs"):
        check_graph_model(Net(), "student", needs="the Distiller needs a graph")
    with pytest.raises(ModelError, match="is not built"):
        check_graph_model(keras.Sequential([keras.layers.Dense(2)]))
    check_graph_model(keras.Sequential([keras.layers.Dense(2)]), built=False)
    with pytest.raises(InputError, match="must be a Keras model built with `from tfedge import keras`, got int"):
        check_graph_model(3)
    check_graph_model(_dense("m"))

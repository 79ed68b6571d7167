"""tfedge._keras: Keras 2 everywhere, and a clear answer when Keras 3 got there first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import tensorflow_model_optimization as tfmot

import tfedge
from tfedge import keras
from tfedge.errors import InputError


def test_tfedge_keras_is_keras2():
    assert keras.__version__.startswith("2.")
    assert keras.__name__ == "tf_keras"


def test_model_built_with_tfedge_keras_is_wrapped_by_tfmot():
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    assert [type(layer).__name__ for layer in pruned.layers] == ["PruneLowMagnitude"]
    qat = tfmot.quantization.keras.quantize_model(model)
    assert any("quant" in layer.name for layer in qat.layers)


def test_keras3_imported_first_still_works_and_keras3_models_are_refused():
    code = textwrap.dedent(
        """
        import tensorflow as tf
        k3 = tf.keras.Sequential([tf.keras.layers.Input((4,)), tf.keras.layers.Dense(2)])
        import importlib
        keras3 = importlib.import_module("keras")
        assert keras3.__version__.startswith("3."), keras3.__version__
        import tfedge
        from tfedge import keras
        import tensorflow_model_optimization as tfmot
        m = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2)])
        tfmot.sparsity.keras.prune_low_magnitude(m)
        from tfedge._keras import TF_KERAS_IS_KERAS3, ensure_keras2_model
        assert TF_KERAS_IS_KERAS3
        try:
            ensure_keras2_model(k3)
        except tfedge.InputError as e:
            print("REFUSED:", e)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=240,
        env={**__import__("os").environ, "TF_USE_LEGACY_KERAS": "0"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED: model is a Keras 3 model" in out.stdout
    assert "from tfedge import keras" in out.stdout


def test_non_model_refused():
    from tfedge._keras import ensure_keras2_model

    with pytest.raises(InputError, match="must be a Keras model"):
        ensure_keras2_model(object())


def test_lazy_public_api_lists_contract_names():
    for name in (
        "prune",
        "strip",
        "sparsity_report",
        "PruningCallback",
        "quantize_aware",
        "Distiller",
        "convert",
        "inspect",
        "validate",
        "export_c_array",
        "load_model",
        "datasets",
        "keras",
    ):
        assert name in tfedge.__all__
    assert tfedge.__version__ == "0.1.0"
    with pytest.raises(AttributeError):
        tfedge.no_such_name  # noqa: B018

"""The one place tfedge chooses its Keras: Keras 2 (``tf_keras``), which TF-MOT supports.

Every other module does ``from tfedge._keras import keras`` (users: ``from tfedge import keras``).
"""

from __future__ import annotations

import os
import sys

from tfedge.errors import InputError

os.environ["TF_USE_LEGACY_KERAS"] = "1"


def _tf_keras_is_keras3() -> bool:
    """True when TensorFlow was imported first and ``tf.keras`` already resolved to Keras 3."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return False
    resolved = tf.__dict__.get("keras")  # a lazy loader until first use, then the module it chose
    if resolved is None or type(resolved).__name__ == "KerasLazyLoader":
        return False  # not resolved yet: it will honour TF_USE_LEGACY_KERAS=1 set above
    return not resolved.__name__.startswith("tf_keras")


# After the environment variable above (pyproject.toml lets this file break ruff's E402 for it).
import tensorflow as tf
import tf_keras as keras

#: True when ``tf.keras`` in this process is Keras 3 (TensorFlow and ``tf.keras`` were used before
#: ``import tfedge``). tfedge itself never uses ``tf.keras``, so it still works; models built with
#: ``tf.keras`` are Keras 3 objects and are refused by :func:`ensure_keras2_model`.
TF_KERAS_IS_KERAS3 = _tf_keras_is_keras3()


def ensure_keras2_model(model: object, what: str = "model") -> None:
    """Raise :class:`tfedge.errors.InputError` unless ``model`` is a Keras 2 (``tf_keras``) model."""
    if isinstance(model, keras.Model):
        return
    module = type(model).__module__
    if module.startswith("keras"):
        raise InputError(
            f"{what} is a Keras 3 model ({type(model).__name__} from '{module}'); TF-MOT and tfedge "
            "need Keras 2: port it with tfedge.from_keras3(model) (or tfedge.load_model on its .keras "
            "file), or build it with `from tfedge import keras`"
        )
    raise InputError(f"{what} must be a Keras model built with `from tfedge import keras`, got {type(model).__name__}")


__all__ = ["keras", "tf", "ensure_keras2_model", "next_layer_name", "TF_KERAS_IS_KERAS3"]


def next_layer_name(prefix: str) -> str:
    """Take the next automatic layer name Keras would give a new layer named after ``prefix`` (``conv2d``,
    ``conv2d_1``, ...), advancing its counter of this session (there is no public accessor)."""
    from tf_keras.src import backend

    return str(backend.unique_object_name(prefix, zero_based=True))

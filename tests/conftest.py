"""Shared fixtures: the digits split and one small trained CNN, each built once per test session."""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfedge._keras import tf

import numpy as np
import pytest

import tfedge
from tfedge import keras

# Two logical CPU devices, configured before TensorFlow initializes its runtime, so that
# tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) can be tested in-process on one machine.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


_KEY_BASES = itertools.count(start=1_000_000, step=1_000)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(autouse=True)
def _own_collective_keys(monkeypatch):
    """Give the MirroredStrategy of each test its own collective keys.

    Every new MirroredStrategy numbers its collective ops from the same keys, so a later strategy whose
    ops have other shapes fails with "Shape mismatch in the collective instance"
    (tensorflow/tensorflow#62790). ``_collective_key_base`` is TensorFlow's hook for tests that make
    several strategies in one process.
    """
    monkeypatch.setattr(tf.distribute.MirroredStrategy, "_collective_key_base", next(_KEY_BASES))


@pytest.fixture(scope="session")
def digits() -> tfedge.datasets.Split:
    return tfedge.datasets.digits()


def build_small_cnn(num_classes: int = 10) -> keras.Model:
    """Conv2D(8) -> MaxPool -> Flatten -> Dense(10) logits: small, prunable, quantizable."""
    return keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="small_cnn",
    )


def compile_classifier(model: keras.Model, lr: float = 3e-3) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


@pytest.fixture(scope="session")
def small_cnn(digits) -> keras.Model:
    """A trained float CNN (logits output), about 95 % on the digits test split. Do not train it further:
    clone it (keras.models.clone_model + set_weights) when a test needs to change it."""
    keras.utils.set_random_seed(0)
    model = compile_classifier(build_small_cnn())
    model.fit(digits.x_train, digits.y_train, epochs=15, batch_size=32, verbose=0)
    return model


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == y))

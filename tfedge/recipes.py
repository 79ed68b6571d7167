"""Recipes: the models, data augmentation and training settings measured for one task.

A :class:`Recipe` names a teacher builder, a student builder, an optional augmentation and the
:class:`tfedge.PipelineConfig` settings that go with them. ``tfedge demo`` runs :data:`DIGITS`;
``tfedge.PipelineConfig.for_recipe(DIGITS)`` gives its settings to a run of your own.

>>> DIGITS.settings["flash"], DIGITS.settings["sparsity"], list(DIGITS.candidates)[-1]
(3500, 0.0, 'digits_budget_c8')
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

from tfedge._keras import keras

import numpy as np

from tfedge.errors import InputError

#: Builds a model from ``(input_shape, num_classes)``.
ModelBuilder = Callable[[tuple[int, ...], int], Any]
#: Returns the training arrays with augmented copies added.
Augmentation = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A task's teacher and student builders, augmentation and pipeline settings (``PipelineConfig`` fields).

    ``quick_settings`` are applied on top of ``settings`` for a short run (tests, notebooks).
    ``candidates`` name the student builders the budget search measures and, where they fit, trains
    (none: ``student`` alone).
    """

    name: str
    teacher: ModelBuilder
    student: ModelBuilder
    augment: Augmentation | None = None
    dataset: str = ""  # how the data was made, for the run's MANIFEST.json
    candidates: Mapping[str, ModelBuilder] = dataclasses.field(default_factory=dict)  # for the budget search
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    quick_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:  # read-only views: a recipe is shared by every run
        object.__setattr__(self, "settings", types.MappingProxyType(dict(self.settings)))
        object.__setattr__(self, "quick_settings", types.MappingProxyType(dict(self.quick_settings)))
        object.__setattr__(self, "candidates", types.MappingProxyType(dict(self.candidates)))


def digits_teacher(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The teacher trained by ``tfedge demo``: a float CNN, 151,306 parameters (logits output).

    >>> digits_teacher().count_params()
    151306
    """
    return keras.Sequential(
        [
            keras.layers.Input(input_shape),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_teacher",
    )


def digits_student(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The deployed student: 3,938 parameters, every op full-int8 on TFLite Micro (about 6.9 KB).

    >>> digits_student().count_params()
    3938
    """
    return keras.Sequential(
        [
            keras.layers.Input(input_shape),
            keras.layers.Conv2D(12, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_student",
    )


def digits_budget_student(
    input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10, filters: int = 8
) -> keras.Model:
    """The demo's candidates within its 3,500-byte flash budget: one Conv2D(filters, 3), 2x2 max pooling and a Dense
    on the flattened map (1,370 parameters at 8 filters: 3,104 bytes as full int8).

    >>> digits_budget_student().count_params(), digits_budget_student(filters=10).count_params()
    (1370, 1710)
    """
    return keras.Sequential(
        [
            keras.layers.Input(input_shape),
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=f"digits_budget_c{filters}",
    )


def small_student(input_shape: tuple[int, ...], num_classes: int, width: int = 8) -> keras.Model:
    """A small built-in student for any input rank: the budget search's smallest candidates (logits output).

    Images ``(H, W, C)``: Conv2D(width) -> 2x2 max pooling (the conv strides 2 on images larger than 16x16), more
    Conv2D(2 width) + pooling while the map is larger than 8x8, then Flatten -> Dense. Sequences ``(T, C)``: the
    same with Conv1D while longer than 16 steps. Flat ``(F,)``: Dense(2 width) -> Dense.

    >>> small_student((8, 8, 1), 10, width=8).count_params(), small_student((25, 12), 9, width=4).count_params()
    (1370, 589)
    >>> small_student((28, 28, 1), 10, width=8).output_shape, small_student((20,), 3, width=4).output_shape
    ((None, 10), (None, 3))
    """
    layers = keras.layers
    rank = len(input_shape)
    body: list[Any] = []
    if rank in (2, 3):
        conv, pool, limit = (
            (layers.Conv2D, layers.MaxPooling2D, 8) if rank == 3 else (layers.Conv1D, layers.MaxPooling1D, 16)
        )
        size = min(input_shape[:-1])
        stride = 2 if (rank == 3 and size > 16) or (rank == 2 and size > 64) else 1
        body.append(conv(width, 3, strides=stride, padding="same", activation="relu"))
        size = -(-size // stride)
        filters = width
        while True:
            if size >= 4:
                body.append(pool(2))
                size //= 2
            if size <= limit:
                break
            filters *= 2
            body.append(conv(filters, 3, padding="same", activation="relu"))
        body.append(layers.Flatten())
    elif rank == 1:
        body = [layers.Dense(2 * width, activation="relu")]
    else:
        raise InputError(
            f"built-in students take inputs of rank 1, 2 or 3 (after the batch), got shape "
            f"{tuple(input_shape)}: give your own --student"
        )
    return keras.Sequential(
        [layers.Input(input_shape), *body, layers.Dense(num_classes, name="logits")], name=f"student_w{width}"
    )


def shifted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images plus their four one-pixel shifts (up, down, left, right; zero fill): 5x the data.

    >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
    >>> xs, ys = shifted(x, np.array([7]))
    >>> xs.shape, ys.tolist()
    ((5, 2, 2, 1), [7, 7, 7, 7, 7])
    """
    copies = [x]
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        moved = np.roll(x, step, axis=axis)
        index: list[Any] = [slice(None)] * x.ndim
        index[axis] = 0 if step == 1 else -1
        moved[tuple(index)] = 0.0
        copies.append(moved)
    return np.concatenate(copies), np.tile(y, len(copies))


def copy_with_softmax_layer(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (same weights) whose softmax, if fused into the last Dense, is a separate layer.

    This is the default student of ``tfedge compress``. Pruning and QAT wrap the last Dense; with its
    softmax fused inside, a Distiller cannot reach the logits. The copy computes the same function with
    ``Dense(activation=None)`` then ``Softmax()``.

    >>> m = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    >>> [type(layer).__name__ for layer in copy_with_softmax_layer(m).layers]
    ['InputLayer', 'Dense', 'Softmax']
    """
    last = model.layers[-1]
    fused = isinstance(last, keras.layers.Dense) and keras.activations.serialize(last.activation) == "softmax"

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if fused and layer is last:
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    if not fused:
        return copy
    outputs = keras.layers.Softmax(name=f"{last.name}_softmax")(copy.outputs[0])
    return keras.Model(copy.inputs, outputs, name=model.name)


#: The measured digits recipe (``tfedge demo``): a 151k-parameter teacher trained on the one-pixel shifts too, and
#: a budget search within 3,500 B of flash and 4 KiB of arena over the 3,938-parameter student of the first demo
#: (6,960 B: measured, does not fit) and single-conv students of 10, 9 and 8 filters, each distilled (30 epochs)
#: then quantization-aware trained (still distilled). No magnitude sparsity: it buys no bytes in a plain int8 file.
DIGITS = Recipe(
    name="digits",
    teacher=digits_teacher,
    student=digits_student,
    augment=shifted,
    dataset="digits (sklearn load_digits / 16, test_size=0.25, random_state=0, stratified)",
    candidates={
        "digits_student": digits_student,
        "digits_budget_c10": functools.partial(digits_budget_student, filters=10),
        "digits_budget_c9": functools.partial(digits_budget_student, filters=9),
        "digits_budget_c8": digits_budget_student,
    },
    settings=dict(
        name="digits",
        sparsity=0.0,
        teacher_epochs=15,
        distill_epochs=30,
        prune_epochs=8,
        qat_epochs=5,
        learning_rate=3e-3,
        qat_learning_rate=5e-4,
        augment=True,
        calibration_samples=500,
        flash=3500,
        ram=4096,
        # the floor guards against collapse: a model at the target (97.9 % against the teacher's 100 %) clears
        # it with its drop bound on 450 samples (about 0.7 pt above its measured drop)
        max_accuracy_drop=3.0,
        target={"bytes": 3500, "accuracy": 0.979, "arena_bytes": 4096},
    ),
    quick_settings=dict(
        teacher_epochs=4,
        distill_epochs=5,
        prune_epochs=3,
        qat_epochs=2,
        calibration_samples=200,
        max_accuracy_drop=15.0,
    ),
)


__all__ = [
    "DIGITS",
    "Recipe",
    "copy_with_softmax_layer",
    "digits_budget_student",
    "digits_student",
    "digits_teacher",
    "shifted",
    "small_student",
]

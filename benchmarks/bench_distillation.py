"""Distillation benchmark: the same small student trained from scratch vs distilled from a teacher.

On the digits convention (``tfedge.datasets.digits()``), the teacher is the yardstick CNN
(``benchmarks/yardstick.py``), trained once. For each seed, the student
(Flatten -> Dense(16, relu) -> Dense(10) logits) starts from the same initial weights twice: once
trained on the labels alone (cross-entropy), once with :class:`tfedge.Distiller`; same optimizer,
epochs, batch size and batch order. Prints one JSON object with the Keras test accuracy of every
run, their mean and standard deviation, and the per-seed gain of distillation.

Run: ``python benchmarks/bench_distillation.py [--seeds 0 1 2] [--epochs 30] [--hidden 16]``
(about two minutes on two CPU cores).

>>> student = build_student(16)
>>> student.count_params()
1210
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfedge._keras import keras

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yardstick import build_yardstick

EPOCHS = 30
TEACHER_EPOCHS = 30
BATCH_SIZE = 64
LEARNING_RATE = 1e-2
TEMPERATURE = 4.0
ALPHA = 0.1


def build_student(hidden: int = 16, num_classes: int = 10) -> keras.Model:
    """The small student: Flatten -> Dense(hidden, relu) -> Dense(num_classes) logits."""
    return keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=f"mlp{hidden}",
    )


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def train_teacher(data, epochs: int = TEACHER_EPOCHS, seed: int = 0) -> keras.Model:
    """The yardstick CNN trained on the labels (Adam 1e-3, batch 32, as in ``yardstick.py``)."""
    keras.utils.set_random_seed(seed)
    teacher = build_yardstick(data.num_classes)
    teacher.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    return teacher


def run_seed(
    data, teacher: keras.Model, seed: int, *, hidden: int, epochs: int, temperature: float, alpha: float
) -> dict:
    """Train the student twice from the same initial weights; return both test accuracies."""
    from tfedge.distillation import Distiller

    keras.utils.set_random_seed(seed)
    initial = build_student(hidden, data.num_classes).get_weights()

    scratch = build_student(hidden, data.num_classes)
    scratch.set_weights(initial)
    scratch.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    keras.utils.set_random_seed(seed)  # same shuffling for both runs
    scratch.fit(data.x_train, data.y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)

    student = build_student(hidden, data.num_classes)
    student.set_weights(initial)
    distiller = Distiller(student, teacher, temperature=temperature, alpha=alpha)
    distiller.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    keras.utils.set_random_seed(seed)
    distiller.fit(data.x_train, data.y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)

    return {
        "seed": seed,
        "scratch": _accuracy(scratch, data.x_test, data.y_test),
        "distilled": _accuracy(distiller.student, data.x_test, data.y_test),
    }


def _summary(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def run(
    seeds=(0, 1, 2),
    epochs: int = EPOCHS,
    hidden: int = 16,
    teacher_epochs: int = TEACHER_EPOCHS,
    temperature: float = TEMPERATURE,
    alpha: float = ALPHA,
) -> dict:
    """The whole benchmark; returns the JSON-able figures."""
    import tfedge.datasets

    start = time.perf_counter()
    data = tfedge.datasets.digits()
    teacher = train_teacher(data, teacher_epochs)
    runs = [
        run_seed(data, teacher, seed, hidden=hidden, epochs=epochs, temperature=temperature, alpha=alpha)
        for seed in seeds
    ]
    scratch = [r["scratch"] for r in runs]
    distilled = [r["distilled"] for r in runs]
    gains = [d - s for d, s in zip(distilled, scratch)]
    return {
        "benchmark": "distillation: same student from scratch vs distilled (Keras test accuracy)",
        "dataset": f"digits, {len(data.y_train)} train / {len(data.y_test)} test",
        "teacher": {
            "model": "yardstick CNN Conv2D(32)-Conv2D(32)-MaxPool-Dense(64)-Dense(10)",
            "parameters": int(teacher.count_params()),
            "epochs": teacher_epochs,
            "test_accuracy": _accuracy(teacher, data.x_test, data.y_test),
        },
        "student": {
            "model": f"Flatten-Dense({hidden}, relu)-Dense(10)",
            "parameters": int(build_student(hidden, data.num_classes).count_params()),
            "epochs": epochs,
            "batch_size": BATCH_SIZE,
            "optimizer": f"Adam({LEARNING_RATE})",
        },
        "distiller": {"temperature": temperature, "alpha": alpha},
        "seeds": list(seeds),
        "runs": runs,
        "scratch": _summary(scratch),
        "distilled": _summary(distilled),
        "gain": {
            "mean": round(statistics.fmean(gains), 4),
            "per_seed": [round(g, 4) for g in gains],
            "seeds_improved": sum(g > 0 for g in gains),
        },
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Same small student: trained from scratch vs distilled.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="student epochs (both runs)")
    parser.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS)
    parser.add_argument("--hidden", type=int, default=16, help="units in the student's hidden layer")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE)
    parser.add_argument("--alpha", type=float, default=ALPHA)
    args = parser.parse_args(argv)
    for name in ("epochs", "teacher_epochs", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    from tfedge.errors import InputError

    try:
        result = run(tuple(args.seeds), args.epochs, args.hidden, args.teacher_epochs, args.temperature, args.alpha)
    except InputError as exc:  # bad --temperature / --alpha: the Distiller's own message
        parser.error(str(exc))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

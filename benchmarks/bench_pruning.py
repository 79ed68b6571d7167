"""Wall time of a pruning ``fit``: tfedge.prune + PruningCallback against the same fit in raw TF-MOT.

Both arms prune the same trained digits CNN to the same target with the same schedule steps
(tfedge's schedule, sized from the run, against TF-MOT's ``PolynomialDecay`` given the same
begin / end / frequency) and train it with the same data, batch size and optimizer. The arms
alternate and the medians are compared, so both see the same machine load. Prints JSON:

    python benchmarks/bench_pruning.py [--repeats 7] [--epochs 3]

``ratio`` is median(tfedge) / median(raw TF-MOT) of the wall times, tracing of the train step
included (what a user waits for); the target is <= 1.05. ``cpu_ratio`` compares process CPU
time, which a busy machine disturbs less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow_model_optimization as tfmot

import tfedge
from tfedge import keras
from tfedge.pruning import AdaptiveSchedule, sparsity_report, strip

BATCH = 64
TARGET = 0.8


def _cnn() -> keras.Model:
    layers = keras.layers
    return keras.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Conv2D(16, 3, activation="relu", name="conv1"),
            layers.Conv2D(32, 3, activation="relu", name="conv2"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, name="logits"),
        ],
        name="bench_cnn",
    )


def _compile(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _timed_fit(model: keras.Model, data, epochs: int, callback) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one ``fit``, tracing of the train step included."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=[callback])
    return time.perf_counter() - wall, time.process_time() - cpu


def _fit_tfedge(dense: keras.Model, data, epochs: int) -> tuple[float, float, float]:
    pruned = _compile(tfedge.prune(dense, TARGET))
    wall, cpu = _timed_fit(pruned, data, epochs, tfedge.PruningCallback())
    return wall, cpu, sparsity_report(strip(pruned))["overall"]


def _fit_tfmot(dense: keras.Model, data, epochs: int) -> tuple[float, float, float]:
    steps = -(-len(data.x_train) // BATCH) * epochs
    same = AdaptiveSchedule(TARGET)  # the step numbers tfedge derives for this run
    same.configure(steps)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=TARGET,
        begin_step=same.begin_step,
        end_step=same.end_step,
        frequency=same.frequency,
    )
    model = keras.models.clone_model(dense)
    model.set_weights(dense.get_weights())
    pruned = _compile(tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule))
    wall, cpu = _timed_fit(pruned, data, epochs, tfmot.sparsity.keras.UpdatePruningStep())
    return wall, cpu, sparsity_report(tfmot.sparsity.keras.strip_pruning(pruned))["overall"]


def run(repeats: int = 7, epochs: int = 3) -> dict:
    """Time both arms ``repeats`` times each, alternating; return the JSON-ready result."""
    data = tfedge.datasets.digits()
    keras.utils.set_random_seed(0)
    dense = _compile(_cnn())
    dense.fit(data.x_train, data.y_train, epochs=1, batch_size=BATCH, verbose=0)  # a start, not a result
    if repeats > 1:
        _fit_tfmot(dense, data, 1)  # warm up TensorFlow (first-use costs) outside the measurement
    times = {"tfedge": [], "tfmot": []}
    cpu = {"tfedge": [], "tfmot": []}
    sparsity = {}
    for i in range(repeats):
        arms = (("tfedge", _fit_tfedge), ("tfmot", _fit_tfmot))
        for name, fn in arms if i % 2 == 0 else arms[::-1]:
            keras.utils.set_random_seed(i)
            wall, cpu_seconds, sparsity[name] = fn(dense, data, epochs)
            times[name].append(wall)
            cpu[name].append(cpu_seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "benchmark": "pruning fit wall time",
        "model": "digits CNN (Conv2D 16, Conv2D 32, Dense 10)",
        "epochs": epochs,
        "batch_size": BATCH,
        "steps": -(-len(data.x_train) // BATCH) * epochs,
        "target_sparsity": TARGET,
        "repeats": repeats,
        "tfedge_seconds": times["tfedge"],
        "tfmot_seconds": times["tfmot"],
        "tfedge_median_seconds": median["tfedge"],
        "tfmot_median_seconds": median["tfmot"],
        "ratio": median["tfedge"] / median["tfmot"],
        "ratio_target": 1.05,
        "cpu_ratio": cpu_median["tfedge"] / cpu_median["tfmot"],
        "sparsity": sparsity,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="fits per arm (default 7)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit (default 3)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1:
        parser.error("--repeats and --epochs must be at least 1")
    print(json.dumps(run(args.repeats, args.epochs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tfedge compress next to what a user would otherwise do, on two real datasets, in one run (issue 17, item 6).

For each dataset a user's own trained float model (the teacher) goes through, side by side:

- ``ptq_int8``: plain post-training full-int8 conversion of the teacher (the baseline);
- ``tfmot_tutorial``: the TF-MOT pruning tutorial written by hand as its docs show: ``prune_low_magnitude`` with
  ``PolynomialDecay(0.50 -> 0.80)``, fine-tuned with ``UpdatePruningStep``, ``strip_pruning``, then full-int8
  post-training quantization with ``tf.lite.TFLiteConverter``;
- ``tfedge_sparsity_0.8``: ``tfedge.compress(..., sparsity=0.8)`` (what the issue's user ran; full mode only);
- ``tfedge_no_budget``: ``tfedge.compress(...)`` with its defaults (the smallest within 1 pt of the baseline);
- ``tfedge_budget``: ``tfedge.compress(..., flash=..., ram=...)`` (the most accurate model that fits).

Every shipped file is re-measured the same way: its bytes, its TFLite Micro arena (allocated) and its top-1
accuracy on LiteRT and TFLite Micro on the dataset's test split, which no method sees while training or choosing.
As a careful user would, the teacher is trained on 80 % of the training split and the other 20 % (stratified,
seed 0) is given to tfedge as ``val`` for its checks and its choice: the teacher never saw them (a validation set
carved from the teacher's own training data overstates the teacher and every copy of it). All methods train on the
same 80 %.

Datasets: ``digits`` (scikit-learn's 8x8 handwritten digits, the tfedge split) and ``japanese_vowels`` (UCI
Japanese Vowels: 640 utterances of 9 speakers, 12 LPC cepstrum coefficients x 25 frames; the equal-length copy
shipped inside the ``aeon`` package: ``pip install aeon`` or ``pip install -e .[bench]``; read from its files, aeon
itself is not imported).

Run: python benchmarks/bench_compress.py [--quick] [--datasets digits,japanese_vowels] — prints JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# data


def load_digits():
    import tfedge

    d = tfedge.datasets.digits()
    return d.x_train, d.y_train, d.x_test, d.y_test


def _read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A .ts file (sktime / aeon format) of equal-length multivariate series: ``(N, length, channels)``, labels."""
    rows, labels, in_data = [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
            continue
        if in_data:
            *channels, label = line.split(":")
            rows.append([[float(v) for v in channel.split(",")] for channel in channels])
            labels.append(label)
    x = np.asarray(rows, np.float32).transpose(0, 2, 1)
    return x, np.asarray(labels)


def load_japanese_vowels():
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("japanese_vowels needs the aeon package (its bundled data): pip install aeon==1.6.0")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "JapaneseVowels"
    x_train, labels_train = _read_ts(folder / "JapaneseVowels_eq_TRAIN.ts")
    x_test, labels_test = _read_ts(folder / "JapaneseVowels_eq_TEST.ts")
    classes = sorted(set(labels_train), key=int)
    y_train = np.array([classes.index(v) for v in labels_train], np.int64)
    y_test = np.array([classes.index(v) for v in labels_test], np.int64)
    mean, std = x_train.mean(axis=(0, 1)), x_train.std(axis=(0, 1)) + 1e-6  # per coefficient, from training only
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


# --------------------------------------------------------------------------------------------
# the users' teachers


def digits_teacher():
    """A user's ~20k-parameter CNN (softmax head, as users write it)."""
    from tfedge import keras

    layers = keras.layers
    return keras.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ],
        name="user_cnn",
    )


def vowels_teacher():
    """A user's 1-D CNN over 25 frames x 12 coefficients (softmax head)."""
    from tfedge import keras

    layers = keras.layers
    return keras.Sequential(
        [
            layers.Input((25, 12)),
            layers.Conv1D(32, 3, padding="same", activation="relu"),
            layers.Conv1D(32, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(9, activation="softmax"),
        ],
        name="user_cnn1d",
    )


DATASETS = {
    # name: (loader, teacher builder, teacher epochs (full, quick), flash budget)
    "digits": (load_digits, digits_teacher, (20, 10), "6KB"),
    "japanese_vowels": (load_japanese_vowels, vowels_teacher, (80, 40), "6KB"),
}


def train_teacher(build, x, y, epochs: int, seed: int):
    from tfedge import keras

    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


# --------------------------------------------------------------------------------------------
# the methods


def measure(content: bytes, x_test, y_test) -> dict:
    import tfedge

    result = tfedge.validate(content, x_test, y_test, runtimes=("litert", "tflm"), verbose=0)
    return {
        "bytes": len(content),
        "arena_bytes": result.arena_bytes,
        "accuracy": {k: round(float(v), 4) for k, v in result.accuracy.items()},
        "fully_int8": bool(tfedge.inspect(content).fully_int8),
    }


def hand_converter_int8(model, x_calibration) -> bytes:
    """Full-integer post-training quantization as the TensorFlow Lite docs write it."""
    from tfedge._keras import tf

    def representative_dataset():
        for sample in x_calibration[:200]:
            yield [sample[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def ptq_int8(teacher, x_train, y_train, x_test, y_test, **_):
    return measure(hand_converter_int8(teacher, x_train), x_test, y_test)


def tfmot_tutorial(teacher, x_train, y_train, x_test, y_test, *, quick: bool, **_):
    """The TF-MOT "Pruning in Keras" example: 50 % -> 80 % polynomial sparsity over 2 epochs of fine-tuning, with
    10 % of the training data held out as the tutorial's validation_split, then strip and post-training int8."""
    import tensorflow_model_optimization as tfmot

    from tfedge import keras

    batch_size, epochs = 128, 2
    end_step = int(np.ceil(len(x_train) * 0.9 / batch_size)) * epochs
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step
    )
    clone = keras.models.clone_model(teacher)
    clone.set_weights(teacher.get_weights())
    pruned = tfmot.sparsity.keras.prune_low_magnitude(clone, pruning_schedule=schedule)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    pruned.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_split=0.1,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    return measure(hand_converter_int8(stripped, x_train), x_test, y_test)


def tfedge_compress(teacher, x_train, y_train, x_test, y_test, *, quick: bool, name: str, val, **kwargs):
    import tfedge

    settings = dict(epochs=3, channels=(0.5,), student_widths=(8,)) if quick else {}
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as out:
        try:
            report = tfedge.pipeline.compress(
                teacher, (x_train, y_train), val=val, out_dir=out, name=name, verbose=0, **{**settings, **kwargs}
            )
        except tfedge.CheckFailed as exc:
            return {"error": str(exc).splitlines()[0]}
        content = (Path(out) / f"{name}_student_int8.tflite").read_bytes()
    search = report["search"]
    return {
        **measure(content, x_test, y_test),
        "chosen": search["chosen"],
        "validation_floor": round(search["floor"], 4),
        "candidates_trained": sum(1 for c in search["candidates"] if c.get("accuracy") is not None) - 1,
        "candidates_measured": len(search["candidates"]) - 1,
    }


def run_dataset(name: str, *, quick: bool, seed: int) -> dict:
    from tfedge.pipeline import split_validation

    loader, build, (full_epochs, quick_epochs), flash = DATASETS[name]
    x_all, y_all, x_test, y_test = loader()
    x_train, y_train, x_val, y_val = split_validation(x_all, y_all)
    started = time.perf_counter()
    teacher = train_teacher(build, x_train, y_train, quick_epochs if quick else full_epochs, seed)
    float_acc = float(np.mean(np.argmax(teacher.predict(x_test, verbose=0), -1) == y_test))
    out = {
        "train": len(x_train),
        "val": len(x_val),
        "test": len(x_test),
        "input_shape": list(x_train.shape[1:]),
        "classes": int(y_train.max()) + 1,
        "teacher": {
            "params": int(teacher.count_params()),
            "float_accuracy": round(float_acc, 4),
            "train_seconds": round(time.perf_counter() - started, 1),
        },
        "methods": {},
    }
    methods = {
        "ptq_int8": lambda: ptq_int8(teacher, x_train, y_train, x_test, y_test),
        "tfmot_tutorial": lambda: tfmot_tutorial(teacher, x_train, y_train, x_test, y_test, quick=quick),
        "tfedge_no_budget": lambda: tfedge_compress(
            teacher, x_train, y_train, x_test, y_test, quick=quick, name=teacher.name, val=(x_val, y_val)
        ),
        "tfedge_budget": lambda: tfedge_compress(
            teacher,
            x_train,
            y_train,
            x_test,
            y_test,
            quick=quick,
            name=teacher.name,
            val=(x_val, y_val),
            flash=flash,
            ram="4KiB",
        ),
    }
    if not quick:
        methods["tfedge_sparsity_0.8"] = lambda: tfedge_compress(
            teacher, x_train, y_train, x_test, y_test, quick=quick, name=teacher.name, val=(x_val, y_val), sparsity=0.8
        )
    for method, run in methods.items():
        from tfedge import keras

        keras.utils.set_random_seed(seed)
        started = time.perf_counter()
        result = run()
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        if method == "tfedge_budget":
            result["budget"] = {"flash": flash, "ram": "4KiB"}
        out["methods"][method] = result
        print(f"{name} {method}: {result}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and candidates (a few minutes)")
    parser.add_argument("--datasets", default="digits,japanese_vowels", help="comma-separated: " + ",".join(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}: use {', '.join(DATASETS)}")
    started = time.perf_counter()
    results = {"quick": args.quick, "seed": args.seed, "datasets": {}}
    for name in names:
        results["datasets"][name] = run_dataset(name, quick=args.quick, seed=args.seed)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

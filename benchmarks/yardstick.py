"""The fixed yardstick every tfedge size / accuracy figure is measured against.

A plain float32 CNN on the digits convention (``tfedge.datasets.digits()``)::

    Conv2D(32, 3, relu, same) -> Conv2D(32, 3, relu, same) -> MaxPool(2) -> Flatten
    -> Dense(64, relu) -> Dense(10) logits                       (43,050 parameters)

trained with Adam, then converted to a float32 TFLite flatbuffer (no optimizations) and
evaluated on LiteRT. Prints one JSON object: ``bytes``, ``gzip_bytes``, ``test_accuracy``
(LiteRT, 450 test samples), ``keras_test_accuracy``, ``parameters``, ``seconds`` and the
settings used. ``--out FILE`` also writes the ``.tflite`` (atomically).

Run: ``python benchmarks/yardstick.py [--seed 0] [--epochs 30] [--out yardstick.tflite]``

>>> model = build_yardstick()
>>> model.count_params()
43050
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfedge._keras import keras, tf

import numpy as np

EPOCHS = 30
BATCH_SIZE = 32
LEARNING_RATE = 1e-3


def build_yardstick(num_classes: int = 10) -> keras.Model:
    """The fixed yardstick CNN (logits output); ``padding="same"`` keeps 8x8 through both convs."""
    return keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="yardstick",
    )


def to_float32_tflite(model: keras.Model) -> bytes:
    """Convert ``model`` to a float32 TFLite flatbuffer with the converter's defaults."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return converter.convert()


def litert_accuracy(content: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a float32 TFLite model on LiteRT, one sample per invoke."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    correct = 0
    for sample, label in zip(x, y):
        interpreter.set_tensor(inp, sample[None].astype(np.float32))
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out)[0]) == label)
    return correct / len(y)


def run(seed: int = 0, epochs: int = EPOCHS, out: str | None = None) -> dict:
    """Train the yardstick, convert it to float32 TFLite and measure it; return the figures."""
    import tfedge.datasets
    from tfedge.files import atomic_write_bytes

    start = time.perf_counter()
    data = tfedge.datasets.digits()
    keras.utils.set_random_seed(seed)
    model = build_yardstick(data.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
    keras_acc = float(np.mean(np.argmax(model.predict(data.x_test, verbose=0), -1) == data.y_test))
    content = to_float32_tflite(model)
    if out:
        atomic_write_bytes(out, content)
    return {
        "model": "yardstick float32 CNN Conv2D(32)-Conv2D(32)-MaxPool-Dense(64)-Dense(10)",
        "bytes": len(content),
        "gzip_bytes": len(gzip.compress(content, compresslevel=9, mtime=0)),
        "test_accuracy": litert_accuracy(content, data.x_test, data.y_test),
        "keras_test_accuracy": keras_acc,
        "parameters": int(model.count_params()),
        "test_samples": int(len(data.y_test)),
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train, convert and measure the fixed float32 yardstick CNN.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out", default=None, help="also write the float32 .tflite here")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    print(json.dumps(run(args.seed, args.epochs, args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

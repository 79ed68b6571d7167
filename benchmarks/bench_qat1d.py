"""int8 accuracy of a 1-D CNN on digits read as sequences (8 steps x 8 channels): full QAT vs partial QAT vs PTQ.

* ``full_qat``: ``tfedge.quantize_aware(model)``; every layer is quantization-aware (tfedge's
  QuantizeConfigs cover Conv1D, its BatchNorm, MaxPooling1D); converted without calibration data.
* ``partial_qat``: tfedge before those configs (TF-MOT 0.8.1 alone): the layers TF-MOT cannot
  quantize are kept float during QAT (``skip=`` the layers tfedge's configs cover), then quantized by
  the converter from calibration data.
* ``ptq``: the float model converted with calibration data (post-training quantization);
  ``ptq_same_epochs``: the float model first trained on for as many epochs as the QAT arms (so that
  extra training is not mistaken for a QAT gain), then converted the same way.

Every arm starts from the same trained float model and QAT arms train the same epochs with the same
optimizer; accuracies are on the digits test split, run on LiteRT; ``agreement`` is the top-1
agreement of the QAT Keras model with its int8 file. Prints JSON:

    python benchmarks/bench_qat1d.py [--seeds 3] [--epochs 10] [--qat-epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import tfedge
from tfedge import keras, quantize_configs
from tfedge.runtimes import LiteRT

BATCH = 32
CALIBRATION = 500


def _cnn() -> keras.Model:
    """Keyword-spotting shape: Conv1D-BN-ReLU blocks, max pooling, global average pooling, logits."""
    layers = keras.layers
    inp = layers.Input((8, 8))
    h = inp
    for i, filters in enumerate((16, 16, 32)):
        h = layers.Conv1D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = layers.BatchNormalization(name=f"bn{i}")(h)
        h = layers.ReLU(name=f"relu{i}")(h)
        if i == 1:
            h = layers.MaxPooling1D(2, name="pool")(h)
    h = layers.GlobalAveragePooling1D(name="gap")(h)
    return keras.Model(inp, layers.Dense(10, name="logits")(h), name="kws_1d")


def _compile(model: keras.Model, lr: float) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _tfedge_covered(model: keras.Model) -> list[str]:
    """The layers only tfedge's QuantizeConfigs make quantization-aware (TF-MOT 0.8.1 leaves them float)."""
    names = {layer.name for layer in model.layers}
    lowered = quantize_configs.lowered(model, skip=set())
    covered = set(quantize_configs.quantize_configs(lowered, names, preserve_sparsity=False))
    covered |= {layer.name for layer in lowered.layers if type(layer) is not type(model.get_layer(layer.name))}
    return sorted(covered)


def _int8_accuracy(tfl, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    logits = LiteRT(tfl.content).run(x).dequantized()
    return float(np.mean(np.argmax(logits, -1) == y)), logits


def _one_seed(seed: int, data, epochs: int, qat_epochs: int) -> dict:
    x_train, x_test = data.x_train[..., 0], data.x_test[..., 0]
    keras.utils.set_random_seed(seed)
    model = _compile(_cnn(), 3e-3)
    model.fit(x_train, data.y_train, epochs=epochs, batch_size=BATCH, verbose=0)
    result = {"seed": seed, "float": float(model.evaluate(x_test, data.y_test, verbose=0)[1])}

    ptq = tfedge.convert(model, representative_data=x_train[:CALIBRATION], quantization="int8")
    result["ptq"] = _int8_accuracy(ptq, x_test, data.y_test)[0]
    keras.utils.set_random_seed(seed + 1)
    longer = keras.models.clone_model(model)
    longer.set_weights(model.get_weights())
    _compile(longer, 1e-3).fit(x_train, data.y_train, epochs=qat_epochs, batch_size=BATCH, verbose=0)
    ptq = tfedge.convert(longer, representative_data=x_train[:CALIBRATION], quantization="int8")
    result["ptq_same_epochs"] = _int8_accuracy(ptq, x_test, data.y_test)[0]

    covered = _tfedge_covered(model)
    for arm, skip in (("partial_qat", covered), ("full_qat", None)):
        keras.utils.set_random_seed(seed + 1)
        qat = _compile(tfedge.quantize_aware(model, skip=skip), 1e-3)
        qat.fit(x_train, data.y_train, epochs=qat_epochs, batch_size=BATCH, verbose=0)
        calibration = x_train[:CALIBRATION] if skip else None  # float layers need the converter's calibration
        tfl = tfedge.convert(qat, representative_data=calibration, quantization="int8")
        accuracy, logits = _int8_accuracy(tfl, x_test, data.y_test)
        keras_top1 = np.argmax(qat.predict(x_test, verbose=0), -1)
        result[arm] = accuracy
        result[f"{arm}_agreement"] = float(np.mean(keras_top1 == np.argmax(logits, -1)))
    result["float_during_partial_qat"] = covered
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="float training epochs")
    parser.add_argument("--qat-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    data = tfedge.datasets.digits()
    runs = [_one_seed(seed, data, args.epochs, args.qat_epochs) for seed in range(args.seeds)]
    arms = ("float", "ptq", "ptq_same_epochs", "partial_qat", "full_qat")
    out = {
        "model": "Conv1D-BN-ReLU x3 + MaxPooling1D + GlobalAveragePooling1D, digits as 8x8 sequences",
        "epochs": args.epochs,
        "qat_epochs": args.qat_epochs,
        "seeds": args.seeds,
        "mean_accuracy": {arm: round(statistics.mean(r[arm] for r in runs), 4) for arm in arms},
        "mean_agreement": {
            arm: round(statistics.mean(r[f"{arm}_agreement"] for r in runs), 4) for arm in ("partial_qat", "full_qat")
        },
        "runs": runs,
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

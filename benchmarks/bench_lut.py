"""Flash and arena of fewer bits per weight: plain int8 against clustering + CQAT + TFLite Micro LUT.

On the digits yardstick (``benchmarks/yardstick.py``: 43,050 parameters, about 43 KB of int8
weights), trained once, then:

* ``int8``: post-training full-int8 conversion of the float model;
* ``int8_tflm_slim``: the same with ``target="tflm"`` (TFLite Micro only: one zero point per all-zero
  per-channel tensor (weights and biases), no names; checked bit-identical to ``int8`` on TFLite Micro);
* ``clusters16_lut4``: 16 clusters (k-means++), cluster-preserving QAT, int8, LUT with 4-bit indices;
* ``clusters4_lut2``: the same with 4 clusters and 2-bit indices.

For each: flash (the ``.tflite`` bytes), the TFLite Micro arena (smallest that runs, measured in
TFLite Micro's child process) and top-1 accuracy on TFLite Micro over the 450 test digits; for the
clustered variants the int8 file before LUT compression, then LUT on every weight tensor
(``tensors="all"``: the most flash saved) and on those that pay (``tensors="auto"``: flash saved
exceeds arena added), with the tensors compressed. LUT
outputs are checked bit-identical to the uncompressed int8 file on TFLite Micro. Prints JSON:

    python benchmarks/bench_lut.py [--seed 0] [--epochs 20] [--cluster-epochs 3] [--qat-epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from yardstick import build_yardstick

import tfedge
from tfedge import keras
from tfedge.runtimes import TFLiteMicro

VARIANTS = (("clusters16_lut4", 16, 4), ("clusters4_lut2", 4, 2))


def _log(message: str) -> None:
    print(f"bench_lut: {message}", file=sys.stderr, flush=True)


def _on_tflm(tfl, data) -> dict:
    run = TFLiteMicro(tfl).run(data.x_test)
    accuracy = float(np.mean(np.argmax(run.outputs, axis=-1) == data.y_test))
    return {"flash_bytes": tfl.size, "arena_bytes": int(run.arena_bytes), "tflm_accuracy": round(accuracy, 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20, help="float training epochs")
    parser.add_argument("--cluster-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = tfedge.datasets.digits()
    keras.utils.set_random_seed(args.seed)
    model = build_yardstick()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    _log(f"training the yardstick ({model.count_params():,} parameters, {args.epochs} epochs)")
    model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=32, verbose=0)
    float_accuracy = float(model.evaluate(data.x_test, data.y_test, verbose=0)[1])

    _log("int8")
    int8 = tfedge.convert(model, representative_data=data.x_train)
    rows = {"int8": _on_tflm(int8, data)}
    _log("int8 with TFLite Micro slimming")
    slim = tfedge.convert(model, representative_data=data.x_train, target="tflm")
    rows["int8_tflm_slim"] = {
        **_on_tflm(slim, data),
        "bytes_saved": int8.size - slim.size,
        "same_tflm_outputs_as_int8": bool(
            np.array_equal(
                TFLiteMicro(slim).run(data.x_test, measure_arena=False).outputs,
                TFLiteMicro(int8).run(data.x_test, measure_arena=False).outputs,
            )
        ),
    }
    for name, clusters, bits in VARIANTS:
        _log(f"{name}: clustering, cluster-preserving QAT, int8, LUT")
        keras.utils.set_random_seed(args.seed)
        clustered = tfedge.candidates.cluster_int8(
            model, data.x_train, data.y_train, clusters=clusters, epochs=args.cluster_epochs, qat_epochs=args.qat_epochs
        )
        rows[name] = {"int8_before_lut": _on_tflm(clustered, data)}
        # every weight tensor that fits the width (TF-MOT may leave a tiny kernel unclustered)
        fitting = [t.index for t in tfedge.lut.lut_plan(clustered, bits="auto", tensors="all") if t.bits <= bits]
        for tensors in ("all", "auto"):
            try:
                chosen = fitting if tensors == "all" else "auto"
                report = tfedge.lut.lut_report(clustered, bits=bits, tensors=chosen, data=data.x_test[:100])
            except tfedge.InputError as exc:  # auto: nothing pays
                rows[name][f"lut_{tensors}"] = {"skipped": str(exc)}
                continue
            rows[name][f"lut_{tensors}"] = {
                **_on_tflm(report.model, data),
                "tensors": [
                    {
                        "tensor": t.label,
                        "shape": list(t.shape),
                        "mode": t.mode,
                        "bits": t.bits,
                        "values": t.distinct,
                        "bytes": t.bytes_before,
                    }
                    for t in report.tensors
                ],
            }
    result = {
        "model": "digits yardstick (benchmarks/yardstick.py)",
        "parameters": model.count_params(),
        "float_keras_accuracy": round(float_accuracy, 4),
        "variants": rows,
        "note": "flash = .tflite bytes; arena = smallest TFLite Micro arena that runs; accuracy on TFLite Micro, "
        "450 test digits; LUT and tflm_slim files run on TFLite Micro only",
        "settings": vars(args),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

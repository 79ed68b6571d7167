"""Prove a ``.tflite`` on the real runtimes: accuracy, agreement, TFLite Micro arena size, LiteRT latency.

>>> import numpy as np, tfedge
>>> x = np.random.default_rng(0).uniform(-1, 1, (20, 4)).astype("float32")
>>> result = tfedge.validate(tfedge.runtimes._example_model(), x, verbose=0)
>>> result.agreement, result.arena_bytes > 0, result.latency_us["median"] > 0
(1.0, True, True)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from tfedge.errors import InputError

if TYPE_CHECKING:
    from tfedge._keras import keras
from tfedge.runtimes import (RUNTIMES, LiteRT, ModelSource, RunResult, TensorInfo, TFLiteMicro, check_runtimes,
                             check_samples, load_tflite_bytes, model_io)

#: Loops over more samples than this show a Keras progress bar when ``verbose`` is on.
PROGRESS_MIN_SAMPLES = 256

#: LiteRT invokes run (untimed) before the timed ones.
WARMUP_INVOKES = 10


@dataclasses.dataclass
class ValidationResult:
    """What :func:`validate` measured. Fractions are in [0, 1]; ``None`` / empty when not measured.

    ``accuracy`` / ``reference_agreement``: per runtime (top-1 vs labels / vs the Keras reference).
    ``agreement`` / ``max_abs_diff``: top-1 agreement and the largest difference of the raw (int8 for
    an int8 model) outputs between the first two runtimes. ``arena_bytes``: smallest TFLite Micro
    arena that allocates. ``latency_us``: LiteRT time per invoke, ``{"median", "p90"}`` microseconds.
    """

    source: str
    num_samples: int
    runtimes: tuple[str, ...]
    input: dict
    output: dict
    accuracy: dict[str, float] = dataclasses.field(default_factory=dict)
    reference_accuracy: float | None = None
    reference_agreement: dict[str, float] = dataclasses.field(default_factory=dict)
    agreement: float | None = None
    disagreements: int | None = None
    max_abs_diff: float | None = None
    arena_bytes: int | None = None
    latency_us: dict[str, float] | None = None
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        out = dataclasses.asdict(self)
        out["runtimes"] = list(self.runtimes)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def failed_checks(self, min_accuracy: float | None = None) -> list[str]:
        """One line per failed check: a runtime below ``min_accuracy``, or runtimes disagreeing on top-1."""
        failures = []
        if min_accuracy is not None:
            if isinstance(min_accuracy, bool) or not isinstance(min_accuracy, (int, float)) or not 0 <= min_accuracy <= 1:
                raise InputError(f"min_accuracy must be a fraction in [0, 1], got {min_accuracy!r}")
            if not self.accuracy:
                raise InputError("min_accuracy needs labels: pass y (in a .npz, save y=... next to x)")
            for name, acc in self.accuracy.items():
                if acc < min_accuracy:
                    failures.append(f"{name} accuracy {acc:.4f} is below the minimum {min_accuracy:.4f}")
        if self.agreement is not None and self.agreement < 1.0:
            failures.append(
                f"{' and '.join(self.runtimes[:2])} disagree on the top-1 class for {self.disagreements} of "
                f"{self.num_samples} samples (agreement {self.agreement:.4f})"
            )
        return failures

    def format_table(self) -> str:
        """A short human-readable report."""
        pct = lambda v: "-" if v is None else f"{100 * v:.2f} %"  # noqa: E731
        rows = [f"{self.source}: {self.num_samples} samples, input {self.input['dtype']} "
                f"{'x'.join(map(str, self.input['shape']))}, output {self.output['dtype']} "
                f"{'x'.join(map(str, self.output['shape']))}"]
        rows.append(f"  {'runtime':<10} {'accuracy':>10} {'vs keras':>10}")
        for name in self.runtimes:
            rows.append(f"  {name:<10} {pct(self.accuracy.get(name)):>10} {pct(self.reference_agreement.get(name)):>10}")
        if self.reference_accuracy is not None:
            rows.append(f"  {'keras':<10} {pct(self.reference_accuracy):>10} {'':>10}")
        if self.agreement is not None:
            rows.append(f"  top-1 agreement {' vs '.join(self.runtimes[:2])}: {pct(self.agreement)} "
                        f"({self.disagreements} differ); max abs diff of raw outputs: {self.max_abs_diff:g}")
        if self.arena_bytes is not None:
            rows.append(f"  TFLite Micro arena: {self.arena_bytes:,} bytes (smallest that allocates)")
        if self.latency_us is not None:
            rows.append(f"  LiteRT latency per invoke ({self.threads} thread{'s' * (self.threads > 1)}): "
                        f"median {self.latency_us['median']:.1f} us, p90 {self.latency_us['p90']:.1f} us")
        return "\n".join(rows)


def _top1(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(len(values), -1)
    return np.argmax(flat, axis=-1)


def _progress(label: str, total: int, verbose: int):
    """A Keras Progbar update function for long loops, else None."""
    if not verbose or total <= PROGRESS_MIN_SAMPLES:
        return None
    from tfedge._keras import keras

    print(label)
    bar = keras.utils.Progbar(total, verbose=1, unit_name="sample")
    return lambda n: bar.update(n)


def _check_labels(y, n: int, num_classes: int, source: str) -> np.ndarray:
    from tfedge.datasets import check_labels_fit

    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer)
                                or (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)))):
        raise InputError(f"labels y must be one integer class id per sample, got dtype {labels.dtype} shape {labels.shape}")
    if len(labels) != n:
        raise InputError(f"x has {n} samples but y has {len(labels)} labels; they must match")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise InputError(f"labels y hold negative class ids (min {labels.min()}); use 0..num_classes-1")
    check_labels_fit(labels, num_classes, where=f"labels for {source}")
    return labels


def _reference_outputs(reference, x: np.ndarray, io_out: TensorInfo) -> np.ndarray:
    from tfedge._keras import ensure_keras2_model
    from tfedge.datasets import check_inputs_match

    if isinstance(reference, str) or hasattr(reference, "__fspath__"):
        from tfedge.models import load_model

        reference = load_model(reference)
    ensure_keras2_model(reference, "reference")
    check_inputs_match(x, tuple(reference.input_shape), where="data for the reference model")
    if int(np.prod(reference.output_shape[1:])) != int(np.prod(io_out.shape[1:])):
        raise InputError(
            f"reference output shape {tuple(reference.output_shape[1:])} does not match the TFLite model output "
            f"{io_out.shape[1:]}: pass the Keras model the file was converted from"
        )
    return np.asarray(reference.predict(x, batch_size=256, verbose=0))


def validate(
    model_or_path: ModelSource,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    reference: "keras.Model | str | os.PathLike | None" = None,
    runtimes: Sequence[str] = RUNTIMES,
    threads: int = 1,
    verbose: int = 1,
    tflm_timeout: float | None = None,
) -> ValidationResult:
    """Run ``model_or_path`` (a ``.tflite`` path, bytes or ``TFLiteModel``) on each runtime and compare.

    ``x``: float samples shaped like the model input (quantized with the model's own input scale);
    ``y``: integer labels for accuracy; ``reference``: the Keras model (or ``.keras`` path) to compare
    top-1 predictions with. TFLite Micro runs in one child process; a crash or hang there is a
    :class:`~tfedge.errors.ValidationError`. See :class:`ValidationResult` for the figures.
    """
    names = check_runtimes(runtimes)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    content, source = load_tflite_bytes(model_or_path)

    io_in, io_out = model_io(content, source)
    x = check_samples(x, io_in, source)  # shapes and labels are checked before any runtime starts
    labels = _check_labels(y, len(x), int(np.prod(io_out.shape[1:])), source) if y is not None else None
    ref = _reference_outputs(reference, x, io_out) if reference is not None else None

    runners = {"litert": lambda: LiteRT(content, source, threads=threads),
               "tflm": lambda: TFLiteMicro(content, source, **({"timeout": tflm_timeout} if tflm_timeout else {}))}
    results: dict[str, RunResult] = {}
    for name in names:
        runner = runners[name]()
        bar = _progress(f"{name}: running {len(x)} samples", len(x), verbose)
        if name == "litert":
            results[name] = runner.run(x, warmup=WARMUP_INVOKES, progress=bar)
        else:
            results[name] = runner.run(x, measure_arena=True, progress=bar)
    first = results[names[0]]

    result = ValidationResult(source=source, num_samples=len(x), runtimes=names, threads=threads,
                              input=first.input.to_dict(), output=first.output.to_dict())
    top1 = {name: _top1(r.dequantized()) for name, r in results.items()}
    if labels is not None:
        result.accuracy = {name: float(np.mean(pred == labels)) for name, pred in top1.items()}
    if ref is not None:
        ref_top1 = _top1(ref)
        result.reference_agreement = {name: float(np.mean(pred == ref_top1)) for name, pred in top1.items()}
        if labels is not None:
            result.reference_accuracy = float(np.mean(ref_top1 == labels))
    if len(names) >= 2:
        a, b = results[names[0]], results[names[1]]
        same = top1[names[0]] == top1[names[1]]
        result.agreement = float(np.mean(same))
        result.disagreements = int(len(same) - np.count_nonzero(same))
        diff = np.abs(a.outputs.astype(np.float64) - b.outputs.astype(np.float64))
        result.max_abs_diff = float(diff.max()) if diff.size else 0.0
    if "tflm" in results:
        result.arena_bytes = results["tflm"].arena_bytes
    if "litert" in results:
        times = results["litert"].invoke_us
        result.latency_us = {"median": round(float(np.median(times)), 2),
                             "p90": round(float(np.percentile(times, 90)), 2)}
    return result


__all__ = ["validate", "ValidationResult", "PROGRESS_MIN_SAMPLES"]

"""Prove a ``.tflite`` on the real runtimes: accuracy, agreement, TFLite Micro arena size, LiteRT latency.

>>> import numpy as np, tfedge
>>> x = np.random.default_rng(0).uniform(-1, 1, (20, 4)).astype("float32")
>>> result = tfedge.validate(tfedge.tflite.tiny_int8_model(), x, verbose=0)
>>> result.agreement, result.arena_bytes > 0, result.latency_us["median"] > 0
(1.0, True, True)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfedge.checks import check_int
from tfedge.errors import InputError
from tfedge.runtimes import (
    RUNTIMES,
    WARMUP_INVOKES,
    RunResult,
    TensorInfo,
    check_runtimes,
    check_samples,
    model_io,
    open_runtime,
)
from tfedge.tables import format_table
from tfedge.tflite import ModelSource, model_bytes

if TYPE_CHECKING:
    from tfedge._keras import keras

#: Loops over more samples than this show a Keras progress bar when ``verbose`` is on.
PROGRESS_MIN_SAMPLES = 256


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f} %"


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """What :func:`validate` measured. Fractions are in [0, 1]; ``None`` / empty when not measured.

    ``input`` / ``output``: the model's tensors (:meth:`tfedge.tflite.TensorInfo.to_dict`).
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
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def failed_checks(self, min_accuracy: float | None = None) -> list[str]:
        """One line per failed check: a runtime below ``min_accuracy``, or runtimes disagreeing on top-1."""
        failures = []
        if min_accuracy is not None:
            if isinstance(min_accuracy, bool) or not isinstance(min_accuracy, (int, float)) \
                    or not 0 <= min_accuracy <= 1:
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
        """A short human-readable report: a table per runtime, then the figures across runtimes."""
        shape = "x".join
        rows: list[list[Any]] = [[name, _percent(self.accuracy.get(name)), _percent(self.reference_agreement.get(name))]
                                 for name in self.runtimes]
        if self.reference_accuracy is not None:
            rows.append(["keras", _percent(self.reference_accuracy), None])
        lines = [f"{self.source}: {self.num_samples} samples, input {self.input['dtype']} "
                 f"{shape(map(str, self.input['shape']))}, output {self.output['dtype']} "
                 f"{shape(map(str, self.output['shape']))}",
                 format_table(rows, ["runtime", "accuracy", "vs keras"], indent="  ")]
        if self.agreement is not None:
            lines.append(f"  top-1 agreement {' vs '.join(self.runtimes[:2])}: {_percent(self.agreement)} "
                         f"({self.disagreements} differ); max abs diff of raw outputs: {self.max_abs_diff:g}")
        if self.arena_bytes is not None:
            lines.append(f"  TFLite Micro arena: {self.arena_bytes:,} bytes (smallest that allocates)")
        if self.latency_us is not None:
            lines.append(f"  LiteRT latency per invoke ({self.threads} thread{'s' * (self.threads > 1)}): "
                         f"median {self.latency_us['median']:.1f} us, p90 {self.latency_us['p90']:.1f} us")
        return "\n".join(lines)


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
        raise InputError(
            f"labels y must be one integer class id per sample, got dtype {labels.dtype} shape {labels.shape}")
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


def _run_all(names: tuple[str, ...], content: bytes, source: str, x: np.ndarray, *, threads: int,
             tflm_timeout: float | None, verbose: int) -> dict[str, RunResult]:
    """Each runtime's raw outputs on ``x`` (LiteRT timed after warm-up, TFLite Micro's arena measured)."""
    results: dict[str, RunResult] = {}
    for name in names:
        runner = open_runtime(name, content, source, threads=threads, timeout=tflm_timeout or None)
        results[name] = runner.run(x, progress=_progress(f"{name}: running {len(x)} samples", len(x), verbose))
    return results


def _compare(results: dict[str, RunResult], labels: np.ndarray | None, ref: np.ndarray | None) -> dict[str, Any]:
    """Accuracy, agreement with the reference and between the first two runtimes, arena and latency."""
    names = list(results)
    top1 = {name: _top1(r.dequantized()) for name, r in results.items()}
    figures: dict[str, Any] = {}
    if labels is not None:
        figures["accuracy"] = {name: float(np.mean(pred == labels)) for name, pred in top1.items()}
    if ref is not None:
        ref_top1 = _top1(ref)
        figures["reference_agreement"] = {name: float(np.mean(pred == ref_top1)) for name, pred in top1.items()}
        if labels is not None:
            figures["reference_accuracy"] = float(np.mean(ref_top1 == labels))
    if len(names) >= 2:
        a, b = results[names[0]], results[names[1]]
        same = top1[names[0]] == top1[names[1]]
        diff = np.abs(a.outputs.astype(np.float64) - b.outputs.astype(np.float64))
        figures.update(agreement=float(np.mean(same)), disagreements=int(len(same) - np.count_nonzero(same)),
                       max_abs_diff=float(diff.max()) if diff.size else 0.0)
    if "tflm" in results:
        figures["arena_bytes"] = results["tflm"].arena_bytes
    times = results["litert"].invoke_us if "litert" in results else None
    if times is not None:
        figures["latency_us"] = {"median": round(float(np.median(times)), 2),
                                 "p90": round(float(np.percentile(times, 90)), 2)}
    return figures


def validate(
    model_or_path: ModelSource,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    reference: keras.Model | str | os.PathLike | None = None,
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
    threads = check_int(threads, "threads", minimum=1)
    content, source = model_bytes(model_or_path)

    io_in, io_out = model_io(content, source)
    x = check_samples(x, io_in, source)  # shapes and labels are checked before any runtime starts
    labels = _check_labels(y, len(x), int(np.prod(io_out.shape[1:])), source) if y is not None else None
    ref = _reference_outputs(reference, x, io_out) if reference is not None else None

    results = _run_all(names, content, source, x, threads=threads, tflm_timeout=tflm_timeout, verbose=verbose)
    first = results[names[0]]
    return ValidationResult(source=source, num_samples=len(x), runtimes=names, threads=threads,
                            input=first.input.to_dict(), output=first.output.to_dict(),
                            **_compare(results, labels, ref))


__all__ = ["validate", "ValidationResult", "PROGRESS_MIN_SAMPLES", "WARMUP_INVOKES"]

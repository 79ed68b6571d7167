"""Prove a ``.tflite`` on real kernel sets: accuracy, a pairwise agreement matrix, the op where kernels part
ways, TFLite Micro arena size, LiteRT latency, and a pass rule.

Runtimes are kernel sets (:data:`tfedge.runtimes.KERNELS`): ``litert`` (LiteRT's default XNNPACK kernels,
a phone's CPU), ``litert-ref`` (LiteRT's reference kernels) and ``tflm`` (TFLite Micro's reference kernels,
a microcontroller). Each runs in its own child process and ends as ``ran``, ``refused`` (the runtime's
own reason), ``crashed`` (the signal and the op it died in) or ``skipped`` (a file only TFLite Micro
reads); :func:`validate` raises :class:`~tfedge.errors.ValidationError` (exit 2) only when no requested
runtime ran the model. Every model output is compared between every pair of runtimes that ran
(:attr:`ValidationResult.matrix`): top-1 agreement (classification outputs), the share of bit-identical
rows, max / mean raw difference (quantization steps of the output) and max / mean absolute difference and
SNR of the dequantized values. ``trace=True`` names, for each pair that differs, the first op whose output
tensor differs and by how much, with a per-op table (every op's output exposed as a model output by
:mod:`tfedge.surgery` and run on the same kernels).

The pass rule (:meth:`ValidationResult.failed_checks`; ``tfedge validate`` exits 1 only when a rule fails
and names it):

1. **reference kernels agree**: ``tflm`` vs ``litert-ref`` agree on 100 % of top-1 classes and their raw
   integer outputs are at most :data:`REFERENCE_MAX_STEPS` (1) step apart (float outputs: SNR at least
   :data:`REFERENCE_MIN_SNR_DB`). Both compute the same reference arithmetic, but not always the same
   rounding: TFLite Micro's FULLY_CONNECTED can land a step off, and a SOFTMAX after it doubles that. So
   when the outputs differ by more, the pair is traced (as ``trace=True`` does) and the rule holds when
   every op, fed the same inputs, is within a step; an op further off is named: a kernel bug.
2. **optimized kernels within tolerance**: ``litert`` (XNNPACK) vs any other runtime agrees on at least
   ``min_agreement`` of top-1 classes (default :data:`DEFAULT_MIN_AGREEMENT`, 99 %); regression outputs
   (float outputs without labels, single values) keep an SNR of at least :data:`MIN_SNR_DB` or, integer
   ones, stay within :data:`REGRESSION_MAX_STEPS` raw steps. XNNPACK rounds intermediate sums differently, so a step
   apart on a few elements is expected; ``trace=True`` shows where.
3. **accuracy**: each runtime's top-1 accuracy on the chosen output reaches ``min_accuracy``, when given.
4. **reference model**: each runtime agrees with the Keras reference (float or fake-quant QAT) on at
   least ``min_reference_agreement`` of top-1 classes (default :data:`DEFAULT_MIN_REFERENCE_AGREEMENT`,
   97 %: int8 rounding legitimately flips a few borderline samples), when a reference is given.

>>> import numpy as np, tfedge
>>> x = np.random.default_rng(0).uniform(-1, 1, (20, 4)).astype("float32")
>>> result = tfedge.validate(tfedge.tflite.tiny_int8_model(), x, verbose=0)
>>> result.agreement, result.arena_bytes > 0, result.latency_us["median"] > 0
(1.0, True, True)
>>> result.failed_checks()
[]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfedge.checks import check_fraction, check_int
from tfedge.datasets import check_inputs_match, check_labels_fit, load_npz
from tfedge.errors import InputError, ValidationError
from tfedge.runtimes import (
    KERNELS,
    REFERENCE_RUNTIMES,
    RUNTIMES,
    WARMUP_INVOKES,
    RunResult,
    RuntimeCrashed,
    RuntimeRefused,
    TensorInfo,
    check_runtimes,
    model_signature,
    open_runtime,
    split_inputs,
)
from tfedge.surgery import isolated, traced
from tfedge.tables import format_table
from tfedge.targets import tflm_only_reason
from tfedge.tflite import ModelSource, model_bytes

if TYPE_CHECKING:
    from tfedge._keras import keras  # TensorFlow only when a Keras model is involved: validate starts without it

#: Loops over more samples than this show a Keras progress bar when ``verbose`` is on.
PROGRESS_MIN_SAMPLES = 256
#: Rule 2's default: least top-1 agreement of the optimized kernels (``litert``) with any other runtime.
DEFAULT_MIN_AGREEMENT = 0.99
#: Rule 4's default: least top-1 agreement of every runtime with the Keras reference model.
DEFAULT_MIN_REFERENCE_AGREEMENT = 0.97
#: Rule 1: most raw steps the reference kernels' integer outputs may be apart.
REFERENCE_MAX_STEPS = 1
#: Rule 1 for float outputs: least SNR (dB) between the reference kernels.
REFERENCE_MIN_SNR_DB = 60.0
#: Rule 2 for regression outputs: least SNR (dB) between the optimized kernels and another runtime.
MIN_SNR_DB = 30.0
#: Rule 2 for integer regression outputs: a pair at most this many raw steps apart passes whatever its SNR
#: (on small outputs one step is a low SNR, yet it is the quantization's own resolution).
REGRESSION_MAX_STEPS = 2
#: Runtime statuses.
STATUSES = ("ran", "refused", "crashed", "skipped")


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f} %"


def _fraction(value: Any, name: str) -> float:
    return check_fraction(value, name, hint="e.g. 0.99")


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """What :func:`validate` measured. Fractions are in [0, 1]; ``None`` / empty when not measured.

    ``status``: per requested runtime ``{"status": "ran" | "refused" | "crashed" | "skipped", "reason"}``;
    ``runtimes``: the ones that ran. ``inputs`` / ``outputs``: every model tensor
    (:meth:`tfedge.tflite.TensorInfo.to_dict`); ``output_index``: the output accuracy is read from, also
    shown as ``input`` / ``output``. ``matrix``: one entry per pair of runtimes and model output (see the
    module docstring); ``trace``: per differing pair, the first differing op and a per-op table.
    ``accuracy`` / ``reference_agreement``: per runtime (top-1 vs labels / vs the Keras reference).
    ``agreement`` / ``disagreements`` / ``max_abs_diff``: top-1 agreement and largest raw difference of the
    chosen output between the first two runtimes that ran. ``arena_bytes``: smallest TFLite Micro arena
    that allocates. ``latency_us``: LiteRT (XNNPACK) time per invoke, ``{"median", "p90"}`` microseconds.
    ``predictions``: per runtime, the top-1 class of every sample (not in :meth:`to_dict`).
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
    status: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    inputs: list[dict] = dataclasses.field(default_factory=list)
    outputs: list[dict] = dataclasses.field(default_factory=list)
    output_index: int = 0
    matrix: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    trace: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure (``kernels`` names what each runtime that ran stands for)."""
        out = dataclasses.asdict(dataclasses.replace(self, predictions={}))
        del out["predictions"]
        out["runtimes"] = list(self.runtimes)
        out["kernels"] = {name: KERNELS[name] for name in self.runtimes}
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def pair(self, a: str, b: str, output: int | None = None) -> dict[str, Any] | None:
        """The matrix entry of runtimes ``a`` and ``b`` (either order) on ``output`` (default: the chosen one)."""
        k = self.output_index if output is None else output
        return next((m for m in self.matrix if {m["a"], m["b"]} == {a, b} and m["output_index"] == k), None)

    def _worst_own_op(self, a: str, b: str) -> dict[str, Any] | None:
        """The op of the traced pair ``a``, ``b`` that differs most when every op is fed the same inputs (None
        when the pair was not traced op by op)."""
        for t in self.trace:
            if {t["a"], t["b"]} == {a, b} and t["ops"] and all(e["local_max_diff"] is not None for e in t["ops"]):
                return max(t["ops"], key=lambda e: e["local_max_diff"])
        return None

    def failed_checks(
        self,
        min_accuracy: float | None = None,
        *,
        min_agreement: float = DEFAULT_MIN_AGREEMENT,
        min_reference_agreement: float = DEFAULT_MIN_REFERENCE_AGREEMENT,
    ) -> list[str]:
        """One line per failed rule of the pass rule (see the module docstring), naming the rule."""
        min_agreement = _fraction(min_agreement, "min_agreement")
        min_reference_agreement = _fraction(min_reference_agreement, "min_reference_agreement")
        failures = []
        for m in self.matrix:
            where = f"{m['a']} vs {m['b']} on output '{m['output']}'"
            if {m["a"], m["b"]} <= set(REFERENCE_RUNTIMES):
                rule = "reference kernels agree"
                worst_op = self._worst_own_op(m["a"], m["b"])
                if worst_op is not None and worst_op["local_max_diff"] <= REFERENCE_MAX_STEPS:
                    continue  # each op within a step on the same inputs: the outputs differ by propagation only
                if worst_op is not None:
                    where += f" ({worst_op['op']} alone differs by {worst_op['local_max_diff']:g} steps)"
                if m["top1_agreement"] is not None and m["top1_agreement"] < 1.0:
                    failures.append(
                        f"rule '{rule}' failed: {where}: top-1 agreement {_percent(m['top1_agreement'])}"
                        f" ({m['disagreements']} differ), the rule asks 100 %"
                    )
                if m["integer"] and m["max_raw_diff"] > REFERENCE_MAX_STEPS:
                    failures.append(
                        f"rule '{rule}' failed: {where}: raw outputs up to {m['max_raw_diff']:g} steps "
                        f"apart, the rule allows {REFERENCE_MAX_STEPS}"
                    )
                if not m["integer"] and m["snr_db"] is not None and m["snr_db"] < REFERENCE_MIN_SNR_DB:
                    failures.append(
                        f"rule '{rule}' failed: {where}: SNR {m['snr_db']:.1f} dB, the rule asks "
                        f">= {REFERENCE_MIN_SNR_DB:g} dB"
                    )
                continue
            rule = "optimized kernels within tolerance"
            if m["kind"] == "classification" and m["top1_agreement"] < min_agreement:
                failures.append(
                    f"rule '{rule}' failed: {where}: top-1 agreement {_percent(m['top1_agreement'])} "
                    f"({m['disagreements']} differ) is below {_percent(min_agreement)} "
                    "(--min-agreement)"
                )
            if (
                m["kind"] == "regression"
                and m["snr_db"] is not None
                and m["snr_db"] < MIN_SNR_DB
                and not (m["integer"] and m["max_raw_diff"] <= REGRESSION_MAX_STEPS)
            ):
                failures.append(f"rule '{rule}' failed: {where}: SNR {m['snr_db']:.1f} dB is below {MIN_SNR_DB:g} dB")
        if min_accuracy is not None:
            min_accuracy = _fraction(min_accuracy, "min_accuracy")
            if not self.accuracy:
                raise InputError("min_accuracy needs labels: pass y (in a .npz, save y=... next to x)")
            for name, acc in self.accuracy.items():
                if acc < min_accuracy:
                    failures.append(
                        f"rule 'accuracy' failed: {name} accuracy {acc:.4f} is below the minimum "
                        f"{min_accuracy:.4f} (--min-accuracy)"
                    )
        for name, agree in self.reference_agreement.items():
            if agree < min_reference_agreement:
                failures.append(
                    f"rule 'reference model' failed: {name} agrees with the Keras reference on "
                    f"{_percent(agree)} of top-1 classes, below {_percent(min_reference_agreement)} "
                    "(--min-reference-agreement)"
                )
        return failures

    def claim(self) -> str:
        """One line on how the kernel sets agree on the chosen output, naming the kernels.

        E.g. ``TFLite Micro and LiteRT reference kernels agree on 100.00 % of top-1 classes (max 1 step);
        LiteRT XNNPACK agrees with them on 99.33 % (max 2 steps)``.
        """
        names = {
            "litert": "LiteRT XNNPACK kernels",
            "litert-ref": "LiteRT reference kernels",
            "tflm": "TFLite Micro reference kernels",
        }
        parts = []
        for m in (m for m in self.matrix if m["output_index"] == self.output_index):
            figure = (
                f"{_percent(m['top1_agreement'])} of top-1 classes"
                if m["top1_agreement"] is not None
                else f"SNR {m['snr_db']:.1f} dB"
                if m["snr_db"] is not None
                else "every value"
            )
            steps = (
                f"max {m['max_raw_diff']:g} step{'s' * (m['max_raw_diff'] != 1)}"
                if m["integer"]
                else f"max abs diff {m['max_abs_diff']:.3g}"
            )
            parts.append(f"{names[m['a']]} and {names[m['b']]} agree on {figure} ({steps})")
        skipped = [f"{n} {s['status']}" for n, s in self.status.items() if s["status"] != "ran"]
        if not parts:
            parts.append(f"only {names[self.runtimes[0]]} ran")
        return "; ".join(parts + skipped)

    def format_table(self) -> str:
        """A short human-readable report: status and figures per runtime, the matrix, the trace."""
        shape = "x".join

        def io(ts: list[dict]) -> str:
            return ", ".join(f"{t['dtype']} {shape(map(str, t['shape']))}" for t in ts)

        lines = [f"{self.source}: {self.num_samples} samples, input {io(self.inputs)}, output {io(self.outputs)}"]
        rows: list[list[Any]] = []
        for name, st in self.status.items():
            state = st["status"] + (f": {st['reason']}" if st.get("reason") else "")
            rows.append([name, _percent(self.accuracy.get(name)), _percent(self.reference_agreement.get(name)), state])
        if self.reference_accuracy is not None:
            rows.append(["keras", _percent(self.reference_accuracy), None, "reference"])
        lines.append(format_table(rows, ["runtime", "accuracy", "vs keras", "status"], indent="  "))
        if self.matrix:
            mrows = [
                [
                    f"{m['a']} vs {m['b']}",
                    m["output"],
                    _percent(m["top1_agreement"]),
                    _percent(m["bit_identical"]),
                    f"{m['max_raw_diff']:g}",
                    f"{m['mean_raw_diff']:.3g}",
                    None if m["snr_db"] is None else f"{m['snr_db']:.1f}",
                ]
                for m in self.matrix
            ]
            lines.append(
                format_table(
                    mrows,
                    ["pair", "output", "top-1 agree", "identical rows", "max diff", "mean diff", "SNR dB"],
                    indent="  ",
                )
            )
        for t in self.trace:
            lines.append(f"  trace {t['a']} vs {t['b']}: {t['summary']}")
            trows = [
                [
                    op["op"],
                    _percent(float(op["differ"])),
                    f"{op['max_diff']:g}",
                    _percent(op["local_differ"]),
                    None if op["local_max_diff"] is None else f"{op['local_max_diff']:g}",
                ]
                for op in t["ops"]
            ]
            if trows:
                lines.append(
                    format_table(trows, ["op", "elements differ", "max diff", "own: differ", "own: max"], indent="    ")
                )
        if self.arena_bytes is not None:
            lines.append(f"  TFLite Micro arena: {self.arena_bytes:,} bytes (smallest that allocates)")
        if self.latency_us is not None:
            lines.append(
                f"  LiteRT latency per invoke ({self.threads} thread{'s' * (self.threads > 1)}): "
                f"median {self.latency_us['median']:.1f} us, p90 {self.latency_us['p90']:.1f} us"
            )
        return "\n".join(lines)


def _top1(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(len(values), -1)
    return np.argmax(flat, axis=-1)


def _progress(label: str, total: int, verbose: int):
    """A Keras Progbar update function for long loops, else None."""
    if not verbose or total <= PROGRESS_MIN_SAMPLES:
        return None
    from tfedge._keras import keras  # TensorFlow only when a Keras model is involved: validate starts without it

    print(label)
    bar = keras.utils.Progbar(total, verbose=1, unit_name="sample")
    return lambda n: bar.update(n)


def _check_labels(y, n: int, num_classes: int, source: str) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1 or not (
        np.issubdtype(labels.dtype, np.integer)
        or (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)))
    ):
        raise InputError(
            f"labels y must be one integer class id per sample, got dtype {labels.dtype} shape {labels.shape}"
        )
    if len(labels) != n:
        raise InputError(f"x has {n} samples but y has {len(labels)} labels; they must match")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise InputError(f"labels y hold negative class ids (min {labels.min()}); use 0..num_classes-1")
    check_labels_fit(labels, num_classes, where=f"labels for {source}")
    return labels


def choose_output(output: int | str | None, outputs: Sequence[TensorInfo], source: str) -> int:
    """The index of the output named or numbered by ``output`` (None: the first).

    >>> from tfedge.runtimes import model_signature
    >>> from tfedge.tflite import tiny_int8_model
    >>> choose_output("output", model_signature(tiny_int8_model())[1], "m")
    0
    """
    if output is None:
        return 0
    names = [t.name for t in outputs]
    if isinstance(output, str) and output in names:
        return names.index(output)
    if isinstance(output, str) and output.strip().lstrip("-").isdigit():
        output = int(output)
    if isinstance(output, int) and not isinstance(output, bool) and 0 <= output < len(outputs):
        return output
    raise InputError(
        f"output must name one of the outputs of {source} ({', '.join(repr(n) for n in names)}) or be "
        f"an index in [0, {len(outputs) - 1}], got {output!r}"
    )


def _reference_outputs(reference, xs: list[np.ndarray], io_out: TensorInfo, k: int) -> np.ndarray:
    from tfedge._keras import ensure_keras2_model  # TensorFlow only for a Keras reference

    if isinstance(reference, str) or hasattr(reference, "__fspath__"):
        from tfedge.models import load_model  # TensorFlow and TF-MOT only for a reference file

        reference = load_model(reference)
    ensure_keras2_model(reference, "reference")
    if len(xs) == 1:
        check_inputs_match(xs[0], tuple(reference.input_shape), where="data for the reference model")
    predicted = reference.predict(xs[0] if len(xs) == 1 else xs, batch_size=256, verbose=0)
    if isinstance(predicted, dict):
        predicted = list(predicted.values())
    if isinstance(predicted, (list, tuple)):  # the converter may order outputs otherwise: match by size first
        size = int(np.prod(io_out.sample_shape))
        fits = [j for j, p in enumerate(predicted) if int(np.prod(np.shape(p)[1:])) == size]
        if len(fits) == 1:
            k = fits[0]
        elif k >= len(predicted):
            raise InputError(
                f"the reference model has {len(predicted)} outputs, the TFLite output chosen is {k}: "
                "pass the Keras model the file was converted from"
            )
        predicted = predicted[k]
    out = np.asarray(predicted)
    if int(np.prod(out.shape[1:])) != int(np.prod(io_out.sample_shape)):
        raise InputError(
            f"reference output shape {tuple(out.shape[1:])} does not match the TFLite model output "
            f"{io_out.sample_shape}: pass the Keras model the file was converted from"
        )
    return out


def _run_one(
    name: str, content: bytes, source: str, raw: list[np.ndarray], *, threads: int, timeout: float | None, verbose: int
) -> tuple[RunResult | None, dict[str, str]]:
    """One runtime's outputs and its status; a crash is located to an op by running graph prefixes."""
    try:
        runner = open_runtime(name, content, source, threads=threads, timeout=timeout)
    except RuntimeRefused as exc:  # refused before a child starts (a file only TFLite Micro runs)
        return None, {"status": "skipped", "reason": exc.reason, "message": str(exc), "kind": exc.kind}
    options: dict[str, Any] = {"measure_arena": True} if name == "tflm" else {"warmup": WARMUP_INVOKES}
    progress = _progress(f"{name}: running {len(raw[0])} samples", len(raw[0]), verbose)
    try:
        return runner.run_raw(raw, progress=progress, **options), {"status": "ran"}
    except RuntimeRefused as exc:
        return None, {"status": "refused", "reason": exc.reason, "message": str(exc), "kind": exc.kind}
    except RuntimeCrashed as exc:
        op = None
        if exc.signal_name != "hung":  # a hang is not bisected: each probe could wait the whole timeout
            try:
                op = runner.locate_crash(raw)
            except (ValidationError, InputError):
                op = None
        where = f"in {op}" if op else f"while {exc.stage}"
        return None, {
            "status": "crashed",
            "reason": f"{exc.signal_name} {where}",
            "message": exc.in_op(op) if op else str(exc),
        }


def _pair_figures(a: RunResult, b: RunResult, k: int, classification: bool) -> dict[str, Any]:
    info = b.output_infos[k]
    ra, rb = a.all_outputs[k], b.all_outputs[k]
    raw = np.abs(ra.astype(np.float64) - rb.astype(np.float64)).reshape(len(ra), -1)
    fa, fb = a.dequantized(k).astype(np.float64), b.dequantized(k).astype(np.float64)
    err = np.abs(fa - fb)
    noise, signal = float(np.sum(err**2)), float(np.sum(fb**2))
    snr = None if noise == 0 else (max(-100.0, 10 * math.log10(signal / noise)) if signal > 0 else -100.0)
    size = int(np.prod(info.sample_shape))
    entry: dict[str, Any] = {
        "a": a.runtime,
        "b": b.runtime,
        "output": info.name,
        "output_index": k,
        "kind": "classification" if classification else "regression",
        "integer": np.dtype(info.dtype).kind in "iu",
        "top1_agreement": None,
        "disagreements": None,
        "bit_identical": float(np.mean(np.all(raw == 0, axis=1))) if raw.size else 1.0,
        "max_raw_diff": float(raw.max()) if raw.size else 0.0,
        "mean_raw_diff": float(raw.mean()) if raw.size else 0.0,
        "max_abs_diff": float(err.max()) if err.size else 0.0,
        "mean_abs_diff": float(err.mean()) if err.size else 0.0,
        "snr_db": None if snr is None else round(snr, 2),
    }
    if size > 1:
        same = _top1(fa) == _top1(fb)
        entry.update(top1_agreement=float(np.mean(same)), disagreements=int(len(same) - np.count_nonzero(same)))
    return entry


def _pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair, the more reference-like runtime second (its values are the SNR's signal)."""
    order = sorted(names, key=RUNTIMES.index)
    return list(itertools.combinations(order, 2))


def _diff(va: np.ndarray, vb: np.ndarray) -> tuple[float, float]:
    """Share of elements that differ and the largest difference (raw steps for integers)."""
    if np.dtype(va.dtype).kind in "iu":
        diff = np.abs(va.astype(np.int64) - vb.astype(np.int64))
    else:
        diff = np.abs(va.astype(np.float64) - vb.astype(np.float64))
    return (float(np.mean(diff > 0)), float(diff.max())) if diff.size else (0.0, 0.0)


def _describe(row: dict[str, Any], prefix: str = "") -> str:
    unit = (" step" + "s" * (row[prefix + "max_diff"] != 1)) if row["integer"] else ""
    return (
        f"{row['op']}: {_percent(row[prefix + 'differ'])} of elements differ by up to "
        f"{row[prefix + 'max_diff']:g}{unit}"
    )


def _trace(
    pairs: list[tuple[str, str]],
    content: bytes,
    source: str,
    raw: list[np.ndarray],
    *,
    threads: int,
    timeout: float | None,
) -> list[dict[str, Any]]:
    """Per differing pair: each op's output compared (``differ`` / ``max_diff``: what reaches it, inherited
    differences included), and each op's own error (``local_differ`` / ``local_max_diff``: every op fed the
    same inputs, the values the most reference-like runtime computed); the first op that differs named."""

    def run(model: bytes, name: str, feed: list[np.ndarray]) -> RunResult | str:
        try:
            options: dict[str, Any] = {"measure_arena": False} if name == "tflm" else {}
            return open_runtime(name, model, source, threads=threads, timeout=timeout).run_raw(feed, **options)
        except (ValidationError, InputError) as exc:
            return str(exc)

    model, op_tensors = traced(content)
    names = sorted({n for pair in pairs for n in pair}, key=RUNTIMES.index)
    runs = {name: run(model, name, raw) for name in names}
    # each op cut loose, fed what the most reference-like runtime computed before it
    local: dict[str, RunResult | str] = {}
    source_run = next((runs[n] for n in reversed(names) if not isinstance(runs[n], str)), None)
    if isinstance(source_run, RunResult):
        values = {t: arr for (_, t), arr in zip(op_tensors, source_run.all_outputs)}
        values.update({info.index: arr for info, arr in zip(model_signature(content, source)[0], raw)})
        try:
            cut, sources, _ = isolated(content)
            feed = [values[t] for t in sources]
            local = {name: run(cut, name, feed) for name in names}
        except (KeyError, InputError) as exc:
            local = {name: str(exc) for name in names}
    found: list[dict[str, Any]] = []
    for a, b in pairs:
        ra, rb = runs[a], runs[b]
        if isinstance(ra, str) or isinstance(rb, str):
            found.append(
                {
                    "a": a,
                    "b": b,
                    "first_op": None,
                    "ops": [],
                    "summary": f"no trace: {ra if isinstance(ra, str) else rb}",
                }
            )
            continue
        la, lb = local.get(a), local.get(b)
        has_local = isinstance(la, RunResult) and isinstance(lb, RunResult)
        ops, first = [], None
        for k, (op, _) in enumerate(op_tensors):
            va = ra.all_outputs[k]
            share, most = _diff(va, rb.all_outputs[k])
            entry: dict[str, Any] = {
                "op": op.label(),
                "tensor": rb.output_infos[k].name,
                "dtype": str(va.dtype),
                "integer": np.dtype(va.dtype).kind in "iu",
                "differ": share,
                "max_diff": most,
                "local_differ": None,
                "local_max_diff": None,
            }
            if has_local:
                assert isinstance(la, RunResult) and isinstance(lb, RunResult)
                entry["local_differ"], entry["local_max_diff"] = _diff(la.all_outputs[k], lb.all_outputs[k])
            ops.append(entry)
            if first is None and share > 0:
                first = entry
        if first is None:
            summary = "every op's output is identical"
        else:
            summary = f"first difference at {_describe(first)}"
            own = [e for e in ops if e["local_differ"]]
            if own:
                worst = max(own, key=lambda e: (e["local_differ"], e["local_max_diff"]))
                summary += (
                    f"; {len(own)} of {len(ops)} ops differ on the same inputs, most {_describe(worst, 'local_')}"
                )
        found.append({"a": a, "b": b, "first_op": first["op"] if first else None, "summary": summary, "ops": ops})
    return found


def load_validation_data(path: str | os.PathLike, num_inputs: int = 1) -> tuple[Any, np.ndarray | None]:
    """``(x, y)`` from an ``.npz``: for a model with several inputs (``num_inputs``) and no array ``x``, ``x``
    is a dict of every array but ``y`` (keys named after the model inputs, or ``x0``, ``x1``, ...); else the
    array ``x`` (:func:`tfedge.datasets.load_npz`). ``y``: the labels or None."""
    p = os.fspath(path)
    if num_inputs > 1 and os.path.isfile(p) and zipfile.is_zipfile(p):
        with np.load(p, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "x" not in keys and keys:
                try:
                    arrays = {k: npz[k] for k in keys}
                except ValueError as exc:
                    raise InputError(f"data file '{p}' is not a readable .npz of numeric arrays: {exc}") from None
                return {k: v for k, v in arrays.items() if k != "y"}, arrays.get("y")
    return load_npz(p)


def validate(
    model_or_path: ModelSource,
    x: Any,
    y: np.ndarray | None = None,
    *,
    reference: keras.Model | str | os.PathLike | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    output: int | str | None = None,
    trace: bool = False,
    threads: int = 1,
    verbose: int = 1,
    tflm_timeout: float | None = None,
) -> ValidationResult:
    """Run ``model_or_path`` (a ``.tflite`` path, bytes or ``TFLiteModel``) on each runtime and compare.

    ``x``: float samples, one ``(N, ...)`` array for a one-input model, else a list in input order or a dict
    keyed by input name or ``x0``, ``x1``, ... (each input quantized with its own scale / zero point);
    ``y``: integer labels for accuracy on ``output`` (name or index; default the first output);
    ``reference``: the Keras model (or ``.keras`` path) to compare top-1 predictions with (for several
    outputs, the Keras output of the chosen output's size, else the same index); ``trace``:
    find the first op where each differing pair of runtimes parts ways. A runtime that refuses or crashes
    is listed in ``status``; :class:`~tfedge.errors.ValidationError` only when none ran. See
    :class:`ValidationResult` for the figures and the module docstring for the pass rule.
    """
    names = check_runtimes(runtimes)
    threads = check_int(threads, "threads", minimum=1)
    if not isinstance(trace, bool):
        raise InputError(f"trace must be True or False, got {trace!r}")
    content, source = model_bytes(model_or_path)

    ins, outs = model_signature(content, source)
    xs = split_inputs(x, ins, source)  # shapes and labels are checked before any runtime starts
    k = choose_output(output, outs, source)
    n = len(xs[0])
    labels = _check_labels(y, n, int(np.prod(outs[k].sample_shape)), source) if y is not None else None
    ref = _reference_outputs(reference, xs, outs[k], k) if reference is not None else None
    raw = [info.quantize(a) for info, a in zip(ins, xs)]

    status: dict[str, dict[str, str]] = {}
    results: dict[str, RunResult] = {}
    only_tflm = tflm_only_reason(content, source)
    for name in names:
        if only_tflm and name != "tflm":
            status[name] = {
                "status": "skipped",
                "reason": only_tflm,
                "message": f"{KERNELS[name]} cannot run {source}: {only_tflm}",
            }
            continue
        result, status[name] = _run_one(
            name, content, source, raw, threads=threads, timeout=tflm_timeout, verbose=verbose
        )
        if result is not None:
            results[name] = result
    if not results:
        if len(names) == 1:  # that runtime's own message, as one line
            st = status[names[0]]
            raise (InputError if st.get("kind") == "unloadable" else ValidationError)(st["message"])
        raise ValidationError(
            f"no runtime ran {source}: "
            + "; ".join(f"{name} {st['status']} ({st.get('reason', '')})" for name, st in status.items())
        )

    ran = tuple(name for name in names if name in results)
    first = results[ran[0]]
    classification = [
        int(np.prod(t.sample_shape)) > 1 and ((j == k and labels is not None) or first.output_infos[j].quantized)
        for j, t in enumerate(outs)
    ]
    matrix = [
        _pair_figures(results[a], results[b], j, classification[j]) for a, b in _pairs(ran) for j in range(len(outs))
    ]
    figures: dict[str, Any] = {}
    top1 = {name: _top1(r.dequantized(k)) for name, r in results.items()}
    if labels is not None:
        figures["accuracy"] = {name: float(np.mean(pred == labels)) for name, pred in top1.items()}
    if ref is not None:
        ref_top1 = _top1(ref)
        figures["reference_agreement"] = {name: float(np.mean(pred == ref_top1)) for name, pred in top1.items()}
        if labels is not None:
            figures["reference_accuracy"] = float(np.mean(ref_top1 == labels))
    if len(ran) >= 2:
        a, b = results[ran[0]], results[ran[1]]
        same = top1[ran[0]] == top1[ran[1]]
        diff = np.abs(a.all_outputs[k].astype(np.float64) - b.all_outputs[k].astype(np.float64))
        figures.update(
            agreement=float(np.mean(same)),
            disagreements=int(len(same) - np.count_nonzero(same)),
            max_abs_diff=float(diff.max()) if diff.size else 0.0,
        )
    if "tflm" in results:
        figures["arena_bytes"] = results["tflm"].arena_bytes
    times = results["litert"].invoke_us if "litert" in results else None
    if times is not None and len(times):
        figures["latency_us"] = {
            "median": round(float(np.median(times)), 2),
            "p90": round(float(np.percentile(times, 90)), 2),
        }
    traces: list[dict[str, Any]] = []
    if trace:
        differing = [
            (a, b)
            for a, b in _pairs(ran)
            if any(m["bit_identical"] < 1.0 for m in matrix if (m["a"], m["b"]) == (a, b))
        ]
        traces = _trace(differing, content, source, raw, threads=threads, timeout=tflm_timeout)
    else:  # the reference kernels apart: which op, on the same inputs (see the pass rule)
        apart = [
            (m["a"], m["b"])
            for m in matrix
            if {m["a"], m["b"]} <= set(REFERENCE_RUNTIMES)
            and (
                (m["integer"] and m["max_raw_diff"] > REFERENCE_MAX_STEPS)
                or (m["top1_agreement"] is not None and m["top1_agreement"] < 1.0)
            )
        ]
        if apart:
            traces = _trace(sorted(set(apart)), content, source, raw, threads=threads, timeout=tflm_timeout)
    return ValidationResult(
        source=source,
        num_samples=n,
        runtimes=ran,
        threads=threads,
        input=first.input_infos[0].to_dict(),
        output=first.output_infos[k].to_dict(),
        inputs=[t.to_dict() for t in first.input_infos],
        outputs=[t.to_dict() for t in first.output_infos],
        output_index=k,
        status=status,
        matrix=matrix,
        trace=traces,
        predictions=top1 if classification[k] else {},
        **figures,
    )


__all__ = [
    "validate",
    "ValidationResult",
    "load_validation_data",
    "choose_output",
    "tflm_only_reason",
    "PROGRESS_MIN_SAMPLES",
    "WARMUP_INVOKES",
    "DEFAULT_MIN_AGREEMENT",
    "DEFAULT_MIN_REFERENCE_AGREEMENT",
    "REFERENCE_MAX_STEPS",
    "REFERENCE_MIN_SNR_DB",
    "MIN_SNR_DB",
    "REGRESSION_MAX_STEPS",
    "STATUSES",
]

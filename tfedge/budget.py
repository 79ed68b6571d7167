"""Compressing to a device budget: sizes, candidate models, their measured cost, and the choice.

A budget is a flash size (the deployed ``.tflite`` file's bytes) and a RAM size (the TensorFlow Lite
Micro arena, measured by allocating). Neither depends on the weights' values, so every candidate is
measured *before any training* on an untrained copy: random weights, quantization-aware wrapped
exactly as it will be trained, converted to full int8 (calibrated on a few real samples) and
allocated on TFLite Micro. Only the candidates that fit are trained. :func:`select` then picks the
model to ship from the trained ones: without a budget the smallest within the allowed accuracy drop
of the baseline (the teacher's plain post-training int8 model), with a budget the most accurate that
fits; never one below the accuracy floor. "Within the drop" must hold on new data too, not only on
the validation samples: a candidate qualifies when :func:`drop_bound`, an upper confidence bound on
its drop from its sample-by-sample agreement with the baseline, is within the allowed drop. On a
small validation set a smaller model must then match the baseline there, not merely come close.

>>> parse_size("8KB"), parse_size("8KiB"), parse_size(8000), parse_size("3.5 kB")
(8000, 8192, 8000, 3500)
>>> c = [Candidate("a", bytes=3000, arena_bytes=2000, accuracy=0.97),
...      Candidate("b", bytes=5000, arena_bytes=3000, accuracy=0.985)]
>>> select(c, floor=0.96).name, select(c, floor=0.96, flash=6000).name, select(c, floor=0.98).name
('a', 'b', 'b')
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from tfedge._keras import keras

import numpy as np

from tfedge.errors import CheckFailed, InputError, ModelError
from tfedge.runtimes import TFLiteMicro
from tfedge.tables import format_table

_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "k": 1000, "m": 1000**2}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)

#: Where a candidate comes from, in the order the report lists them.
ORIGINS = ("teacher", "channels", "student", "built-in")


def parse_size(value: Any, name: str = "size") -> int:
    """Bytes from ``8000``, ``"8000"``, ``"8KB"`` / ``"8kB"`` / ``"8k"`` (x1000), ``"8KiB"`` (x1024), ``"1MB"``,
    ``"1MiB"``.

    >>> parse_size("4 KiB"), parse_size("0.5MB")
    (4096, 500000)
    >>> parse_size("8 GB", "--flash")
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: --flash must be a size in bytes such as 8000, 8KB or 8KiB, got '8 GB'
    """
    hint = f"{name} must be a size in bytes such as 8000, 8KB or 8KiB, got {value!r}"
    if isinstance(value, bool):
        raise InputError(hint)
    if isinstance(value, (int, np.integer)):
        number, unit = float(value), 1
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number, unit = value, 1
    elif isinstance(value, str) and (match := _SIZE.match(value)) and match.group(2).lower() in _UNITS:
        number, unit = float(match.group(1)), _UNITS[match.group(2).lower()]
    else:
        raise InputError(hint)
    size = number * unit
    if size < 1 or not size.is_integer():
        raise InputError(f"{name} must be a whole number of bytes >= 1, got {value!r} ({size:g} bytes): e.g. 8KB")
    return int(size)


def format_size(n: int | None) -> str:
    """``3,500 B`` (``-`` for None).

    >>> format_size(3500)
    '3,500 B'
    """
    return "-" if n is None else f"{n:,} B"


@dataclasses.dataclass
class Candidate:
    """One model the search may ship: how to build it, what it costs on the device, what it scored.

    ``build`` returns a fresh float Keras model (trained weights where it has some, e.g. a channel-pruned
    teacher); ``distill`` says whether it must learn from the teacher first (a copy of the teacher need
    not); ``qat`` whether quantization-aware training applies (measured: False when TF-MOT cannot wrap
    it, the model is then post-training quantized). ``bytes`` / ``arena_bytes`` are measured before
    training; ``accuracy`` (lowest runtime, on the validation data) after; ``drop_bound`` its
    :func:`drop_bound` below the baseline (None for the baseline itself); ``status`` says what happened.
    """

    name: str
    origin: str = "built-in"
    build: Callable[[], Any] | None = dataclasses.field(default=None, repr=False, compare=False)
    params: int | None = None
    distill: bool = True
    qat: bool = True
    bytes: int | None = None
    arena_bytes: int | None = None
    accuracy: float | None = None
    accuracies: dict[str, float] = dataclasses.field(default_factory=dict)
    sparsity: float | None = None
    drop_bound: float | None = None
    status: str = "measured"
    seconds: float = 0.0
    result: Any = dataclasses.field(default=None, repr=False, compare=False)  # what training produced

    def fits(self, flash: int | None = None, ram: int | None = None) -> bool:
        """True when the candidate was measured and its bytes and arena are within ``flash`` / ``ram`` (None: no
        limit)."""
        return (
            self.bytes is not None
            and (flash is None or self.bytes <= flash)
            and (ram is None or (self.arena_bytes is not None and self.arena_bytes <= ram))
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            k: getattr(self, k)
            for k in (
                "name",
                "origin",
                "params",
                "bytes",
                "arena_bytes",
                "accuracy",
                "drop_bound",
                "sparsity",
                "status",
                "seconds",
            )
        }
        out["accuracies"] = dict(self.accuracies)
        return {k: v for k, v in out.items() if v is not None}


# -- measuring -----------------------------------------------------------------------------------


def randomized_copy(model: Any, seed: int = 0) -> Any:
    """A copy of ``model`` (same architecture) with random non-zero weights.

    Untrained layers start with all-zero biases, and the converter stores equal constant tensors once,
    so an untrained file can be smaller than the trained one; random values measure the real size.
    BatchNormalization scales and variances stay positive.

    >>> from tfedge import keras
    >>> m = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2)])
    >>> bool(np.all(randomized_copy(m).layers[-1].bias.numpy() != 0))
    True
    """
    copy = keras.models.clone_model(model)
    rng = np.random.default_rng(seed)
    values = []
    for weight in copy.weights:
        shape, name = tuple(weight.shape), weight.name
        if "gamma" in name or "moving_variance" in name:
            values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
        else:
            values.append(rng.normal(0.0, 0.1, shape).astype(weight.dtype.as_numpy_dtype))
    copy.set_weights(values)
    return copy


def measure(model: Any, x_calibration: np.ndarray, *, qat: bool = True) -> tuple[int, int, bool]:
    """``(int8 bytes, TFLite Micro arena bytes, qat)`` of ``model`` as the search would deploy it.

    Measured on a randomized copy, quantization-aware wrapped (as training will wrap it; if TF-MOT cannot,
    ``qat`` comes back False and the copy is post-training quantized instead), converted to full int8
    calibrated on ``x_calibration`` (a few real samples), then allocated on TFLite Micro.

    >>> from tfedge import keras
    >>> m = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(8, activation="relu"),
    ...                       keras.layers.Dense(3)])
    >>> flash, arena, qat = measure(m, np.random.default_rng(0).random((16, 4), np.float32))
    >>> 500 < flash < 2000, arena > 0, qat
    (True, True, True)
    """
    import tfedge

    copy = randomized_copy(model)
    wrapped = None
    if qat:
        try:
            wrapped = tfedge.quantize_aware(copy, strict=True)
        except ModelError:
            wrapped = None
    samples = max(len(x_calibration), 1)
    tfl = tfedge.convert(
        wrapped if wrapped is not None else copy,
        representative_data=x_calibration,
        quantization="int8",
        calibration_samples=min(samples, 64),
    )
    return tfl.size, TFLiteMicro(tfl).measure_arena(), wrapped is not None


# -- choosing ------------------------------------------------------------------------------------

#: How sure the choice must be that a candidate is within the allowed drop of the baseline on new data.
CONFIDENCE = 0.8


def drop_bound(correct: np.ndarray, baseline_correct: np.ndarray, confidence: float = CONFIDENCE) -> float:
    """Upper ``confidence`` bound on how much less accurate (a fraction) a model is than the baseline on new
    data like the validation samples, from which samples each gets right (boolean arrays, same samples).

    Paired: only disagreements count (``b`` samples only the baseline gets right, ``c`` only the model),
    half a sample is added to each so that no disagreement on few samples still leaves doubt, and the
    bound is the normal one on ``(b - c) / n``. ``confidence`` 0.5 gives the (adjusted) point estimate.

    >>> base = np.ones(54, bool)
    >>> round(drop_bound(base, base), 3)  # equal on 54 samples: on new data perhaps 1.5 points worse
    0.015
    >>> round(drop_bound(np.ones(1000, bool), np.ones(1000, bool)), 4)
    0.0008
    >>> worse = base.copy(); worse[:2] = False
    >>> round(drop_bound(worse, base), 3)
    0.063
    """
    correct, baseline_correct = np.asarray(correct, bool), np.asarray(baseline_correct, bool)
    if correct.shape != baseline_correct.shape or correct.ndim != 1 or not len(correct):
        raise InputError(
            f"drop_bound needs two boolean arrays over the same samples, got shapes {correct.shape} and "
            f"{baseline_correct.shape}"
        )
    n = len(correct) + 1
    b = np.count_nonzero(baseline_correct & ~correct) + 0.5
    c = np.count_nonzero(correct & ~baseline_correct) + 0.5
    spread = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return float((b - c) / n + statistics.NormalDist().inv_cdf(confidence) * spread)


def qualifies(c: Candidate, *, floor: float, max_drop: float | None = None) -> bool:
    """True when ``c`` was trained, reaches ``floor`` and (given ``max_drop``, a fraction) its ``drop_bound``
    is within it."""
    return (
        c.accuracy is not None
        and c.accuracy >= floor
        and (max_drop is None or c.drop_bound is None or c.drop_bound <= max_drop + 1e-12)
    )


def select(
    candidates: Sequence[Candidate],
    *,
    floor: float,
    flash: int | None = None,
    ram: int | None = None,
    max_drop: float | None = None,
) -> Candidate:
    """The candidate to ship among the trained ones (those with an ``accuracy``).

    Only candidates that fit ``flash`` / ``ram`` and :func:`qualifies` (reach ``floor``, and their
    ``drop_bound`` is within ``max_drop`` when given) qualify. Without a budget: the smallest (bytes,
    then arena), ties to the more accurate; with a budget: the most accurate, ties to the smaller.
    Raises :class:`CheckFailed` (with the table of what was tried) when none qualifies.
    """
    qualified = [c for c in candidates if c.fits(flash, ram) and qualifies(c, floor=floor, max_drop=max_drop)]
    if not qualified:
        raise CheckFailed(no_model_message(candidates, floor=floor, flash=flash, ram=ram, max_drop=max_drop))
    if flash is None and ram is None:
        return min(qualified, key=lambda c: (c.bytes or 0, c.arena_bytes or 0, -(c.accuracy or 0)))
    return max(qualified, key=lambda c: (round(c.accuracy or 0, 6), -(c.bytes or 0), -(c.arena_bytes or 0)))


def budget_text(flash: int | None, ram: int | None) -> str:
    """``flash <= 3,500 B, RAM (arena) <= 4,096 B`` or ``no budget``."""
    parts = ([f"flash <= {format_size(flash)}"] if flash is not None else []) + (
        [f"RAM (arena) <= {format_size(ram)}"] if ram is not None else []
    )
    return ", ".join(parts) or "no budget"


def nothing_fits_message(candidates: Sequence[Candidate], *, flash: int | None, ram: int | None) -> str:
    """Why no candidate fits the budget: the smallest one's bytes and arena against it, and what to do."""
    measured = [c for c in candidates if c.bytes is not None]
    if not measured:
        return "no candidate could be converted and allocated on TFLite Micro: see the statuses above"
    smallest_flash = min(measured, key=lambda c: c.bytes or 0)
    smallest_ram = min(measured, key=lambda c: c.arena_bytes or 0)
    parts = []
    if flash is not None and (smallest_flash.bytes or 0) > flash:
        parts.append(
            f"the smallest file is {format_size(smallest_flash.bytes)} ('{smallest_flash.name}'), "
            f"over the flash budget of {format_size(flash)} by "
            f"{format_size((smallest_flash.bytes or 0) - flash)}"
        )
    if ram is not None and (smallest_ram.arena_bytes or 0) > ram:
        parts.append(
            f"the smallest arena is {format_size(smallest_ram.arena_bytes)} ('{smallest_ram.name}'), "
            f"over the RAM budget of {format_size(ram)} by "
            f"{format_size((smallest_ram.arena_bytes or 0) - ram)}"
        )
    if not parts:  # each limit alone is met by some candidate, but no candidate meets both
        parts.append(
            f"'{smallest_flash.name}' fits the flash ({format_size(smallest_flash.bytes)}) with an arena of "
            f"{format_size(smallest_flash.arena_bytes)}, and '{smallest_ram.name}' fits the RAM with "
            f"{format_size(smallest_ram.bytes)}; none fits both"
        )
    return (
        f"no candidate fits {budget_text(flash, ram)} ({len(measured)} measured before training): "
        + "; ".join(parts)
        + ": raise the budget, or give a smaller --student"
    )


def no_model_message(
    candidates: Sequence[Candidate],
    *,
    floor: float,
    flash: int | None,
    ram: int | None,
    max_drop: float | None = None,
) -> str:
    """Why nothing can be shipped: the table of what was tried and what to change (one line first)."""
    trained = [c for c in candidates if c.accuracy is not None and c.fits(flash, ram)]
    best = max(trained, key=lambda c: c.accuracy or 0, default=None)
    unsure = [c for c in trained if qualifies(c, floor=floor) and not qualifies(c, floor=floor, max_drop=max_drop)]
    head = (
        f"no model within {budget_text(flash, ram)} reaches the accuracy floor of {100 * floor:.1f} %"
        + (f" (best: '{best.name}' at {100 * (best.accuracy or 0):.1f} %, {format_size(best.bytes)})" if best else "")
        + (
            f"; '{unsure[0].name}' reaches it on the validation data, but on new data it may be up to "
            f"{100 * (unsure[0].drop_bound or 0):.1f} points below the baseline (more validation data narrows this)"
            if unsure
            else ""
        )
        + ": nothing was written as the deployed model. To change: allow a larger --max-accuracy-drop, raise "
        "--flash / --ram, give more training (or validation) data or --epochs, or a --student that fits and learns "
        "the task"
    )
    return head + "\n" + candidate_table(candidates, flash=flash, ram=ram)


def _drop_cell(c: Candidate) -> str | None:
    return None if c.drop_bound is None else f"{100 * c.drop_bound:.1f} pt"


def candidate_table(
    candidates: Sequence[Candidate],
    *,
    flash: int | None = None,
    ram: int | None = None,
    chosen: Candidate | None = None,
) -> str:
    """What was tried: one row per candidate (bytes, arena, fits, accuracy, the :func:`drop_bound` below the
    baseline, status), smallest first.

    >>> print(candidate_table([Candidate("a", params=10, bytes=900, arena_bytes=600, accuracy=0.9,
    ...                                  drop_bound=0.012, status="trained")]).splitlines()[2])
    a          10  900 B  600 B  yes   90.0 %  1.2 pt  trained
    """
    rows = []
    for c in sorted(candidates, key=lambda c: (c.bytes or 0, c.arena_bytes or 0)):
        mark = " *" if chosen is not None and c is chosen else ""
        rows.append(
            [
                c.name + mark,
                c.params,
                format_size(c.bytes),
                format_size(c.arena_bytes),
                "yes" if c.fits(flash, ram) else "no",
                None if c.accuracy is None else f"{100 * c.accuracy:.1f} %",
                _drop_cell(c),
                c.status,
            ]
        )
    return format_table(rows, ["candidate", "params", "int8", "arena", "fits", "accuracy", "drop bound", "status"])


def pareto(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The trained candidates no other beats on both bytes and accuracy, smallest first.

    >>> a, b, c = (Candidate(n, bytes=s, accuracy=acc) for n, s, acc in (("a", 1, .9), ("b", 2, .8), ("c", 3, .95)))
    >>> [x.name for x in pareto([a, b, c])]
    ['a', 'c']
    """
    trained = sorted(
        (c for c in candidates if c.accuracy is not None and c.bytes is not None),
        key=lambda c: (c.bytes, -(c.accuracy or 0)),
    )
    front: list[Candidate] = []
    for c in trained:
        if not front or (c.accuracy or 0) > (front[-1].accuracy or 0):
            front.append(c)
    return front


__all__ = [
    "ORIGINS",
    "Candidate",
    "CONFIDENCE",
    "budget_text",
    "drop_bound",
    "qualifies",
    "candidate_table",
    "format_size",
    "measure",
    "no_model_message",
    "nothing_fits_message",
    "pareto",
    "parse_size",
    "randomized_copy",
    "select",
]

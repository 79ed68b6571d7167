"""TFLite Micro LUT compression: weights stored as a few bits per value plus a table, verified bit-exact.

A kernel holding at most ``2**bits`` distinct values per channel (cluster it first:
:func:`tfedge.cluster` and ``quantize_aware(..., preserve_clusters=True)``) can be stored as ``bits``-bit
indices into a small value table. TFLite Micro's ``DECODE`` operator (``tflite_micro.compression`` in
the pinned wheel) expands it into the arena just before the operator that reads it, so the file
shrinks and the arena grows: :func:`lut_compress` decides per tensor whether the flash saved is
worth it, picks the table mode from the tensor's quantization (one table per channel for per-channel
tensors: a mismatch runs with silently wrong outputs), checks on TFLite Micro that the compressed
model's outputs are bit-identical to the original's, and records the flash / arena trade in the
returned model's ``notes``. The result runs on TFLite Micro only: LiteRT has no ``DECODE`` kernel.

>>> import numpy as np, tfedge
>>> plan = tfedge.lut.lut_plan(tfedge.tflite.tiny_int8_model(), bits="auto", tensors="all")
>>> [(t.op, t.shape, t.mode, t.bits) for t in plan]
[('FULLY_CONNECTED', (2, 4), 'per-tensor', 3)]
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfedge.checks import check_int
from tfedge.errors import InputError, ValidationError, first_line
from tfedge.flatbuffer import pack, parse
from tfedge.runtimes import TFLiteMicro, model_io
from tfedge.targets import DECODE_OP, tflm_only_reason as _tflm_only_reason
from tfedge.tflite import TFLiteModel, model_bytes, tensor_labels

#: Operators whose input 1 is a weight tensor LUT compression can replace (TFLite Micro kernels
#: read them only in Invoke, so a decoded, non-constant tensor is fine).
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
#: Bytes a compressed tensor costs besides its indices and tables: the DECODE operator, the table
#: tensor and the decoded tensor (which repeats the quantization parameters, 12 bytes a channel).
#: An estimate used to skip tensors too small to pay; the real sizes are measured afterwards.
OVERHEAD_BYTES = 112
OVERHEAD_BYTES_PER_CHANNEL = 12
#: Arena bytes TFLite Micro allocates for each compressed tensor besides its decoded copy (the DECODE
#: operator's and its tensors' runtime structures); measured on the pinned wheel: 208 bytes each.
ARENA_BYTES_PER_TENSOR = 208
#: Samples generated for the bit-exactness check when no data is given.
DEFAULT_SAMPLES = 32


@dataclasses.dataclass(frozen=True)
class LutTensor:
    """One weight tensor as LUT compression sees it: what it holds and what compressing it costs."""

    index: int
    label: str  # the tensor's name, or the op that reads it (``CONV_2D#3.input1``)
    op: str
    shape: tuple[int, ...]
    mode: str  # "per-tensor" or "per-channel(<axis>)"
    distinct: int  # most distinct values in one table (one channel, or the whole tensor)
    bits: int  # index width used
    bytes_before: int
    bytes_after: int  # packed indices + value tables + estimated overhead
    arena_added: int = 0  # estimated growth of the TFLite Micro arena if only this tensor is compressed
    arena_demand: int = 0  # activations live while its operator runs, plus the decoded tensor

    @property
    def saved(self) -> int:
        return self.bytes_before - self.bytes_after

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"shape": list(self.shape), "saved": self.saved}


@dataclasses.dataclass(frozen=True)
class LutReport:
    """What :func:`lut_report` did: the compressed model, its tensors and the measured flash / arena trade."""

    model: Any  # tfedge.TFLiteModel
    tensors: tuple[LutTensor, ...]
    flash_before: int
    flash_after: int
    arena_before: int
    arena_after: int
    samples: int

    def to_dict(self) -> dict:
        return {
            "tensors": [t.to_dict() for t in self.tensors],
            "flash_before": self.flash_before,
            "flash_after": self.flash_after,
            "arena_before": self.arena_before,
            "arena_after": self.arena_after,
            "samples": self.samples,
        }


def _check_bits(bits: Any) -> int | str:
    if bits == "auto" and isinstance(bits, str):
        return "auto"
    return check_int(
        bits,
        "bits",
        minimum=1,
        maximum=7,
        hint="TFLite Micro's LUT indices are 1 to 7 bits wide; e.g. 4 (16 values) or 'auto'",
    )


def _channels(data: np.ndarray, per_channel: bool, axis: int) -> list[np.ndarray]:
    return list(np.moveaxis(data, axis, 0)) if per_channel else [data]


def _candidates(model, sub_index: int = 0) -> dict[int, tuple[str, str]]:
    """Constant int8 weight tensors of the weight-bearing ops: ``{index: (op, label)}``."""

    sub = model.subgraphs[sub_index]
    labels = tensor_labels(sub)
    found: dict[int, tuple[str, str]] = {}
    for op in sub.operators:
        if op.op in WEIGHT_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0:
            t = sub.tensors[op.inputs[1]]
            if t.is_constant and t.dtype == "int8" and not t.sparse:
                found.setdefault(t.index, (op.op, labels[t.index]))
    return found


def _live_bytes(sub) -> list[int]:
    """Per operator, the bytes of activation tensors alive while it runs (from first write to last read)."""
    first: dict[int, int] = {i: 0 for i in sub.inputs}
    last: dict[int, int] = {i: len(sub.operators) - 1 for i in sub.outputs}
    for op in sub.operators:
        for i in op.outputs:
            first.setdefault(i, op.index)
        for i in op.inputs:
            if i >= 0 and not sub.tensors[i].is_constant:
                last[i] = max(last.get(i, op.index), op.index)
    live = [0] * len(sub.operators)
    for i, start in first.items():
        t = sub.tensors[i]
        size = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize if t.dtype != "bool" else 0
        for k in range(start, last.get(i, start) + 1):
            live[k] += size
    return live


def _select_paying(plan: list[LutTensor], peak: int) -> list[LutTensor]:
    """The tensors whose compression saves more flash than it adds arena, counted together.

    Decoded tensors live only while their operator runs, so the arena grows by the largest
    ``arena_demand`` above today's activation peak, while flash savings add up: try the tensors in
    order of demand and keep the prefix with the largest saving net of the growth.
    """
    best: list[LutTensor] = []
    best_net = 0
    ordered = sorted(plan, key=lambda t: t.arena_demand)
    for k in range(1, len(ordered) + 1):  # a cap on the demand; below it, every tensor that pays its fixed cost
        chosen = [t for t in ordered[:k] if t.saved > ARENA_BYTES_PER_TENSOR]
        if not chosen:
            continue
        growth = max(0, max(t.arena_demand for t in chosen) - peak) + ARENA_BYTES_PER_TENSOR * len(chosen)
        net = sum(t.saved for t in chosen) - growth
        if net > best_net:
            best, best_net = chosen, net
    return sorted(best, key=lambda t: t.index)


def _resolve(model, tensors: Any) -> tuple[list[int], bool]:
    """The tensor indices to consider and whether the user named them (then each must be compressed)."""
    cands = _candidates(model)
    if isinstance(tensors, str) and tensors in ("auto", "all"):
        return sorted(cands), False
    if isinstance(tensors, (str, int)) or tensors is None:
        tensors = [tensors]
    try:
        items = list(tensors)
    except TypeError:
        raise InputError(
            f"tensors must be 'auto', 'all' or a list of tensor names or indices, got {tensors!r}"
        ) from None
    by_label = {label: i for i, (_, label) in cands.items()}
    chosen = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and int(item) in cands:
            chosen.append(int(item))
        elif isinstance(item, str) and item in by_label:
            chosen.append(by_label[item])
        else:
            known = ", ".join(f"{i} ({label})" for i, (_, label) in sorted(cands.items()))
            raise InputError(
                f"tensors names {item!r}, which is not a constant int8 weight tensor of this model "
                f"(those are: {known[:400] or 'none'}): pass one of them, or tensors='auto'"
            )
    return sorted(set(chosen)), True


def lut_plan(tflite_model: Any, bits: int | str = 4, tensors: Any = "auto") -> list[LutTensor]:
    """The tensors :func:`lut_compress` would compress, at which width, and the flash each saves (nothing runs).

    ``tensors="auto"`` keeps the weight tensors whose compression pays: the flash they save (after
    the table and the DECODE operator) exceeds the arena their decoded copies add, a byte for a byte
    (estimated from the activations alive at each operator); ``"all"`` keeps every one that fits ``bits``;
    a list names tensors (indices, or the labels this returns) that must all be compressed. Raises
    :class:`~tfedge.errors.InputError` when a tensor that would be compressed holds more distinct values
    than ``2**bits`` (naming it and the count).
    """

    bits = _check_bits(bits)
    content, source = model_bytes(tflite_model, what="model to compress")
    model = parse(content, source)
    if DECODE_OP in {c.name for c in model.opcodes}:
        raise InputError(f"{source} is already LUT-compressed (it has TFLM_DECODE ops): compress the original model")
    indices, named = _resolve(model, tensors)
    auto = isinstance(tensors, str) and tensors == "auto"
    cands = _candidates(model)
    sub = model.subgraphs[0]
    live = _live_bytes(sub)
    peak = max(live, default=0)
    plan = []
    for index in indices:
        t = sub.tensors[index]
        op, label = cands[index]
        data = np.frombuffer(model.buffer_data(t.buffer), dtype=np.int8).reshape(t.shape)
        per_channel = len(t.scale) > 1
        axis = t.quantized_dimension
        if per_channel and axis not in (0, len(t.shape) - 1):
            if named:
                raise InputError(
                    f"tensor {label} is quantized along axis {axis}; TFLite Micro's LUT kernels "
                    "support axis 0 or the last axis only: leave it out of tensors="
                )
            continue
        tables = _channels(data, per_channel, axis)
        distinct = max(len(np.unique(table)) for table in tables)
        needed = max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1
        width = needed if isinstance(bits, str) else bits  # "auto": the fewest bits that hold the values
        packed = math.ceil(data.size * width / 8)
        after = packed + 16 + len(tables) * distinct + OVERHEAD_BYTES + OVERHEAD_BYTES_PER_CHANNEL * len(t.scale)
        demand = data.size + max(live[o.index] for o in sub.operators if index in o.inputs)
        entry = LutTensor(
            index,
            label,
            op,
            tuple(int(d) for d in t.shape),
            f"per-channel({axis})" if per_channel else "per-tensor",
            distinct,
            width,
            data.size,
            after,
            max(0, demand - peak) + ARENA_BYTES_PER_TENSOR,
            demand,
        )
        if auto and entry.saved <= 0:
            continue  # too small to pay, whatever it holds
        if needed > 7 and bits == "auto":
            if named:
                raise InputError(_too_many(entry, 7))
            continue
        if needed > width:
            raise InputError(_too_many(entry, width))
        plan.append(entry)
    return _select_paying(plan, peak) if auto else plan


def _too_many(t: LutTensor, bits: int) -> str:
    where = "in one channel" if t.mode.startswith("per-channel") else "in the tensor"
    return (
        f"tensor {t.label} ({t.op} weights, shape {'x'.join(map(str, t.shape))}) holds {t.distinct} distinct "
        f"values {where}, more than the {2**bits} that {bits}-bit indices address: cluster the model first "
        f"(tfedge.cluster(model, clusters={2**bits}), then quantize_aware(..., preserve_clusters=True)), or "
        "pass bits='auto'"
    )


def _specs(plan: Sequence[LutTensor]):
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    builder = compression.SpecBuilder()
    for t in plan:
        mode = (
            spec.PerChannel(axis=int(t.mode[len("per-channel(") : -1])) if t.mode != "per-tensor" else spec.PerTensor()
        )
        builder.add_tensor(subgraph=0, tensor=t.index).with_lut(index_bitwidth=t.bits, mode=mode)
    return builder.build()


def _compress(content: bytes, plan: Sequence[LutTensor]) -> bytes:
    """Run TFLite Micro's compressor (quietly), then give DECODE's byte inputs valid quantization fields.

    The pinned compressor leaves each encoded tensor with its old per-channel quantization (12 scales
    on a 1-D byte buffer, which tfedge's verifier rightly calls malformed) and the table tensor with
    none; both are raw bytes that DECODE reads without quantization, so they get scale 1, zero point 0.
    """
    from tflite_micro import compression

    with (
        warnings.catch_warnings(),
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        try:
            raw = bytes(compression.compress(content, _specs(plan)))
        except Exception as exc:
            raise InputError(f"TFLite Micro's compressor refused the model: {first_line(exc)}") from None
    return _raw_bytes_quantization(raw)


def _raw_bytes_quantization(content: bytes) -> bytes:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    from tflite_micro.tensorflow.lite.micro.tools import (
        tflite_flatbuffer_align_wrapper as align,
    )

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    for sub in model.subgraphs:
        for op in sub.operators:
            if model.operatorCodes[op.opcodeIndex].customCode == b"TFLM_DECODE":
                for i in op.inputs:
                    params = schema.QuantizationParametersT()
                    params.scale, params.zeroPoint = [1.0], [0]
                    sub.tensors[i].quantization = params
    with tempfile.TemporaryDirectory(prefix="tfedge-lut-") as tmp:  # the aligner works on files
        packed, aligned = os.path.join(tmp, "packed.tflite"), os.path.join(tmp, "aligned.tflite")
        with open(packed, "wb") as fh:
            fh.write(pack(model, len(content) + 1024))
        align.align_tflite_model(packed, aligned)
        with open(aligned, "rb") as fh:
            return fh.read()


def sample_inputs(content: bytes, source: str, data: Any = None, samples: int = DEFAULT_SAMPLES) -> np.ndarray:
    """``data`` as an array, or ``samples`` generated float inputs that cover the model input's quantized range."""
    info = model_io(content, source)[0]
    if data is not None:
        return np.asarray(data)
    rng = np.random.default_rng(0)
    shape = (samples, *info.shape[1:])
    if info.quantized:
        limits = np.iinfo(np.dtype(info.dtype))
        return info.dequantize(rng.integers(limits.min, limits.max, size=shape, endpoint=True))
    return rng.standard_normal(shape).astype(np.float32)


def lut_report(
    tflite_model: Any,
    bits: int | str = 4,
    tensors: Any = "auto",
    data: Any = None,
    *,
    samples: int = DEFAULT_SAMPLES,
) -> LutReport:
    """:func:`lut_compress`, returning the whole record: tensors, flash and arena before and after.

    This is the function a budget search calls to price LUT compression of a candidate.
    """

    samples = check_int(samples, "samples", minimum=1)
    content, source = model_bytes(tflite_model, what="model to compress")
    plan = lut_plan(content, bits, tensors)
    if not plan:
        raise InputError(
            f"no weight tensor of {source} is worth LUT compression at bits={bits!r}: none saves more "
            "flash than the arena its decoded copy adds; keep the int8 file, or pass tensors='all' "
            "to trade arena for flash anyway"
        )
    compressed = _compress(content, plan)
    x = sample_inputs(content, source, data, samples)
    before = TFLiteMicro(content, source=source).run(x)
    after = TFLiteMicro(compressed, source=f"{source} (LUT-compressed)").run(x)
    diff = before.outputs.astype(np.int64) - after.outputs.astype(np.int64)
    rows = int(np.any(diff.reshape(len(diff), -1) != 0, axis=1).sum())
    if rows:
        raise ValidationError(
            f"the LUT-compressed model differs from {source} on TFLite Micro in {rows} of {len(diff)} samples "
            f"(max difference {int(np.abs(diff).max())}): not returned; please report this model"
        )
    flash_saved = len(content) - len(compressed)
    if isinstance(tensors, str) and tensors == "auto" and flash_saved <= 0:
        raise InputError(
            f"LUT compression of {source} does not pay: the file grows from {len(content):,} to "
            f"{len(compressed):,} bytes; keep the int8 file"
        )
    arena_before, arena_after = int(before.arena_bytes or 0), int(after.arena_bytes or 0)  # measured: run() asks
    widths = sorted({t.bits for t in plan})
    names = ", ".join(f"{t.label} ({t.bits}-bit {t.mode}, {t.distinct} values)" for t in plan)
    notes = [
        *getattr(tflite_model, "notes", ()),
        "TFLite Micro only: LUT-compressed weights are expanded by TFLM_DECODE ops, which LiteRT cannot run",
        f"LUT {'/'.join(map(str, widths))}-bit on {len(plan)} tensor{'s' if len(plan) > 1 else ''}: {names}",
        (
            f"flash {len(content):,} -> {len(compressed):,} bytes ({-flash_saved:+,}); TFLite Micro arena "
            f"{arena_before:,} -> {arena_after:,} bytes ({arena_after - arena_before:+,}); "
            f"outputs bit-identical to the uncompressed model on TFLite Micro ({len(x)} samples)"
        ),
    ]
    quantization = getattr(tflite_model, "quantization", None)
    model = TFLiteModel(compressed, quantization=quantization, notes=notes, source=f"{source} (LUT-compressed)")
    return LutReport(model, tuple(plan), len(content), len(compressed), arena_before, arena_after, len(x))


def lut_compress(
    tflite_model: Any,
    bits: int | str = 4,
    tensors: Any = "auto",
    data: Any = None,
) -> Any:
    """A TFLite-Micro-only copy of an int8 model whose weights are LUT-compressed, verified bit-exact.

    ``bits`` (1-7, or ``"auto"``: per tensor, the fewest bits that hold its values losslessly) is the
    index width; ``tensors`` is ``"auto"`` (the weight tensors that save more flash than they add arena),
    ``"all"``, or a list of tensor indices / labels (see :func:`lut_plan`). Per-channel tensors get one
    table per channel (along their quantized dimension), per-tensor ones a single table. Both models run
    on TFLite Micro (in a child process) on ``data`` (float samples shaped like the input), or on
    32 generated inputs, and must agree bit for bit. The returned :class:`tfedge.TFLiteModel` says in
    its ``notes`` which tensors were compressed and the flash and arena before and after;
    :func:`lut_report` returns the same as numbers. Nothing is written: ``.save(path)`` it.

    >>> import tfedge
    >>> tfl = tfedge.tflite.tiny_int8_model()
    >>> tfedge.lut_compress(tfl, bits=9)
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: bits must be an integer in [1, 7], got 9: TFLite Micro's LUT indices are 1 to 7 bits ...
    """
    return lut_report(tflite_model, bits, tensors, data).model


def tflm_only_reason(model_or_content: Any) -> str | None:
    """Why a ``.tflite`` (path, bytes or ``TFLiteModel``) runs on TFLite Micro only, or None
    (:func:`tfedge.targets.tflm_only_reason` after reading the model).

    >>> import tfedge
    >>> tflm_only_reason(tfedge.tflite.tiny_int8_model()) is None
    True
    """

    content, source = model_bytes(model_or_content)
    return _tflm_only_reason(content, source)


__all__ = [
    "DECODE_OP",
    "WEIGHT_OPS",
    "LutReport",
    "LutTensor",
    "lut_compress",
    "lut_plan",
    "lut_report",
    "tflm_only_reason",
]

"""Which runtime a ``.tflite`` file is for: LiteRT and TFLite Micro (``both``), or one of them.

``tfedge.convert(..., target=...)`` writes three kinds of file. ``"both"`` runs everywhere;
``"litert"`` also keeps the serving signature and the input / output names that Android's LiteRT
APIs look up; ``"tflm"`` drops what TFLite Micro never reads (measured: its outputs stay bit-identical)
and is smaller, but LiteRT refuses it. :func:`tflm_only_reason` tells, from the bytes alone, whether a
file is TFLite-Micro-only and why, so ``inspect`` and ``validate`` can run it on TFLite Micro and say
why LiteRT is skipped. A low-level module: the flatbuffer reader only (no runtime, no TensorFlow).

>>> from tfedge.tflite import tiny_int8_model
>>> tflm_only_reason(tiny_int8_model()) is None
True
>>> check_target("micro")
Traceback (most recent call last):
...
tfedge.errors.InputError: target must be one of both, tflm, litert, got 'micro': ...
"""

from __future__ import annotations

import re

from tfedge.errors import InputError
from tfedge.flatbuffer import Model, parse

#: ``convert``'s targets: a file for both runtimes, for TFLite Micro only, or for LiteRT (names kept).
TARGETS = ("both", "tflm", "litert")
#: The description string of a file converted with ``target="tflm"`` (16 bytes in the file): it marks the
#: file TFLite-Micro-only even when no structural sign of the slimming remains.
TFLM_MARKER = "tfedge:tflm"
#: The custom operator TFLite Micro's LUT compressor inserts (``tfedge.lut_compress``).
DECODE_OP = "CUSTOM:TFLM_DECODE"
#: A failed operator in a runtime's log: LiteRT's "Node number 3 (REDUCE_MAX) failed to prepare",
#: TFLite Micro's "Node REDUCE_MAX (number 3) failed to invoke".
_NODE = re.compile(
    r"Node (?:number (?P<n1>\d+) \((?P<op1>[A-Z0-9_:]+)\)|(?P<op2>[A-Z0-9_:]+) \(number (?P<n2>\w+)\))"
    r" failed to (?P<stage>prepare|invoke|allocate)"
)
#: Operators TFLite Micro has no int16 (16x8) kernel for, measured on the pinned wheel: of CONV_2D,
#: DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV, MAX_POOL_2D, AVERAGE_POOL_2D, MEAN, REDUCE_MAX, ADD, MUL,
#: CONCATENATION, PAD, RESHAPE, RESIZE_NEAREST_NEIGHBOR, RELU, RELU6, LEAKY_RELU, LOGISTIC, TANH and SOFTMAX
#: converted 16x8, only REDUCE_MAX fails there ("Only float32 and int8 types are supported"); LiteRT ran all.
TFLM_NO_INT16_KERNEL = frozenset({"REDUCE_MAX"})
#: The activation type each integer mode asks kernels for.
_ACTIVATIONS = {"int16x8": "int16", "int8": "int8", "int4": "int4-weight"}
#: How a refusal message tells the user to go on.
_FIX = "run it on TFLite Micro (runtimes=('tflm',)), or give LiteRT a file converted with target='both'"


def check_target(target: object) -> str:
    """``target`` when it is one of :data:`TARGETS`, else a one-line :class:`~tfedge.errors.InputError`."""
    if not isinstance(target, str) or target not in TARGETS:
        raise InputError(
            f"target must be one of {', '.join(TARGETS)}, got {target!r}: 'both' runs on LiteRT and "
            "TFLite Micro, 'tflm' is smaller but TFLite Micro only, 'litert' keeps the signature"
        )
    return target


def _one_zero_point(model: Model) -> tuple[int, int] | None:
    """(tensor index, scale count) of the first per-channel tensor stored with a single zero point."""
    for sub in model.subgraphs:
        for t in sub.tensors:
            if len(t.scale) > 1 and len(t.zero_point) == 1:
                return t.index, len(t.scale)
    return None


def tflm_only_reason(content: bytes | Model, source: str = "model") -> str | None:
    """Why a ``.tflite`` runs on TFLite Micro only (one line, naming why LiteRT is skipped), or None.

    A file is TFLite-Micro-only when it holds LUT-compressed weights (``TFLM_DECODE`` ops), per-channel
    tensors stored with one zero point for all their scales (``target="tflm"`` slimming, which LiteRT
    refuses), or tfedge's :data:`TFLM_MARKER`. ``content`` is the file's bytes or an already parsed model.

    >>> from tfedge.tflite import tiny_int8_model
    >>> tflm_only_reason(tiny_int8_model(), "digits.tflite") is None
    True
    """
    model = content if isinstance(content, Model) else parse(content, source)
    if DECODE_OP in {c.name for c in model.opcodes}:
        return (
            f"{source} holds LUT-compressed weights (TFLM_DECODE ops, from tfedge.lut_compress), which only "
            "TFLite Micro can run: use runtimes=('tflm',), or give LiteRT the uncompressed model"
        )
    found = _one_zero_point(model)
    if found is not None:
        index, scales = found
        return (
            f"{source} is slimmed for TFLite Micro: tensor {index} has 1 zero point for {scales} per-channel "
            f"scales, which LiteRT refuses; {_FIX}"
        )
    if model.description == TFLM_MARKER:
        return f"{source} was converted for TFLite Micro only (target='tflm', marked {TFLM_MARKER!r}); {_FIX}"
    return None


def int16_gaps(content: bytes | Model) -> list[tuple[int, str]]:
    """(index, op) of the main subgraph's operators with int16 inputs in :data:`TFLM_NO_INT16_KERNEL`."""
    model = content if isinstance(content, Model) else parse(content)
    sub = model.subgraphs[0]
    return [
        (op.index, op.op)
        for op in sub.operators
        if op.op in TFLM_NO_INT16_KERNEL and any(i >= 0 and sub.tensors[i].dtype == "int16" for i in op.inputs)
    ]


def missing_kernel(runtime: str, message: str, quantization: str, content: bytes | Model | None = None) -> str | None:
    """One line naming the operator a runtime has no kernel for, or None when it cannot be told.

    Read from the runtime's error ``message`` ("Node ... failed to prepare / invoke"); when the message
    does not name a node (TFLite Micro's "Interpreter invocation failed."), a 16x8 model's operators are
    looked up in :data:`TFLM_NO_INT16_KERNEL`.

    >>> missing_kernel("TFLite Micro", "Node REDUCE_MAX (number 3) failed to invoke with status 1", "int16x8")
    'TFLite Micro has no int16 kernel for REDUCE_MAX (operator 3): use int8 for this model'
    """
    fix = "use int8 for this model" if quantization != "int8" else "replace that layer, or use another runtime"
    kind = _ACTIVATIONS.get(quantization)
    found = _NODE.search(message)
    if found is not None:
        op, number = found["op1"] or found["op2"], found["n1"] or found["n2"]
        if not number.isdigit() and re.fullmatch(r"[0-9a-fA-F]+", number):
            number = str(int(number, 16))
    elif runtime == "TFLite Micro" and quantization == "int16x8" and content is not None and int16_gaps(content):
        index, op = int16_gaps(content)[0]
        number = str(index)
    else:
        return None
    return f"{runtime} has no {kind + ' ' if kind else ''}kernel for {op} (operator {number}): {fix}"


__all__ = [
    "TARGETS",
    "TFLM_MARKER",
    "DECODE_OP",
    "TFLM_NO_INT16_KERNEL",
    "check_target",
    "tflm_only_reason",
    "missing_kernel",
    "int16_gaps",
]

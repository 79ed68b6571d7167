"""Keras -> TFLite in every mode; int8 results are audited op by op; files are written atomically.

>>> import numpy as np
>>> import tfedge
>>> from tfedge import keras
>>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
>>> tfl = tfedge.convert(model, representative_data=x)
>>> tfl.quantization, tfl.inputs[0].dtype, tfl.inputs[0].shape
('int8', 'int8', (1, 4))
>>> tfl.notes[0]
'batch dimension pinned to 1 (it was dynamic): the model runs one sample at a time'
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from tfedge._keras import ensure_keras2_model, tf

import numpy as np

from tfedge.checks import check_bool, check_int
from tfedge.datasets import check_inputs_match
from tfedge.errors import ConversionError, InputError, ModelError, ValidationError, first_line
from tfedge.flatbuffer import Model, pack, parse
from tfedge.lut import sample_inputs
from tfedge.native import Captured, capture_fds
from tfedge.runtimes import LiteRT, TFLiteMicro
from tfedge.targets import TARGETS, TFLM_MARKER, check_target, missing_kernel
from tfedge.tflite import FLOAT_DTYPES, QUANTIZATION_MODES, TFLiteModel, non_int8_ops, tensor_labels

#: Conversion modes: :data:`tfedge.tflite.QUANTIZATION_MODES` and ``int4`` (int8 activations, 4-bit weights from
#: quantization-aware training with 4-bit weight quantizers; LiteRT and TFLite Micro run its CONV_2D and
#: FULLY_CONNECTED, measured).
MODES = QUANTIZATION_MODES
#: Modes whose weights and activations are all integers (audited op by op).
INTEGER_MODES = ("int8", "int16x8", "int4")
#: Modes checked on the target's runtimes after conversion: not every kernel has them.
MIXED_PRECISION_MODES = ("int16x8", "int4")
#: Fewest calibration samples tfedge accepts: fewer give unstable activation ranges.
MIN_CALIBRATION_SAMPLES = 10


# ----------------------------------------------------------------------------------------------
# model inputs and calibration data


@dataclasses.dataclass(frozen=True)
class _Input:
    """A Keras model input as the converter will see it (batch pinned)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def _model_inputs(model: Any, notes: list[str]) -> list[_Input]:
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        if getattr(model, "built", False) and not getattr(model, "_is_graph_network", True):
            from tfedge.models import check_graph_model

            check_graph_model(model)  # raises for a subclassed model, naming it and how to rebuild it
        raise ModelError(
            "model has no known input shape: start it with keras.layers.Input(shape) "
            "(or call model.build(shape)) before converting"
        )
    names = list(getattr(model, "input_names", None) or [t.name for t in inputs])
    out = []
    for name, tensor in zip(names, inputs, strict=False):
        dims = list(tensor.shape)
        if not dims:
            raise ModelError(f"model input '{name}' is a scalar; give it at least a batch dimension")
        if dims[0] is None:
            dims[0] = 1
            note = "batch dimension pinned to 1 (it was dynamic): the model runs one sample at a time"
            if note not in notes:
                notes.append(note)
        if any(d is None for d in dims[1:]):
            raise ModelError(
                f"model input '{name}' has shape {tuple(tensor.shape)} with an unknown dimension besides the "
                "batch: microcontrollers need fixed shapes, rebuild the model with a fixed keras.layers.Input shape"
            )
        out.append(_Input(str(name), tuple(int(d) for d in dims), np.dtype(tensor.dtype.as_numpy_dtype)))
    return out


def _to_array(value: Any, where: str) -> np.ndarray:
    if hasattr(value, "numpy"):
        value = value.numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where} is not a numeric array ({exc}); pass a float32 numpy array") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{where} has dtype {arr.dtype}; pass numbers (a float32 numpy array)")
    return arr


def _item_arrays(item: Any, inputs: list[_Input], where: str, single_ok: bool = True) -> list[np.ndarray]:
    """Split one calibration item (array, dict, (x, y) tuple) into one batch per model input.

    ``single_ok``: an item one rank short is a single sample (dataset / generator items).
    """
    if isinstance(item, (tuple, list)) and item and not isinstance(item[0], (int, float)):
        if isinstance(item[0], dict):
            item = item[0]  # (inputs, labels) with inputs keyed by name
        elif len(inputs) == 1:
            first = np.asarray(item[0]) if not hasattr(item[0], "numpy") else item[0].numpy()
            # (x, y) or the TFLite-style [x]; a whole array given as a list of samples stays whole
            if single_ok or first.ndim == len(inputs[0].shape):
                item = item[0]
    names = [i.name for i in inputs]
    if isinstance(item, dict):
        missing = [n for n in names if n not in item]
        extra = [str(k) for k in item if k not in names]
        if missing or extra:
            raise InputError(
                f"{where} is keyed {sorted(map(str, item))} but the model inputs are {names}: "
                "use exactly the input names as keys"
            )
        values = [item[n] for n in names]
    elif len(inputs) > 1:
        raise InputError(
            f"the model has {len(inputs)} inputs {names}: pass {where} as a dict "
            "{input name: array}, or a dataset / callable yielding such dicts"
        )
    else:
        values = [item]
    arrays = []
    for value, inp in zip(values, inputs, strict=False):
        arr = _to_array(value, f"{where} for input '{inp.name}'")
        if single_ok and arr.ndim == len(inp.shape) - 1:
            arr = arr[None]  # a single sample
        arrays.append(arr)
    return arrays


def _collect(data: Any, inputs: list[_Input], limit: int) -> list[np.ndarray]:
    """Read calibration data of any accepted kind into one array per input (at most ``limit`` from streams)."""
    where = "representative_data"
    if isinstance(data, tf.data.Dataset):
        stream: Iterable = data
    elif isinstance(data, (np.ndarray, dict, list, tuple)) or (hasattr(data, "__array__") and not callable(data)):
        return _item_arrays(data, inputs, where, single_ok=False)
    elif callable(data):
        try:
            stream = data()
            iter(stream)
        except Exception as exc:
            raise InputError(
                f"calling representative_data() failed ({type(exc).__name__}: {exc}); it must "
                "return an iterable of batches"
            ) from exc
    else:
        raise InputError(
            f"representative_data must be a numpy array, a dict of arrays, a tf.data.Dataset or a "
            f"callable yielding batches, got {type(data).__name__}"
        )
    parts: list[list[np.ndarray]] = [[] for _ in inputs]
    count = 0
    for k, item in enumerate(stream):
        arrays = _item_arrays(item, inputs, f"{where} item {k}")
        for part, arr in zip(parts, arrays, strict=False):
            part.append(arr)
        count += len(arrays[0]) if arrays[0].ndim else 1
        if count >= limit or k + 1 >= limit:
            break
    if not count:
        raise InputError(f"{where} yielded no samples; it must yield at least {MIN_CALIBRATION_SAMPLES}")
    out = []
    for part, inp in zip(parts, inputs, strict=False):
        ranks = {a.ndim for a in part}
        if len(ranks) > 1:
            raise InputError(f"{where} for input '{inp.name}' yields arrays of different ranks {sorted(ranks)}")
        try:
            out.append(np.concatenate(part))
        except ValueError:
            shapes = sorted({a.shape[1:] for a in part})
            raise InputError(f"{where} for input '{inp.name}' yields samples of different shapes {shapes}") from None
    return out


def _check_calibration(
    arrays: list[np.ndarray], inputs: list[_Input], samples: int, notes: list[str]
) -> list[np.ndarray]:
    """Shape, dtype, finiteness, count and spread checks; returns up to ``samples`` evenly spaced samples."""
    counts = {len(a) for a in arrays}
    if len(counts) > 1:
        raise InputError(
            f"representative_data has different sample counts per input "
            f"{dict(zip([i.name for i in inputs], map(len, arrays), strict=False))}: they must match"
        )
    n = counts.pop()
    if n < MIN_CALIBRATION_SAMPLES:
        raise InputError(
            f"representative_data has {n} sample(s); int8 calibration needs at least "
            f"{MIN_CALIBRATION_SAMPLES} (about 100-500 typical samples is best)"
        )
    out = []
    for arr, inp in zip(arrays, inputs, strict=False):
        where = f"representative_data for input '{inp.name}'"
        check_inputs_match(arr, (None, *inp.shape[1:]), where=where)
        if inp.dtype.kind == "f":
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise InputError(f"{where} holds {bad:,} NaN or Inf value(s); drop or fix those samples")
        arr = arr.astype(inp.dtype, copy=False)
        if n > samples:
            arr = arr[np.linspace(0, n - 1, samples).round().astype(np.int64)]
        if arr.size and float(arr.max()) == float(arr.min()):
            msg = (
                f"{where} is constant (every value is {arr.flat[0]!r}): the int8 ranges will be wrong; "
                "calibrate with real samples"
            )
            warnings.warn(msg, UserWarning, stacklevel=5)  # convert -> _calibration -> here
            notes.append(msg)
        out.append(arr)
    if n < samples:
        notes.append(f"calibrated on all {n} samples given (calibration_samples={samples})")
    else:
        notes.append(f"calibrated on {samples} of {n} samples")
    return out


# ----------------------------------------------------------------------------------------------
# conversion


def _has_layer(model: Any, class_names: tuple[str, ...]) -> bool:
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ in class_names or (hasattr(layer, "layers") and _has_layer(layer, class_names)):
            return True
    return False


def _is_qat(model: Any) -> bool:
    return _has_layer(model, ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2"))


@contextlib.contextmanager
def _quiet_converter() -> Iterator[Captured]:
    """Keep the converter's log lines (Python loggers and native fd 2) off the terminal.

    Yields the captured native text (filled in when the block ends), used to explain a failed conversion.
    """
    loggers = [logging.getLogger(n) for n in ("tensorflow", "absl")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with capture_fds((2,)) as native:
            yield native
    finally:
        for lg, level in zip(loggers, levels, strict=False):
            lg.setLevel(level)


def _first_error(exc: Exception, log: str) -> str:
    lines = [ln.strip() for ln in f"{exc}\n{log}".splitlines()]
    for ln in lines:
        if re.search(r"\berror\b", ln, re.I) and "absl::InitializeLog" not in ln:
            return re.sub(r"^.*?error:\s*", "", ln, flags=re.I)[:300]
    return (next((ln for ln in lines if ln), type(exc).__name__))[:300]


def _keras_layer_names(model: Any) -> dict[str, str]:
    """Layer name -> 'name (Class)' for every layer, nested models and TF-MOT wrappers included."""
    names: dict[str, str] = {}
    for layer in getattr(model, "layers", []):
        inner = getattr(layer, "layer", None)
        label = f"'{getattr(inner, 'name', layer.name)}' ({type(inner or layer).__name__})"
        names[layer.name] = label
        if inner is not None:
            names.setdefault(inner.name, label)
        if hasattr(layer, "layers"):
            names.update(_keras_layer_names(layer))
    return names


def _likely_layer(tensor_names: list[str], layers: dict[str, str]) -> str | None:
    for name in tensor_names:
        for part in re.split(r"[;/:]", name):
            if part in layers:
                return layers[part]
    return None


def _audit(parsed: Model, model: Any, mode: str, float_io: bool) -> None:
    """Raise ConversionError when an integer conversion left anything float (or not int8)."""
    offenders = non_int8_ops(parsed, allow_float_io=float_io)
    if mode == "int16x8":  # int16 activations are the point; only float is wrong
        offenders = [o for o in offenders if any(d in FLOAT_DTYPES for _, d in o["tensors"])]
    elif mode == "int4":  # 4-bit weights are the point
        offenders = [o for o in offenders if any(d != "int4" for _, d in o["tensors"])]
    if not offenders:
        return
    if mode == "int8" and all(d == "int4" for o in offenders for _, d in o["tensors"]):
        raise ConversionError(
            f"int8 conversion stored the weights of {len(offenders)} op(s) in 4 bits: the model was "
            "quantization-aware trained with 4-bit weight quantizers; use quantization='int4'"
        )
    layers = _keras_layer_names(model)
    sub = parsed.subgraphs[0]
    labels = tensor_labels(sub)
    parts = []
    for o in offenders[:8]:
        tensors = ", ".join(f"'{n}' {d}" for n, d in o["tensors"][:4])
        names = [n for n, _ in o["tensors"]]
        if o["index"] >= 0 and o["subgraph"] == 0:  # prefer the op's own output names
            op = sub.operators[o["index"]]
            names = [labels[i] for i in op.outputs] + names
        layer = _likely_layer(names, layers)
        parts.append(f"{o['op']} #{o['index']} ({tensors}{'; Keras layer ' + layer if layer else ''})")
    more = f" and {len(offenders) - 8} more" if len(offenders) > 8 else ""
    raise ConversionError(
        f"{mode} conversion left {len(offenders)} op(s) not {mode}: {'; '.join(parts)}{more}. Fix: quantize "
        "those layers (TF-MOT left them float: give them a QuantizeConfig, or pass representative_data so the "
        "converter calibrates them), or replace them with layers TFLite quantizes"
    )


def _signature_is_pinned(signature: list[int], shape: list[int]) -> bool:
    """True when a shape signature says no more than the shape: equal, or -1 only where the shape has 1."""
    return len(signature) == len(shape) and all(
        s == d or (s == -1 and d == 1) for s, d in zip(signature, shape, strict=True)
    )


def _has_data(buffers: Any, index: int) -> bool:
    buffers = _seq(buffers)
    return 0 <= index < len(buffers) and buffers[index].data is not None and len(buffers[index].data) > 0


def _seq(value: Any) -> Any:
    """An object-API vector (None, list or numpy array: beware, a numpy array's truth value is ambiguous)."""
    return () if value is None else value


def _keep_names(m: Any) -> set[tuple[int, int]]:
    """(subgraph, tensor) of every tensor LiteRT's APIs look up by name: subgraph inputs / outputs, signatures."""
    keep = {(0, int(i)) for i in (*_seq(m.subgraphs[0].inputs), *_seq(m.subgraphs[0].outputs))}
    for sig in _seq(m.signatureDefs):
        keep.update((int(sig.subgraphIndex), int(t.tensorIndex)) for t in (*_seq(sig.inputs), *_seq(sig.outputs)))
    return keep


def _slim_for_tflm(m: Any) -> None:
    """What TFLite Micro never reads, each dropped only after measuring its outputs stay bit-identical:
    per-channel zero points when all are 0 (one is kept: LiteRT refuses that) and the input / output
    names. Kept: the bias quantization (TFLite Micro's per-tensor kernels compare the bias scale with
    input x weight scale: dropping it ran bit-identical on int8 models but failed to prepare an int4 one),
    buffer alignment (on a host every alignment runs, so its need on a microcontroller cannot be measured
    here) and the operator codes (TFLite Micro ignores their versions and reads the 8-bit builtin code,
    which would save 32 bytes, but its own LUT compressor reads the 32-bit one and writes a corrupted file)."""
    m.description = TFLM_MARKER
    for sub in m.subgraphs:
        for t in _seq(sub.tensors):
            t.name = None
            q = t.quantization
            if q is not None and len(_seq(q.scale)) > 1 and not np.any(np.asarray(_seq(q.zeroPoint))):
                q.zeroPoint = [0]


def strip_debug_info(content: bytes, target: str = "both") -> bytes:
    """Rewrite a flatbuffer without what only tools read: the description, metadata, signature defs,
    subgraph names, inner tensor names (model inputs / outputs become ``input_0``, ``output_0``, ...) and redundant
    shape signatures (a -1 batch is pinned to 1). Tensors without constant data share the empty buffer 0,
    unused buffers are dropped, and constant data stays 16-byte aligned.

    ``target="litert"`` keeps the signature defs and the names of the tensors they and the model's
    inputs / outputs use (what LiteRT's signature runner and Android's APIs look up); ``target="tflm"``
    also drops what TFLite Micro never reads and marks the file TFLite-Micro-only
    (:data:`tfedge.targets.TFLM_MARKER`): LiteRT refuses it.
    """
    from ai_edge_litert import schema_py_generated as schema

    check_target(target)
    parse(content, "model to strip")
    m = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    if any(b.offset or b.size for b in _seq(m.buffers)):
        return content  # data stored outside the flatbuffer (> 2 GB models): leave as is
    named = _keep_names(m) if target == "litert" else set()
    m.description = None
    m.metadata = None
    m.metadataBuffer = None
    if target != "litert":
        m.signatureDefs = None
    used = {0}
    for s, sub in enumerate(m.subgraphs):
        keep = {int(i) for i in (*_seq(sub.inputs), *_seq(sub.outputs))} if s == 0 else set()
        sub.name = None
        io_names = {int(t): f"input_{n}" for n, t in enumerate(_seq(sub.inputs))}
        io_names.update({int(t): f"output_{n}" for n, t in enumerate(_seq(sub.outputs))})
        for i, t in enumerate(_seq(sub.tensors)):
            if (s, i) not in named:
                t.name = io_names.get(i) if i in keep else None
            if t.shapeSignature is not None and _signature_is_pinned(list(t.shapeSignature), list(_seq(t.shape))):
                t.shapeSignature = None  # the batch is pinned to 1: LiteRT's resize_tensor_input still works
            if not t.isVariable and not _has_data(m.buffers, t.buffer):
                t.buffer = 0  # tensors without constant data share the empty buffer 0
            used.add(t.buffer)
            if t.quantization is not None and len(_seq(t.quantization.scale)):
                t.quantization.min = t.quantization.max = None
    if target == "tflm":
        _slim_for_tflm(m)
    old = list(_seq(m.buffers))
    order = [i for i in range(len(old)) if i in used]
    remap = {old_i: new_i for new_i, old_i in enumerate(order)}
    m.buffers = [old[i] for i in order]
    for sub in m.subgraphs:
        for t in _seq(sub.tensors):
            t.buffer = remap[t.buffer]
    return pack(m, len(content))


def _same_on_litert(a: bytes, b: bytes) -> bool:
    """Run both models on the same random inputs with LiteRT; True when every output is identical."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(0)
    outputs = []
    feeds = None
    for content in (a, b):
        it = Interpreter(model_content=content)
        it.allocate_tensors()
        details = it.get_input_details()
        if feeds is None:
            feeds = []
            for d in details:
                dt = np.dtype(d["dtype"])
                if dt.kind == "f":
                    feeds.append(rng.random(d["shape"]).astype(dt))
                elif dt.kind in "iu":
                    info = np.iinfo(dt)
                    low, high = max(info.min, -128), min(info.max, 127)
                    feeds.append(rng.integers(low, high, d["shape"], endpoint=True).astype(dt))
                else:
                    feeds.append(np.zeros(d["shape"], dt))
        for d, x in zip(details, feeds, strict=False):
            it.set_tensor(d["index"], x)
        it.invoke()
        outputs.append([it.get_tensor(d["index"]).copy() for d in it.get_output_details()])
    return len(outputs[0]) == len(outputs[1]) and all(np.array_equal(x, y) for x, y in zip(*outputs, strict=False))


# ----------------------------------------------------------------------------------------------
# convert, step by step


def _check_arguments(model: Any, quantization: str, int8_io: bool, calibration_samples: int) -> None:
    """Argument and model checks that come before any work."""
    if quantization not in MODES:
        raise InputError(f"quantization must be one of {', '.join(MODES)}, got {quantization!r}")
    check_bool(int8_io, "int8_io")
    check_int(calibration_samples, "calibration_samples", minimum=MIN_CALIBRATION_SAMPLES)
    ensure_keras2_model(model)
    if _has_layer(model, ("PruneLowMagnitude",)):
        raise ModelError("model still has TF-MOT pruning wrappers: call tfedge.strip(model) before converting")


def _calibration(
    model: Any, representative_data: Any, quantization: str, inputs: list[_Input], samples: int, notes: list[str]
) -> list[np.ndarray] | None:
    """The checked calibration arrays (one per input) an integer mode needs, or None; notes what was used."""
    qat = _is_qat(model)
    integer = quantization in INTEGER_MODES
    calibration = None
    if quantization == "int4" and not qat:
        raise InputError(
            "int4 weights come from quantization-aware training with 4-bit weight quantizers (a TF-MOT "
            "QuantizeConfig with LastValueQuantizer(num_bits=4)), and this model is not quantization-"
            "aware: use quantization='int8', or train the model 4-bit first"
        )
    if integer and representative_data is None and not (qat and quantization in ("int8", "int4")):
        raise InputError(
            f"{quantization} conversion needs representative_data (about 100-500 typical input samples, e.g. "
            f"x_train) to calibrate activation ranges; or use a quantization-aware model, or quantization='dynamic'"
        )
    if integer and representative_data is not None:
        calibration = _check_calibration(_collect(representative_data, inputs, samples), inputs, samples, notes)
    elif representative_data is not None:
        notes.append(f"representative_data not used: {quantization} needs no calibration")
    elif integer:
        notes.append("quantization-aware model: activation ranges come from training (no calibration data)")
    if qat and not integer:
        notes.append("quantization-aware model converted to a float mode; int8 is what its training prepared")
    return calibration


def _argument_names(inputs: list[_Input]) -> list[str]:
    """The traced function's argument names: ``input``, or one per input named after it."""
    if len(inputs) == 1:
        return ["input"]
    return [f"{re.sub(r'[^A-Za-z0-9_]', '_', i.name)}_{k}" for k, i in enumerate(inputs)]


def _trace(model: Any, inputs: list[_Input]) -> Any:
    """The model as a concrete function at the (batch-pinned) input shapes."""
    names = _argument_names(inputs)
    specs = [tf.TensorSpec(i.shape, tf.as_dtype(i.dtype), name=n) for i, n in zip(inputs, names, strict=True)]
    single = len(inputs) == 1
    fn = tf.function(lambda *xs: model(xs[0] if single else list(xs), training=False))
    try:
        return fn.get_concrete_function(*specs)
    except Exception as exc:
        raise ModelError(
            f"cannot trace the model at input shape(s) {[i.shape for i in inputs]}: "
            f"{type(exc).__name__}: {first_line(exc, 200) if str(exc).strip() else ''}"
        ) from None


def _converter(
    concrete: Any,
    model: Any,
    quantization: str,
    inputs: list[_Input],
    calibration: list[np.ndarray] | None,
    *,
    int8_io: bool,
    strip_metadata: bool,
) -> Any:
    """A ``TFLiteConverter`` set up for ``quantization`` (ops, types, calibration feed)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.exclude_conversion_metadata = bool(strip_metadata)
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if calibration is not None:
        converter.representative_dataset = _representative(calibration, inputs)
    if quantization in ("int8", "int4"):  # int4: the converter keeps the 4-bit weights QAT trained
        if calibration is not None:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = tf.int8 if int8_io else tf.float32
        converter.inference_input_type = converter.inference_output_type = io
    elif quantization == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        io = tf.int16 if int8_io else tf.float32
        converter.inference_input_type = converter.inference_output_type = io
    elif quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter


def _representative(calibration: list[np.ndarray], inputs: list[_Input]) -> Any:
    """The converter's representative dataset: batches of the model's fixed batch size."""
    batch = inputs[0].shape[0]
    if len(calibration[0]) < batch:
        raise InputError(
            f"representative_data has {len(calibration[0])} samples, fewer than the model's "
            f"fixed batch size {batch}: pass at least {batch}"
        )
    names = _argument_names(inputs)

    def representative() -> Iterator[Any]:
        for start in range(0, len(calibration[0]) - batch + 1, batch):
            arrays = [arr[start : start + batch] for arr in calibration]
            # several inputs go by name: the calibrator does not keep the argument order
            yield arrays if len(inputs) == 1 else dict(zip(names, arrays, strict=True))

    return representative


def _keras_output_order(content: bytes) -> bytes:
    """The converter's file with the model outputs in the Keras model's order.

    The traced function returns the outputs as a list, which the signature keeps as ``output_0``,
    ``output_1``, ...; the converter may list the subgraph's outputs in another order (a two-head model
    came out head 2 first), and LiteRT and TFLite Micro read them by position."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    if not m.signatureDefs or not m.subgraphs or len(_seq(m.subgraphs[0].outputs)) < 2:
        return content
    named = {_text(t.name): int(t.tensorIndex) for t in _seq(m.signatureDefs[0].outputs)}
    wanted = [named.get(f"output_{k}") for k in range(len(named))]
    current = [int(i) for i in m.subgraphs[0].outputs]
    if None in wanted or sorted(wanted) != sorted(current) or wanted == current:  # type: ignore[type-var]
        return content
    m.subgraphs[0].outputs = wanted
    return pack(m, len(content))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _run_converter(converter: Any, quantization: str) -> Model:
    """Convert quietly; a failure becomes one ``ConversionError`` line taken from the converter's log."""
    with _quiet_converter() as log, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Statistics for quantized inputs.*")
        warnings.filterwarnings("ignore", message=".*Interpreter is deprecated.*")  # the calibrator uses TF's
        try:
            content = converter.convert()
        except Exception as exc:  # the converter raises many types; the log holds the reason
            failure: Exception | None = exc
        else:
            failure = None
    if failure is not None:
        raise ConversionError(
            f"TFLite {quantization} conversion failed: {_first_error(failure, log.text)}. "
            "Fix: check the model's layers are TFLite builtins, or try another quantization mode"
        ) from None
    try:
        return parse(_keras_output_order(content), "converter output")
    except InputError as exc:
        raise ConversionError(f"the TFLite converter wrote a malformed file ({exc})") from None


def _check_output(parsed: Model, model: Any, quantization: str, int8_io: bool, notes: list[str]) -> None:
    """Audit an integer result op by op; note what a dynamic-range conversion quantized."""
    if quantization in INTEGER_MODES:
        _audit(parsed, model, quantization, float_io=not int8_io)
    if quantization == "int4":
        weights = [t for t in parsed.subgraphs[0].tensors if t.is_constant and t.dtype in ("int4", "int8")]
        n_int4 = sum(t.dtype == "int4" for t in weights)
        if not n_int4:
            raise ConversionError(
                "int4 conversion stored no weight in 4 bits: the model's weight quantizers are "
                "8-bit; use quantization='int8', or quantization-aware train with 4-bit weight "
                "quantizers (LastValueQuantizer(num_bits=4))"
            )
        notes.append(
            f"int4: {n_int4} weight tensor(s) stored in 4 bits (packed two per byte), {len(weights) - n_int4} in 8 bits"
        )
    if quantization == "dynamic":
        n_int8 = sum(1 for t in parsed.subgraphs[0].tensors if t.is_constant and t.dtype == "int8")
        notes.append(
            f"dynamic range: {n_int8} weight tensor(s) stored as int8"
            if n_int8
            else "dynamic range: no weight tensor was large enough (1024+ values) to quantize; the file is float32"
        )


def _stripped(content: bytes, notes: list[str], target: str = "both") -> bytes:
    """The file without debug info when it runs identically on LiteRT, else the file as it was.

    ``target="litert"`` keeps the signature and the input / output names (see :func:`strip_debug_info`).
    """
    stripped = strip_debug_info(content, "litert" if target == "litert" else "both")
    if stripped == content:
        return content
    with _quiet_converter():  # LiteRT announces its delegate on stderr
        try:
            same = _same_on_litert(content, stripped)
        except Exception:  # e.g. a custom op LiteRT lacks: keep the converter's file
            same = False
    if same:
        kept = " (signature and input / output names kept for LiteRT)" if target == "litert" else ""
        notes.append(f"debug info stripped{kept}: {len(content) - len(stripped):,} bytes saved")
        return stripped
    msg = "debug info kept: the stripped file did not run identically on LiteRT"
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    notes.append(msg)
    return content


def _tflm_outputs(content: bytes, x: np.ndarray, what: str) -> Any:
    """A model's raw outputs on TFLite Micro (in its child process); a refusal is one ConversionError line."""
    try:
        return TFLiteMicro(content, source=what).run(x)
    except (ValidationError, ModelError) as exc:
        raise ConversionError(
            f"target='tflm' checks the file on TFLite Micro, which cannot run it: {first_line(exc)}; "
            "use target='both' (or 'litert') for this model"
        ) from None


def _slimmed_for_tflm(
    content: bytes, calibration: list[np.ndarray] | None, quantization: str, notes: list[str]
) -> bytes:
    """The TFLite-Micro-only file (:func:`strip_debug_info` with ``target="tflm"``), verified on TFLite Micro:
    its outputs on the calibration data (or generated inputs) are bit-identical to ``content``'s."""
    slim = strip_debug_info(content, "tflm")
    x = sample_inputs(content, "converted model", calibration[0] if calibration else None)
    before = _tflm_outputs(content, x, f"the {quantization} model")
    after = _tflm_outputs(slim, x, f"the {quantization} model slimmed for TFLite Micro")
    diff = (
        before.outputs.astype(np.int64) - after.outputs.astype(np.int64)
        if before.outputs.dtype.kind in "iu"
        else before.outputs - after.outputs
    )
    rows = int(np.any(diff.reshape(len(diff), -1) != 0, axis=1).sum())
    if rows or before.outputs.shape != after.outputs.shape:
        raise ConversionError(
            f"the file slimmed for TFLite Micro differs from the {quantization} file on TFLite Micro "
            f"in {rows} of {len(x)} samples: not returned; use target='both' and please report "
            "this model"
        )
    notes.append(
        f"TFLite Micro only (target='tflm'; LiteRT refuses it): {len(content) - len(slim):,} bytes saved; "
        f"outputs bit-identical to the target='both' file on TFLite Micro ({len(x)} samples), arena "
        f"{before.arena_bytes:,} -> {after.arena_bytes:,} bytes"
    )
    return slim


#: Samples each runtime runs to check a mixed-precision file has kernels there.
KERNEL_CHECK_SAMPLES = 4


def _runtime_refusal(runtime: str, content: bytes, x: np.ndarray, quantization: str) -> str | None:
    """None when ``runtime`` runs the file on ``x``, else one line naming the op it has no kernel for."""
    label = {"litert": "LiteRT", "tflm": "TFLite Micro"}[runtime]
    try:
        with _quiet_converter():  # LiteRT announces its delegate on stderr
            if runtime == "litert":
                LiteRT(content, source=f"the {quantization} file").run(x, warmup=0)
            else:
                TFLiteMicro(content, source=f"the {quantization} file").run(x, measure_arena=False)
    except (ValidationError, ModelError, InputError) as exc:
        message = str(exc)
        return missing_kernel(label, message, quantization, content) or (
            f"{label} cannot run the {quantization} file ({first_line(exc, 200)}): use int8 for this model"
        )
    return None


def _check_kernels(
    content: bytes, calibration: list[np.ndarray] | None, quantization: str, target: str, notes: list[str]
) -> None:
    """Run a mixed-precision file on the target's runtimes: a runtime the target needs without a kernel
    raises ``ConversionError`` naming the op; for ``"both"``, TFLite Micro lacking one is a warning and a note."""
    if len(TFLiteModel(content).inputs) != 1 or len(TFLiteModel(content).outputs) != 1:
        return  # tfedge's runtimes take one input and one output
    x = sample_inputs(content, "converted model", None if calibration is None else calibration[0])
    x = x[:KERNEL_CHECK_SAMPLES]
    runtimes = {"both": ("litert", "tflm"), "litert": ("litert",), "tflm": ("tflm",)}[target]
    for runtime in runtimes:
        refusal = _runtime_refusal(runtime, content, x, quantization)
        if refusal is None:
            continue
        if runtime == "tflm" and target == "both":
            msg = f"{refusal} (this {quantization} file runs on LiteRT only)"
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            notes.append(msg)
        else:
            raise ConversionError(refusal)
    if not any(n.startswith(("LiteRT", "TFLite Micro")) for n in notes):
        names = " and ".join({"litert": "LiteRT", "tflm": "TFLite Micro"}[r] for r in runtimes)
        notes.append(f"{quantization} runs on {names} (checked on {len(x)} samples)")


def convert(
    model: Any,
    representative_data: Any = None,
    quantization: str = "int8",
    *,
    int8_io: bool = True,
    calibration_samples: int = 200,
    strip_metadata: bool = True,
    target: str = "both",
) -> TFLiteModel:
    """Convert a Keras 2 model (plain float or TF-MOT quantization-aware) to TFLite.

    ``quantization``: ``int8`` (full integer, audited op by op; int8 input / output unless
    ``int8_io=False``), ``int16x8`` (int16 activations, int8 weights), ``int4`` (int8 activations, 4-bit
    weights: a model quantization-aware trained with 4-bit weight quantizers), ``float16``, ``dynamic`` or
    ``float32``; ``int16x8`` and ``int4`` files are run on the target's runtimes, and one without a kernel
    for them raises naming the op. ``representative_data`` (numpy array, dict of arrays keyed by input name,
    ``tf.data.Dataset`` or a callable yielding batches) calibrates int8 / int16x8; a QAT model does
    not need it. A dynamic batch is pinned to 1 (see ``.notes``). ``strip_metadata`` drops
    conversion metadata, signatures and tensor names so the file is smaller on a microcontroller.

    ``target``: ``"both"`` (the default) runs on LiteRT and TFLite Micro; ``"litert"`` keeps the serving
    signature and the input / output names LiteRT's APIs use; ``"tflm"`` also drops what TFLite Micro
    never reads (one zero point where a per-channel tensor's are all 0, names: see
    :func:`strip_debug_info`) and marks the file TFLite-Micro-only; it is checked
    bit-identical to the ``"both"`` file on TFLite Micro, on the calibration data (or generated inputs).
    LiteRT refuses a ``"tflm"`` file: :func:`tfedge.targets.tflm_only_reason` says why.

    >>> from tfedge import keras
    >>> model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2)])
    >>> convert(model, quantization="float16").quantization
    'float16'
    >>> convert(model)
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: int8 conversion needs representative_data ...
    """
    _check_arguments(model, quantization, int8_io, calibration_samples)
    check_target(target)
    if target != "both" and not strip_metadata:
        raise InputError(
            f"target={target!r} writes a stripped file, but strip_metadata=False asks to keep everything: "
            "use target='both' with strip_metadata=False, or leave strip_metadata on"
        )
    notes: list[str] = []
    inputs = _model_inputs(model, notes)
    calibration = _calibration(model, representative_data, quantization, inputs, int(calibration_samples), notes)
    converter = _converter(
        _trace(model, inputs), model, quantization, inputs, calibration, int8_io=int8_io, strip_metadata=strip_metadata
    )
    parsed = _run_converter(converter, quantization)
    _check_output(parsed, model, quantization, int8_io, notes)
    content = _stripped(parsed.content, notes, target) if strip_metadata else parsed.content
    if quantization in MIXED_PRECISION_MODES:
        _check_kernels(content, calibration, quantization, target, notes)
    if target == "tflm":
        content = _slimmed_for_tflm(content, calibration, quantization, notes)
    return TFLiteModel(content, quantization=quantization, notes=notes, source=f"converted {quantization} model")


__all__ = [
    "convert",
    "TFLiteModel",
    "strip_debug_info",
    "MODES",
    "INTEGER_MODES",
    "MIXED_PRECISION_MODES",
    "TARGETS",
    "MIN_CALIBRATION_SAMPLES",
]

"""The kernel sets tfedge runs a model on, behind one small interface, each in an isolated child process.

A runtime here is a kernel set (:data:`KERNELS`): ``litert`` is LiteRT's default resolver (XNNPACK, what a
phone's CPU runs), ``litert-ref`` LiteRT's reference kernels (the reference arithmetic), ``tflm`` TFLite
Micro's reference kernels (a microcontroller without vendor kernels). Every one runs in a child process
(``python -m tfedge._tflm_worker``: numpy and the runtime only, no TensorFlow), because native kernels abort
or segfault on some well-formed files (a degenerate quantization scale) and TFLite Micro verifies nothing:
a crash or a hang there becomes :class:`RuntimeCrashed` here (the signal, and with :meth:`locate_crash`
the op it happened in), a model the runtime will not load :class:`RuntimeRefused` (its own reason, one
line). Both are :class:`~tfedge.errors.ValidationError`.

Samples are floats, one array per model input (or one array for a one-input model); each input is
quantized with its own scale / zero point (:func:`quantize`), so int8, int16 (16x8), uint8 and float
models are fed the same way, and ``run`` returns every output's raw values (:class:`RunResult`).
:func:`open_runtime` opens a model on a runtime named in :data:`RUNTIMES`.

>>> import numpy as np
>>> q = quantize([0.0, 0.5, 1.0, 9.0], scale=1 / 255, zero_point=-128)
>>> q
array([-128,    0,  127,  127], dtype=int8)
>>> dequantize(q, 1 / 255, -128).round(3)
array([0.   , 0.502, 1.   , 1.   ], dtype=float32)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfedge.checks import check_int
from tfedge.datasets import check_inputs_match
from tfedge.errors import InputError, ModelError, ValidationError
from tfedge.flatbuffer import parse
from tfedge.surgery import graph_ops, prefix
from tfedge.targets import tflm_only_reason
from tfedge.tflite import ModelSource, TensorInfo, dequantize, model_bytes, per_axis_error, quantize

#: What each runtime name stands for: the kernel library it runs and the device it represents.
KERNELS = {
    "litert": "LiteRT default kernels (XNNPACK, a phone's CPU)",
    "litert-ref": "LiteRT reference kernels (the reference arithmetic)",
    "tflm": "TFLite Micro reference kernels (a microcontroller without vendor kernels)",
}
#: Runtime names accepted by :func:`open_runtime` and ``tfedge.validate`` (the CLI's ``--runtimes`` choices).
RUNTIMES = tuple(KERNELS)
#: Runtimes that run reference kernels: they must agree with each other (``tfedge.validation``'s pass rule).
REFERENCE_RUNTIMES = ("litert-ref", "tflm")

#: LiteRT invokes run (untimed) before the timed ones.
WARMUP_INVOKES = 10

#: Smallest arena the TFLite Micro arena search tries: below about 512 bytes the TFLM Python
#: interpreter segfaults instead of failing cleanly, so the search never goes lower (and a model that
#: allocates in 512 bytes is reported as needing 512).
ARENA_LOWER_BOUND = 512

#: Seconds without any sign of progress from a runtime's child process before it is killed as hung.
TFLM_TIMEOUT_S = 60.0

ProgressFn = Callable[[int], None]


class RuntimeRefused(ValidationError):
    """A runtime would not load, prepare or invoke the model; ``reason`` is its own one-line message and
    ``kind`` says when: ``unloadable`` (it cannot read the file), ``refused`` (it will not prepare it),
    ``failed`` (an invoke failed or produced a wrong shape)."""

    def __init__(self, message: str, reason: str, kind: str = "refused"):
        super().__init__(message)
        self.reason, self.kind = reason, kind


class RuntimeCrashed(ValidationError):
    """A runtime's child process died (``signal_name``, e.g. ``SIGABRT``, or ``hung``) while ``stage``.

    ``head`` / ``tail`` are the message around the place :meth:`in_op` puts the op the crash was in.
    """

    def __init__(self, head: str, tail: str, signal_name: str, stage: str):
        super().__init__(head + tail)
        self.head, self.tail = head, tail
        self.signal_name, self.stage = signal_name, stage

    def in_op(self, op: str) -> str:
        """The message naming the op, e.g. ``TFLite Micro crashed (signal 6, SIGABRT) in SOFTMAX (op 1) on ...``."""
        return f"{self.head} in {op}{self.tail}"


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one runtime produced for a batch of samples.

    ``all_outputs`` holds every model output's raw values per sample (int8 for an int8 model), each
    shaped ``(N, *sample_shape)``, described by ``output_infos``; ``outputs`` / ``output`` are the first of
    them and ``input`` the first input. ``invoke_us``: the time of each invoke (LiteRT);
    ``arena_bytes``: the smallest TFLite Micro arena that allocated (TFLite Micro, when measured).
    """

    runtime: str
    outputs: np.ndarray
    input: TensorInfo
    output: TensorInfo
    invoke_us: np.ndarray | None = None
    arena_bytes: int | None = None
    all_outputs: tuple[np.ndarray, ...] = ()
    input_infos: tuple[TensorInfo, ...] = ()
    output_infos: tuple[TensorInfo, ...] = ()

    def dequantized(self, k: int = 0) -> np.ndarray:
        """Output ``k`` as floats."""
        infos, arrays = self.output_infos or (self.output,), self.all_outputs or (self.outputs,)
        return infos[k].dequantize(arrays[k])


def model_signature(content: bytes, source: str = "model") -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Every input and output of a TFLite model's main subgraph, read from the flatbuffer (nothing runs).

    Inputs or outputs quantized per axis raise :class:`ModelError` (tfedge cannot feed or read them).

    >>> from tfedge.tflite import tiny_int8_model
    >>> ins, outs = model_signature(tiny_int8_model())
    >>> [(t.name, t.dtype, t.shape) for t in (*ins, *outs)]
    [('input', 'int8', (1, 4)), ('output', 'int8', (1, 2))]
    """
    sub = parse(content, source).subgraphs[0]
    if not sub.inputs or not sub.outputs:
        raise ModelError(
            f"{source} has {len(sub.inputs)} inputs and {len(sub.outputs)} outputs; tfedge runs "
            "models with at least one of each"
        )
    found: list[tuple[TensorInfo, ...]] = []
    for what, indices in (("input", sub.inputs), ("output", sub.outputs)):
        infos = []
        for k, index in enumerate(indices):
            t = sub.tensors[index]
            if len(t.scale) > 1:
                raise per_axis_error(source, what, len(t.scale))
            infos.append(TensorInfo.from_tensor(t, name=f"{what}{k}" if len(indices) > 1 else what))
        found.append(tuple(infos))
    return found[0], found[1]


def model_io(content: bytes, source: str = "model") -> tuple[TensorInfo, TensorInfo]:
    """The input and output of a one-input, one-output TFLite model (see :func:`model_signature`).

    >>> from tfedge.tflite import tiny_int8_model
    >>> info = model_io(tiny_int8_model())[0]
    >>> info.dtype, info.shape, info.quantized
    ('int8', (1, 4), True)
    """
    ins, outs = model_signature(content, source)
    if len(ins) != 1 or len(outs) != 1:
        raise ModelError(
            f"{source} has {len(ins)} inputs and {len(outs)} outputs; this step takes models with "
            "one input and one output (tfedge.validate takes any number)"
        )
    return ins[0], outs[0]


def check_samples(x: np.ndarray, info: TensorInfo, source: str) -> np.ndarray:
    """Return ``x`` as float32 after checking it is a finite numeric batch shaped like input ``info``."""
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"samples must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 0 or len(arr) == 0:
        raise InputError(f"samples must be an array of shape (N, ...) with N >= 1, got shape {arr.shape}")
    check_inputs_match(arr, (1, *info.sample_shape), where=f"data for {source}")
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(f"samples hold {bad} NaN or Inf values; clean or drop those samples")
    return arr


def split_inputs(x: Any, inputs: Sequence[TensorInfo], source: str) -> list[np.ndarray]:
    """One checked float batch per model input, from an array (one input), a sequence in input order, or a
    mapping keyed by input name or ``x0``, ``x1``, ... (``x`` also works for one input).

    >>> from tfedge.tflite import tiny_int8_model
    >>> ins, _ = model_signature(tiny_int8_model())
    >>> [a.shape for a in split_inputs({"x0": np.zeros((2, 4))}, ins, "m")]
    [(2, 4)]
    """
    n = len(inputs)
    if isinstance(x, Mapping) or hasattr(x, "files"):  # a dict or an open .npz
        keys = list(x.files if hasattr(x, "files") else x.keys())
        arrays = []
        for k, info in enumerate(inputs):
            names = [info.name, f"x{k}"] + (["x"] if n == 1 else [])
            key = next((name for name in names if name in keys), None)
            if key is None:
                raise InputError(
                    f"data for {source} has no array for input {k} ('{info.name}'): name it "
                    f"'{info.name}' or 'x{k}', got keys {keys}"
                )
            arrays.append(x[key])
    elif n == 1:
        arrays = [x]
    elif isinstance(x, (list, tuple)) and len(x) == n:
        arrays = list(x)
    else:
        listed = ", ".join(f"'{t.name}'" for t in inputs)
        raise InputError(
            f"{source} has {n} inputs ({listed}): pass a list of {n} arrays or a dict keyed by input "
            f"name or x0..x{n - 1}, got {type(x).__name__}"
        )
    checked = [check_samples(a, info, f"{source} input '{info.name}'") for a, info in zip(arrays, inputs)]
    counts = {len(a) for a in checked}
    if len(counts) > 1:
        raise InputError(f"the inputs of {source} hold different numbers of samples {sorted(counts)}; they must match")
    return checked


class IsolatedRuntime:
    """A model on one kernel set, run in a child process that cannot take this one down.

    Subclasses name the kernel set; ``timeout`` is the number of seconds the child may go without progress
    before it is killed. :meth:`run` takes float samples; :meth:`run_raw` takes each input's raw values.
    """

    name = ""
    label = ""

    def __init__(self, model_or_path: ModelSource, source: str | None = None, *, timeout: float = TFLM_TIMEOUT_S):
        if isinstance(timeout, bool) or not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._content, src = model_bytes(model_or_path)
        self.source = source or src
        self.timeout = float(timeout)
        self.inputs, self.outputs = model_signature(self._content, self.source)
        self.input, self.output = self.inputs[0], self.outputs[0]
        self.child_info: dict[str, Any] = {}

    def quantize_inputs(self, x: Any) -> list[np.ndarray]:
        """Float samples (see :func:`split_inputs`) to each input's raw values, with that input's own params."""
        return [info.quantize(a) for info, a in zip(self.inputs, split_inputs(x, self.inputs, self.source))]

    def run(self, x: Any, *, progress: ProgressFn | None = None) -> RunResult:
        """Run each sample of ``x`` (floats, one ``(N, ...)`` array per input); all samples in one child."""
        return self.run_raw(self.quantize_inputs(x), progress=progress)

    def run_raw(
        self, raw: Sequence[np.ndarray] | None, *, progress: ProgressFn | None = None, **options: Any
    ) -> RunResult:
        """Run raw input values (``None``: one all-zero sample, a smoke run) and return every output."""
        return self._run_child(raw, options, progress)

    def locate_crash(self, raw: Sequence[np.ndarray] | None = None) -> str | None:
        """The op this runtime crashes in (e.g. ``SOFTMAX (op 1)``), or None when no prefix of the graph
        crashes: runs growing prefixes of the graph (bisection), each on one sample in its own child."""
        ops = graph_ops(self._content)
        sample = None if raw is None else [np.asarray(a)[:1] for a in raw]

        def crashes(count: int) -> bool:
            probe = copy.copy(self)
            probe._content = prefix(self._content, count)
            try:
                probe.inputs, probe.outputs = model_signature(probe._content, self.source)
                probe.run_raw(sample, measure_arena=False)
            except RuntimeCrashed:
                return True
            except (ValidationError, InputError):
                return False
            return False

        good, bad = 0, len(ops)
        if not ops or not crashes(bad):
            return None
        while bad - good > 1:
            mid = (good + bad) // 2
            if crashes(mid):
                bad = mid
            else:
                good = mid
        return ops[bad - 1].label()

    # -- the child process -------------------------------------------------------------------------

    def _refusal(self, result: dict[str, Any]) -> str:
        """The one-line message for a model the child's runtime would not take."""
        return f"{self.label} cannot run {self.source} ({result['stage']}): {result['error']}"

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"kernels": self.name, "num_inputs": len(self.inputs), "num_outputs": len(self.outputs), **options}

    def _run_child(
        self, raw: Sequence[np.ndarray] | None, options: dict[str, Any], progress: ProgressFn | None
    ) -> RunResult:
        with tempfile.TemporaryDirectory(prefix=f"tfedge-{self.name}-") as tmp:
            folder = Path(tmp)
            (folder / "model.tflite").write_bytes(self._content)
            if raw is not None:
                feed: dict[str, Any] = {f"x{k}": np.ascontiguousarray(a) for k, a in enumerate(raw)}
                np.savez(folder / "inputs.npz", **feed)
            (folder / "options.json").write_text(json.dumps(self._options(options)))
            stage = self._supervise(folder, progress)
            result_path = folder / "result.json"
            if not result_path.exists():
                raise ValidationError(
                    f"{self.label} ended without a result on {self.source} while {stage}; its log: {_log_tail(folder)}"
                )
            result = json.loads(result_path.read_text())
            if result.get("kind") == "input":
                raise InputError(result["error"])
            if "error" in result:
                kind = result.get("kind", "failed")
                raise RuntimeRefused(self._refusal(result), result["error"], kind)
            self.child_info = {k: result.get(k) for k in ("tensorflow_imported", "seconds", "inference_arena")}
            # as the runtime itself reports them, named and indexed from the file
            ins = tuple(_reported(d, t) for d, t in zip(result["inputs"], self.inputs))
            outs = tuple(_reported(d, t) for d, t in zip(result["outputs"], self.outputs))
            if raw is not None:
                with np.load(folder / "outputs.npz", allow_pickle=False) as data:
                    arrays = tuple(data[f"y{k}"] for k in range(len(outs)))
            else:
                arrays = tuple(np.empty((0, *t.sample_shape), t.dtype) for t in outs)
            times_path = folder / "times.npy"
            times = np.load(times_path, allow_pickle=False) if times_path.exists() else None
        self.inputs, self.outputs = ins, outs
        self.input, self.output = ins[0], outs[0]
        return RunResult(
            self.name,
            arrays[0],
            ins[0],
            outs[0],
            invoke_us=times,
            arena_bytes=result.get("arena_bytes"),
            all_outputs=arrays,
            input_infos=ins,
            output_infos=outs,
        )

    def _supervise(self, folder: Path, progress: ProgressFn | None) -> str:
        """Start the child, follow its progress pipe, enforce the timeout; return the last stage."""
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        stage = "starting"
        with open(folder / "log.txt", "wb") as log:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tfedge._tflm_worker", str(folder), str(write_fd)],
                    pass_fds=(write_fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=folder,
                    env=env,
                )
            finally:
                os.close(write_fd)
            try:
                stage = self._follow(proc, read_fd, progress)
            finally:
                os.close(read_fd)
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        code = proc.returncode
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            arena_size = getattr(self, "arena_size", None)
            if arena_size is not None and arena_size < ARENA_LOWER_BOUND:
                fix = f"arenas under {ARENA_LOWER_BOUND} bytes crash it: leave arena_size unset or give more"
            else:
                fix = (
                    "the file may be corrupted, or a tensor's quantization is degenerate (see tfedge inspect); "
                    "another runtime may still run it"
                )
            raise RuntimeCrashed(
                f"{self.label} crashed (signal {-code}, {name})", f" on {self.source} while {stage}; {fix}", name, stage
            )
        if code != 0 and not (folder / "result.json").exists():
            raise ValidationError(
                f"{self.label} failed (exit {code}) on {self.source} while {stage}: {_log_tail(folder)}"
            )
        return stage

    def _follow(self, proc: subprocess.Popen, read_fd: int, progress: ProgressFn | None) -> str:
        stage, pending = "starting", b""
        while True:
            ready, _, _ = select.select([read_fd], [], [], self.timeout)
            if not ready:
                proc.kill()
                raise RuntimeCrashed(
                    f"{self.label} stopped responding",
                    f" on {self.source} while {stage} (no progress for "
                    f"{self.timeout:g} s) and was stopped; the file may be corrupted, or raise the timeout",
                    "hung",
                    stage,
                )
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return stage
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                kind, _, value = line.decode("ascii", "replace").partition(" ")
                if kind == "stage":
                    stage = value
                elif kind == "done" and progress is not None:
                    progress(int(value))


def _reported(d: dict, declared: TensorInfo) -> TensorInfo:
    """A tensor as the runtime reported it, named and indexed from the file (TFLite Micro reports neither)."""
    return TensorInfo(**{**d, "shape": tuple(d["shape"]), "name": declared.name, "index": declared.index})


class LiteRT(IsolatedRuntime):
    """A model on LiteRT (``ai_edge_litert``) with its default kernels (XNNPACK), from bytes, in a child.

    >>> from tfedge.tflite import tiny_int8_model
    >>> rt = LiteRT(tiny_int8_model())
    >>> rt.input.dtype, rt.input.shape, rt.output.shape
    ('int8', (1, 4), (1, 2))
    >>> rt.run(np.ones((3, 4), np.float32)).outputs.shape
    (3, 2)
    """

    name = "litert"
    label = "LiteRT"

    def __init__(
        self,
        model_or_path: ModelSource,
        source: str | None = None,
        *,
        threads: int = 1,
        timeout: float = TFLM_TIMEOUT_S,
    ):
        threads = check_int(threads, "threads", minimum=1)
        super().__init__(model_or_path, source, timeout=timeout)
        self.threads = threads
        reason = tflm_only_reason(self._content, self.source)
        if reason:  # LiteRT has no kernel for them: refused before a child starts
            raise RuntimeRefused(f"{self.label} cannot run {self.source}: {reason}", reason, "skipped")

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {**super()._options(options), "threads": self.threads}

    def _refusal(self, result: dict[str, Any]) -> str:
        kind, error = result.get("kind"), result["error"]
        if kind == "unloadable":
            return f"{self.source} is not a loadable TFLite model: {self.label} says {error}"
        if kind == "refused":
            return f"{self.label} cannot prepare {self.source}: {error}"
        if "got" in result:
            return (
                f"{self.label} produced an output of shape {tuple(result['got'])} from {self.source}, which "
                f"declares {tuple(result['declared'])}: the file is corrupted or unsupported; "
                "re-create it with tfedge.convert"
            )
        return f"{self.label} failed to run {self.source}: {error}"

    def run(self, x: Any, *, warmup: int = WARMUP_INVOKES, progress: ProgressFn | None = None) -> RunResult:
        """Run each sample of ``x`` through one invoke, timing each invoke after ``warmup`` untimed ones."""
        return self.run_raw(self.quantize_inputs(x), progress=progress, warmup=max(0, int(warmup)))


class LiteRTReference(LiteRT):
    """A model on LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``), in a child process.

    >>> from tfedge.tflite import tiny_int8_model
    >>> LiteRTReference(tiny_int8_model()).run(np.ones((2, 4), np.float32)).outputs.shape
    (2, 2)
    """

    name = "litert-ref"
    label = "LiteRT (reference kernels)"


class TFLiteMicro(IsolatedRuntime):
    """A model on TFLite Micro, run in a child process that cannot take this one down.

    ``arena_size=None`` starts from a generous arena and grows it if needed. ``run`` also measures
    the smallest arena that allocates (and invokes) when ``measure_arena`` is true: a bisection
    from :data:`ARENA_LOWER_BOUND`, each probe in its own forked process.

    >>> from tfedge.tflite import tiny_int8_model
    >>> result = TFLiteMicro(tiny_int8_model()).run(np.ones((3, 4), np.float32))
    >>> result.outputs.shape, result.arena_bytes > 0
    ((3, 2), True)
    """

    name = "tflm"
    label = "TFLite Micro"

    def __init__(
        self,
        model_or_path: ModelSource,
        source: str | None = None,
        *,
        arena_size: int | None = None,
        timeout: float = TFLM_TIMEOUT_S,
    ):
        if arena_size is not None and (
            not isinstance(arena_size, int) or isinstance(arena_size, bool) or arena_size < 1
        ):
            raise InputError(f"arena_size must be a positive number of bytes, got {arena_size!r}")
        super().__init__(model_or_path, source, timeout=timeout)
        self.arena_size = arena_size

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {**super()._options(options), "arena_size": self.arena_size, "arena_lower_bound": ARENA_LOWER_BOUND}

    def measure_arena(self) -> int:
        """The smallest arena (bytes) in which the model allocates and invokes."""
        arena = self.run_raw(None, measure_arena=True).arena_bytes
        if arena is None:  # the worker always measures when asked
            raise ValidationError(f"TFLite Micro reported no arena size for {self.source}")
        return int(arena)

    def run(self, x: Any, *, measure_arena: bool = True, progress: ProgressFn | None = None) -> RunResult:
        """Run each sample of ``x``; all samples in one child process."""
        return self.run_raw(self.quantize_inputs(x), progress=progress, measure_arena=bool(measure_arena))


def _log_tail(folder: Path, lines: int = 3) -> str:
    try:
        text = (folder / "log.txt").read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail)[:400] or "(empty log)"


def open_runtime(
    name: str, model_or_path: ModelSource, source: str | None = None, *, threads: int = 1, timeout: float | None = None
) -> IsolatedRuntime:
    """Open ``model_or_path`` on the runtime called ``name`` (one of :data:`RUNTIMES`).

    ``threads`` applies to LiteRT, ``timeout`` (seconds without progress; default
    :data:`TFLM_TIMEOUT_S`) to TFLite Micro. Both runtimes then take ``run(x, progress=...)``.

    >>> from tfedge.tflite import tiny_int8_model
    >>> open_runtime("litert", tiny_int8_model()).output.shape
    (1, 2)
    """
    timeout = TFLM_TIMEOUT_S if timeout is None else timeout
    if name == "litert":
        return LiteRT(model_or_path, source, threads=threads, timeout=timeout)
    if name == "litert-ref":
        return LiteRTReference(model_or_path, source, threads=threads, timeout=timeout)
    if name == "tflm":
        return TFLiteMicro(model_or_path, source, timeout=timeout)
    raise InputError(f"unknown runtime {name!r}: choose from {', '.join(RUNTIMES)}")


def check_runtimes(runtimes: Sequence[str] | str) -> tuple[str, ...]:
    """Normalize a runtime list (``"litert,tflm"`` or a sequence); unknown or repeated names are refused."""
    names = [r.strip() for r in runtimes.split(",")] if isinstance(runtimes, str) else list(runtimes)
    if not names or any(not isinstance(n, str) or n not in RUNTIMES for n in names):
        raise InputError(f"runtimes must be a non-empty list of {', '.join(RUNTIMES)}, got {runtimes!r}")
    if len(set(names)) != len(names):
        raise InputError(f"runtimes lists a runtime twice: {runtimes!r}")
    return tuple(names)


__all__ = [
    "RUNTIMES",
    "ARENA_LOWER_BOUND",
    "TFLM_TIMEOUT_S",
    "WARMUP_INVOKES",
    "quantize",
    "dequantize",
    "TensorInfo",
    "RunResult",
    "LiteRT",
    "LiteRTReference",
    "TFLiteMicro",
    "IsolatedRuntime",
    "RuntimeRefused",
    "RuntimeCrashed",
    "KERNELS",
    "REFERENCE_RUNTIMES",
    "model_signature",
    "split_inputs",
    "open_runtime",
    "check_runtimes",
    "ModelSource",
    "model_io",
    "check_samples",
]

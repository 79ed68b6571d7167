"""LiteRT and TFLite Micro behind one small interface, and the one quantize / dequantize helper pair.

:class:`LiteRT` runs a model in this process with ``ai_edge_litert`` (always from bytes, so LiteRT's
flatbuffer verifier runs). :class:`TFLiteMicro` runs the real TFLite Micro kernels in a child process
(``python -m tfedge._tflm_worker``: numpy and ``tflite_micro`` only, no TensorFlow), because that
interpreter verifies nothing and segfaults on some corrupted files and on tiny arenas: a crash, a hang
or an error there becomes a one-line :class:`~tfedge.errors.ValidationError` here. Both take float
samples, quantize them with the model's own input scale / zero point (:func:`quantize`) and return the
raw outputs; :meth:`TensorInfo.dequantize` turns those into floats. :func:`open_runtime` opens a model on
a runtime named in :data:`RUNTIMES`, and every runtime answers ``run(x, progress=...)`` with a
:class:`RunResult`, so a new kernel set is one more name and one more class.

>>> import numpy as np
>>> q = quantize([0.0, 0.5, 1.0, 9.0], scale=1 / 255, zero_point=-128)
>>> q
array([-128,    0,  127,  127], dtype=int8)
>>> dequantize(q, 1 / 255, -128).round(3)
array([0.   , 0.502, 1.   , 1.   ], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tfedge.errors import InputError, ModelError, ValidationError, first_line
from tfedge.flatbuffer import parse
from tfedge.tflite import ModelSource, TensorInfo, dequantize, model_bytes, per_axis_error, quantize

#: Runtime names accepted by :func:`open_runtime` and ``tfedge.validate`` (the CLI's ``--runtimes`` choices).
RUNTIMES = ("litert", "tflm")

#: LiteRT invokes run (untimed) before the timed ones.
WARMUP_INVOKES = 10

#: Smallest arena the TFLite Micro arena search tries: below about 512 bytes the TFLM Python
#: interpreter segfaults instead of failing cleanly, so the search never goes lower (and a model that
#: allocates in 512 bytes is reported as needing 512).
ARENA_LOWER_BOUND = 512

#: Seconds without any sign of progress from the TFLite Micro child before it is killed as hung.
TFLM_TIMEOUT_S = 60.0

ProgressFn = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one runtime produced for a batch of samples.

    ``outputs`` holds the raw output tensor per sample (int8 for an int8 model), shape
    ``(N, *output_shape[1:])``; ``invoke_us`` the time of each invoke (LiteRT) and ``arena_bytes`` the
    smallest TFLite Micro arena that allocated (TFLite Micro, when measured).
    """

    runtime: str
    outputs: np.ndarray
    input: TensorInfo
    output: TensorInfo
    invoke_us: np.ndarray | None = None
    arena_bytes: int | None = None

    def dequantized(self) -> np.ndarray:
        return self.output.dequantize(self.outputs)


def model_io(content: bytes, source: str = "model") -> tuple[TensorInfo, TensorInfo]:
    """The input and output of a TFLite model, read from the flatbuffer (nothing runs).

    Models with several inputs or outputs, or per-axis quantized ones, raise :class:`ModelError`.

    >>> from tfedge.tflite import tiny_int8_model
    >>> info = model_io(tiny_int8_model())[0]
    >>> info.dtype, info.shape, info.quantized
    ('int8', (1, 4), True)
    """
    sub = parse(content, source).subgraphs[0]
    if len(sub.inputs) != 1 or len(sub.outputs) != 1:
        raise ModelError(
            f"{source} has {len(sub.inputs)} inputs and {len(sub.outputs)} outputs; tfedge runs models with one "
            "input and one output"
        )
    infos = []
    for what, index in (("input", sub.inputs[0]), ("output", sub.outputs[0])):
        t = sub.tensors[index]
        if len(t.scale) > 1:
            raise per_axis_error(source, what, len(t.scale))
        infos.append(TensorInfo.from_tensor(t, name=what))
    return infos[0], infos[1]


def check_samples(x: np.ndarray, info: TensorInfo, source: str) -> np.ndarray:
    """Return ``x`` as float32 after checking it is a finite numeric batch shaped like input ``info``."""
    from tfedge.datasets import check_inputs_match

    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"samples must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 0 or len(arr) == 0:
        raise InputError(f"samples must be an array of shape (N, ...) with N >= 1, got shape {arr.shape}")
    check_inputs_match(arr, info.shape, where=f"data for {source}")
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(f"samples hold {bad} NaN or Inf values; clean or drop those samples")
    return arr


class LiteRT:
    """A model on LiteRT (``ai_edge_litert``), loaded from bytes, in this process.

    >>> from tfedge.tflite import tiny_int8_model
    >>> rt = LiteRT(tiny_int8_model())
    >>> rt.input.dtype, rt.input.shape, rt.output.shape
    ('int8', (1, 4), (1, 2))
    >>> rt.run(np.ones((3, 4), np.float32)).outputs.shape
    (3, 2)
    """

    name = "litert"

    def __init__(self, model_or_path: ModelSource, source: str | None = None, *, threads: int = 1):
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise InputError(f"threads must be an integer >= 1, got {threads!r}")
        content, src = model_bytes(model_or_path)
        self.source = source or src
        from ai_edge_litert.interpreter import Interpreter

        try:  # the details too: LiteRT decodes tensor names, which a corrupted file can make invalid UTF-8
            self._interpreter = Interpreter(model_content=content, num_threads=threads)
            ins, outs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{self.source} is not a loadable TFLite model: LiteRT says {first_line(exc)}") from None
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(
                f"{self.source} has {len(ins)} inputs and {len(outs)} outputs; tfedge validates models with one "
                "input and one output"
            )
        try:
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ValidationError(f"LiteRT cannot prepare {self.source}: {first_line(exc)}") from None
        self.input = TensorInfo.from_details(ins[0], self.source, "input")
        self.output = TensorInfo.from_details(outs[0], self.source, "output")
        self._in_index, self._out_index = ins[0]["index"], outs[0]["index"]

    def run(self, x: np.ndarray, *, warmup: int = WARMUP_INVOKES, progress: ProgressFn | None = None) -> RunResult:
        """Run each sample of ``x`` (floats, shape ``(N, ...)``) through one invoke, timing each invoke.

        ``warmup`` invokes on the first sample come first and are not timed.
        """
        samples = self.input.quantize(check_samples(x, self.input, self.source))
        it = self._interpreter
        batch_shape = (1, *samples.shape[1:])
        outputs = np.empty((len(samples), *self.output.shape[1:]), dtype=self.output.dtype)
        times = np.empty(len(samples), dtype=np.float64)
        try:
            for _ in range(max(0, warmup)):
                it.set_tensor(self._in_index, samples[:1].reshape(batch_shape))
                it.invoke()
            for i in range(len(samples)):
                it.set_tensor(self._in_index, samples[i : i + 1].reshape(batch_shape))
                start = time.perf_counter_ns()
                it.invoke()
                times[i] = (time.perf_counter_ns() - start) / 1000.0
                out = it.get_tensor(self._out_index)
                if out.shape != (1, *outputs.shape[1:]):  # a corrupted option (e.g. padding) can resize it
                    raise ValidationError(
                        f"LiteRT produced an output of shape {out.shape} from {self.source}, which declares "
                        f"{(1, *outputs.shape[1:])}: the file is corrupted or unsupported; "
                        "re-create it with tfedge.convert")
                outputs[i] = out[0]
                if progress is not None:
                    progress(i + 1)
        except (ValueError, RuntimeError) as exc:
            raise ValidationError(f"LiteRT failed to run {self.source}: {first_line(exc)}") from None
        return RunResult(self.name, outputs, self.input, self.output, invoke_us=times)


class TFLiteMicro:
    """A model on TFLite Micro, run in a child process that cannot take this one down.

    ``arena_size=None`` starts from a generous arena and grows it if needed. ``run`` also measures
    the smallest arena that allocates (and invokes) when ``measure_arena`` is true: a bisection
    from :data:`ARENA_LOWER_BOUND`, each probe in its own forked process. ``timeout`` is the number
    of seconds the child may go without progress before it is killed.

    >>> from tfedge.tflite import tiny_int8_model
    >>> result = TFLiteMicro(tiny_int8_model()).run(np.ones((3, 4), np.float32))
    >>> result.outputs.shape, result.arena_bytes > 0
    ((3, 2), True)
    """

    name = "tflm"

    def __init__(self, model_or_path: ModelSource, source: str | None = None, *, arena_size: int | None = None,
                 timeout: float = TFLM_TIMEOUT_S):
        if arena_size is not None and (not isinstance(arena_size, int) or isinstance(arena_size, bool)
                                       or arena_size < 1):
            raise InputError(f"arena_size must be a positive number of bytes, got {arena_size!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._content, src = model_bytes(model_or_path)
        self.source = source or src
        self.arena_size = arena_size
        self.timeout = float(timeout)
        self.input, self.output = model_io(self._content, self.source)

    def measure_arena(self) -> int:
        """The smallest arena (bytes) in which the model allocates and invokes."""
        arena = self._run_child(None, measure_arena=True, progress=None).arena_bytes
        if arena is None:  # the worker always measures when asked
            raise ValidationError(f"TFLite Micro reported no arena size for {self.source}")
        return int(arena)

    def run(self, x: np.ndarray, *, measure_arena: bool = True, progress: ProgressFn | None = None) -> RunResult:
        """Run each sample of ``x`` (floats, shape ``(N, ...)``); all samples in one child process."""
        arr = check_samples(x, self.input, self.source)
        return self._run_child(arr, measure_arena=measure_arena, progress=progress)

    # -- the child process -------------------------------------------------------------------------

    def _run_child(self, x: np.ndarray | None, *, measure_arena: bool, progress: ProgressFn | None) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="tfedge-tflm-") as tmp:
            folder = Path(tmp)
            (folder / "model.tflite").write_bytes(self._content)
            if x is not None:
                np.save(folder / "inputs.npy", np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
            options = {"arena_size": self.arena_size, "measure_arena": bool(measure_arena),
                       "arena_lower_bound": ARENA_LOWER_BOUND}
            (folder / "options.json").write_text(json.dumps(options))
            stage = self._supervise(folder, progress)
            result_path = folder / "result.json"
            if not result_path.exists():
                raise ValidationError(f"TFLite Micro ended without a result on {self.source} while {stage}; "
                                      f"its log: {_log_tail(folder)}")
            result = json.loads(result_path.read_text())
            if result.get("kind") == "input":
                raise InputError(result["error"])
            if "error" in result:
                raise ValidationError(f"TFLite Micro cannot run {self.source} ({result['stage']}): {result['error']}")
            # as TFLite Micro itself reports them (it does not report tensor names)
            self.input = self._reported(result["input"], self.input)
            self.output = self._reported(result["output"], self.output)
            if x is not None:
                outputs = np.load(folder / "outputs.npy", allow_pickle=False)
            else:
                outputs = np.empty((0, *self.output.shape[1:]), dtype=self.output.dtype)
            self.child_info = {k: result[k] for k in ("tensorflow_imported", "seconds", "inference_arena")}
        return RunResult(self.name, outputs, self.input, self.output, arena_bytes=result.get("arena_bytes"))

    @staticmethod
    def _reported(d: dict, declared: TensorInfo) -> TensorInfo:
        """A tensor as TFLite Micro reported it, named and indexed from the file (TFLite Micro reports neither)."""
        return TensorInfo(**{**d, "shape": tuple(d["shape"]), "name": declared.name, "index": declared.index})

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
                    pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=folder, env=env,
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
            if self.arena_size is not None and self.arena_size < ARENA_LOWER_BOUND:
                fix = f"arenas under {ARENA_LOWER_BOUND} bytes crash it: leave arena_size unset or give more"
            else:
                fix = "the file is probably corrupted or unsupported: re-create it with tfedge.convert"
            raise ValidationError(
                f"TFLite Micro crashed (signal {-code}, {name}) on {self.source} while {stage}; {fix}")
        if code != 0 and not (folder / "result.json").exists():
            raise ValidationError(
                f"TFLite Micro failed (exit {code}) on {self.source} while {stage}: {_log_tail(folder)}")
        return stage

    def _follow(self, proc: subprocess.Popen, read_fd: int, progress: ProgressFn | None) -> str:
        stage, pending = "starting", b""
        while True:
            ready, _, _ = select.select([read_fd], [], [], self.timeout)
            if not ready:
                proc.kill()
                raise ValidationError(
                    f"TFLite Micro stopped responding on {self.source} while {stage} (no progress for "
                    f"{self.timeout:g} s) and was stopped; the file may be corrupted, or raise the timeout"
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


def _log_tail(folder: Path, lines: int = 3) -> str:
    try:
        text = (folder / "log.txt").read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail)[:400] or "(empty log)"


def open_runtime(name: str, model_or_path: ModelSource, source: str | None = None, *, threads: int = 1,
                 timeout: float | None = None) -> LiteRT | TFLiteMicro:
    """Open ``model_or_path`` on the runtime called ``name`` (one of :data:`RUNTIMES`).

    ``threads`` applies to LiteRT, ``timeout`` (seconds without progress; default
    :data:`TFLM_TIMEOUT_S`) to TFLite Micro. Both runtimes then take ``run(x, progress=...)``.

    >>> from tfedge.tflite import tiny_int8_model
    >>> open_runtime("litert", tiny_int8_model()).output.shape
    (1, 2)
    """
    if name == "litert":
        return LiteRT(model_or_path, source, threads=threads)
    if name == "tflm":
        return TFLiteMicro(model_or_path, source, timeout=TFLM_TIMEOUT_S if timeout is None else timeout)
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
    "TFLiteMicro",
    "open_runtime",
    "check_runtimes",
    "ModelSource",
    "model_io",
    "check_samples",
]

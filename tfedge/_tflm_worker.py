"""Child-process entry that runs a model on one kernel set: ``python -m tfedge._tflm_worker FOLDER FD``.

Started by :mod:`tfedge.runtimes` (TFLite Micro, LiteRT with XNNPACK, LiteRT reference kernels), never
by users. It imports numpy, ``tflite_micro`` or ``ai_edge_litert`` and tfedge's light helpers only (no
TensorFlow), so it starts in a fraction of a second, and a native abort takes down this process, not
the caller. FOLDER holds ``model.tflite``, ``options.json`` (``kernels``: ``tflm`` / ``litert`` /
``litert-ref``, arena and timing options) and, to run samples, ``inputs.npz`` (``x0``, ``x1``, ...: the
raw values of each model input, already quantized); the worker writes ``outputs.npz`` (``y0``, ... raw
outputs), ``times.npy`` (LiteRT microseconds per invoke) and ``result.json``. Without ``inputs.npz`` it
runs one all-zero sample (a smoke run). Progress lines (``stage TEXT`` / ``done N``) go to file
descriptor FD so the parent can tell a slow run from a hung one. A handled error is written to
``result.json`` as ``{"error": ..., "stage": ..., "kind": ...}`` (``refused`` when the runtime would
not load the model); a crash simply ends the process with a signal, which the parent reports.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tfedge.errors import InputError, first_line
from tfedge.native import capture_fds
from tfedge.tflite import TensorInfo, sample_shape

#: Largest arena tried when growing the inference arena (bytes).
MAX_ARENA = 1 << 30


class _Progress:
    def __init__(self, fd: int):
        self.fd = fd
        self.last = 0.0

    def send(self, line: str) -> None:
        try:
            os.write(self.fd, (line + "\n").encode("ascii", "replace"))
        except OSError:
            pass

    def stage(self, text: str) -> None:
        self.send(f"stage {text}")

    def done(self, n: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last > 0.2 or n == total:
            self.last = now
            self.send(f"done {n}")


def _capture_native_output(fn: Callable[[], Any]) -> tuple[Any, str]:
    """Call ``fn()`` with file descriptors 1 and 2 captured; return (its value or exception, the text)."""
    with capture_fds((1, 2)) as captured:
        try:
            value = fn()
        except Exception as exc:  # the caller decides what a failure means
            value = exc
    return value, captured.text


def _short(text: str, exc: BaseException | None = None) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    head = f"{type(exc).__name__}: {first_line(exc) if str(exc).strip() else ''}" if exc else ""
    detail = " | ".join(dict.fromkeys(lines))[:300]
    return "; ".join(p for p in (head, detail) if p) or "unknown error"


def _is_arena_shortage(text: str) -> bool:
    """True when TFLite Micro's log says the arena was too small (not another failure).

    >>> _is_arena_shortage("Failed to allocate tail memory. Requested: 256, available 80, missing: 176")
    True
    >>> _is_arena_shortage("Didn't find op for builtin opcode 'CONV_2D'")
    False
    """
    return "Requested:" in text and ("available" in text or "missing" in text)


def _open(runtime, content: bytes, arena: int):
    return runtime.Interpreter.from_bytes(content, arena_size=arena)


def _load(runtime, content: bytes, arena: int | None, progress: _Progress):
    """Open the interpreter; without a given arena, start generous and double on arena shortage."""
    size = arena or max(64 * 1024, 4 * len(content))
    while True:
        progress.stage(f"loading the model (arena {size:,} bytes)")
        value, log = _capture_native_output(functools.partial(_open, runtime, content, size))
        if not isinstance(value, Exception):
            return value, size
        if arena is None and _is_arena_shortage(log) and size < MAX_ARENA:
            size = min(size * 2, MAX_ARENA)
            continue
        raise RuntimeError(_short(log, value))


def _probe(runtime, content: bytes, arena: int, sample: list[np.ndarray]) -> bool:
    """True when the model allocates and invokes in ``arena`` bytes (``sample``: one array per input);
    each probe in a forked process."""

    def attempt() -> bool:
        interp = _open(runtime, content, arena)
        for k, x in enumerate(sample):
            interp.set_input(x, k)
        interp.invoke()
        return True

    if not hasattr(os, "fork"):
        value, _ = _capture_native_output(attempt)
        return value is True
    pid = os.fork()
    if pid == 0:  # the probe: quiet, no core file, exit code is the answer
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = 0 if attempt() else 1
        except BaseException:  # any failure, even SystemExit, means the arena is too small
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _smallest_arena(
    runtime, content: bytes, known_good: int, lower: int, sample: list[np.ndarray], progress: _Progress
) -> int:
    progress.stage("searching the smallest arena")
    if _probe(runtime, content, lower, sample):
        return lower
    bad, good = lower, known_good
    while good - bad > 1:
        mid = (bad + good) // 2
        progress.stage(f"searching the smallest arena ({bad:,}-{good:,} bytes)")
        if _probe(runtime, content, mid, sample):
            good = mid
        else:
            bad = mid
    return good


class _Refused(Exception):
    """The runtime would not take the model; ``kind``: ``unloadable`` (it cannot even read it), ``refused``
    (it read it but will not prepare it) or ``failed`` (an invoke failed, or an output has the wrong shape)."""

    def __init__(self, reason: str, kind: str = "refused", **detail: Any):
        super().__init__(reason)
        self.kind, self.detail = kind, detail


def _reason(value: BaseException, log: str) -> str:
    lines = [ln.strip() for ln in str(value).splitlines() if ln.strip()]
    return "; ".join(dict.fromkeys(lines))[:300] if lines else _short(log, value)


def _open_litert(content: bytes, kernels: str, threads: int):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if kernels == "litert-ref" else OpResolverType.AUTO

    def make():  # the details too: LiteRT decodes tensor names, which a corrupted file can make invalid UTF-8
        it = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver)
        return it, it.get_input_details(), it.get_output_details()

    value, log = _capture_native_output(make)
    if isinstance(value, Exception):
        raise _Refused(_reason(value, log), "unloadable")
    done, log = _capture_native_output(value[0].allocate_tensors)
    if isinstance(done, Exception):
        raise _Refused(_reason(done, log), "refused")
    return value


def _check_shape(out: np.ndarray, declared: tuple[int, ...]) -> None:
    expected = tuple(int(d) for d in declared)
    if out.shape != expected:  # a corrupted option (e.g. padding) can resize it
        raise _Refused(
            f"output of shape {out.shape}", "failed", got=[int(d) for d in out.shape], declared=list(expected)
        )


def _run_litert(content: bytes, options: dict, raw: list[np.ndarray] | None, progress: _Progress) -> dict:
    kernels = options["kernels"]
    progress.stage("importing ai_edge_litert")
    progress.stage("loading the model")
    it, ins, outs = _open_litert(content, kernels, int(options.get("threads", 1)))
    samples = raw if raw is not None else [np.zeros((1, *sample_shape(d["shape"])), d["dtype"]) for d in ins]
    count = len(samples[0])
    results = [np.empty((count, *sample_shape(d["shape"])), d["dtype"]) for d in outs]
    times = np.empty(count, np.float64)

    def feed(i: int) -> None:
        for d, x in zip(ins, samples):
            it.set_tensor(d["index"], x[i : i + 1].reshape(tuple(int(n) for n in d["shape"])))

    warmup = int(options.get("warmup", 0)) if raw is not None else 0
    progress.stage(f"running {count} samples")
    try:
        for _ in range(warmup):
            feed(0)
            it.invoke()
        for i in range(count):
            progress.stage(f"running sample {i} of {count}")
            feed(i)
            start = time.perf_counter_ns()
            it.invoke()
            times[i] = (time.perf_counter_ns() - start) / 1000.0
            for k, d in enumerate(outs):
                out = it.get_tensor(d["index"])
                _check_shape(out, tuple(d["shape"]))
                results[k][i] = out.reshape(results[k].shape[1:])
            progress.done(i + 1, count)
    except (ValueError, RuntimeError) as exc:
        raise _Refused(_reason(exc, ""), "failed") from None
    return {
        "inputs": [TensorInfo.from_details(d, "model", f"input{k}").to_dict() for k, d in enumerate(ins)],
        "outputs": [TensorInfo.from_details(d, "model", f"output{k}").to_dict() for k, d in enumerate(outs)],
        "_arrays": results,
        "_times": times,
    }


def _run_tflm(content: bytes, options: dict, raw: list[np.ndarray] | None, progress: _Progress) -> dict:
    progress.stage("importing tflite_micro")
    from tflite_micro.python.tflite_micro import runtime

    try:
        interp, arena = _load(runtime, content, options.get("arena_size"), progress)
    except RuntimeError as exc:
        raise _Refused(first_line(exc, limit=400)) from None
    n_in, n_out = int(options.get("num_inputs", 1)), int(options.get("num_outputs", 1))
    infos_in = [TensorInfo.from_details(interp.get_input_details(k), "model", f"input{k}") for k in range(n_in)]
    infos_out = [TensorInfo.from_details(interp.get_output_details(k), "model", f"output{k}") for k in range(n_out)]
    shapes = [t.shape for t in infos_in]
    samples = (
        raw
        if raw is not None
        else [np.full((1, *t.sample_shape), t.zero_point if t.quantized else 0, dtype=t.dtype) for t in infos_in]
    )
    count = len(samples[0])
    results = [np.empty((count, *t.sample_shape), t.dtype) for t in infos_out]
    progress.stage(f"running {count} samples")
    for i in range(count):
        progress.stage(f"running sample {i} of {count}")
        for k, x in enumerate(samples):
            interp.set_input(x[i : i + 1].reshape(shapes[k]), k)
        interp.invoke()
        for k in range(n_out):
            results[k][i] = interp.get_output(k).reshape(results[k].shape[1:])
        progress.done(i + 1, count)
    arena_bytes = None
    if options.get("measure_arena"):
        lower = int(options.get("arena_lower_bound", 512))
        first = [x[:1].reshape(shapes[k]) for k, x in enumerate(samples)]
        arena_bytes = _smallest_arena(runtime, content, arena, lower, first, progress) if arena > lower else arena
    return {
        "inputs": [t.to_dict() for t in infos_in],
        "outputs": [t.to_dict() for t in infos_out],
        "_arrays": results,
        "inference_arena": arena,
        "arena_bytes": arena_bytes,
    }


def run(folder: Path, progress: _Progress) -> dict:
    options = json.loads((folder / "options.json").read_text())
    content = (folder / "model.tflite").read_bytes()
    inputs_path = folder / "inputs.npz"
    raw = None
    if inputs_path.exists():
        with np.load(inputs_path, allow_pickle=False) as data:
            raw = [data[f"x{k}"] for k in range(len(data.files))]
    kernels = options.get("kernels", "tflm")
    result = (_run_tflm if kernels == "tflm" else _run_litert)(content, options, raw, progress)
    arrays, times = result.pop("_arrays"), result.pop("_times", None)
    if raw is not None:
        np.savez(folder / "outputs.npz", **{f"y{k}": a for k, a in enumerate(arrays)})
        if times is not None:
            np.save(folder / "times.npy", times, allow_pickle=False)
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    return result


def main(argv: list[str]) -> int:
    start = time.monotonic()
    folder, fd = Path(argv[0]), int(argv[1])
    progress = _Progress(fd)
    try:
        result = run(folder, progress)
    except InputError as exc:
        result = {"error": str(exc), "stage": "checking the samples", "kind": "input"}
    except _Refused as exc:
        result = {
            "error": str(exc),
            "stage": "loading the model" if exc.kind != "failed" else "running the model",
            "kind": exc.kind,
            **exc.detail,
        }
    except Exception as exc:  # reported to the parent as one line
        result = {"error": first_line(exc), "stage": "loading or running the model"}
    result["seconds"] = round(time.monotonic() - start, 3)
    result.setdefault("tensorflow_imported", "tensorflow" in sys.modules)
    result.setdefault("inference_arena", None)
    (folder / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

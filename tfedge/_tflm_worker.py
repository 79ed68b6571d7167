"""Child-process entry that runs a model on TFLite Micro: ``python -m tfedge._tflm_worker FOLDER FD``.

Started by :class:`tfedge.runtimes.TFLiteMicro`, never by users. It imports numpy, ``tflite_micro``
and tfedge's light helpers only (no TensorFlow), so it starts in a fraction of a second. FOLDER holds
``model.tflite``, ``options.json`` and, to run samples, ``inputs.npy`` (float samples); the worker
writes ``outputs.npy`` (raw outputs) and ``result.json``. Progress lines (``stage TEXT`` /
``done N``) go to file descriptor FD so the parent can tell a slow run from a hung one. A handled
error is written to ``result.json`` as ``{"error": ..., "stage": ...}``; a crash simply ends the
process with a signal, which the parent reports.
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
from tfedge.runtimes import check_samples
from tfedge.tflite import TensorInfo

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


def _probe(runtime, content: bytes, arena: int, sample: np.ndarray) -> bool:
    """True when the model allocates and invokes in ``arena`` bytes; each probe in a forked process."""

    def attempt() -> bool:
        interp = _open(runtime, content, arena)
        interp.set_input(sample, 0)
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


def _smallest_arena(runtime, content: bytes, known_good: int, lower: int, sample: np.ndarray,
                    progress: _Progress) -> int:
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


def run(folder: Path, progress: _Progress) -> dict:
    options = json.loads((folder / "options.json").read_text())
    content = (folder / "model.tflite").read_bytes()
    progress.stage("importing tflite_micro")
    from tflite_micro.python.tflite_micro import runtime

    interp, arena = _load(runtime, content, options.get("arena_size"), progress)
    info_in = TensorInfo.from_details(interp.get_input_details(0), "model", "input")
    info_out = TensorInfo.from_details(interp.get_output_details(0), "model", "output")
    batch_shape = (1, *info_in.shape[1:])
    first = np.full(batch_shape, info_in.zero_point if info_in.quantized else 0, dtype=info_in.dtype)

    inputs_path = folder / "inputs.npy"
    if inputs_path.exists():
        x = check_samples(np.load(inputs_path, allow_pickle=False), info_in, "the model")
        samples = info_in.quantize(x)
        outputs = np.empty((len(samples), *info_out.shape[1:]), dtype=info_out.dtype)
        progress.stage(f"running {len(samples)} samples")
        for i in range(len(samples)):
            progress.stage(f"running sample {i} of {len(samples)}")
            interp.set_input(samples[i : i + 1].reshape(batch_shape), 0)
            interp.invoke()
            outputs[i] = interp.get_output(0)[0]
            progress.done(i + 1, len(samples))
        np.save(folder / "outputs.npy", outputs, allow_pickle=False)
        first = samples[:1].reshape(batch_shape)
    else:  # run once here, so that a model that crashes on invoke is reported, not measured as fitting
        progress.stage("running one sample")
        interp.set_input(first, 0)
        interp.invoke()

    arena_bytes = None
    if options.get("measure_arena"):
        lower = int(options.get("arena_lower_bound", 512))
        arena_bytes = _smallest_arena(runtime, content, arena, lower, first, progress) if arena > lower else arena
    return {
        "input": info_in.to_dict(),
        "output": info_out.to_dict(),
        "inference_arena": arena,
        "arena_bytes": arena_bytes,
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def main(argv: list[str]) -> int:
    start = time.monotonic()
    folder, fd = Path(argv[0]), int(argv[1])
    progress = _Progress(fd)
    try:
        result = run(folder, progress)
    except InputError as exc:
        result = {"error": str(exc), "stage": "checking the samples", "kind": "input"}
    except Exception as exc:  # reported to the parent as one line
        result = {"error": first_line(exc),
                  "stage": "loading or running the model"}
    result["seconds"] = round(time.monotonic() - start, 3)
    result.setdefault("tensorflow_imported", "tensorflow" in sys.modules)
    result.setdefault("inference_arena", None)
    (folder / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Capture what native code (TensorFlow's converter, LiteRT, TFLite Micro) writes straight to file descriptors.

C++ libraries log to file descriptors 1 and 2, below Python's ``sys.stdout`` / ``sys.stderr``, so
``contextlib.redirect_stderr`` cannot catch them. :func:`capture_fds` points the descriptors at a
temporary file for the duration of a block and hands back what was written. It imports only the
standard library, so the TFLite Micro worker can use it and still start in a fraction of a second.

>>> import os
>>> with capture_fds() as captured:
...     _ = os.write(2, b"native chatter\\n")
>>> captured.text
'native chatter\\n'
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator

#: At most this many bytes of captured output are kept (the end of the log, where the error is).
MAX_CAPTURED_BYTES = 200_000


@dataclasses.dataclass
class Captured:
    """What a :func:`capture_fds` block wrote; ``text`` is filled in when the block ends."""

    text: str = ""


@contextlib.contextmanager
def capture_fds(fds: tuple[int, ...] = (2,), *, keep: bool = True) -> Iterator[Captured]:
    """Send file descriptors ``fds`` (default: 2, stderr) to a temporary file inside the block.

    The descriptors are restored even when the block raises; ``Captured.text`` then holds the last
    :data:`MAX_CAPTURED_BYTES` bytes written (decoded as UTF-8). With ``keep=False`` the output goes
    to ``os.devnull`` and nothing is kept.
    """
    captured = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    try:
        with tempfile.TemporaryFile() if keep else open(os.devnull, "wb") as sink:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            try:
                yield captured
            finally:
                with contextlib.suppress(ValueError, OSError):  # Python-level buffers written inside the block
                    sys.stdout.flush()
                    sys.stderr.flush()
                for fd, copy in zip(fds, saved, strict=True):
                    os.dup2(copy, fd)
                if keep:
                    size = sink.seek(0, os.SEEK_END)
                    sink.seek(max(0, size - MAX_CAPTURED_BYTES))
                    captured.text = sink.read().decode("utf-8", errors="replace")
    finally:
        for copy in saved:
            os.close(copy)


def quiet_tensorflow_import() -> None:
    """Import TensorFlow (through ``tfedge._keras``) with its C++ start-up chatter kept off the terminal.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user chose a level; a no-op once TensorFlow is imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    with capture_fds((2,), keep=False):
        importlib.import_module("tfedge._keras")  # imported for its side effect: TensorFlow, once


__all__ = ["capture_fds", "Captured", "quiet_tensorflow_import", "MAX_CAPTURED_BYTES"]

"""Reading user files with clear errors, and writing outputs atomically.

Outputs go to a temporary file in the destination folder and are moved into place with
``os.replace``: an interrupt, a full disk or an exception leaves any existing file at that path
byte for byte as it was, and no temporary file behind.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "out.bin")
>>> atomic_write_bytes(path, b"abc")
>>> read_bytes(path, what="output")
b'abc'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tfedge.errors import InputError

#: Largest model or data file tfedge reads (bytes). TFLite flatbuffers are limited to 2 GB anyway.
MAX_FILE_BYTES = 512 * 1024 * 1024

PathLike = str | os.PathLike


def check_input_file(path: PathLike, what: str = "file", max_bytes: int | None = None) -> Path:
    """Return ``path`` as a Path after checking it is an existing, non-empty file under the size cap.

    ``max_bytes`` defaults to :data:`MAX_FILE_BYTES` as it is when called (so raising it works).
    """
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} '{p}' does not exist: check the path")
    if p.is_dir():
        raise InputError(f"{what} '{p}' is a directory, expected a file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(f"{what} '{p}' is empty (0 bytes): re-create or re-download it")
    if size > max_bytes:
        raise InputError(
            f"{what} '{p}' is {size:,} bytes, over the {max_bytes:,}-byte cap: "
            "pass a smaller file (or raise tfedge.files.MAX_FILE_BYTES if you trust it)"
        )
    return p


def read_bytes(path: PathLike, what: str = "file", max_bytes: int | None = None) -> bytes:
    """Read a whole input file after :func:`check_input_file`."""
    p = check_input_file(path, what, max_bytes)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} '{p}': {exc.strerror}") from None


def check_output_path(
    path: PathLike, inputs: tuple[PathLike, ...] = (), what: str = "output", *, create_folder: bool = False
) -> Path:
    """Check an output file path: it is not a folder, it is none of ``inputs``, and its folder exists
    (``create_folder=True``, as every CLI command does: the folder is created when missing)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} '{p}' is a directory: give a file name")
    for other in inputs:
        if other is not None and Path(other).exists() and p.exists() and p.resolve() == Path(other).resolve():
            raise InputError(f"{what} '{p}' is also an input file: choose another output path")
    parent = p.parent if str(p.parent) else Path(".")
    if create_folder:
        make_output_folder(parent, f"{what} folder")
    elif not parent.is_dir():
        raise InputError(f"{what} folder '{parent}' does not exist: create it first (mkdir -p {parent})")
    return p


def make_output_folder(folder: PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents) if missing, the one behaviour of every command for a missing
    output folder; a path that is a file, or cannot be created, raises :class:`InputError`."""
    p = Path(folder) if str(folder) else Path(".")
    if p.is_dir():
        return p
    if p.exists():
        raise InputError(f"{what} '{p}' is a file, not a folder: give a folder path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create {what} '{p}': {exc.strerror or exc}; choose a folder you can write to"
        ) from None
    return p


def _final_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0o666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Give a temporary path beside ``path`` to write to; on success it replaces ``path``, on any
    failure (an interrupt included) it is removed. ``suffix`` lets writers that insist on a file
    extension (Keras: ``.keras``) have it."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder '{folder}' does not exist: create it first (mkdir -p {folder})")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _final_mode(p))
        os.replace(tmp, p)
    except BaseException:  # KeyboardInterrupt included: never leave the temporary behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``, on any failure it is removed."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_writer(path, "w") as fh:
        fh.write(text)


__all__ = [
    "MAX_FILE_BYTES",
    "check_input_file",
    "check_output_path",
    "make_output_folder",
    "read_bytes",
    "atomic_path",
    "atomic_writer",
    "atomic_write_bytes",
    "atomic_write_text",
]

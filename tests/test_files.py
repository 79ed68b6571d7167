"""tfedge.files: input checks and atomic writes that never leave a half-written file."""

from __future__ import annotations

import pytest

from tfedge import files
from tfedge.errors import InputError


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    files.atomic_write_bytes(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_old_file_and_no_temporary(tmp_path, exc):
    path = tmp_path / "out.bin"
    path.write_bytes(b"precious")
    with pytest.raises(type(exc)):
        with files.atomic_writer(path) as fh:
            fh.write(b"half")
            raise exc
    assert path.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_output_checks(tmp_path):
    with pytest.raises(InputError, match="does not exist: create it first"):
        files.atomic_write_text(tmp_path / "missing" / "a.txt", "x")
    with pytest.raises(InputError, match="is a directory: give a file name"):
        files.check_output_path(tmp_path)
    src = tmp_path / "in.tflite"
    src.write_bytes(b"x")
    with pytest.raises(InputError, match="is also an input file"):
        files.check_output_path(src, inputs=(src,))


def test_input_checks(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="'.*nope' does not exist"):
        files.read_bytes(tmp_path / "nope")
    with pytest.raises(InputError, match="is a directory, expected a file"):
        files.read_bytes(tmp_path)
    big = tmp_path / "big.tflite"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(InputError, match="2,048 bytes, over the 1,024-byte cap"):
        files.read_bytes(big, max_bytes=1024)


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    fresh = tmp_path / "fresh.bin"
    files.atomic_write_bytes(fresh, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0o600
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    files.atomic_write_bytes(kept, b"new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640

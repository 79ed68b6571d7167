"""The bad-input matrix of issue 10: every bad input gives one line naming the problem and the fix,
exit code 2 from the CLI, no traceback without ``--debug``, and no new, partial or changed output file.

Each case goes through the Python API and the ``tfedge`` CLI (``cli.main`` in-process; a few real runs
of the console script prove what a user's terminal sees). Test names carry the item number of the issue.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

from tfedge._keras import tf

import numpy as np
import pytest
from tflite_builders import repack

import tfedge
from tfedge import cli, keras
from tfedge.errors import InputError, ModelError, ValidationError
from tfedge.files import MAX_FILE_BYTES
from tfedge.flatbuffer import parse
from tfedge.runtimes import TFLiteMicro

OLD_TFLITE = b"previous output: must survive every failed command"
OLD_H, OLD_CC = "// previous header\n", "// previous source\n"


# -- helpers --------------------------------------------------------------------------------------------


def snapshot(*folders: Path) -> dict:
    """Every entry under ``folders``: bytes and mtime of files, and the folders themselves."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():  # the sparse over-the-cap files are compared by size and mtime only
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns, p.read_bytes() if st.st_size < 2**20 else None)
            else:
                out[str(p)] = "dir"
    return out


def api_error(exc_type: type, match: str, fn: Callable, *args, **kwargs) -> str:
    """Call the API; it must raise ``exc_type`` with a one-line message matching ``match``."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert re.search(match, message), message
    return message


def cli_error(argv: list, capsys, folders: tuple, match: str, code: int = 2) -> str:
    """Run the CLI in-process: exit ``code``, one ``tfedge: error:`` line, no traceback, nothing written."""
    before = snapshot(*folders)
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == code, f"exit {rc}, stderr: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tfedge: error: "), lines[0]
    assert "Traceback" not in err + out
    assert re.search(match, lines[0]), lines[0]
    assert snapshot(*folders) == before, "an output file appeared or changed"
    return lines[0]


def console_script() -> list[str]:
    exe = Path(sys.executable).with_name("tfedge")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tfedge"]


def patch_int32(content: bytes, buffer_index: int, position: int, value: int) -> bytes:
    """``content`` with int32 number ``position`` of constant buffer ``buffer_index`` set to ``value``."""
    start, size = parse(content).buffers[buffer_index]
    assert 4 * position + 4 <= size
    data = bytearray(content)
    struct.pack_into("<i", data, start + 4 * position, value)
    return bytes(data)


class Subclassed(keras.Model):
    """A subclassed model: TF-MOT cannot wrap it, and its saved file names a module tfedge refuses to import."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flat = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10)

    def call(self, inputs):
        return self.dense(self.flat(inputs))


# -- shared inputs: a workspace whose files must never change -------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory, small_cnn, digits) -> Path:
    """model.keras / model.tflite (the trained CNN, int8), calib.npz, test.npz, and previous outputs."""
    root = tmp_path_factory.mktemp("workspace")
    tfedge.save_model(small_cnn, root / "model.keras")
    tfedge.convert(small_cnn, representative_data=digits.x_train[:200]).save(root / "model.tflite")
    tfedge.datasets.save_npz(root / "calib.npz", digits.x_train[:200])
    tfedge.datasets.save_npz(root / "test.npz", digits.x_test[:40], digits.y_test[:40])
    (root / "out").mkdir()
    (root / "out" / "old.tflite").write_bytes(OLD_TFLITE)
    (root / "out" / "model.h").write_text(OLD_H)
    (root / "out" / "model.cc").write_text(OLD_CC)
    return root


@pytest.fixture(scope="module")
def tflite(ws) -> bytes:
    return (ws / "model.tflite").read_bytes()


def cli_outputs(ws: Path) -> list[list]:
    """Each writing command, pointed at an existing output (the file must survive a failure)."""
    return [["--out", ws / "out" / "old.tflite"], ["--out", ws / "out", "--name", "model"]]


# -- 1. paths -------------------------------------------------------------------------------------------


def test_1_path_does_not_exist(ws, tmp_path, capsys, digits):
    missing = tmp_path / "missing.tflite"
    fix = r"'.*missing\.(tflite|keras|npz)' does not exist: check the path"
    for fn, args in [
        (tfedge.inspect, (missing,)),
        (tfedge.validate, (missing, digits.x_test[:4])),
        (tfedge.export_c_array, (missing, tmp_path / "m")),
        (tfedge.conversion.TFLiteModel.from_file, (missing,)),
        (tfedge.load_model, (tmp_path / "missing.keras",)),
        (tfedge.datasets.load_npz, (tmp_path / "missing.npz",)),
    ]:
        api_error(InputError, fix, fn, *args)
    folders = (ws, tmp_path)
    for argv in (
        ["inspect", missing],
        ["validate", missing, "--data", ws / "test.npz"],
        ["validate", ws / "model.tflite", "--data", tmp_path / "missing.npz"],
        ["export-c", missing, *cli_outputs(ws)[1]],
        ["convert", tmp_path / "missing.keras", "--data", ws / "calib.npz", *cli_outputs(ws)[0]],
        ["convert", ws / "model.keras", "--data", tmp_path / "missing.npz", *cli_outputs(ws)[0]],
    ):
        cli_error(argv, capsys, folders, fix)
    assert not list(tmp_path.iterdir())


def test_1_directory_where_a_file_is_expected(ws, tmp_path, capsys, digits):
    folder = tmp_path / "a_folder.tflite"
    folder.mkdir()
    is_dir = r"'.*a_folder\.tflite' is a directory"
    api_error(InputError, is_dir + ", expected a file", tfedge.inspect, folder)
    api_error(InputError, is_dir + ", expected a file", tfedge.validate, folder, digits.x_test[:4])
    api_error(InputError, is_dir + ", expected a file", tfedge.datasets.load_npz, folder)
    api_error(InputError, is_dir + " but not a SavedModel: pass a .keras file", tfedge.load_model, folder)
    folders = (ws, tmp_path)
    cli_error(["inspect", folder], capsys, folders, is_dir + ", expected a file")
    cli_error(["validate", folder, "--data", ws / "test.npz"], capsys, folders, is_dir)
    cli_error(["validate", ws / "model.tflite", "--data", folder], capsys, folders, is_dir + ", expected a file")
    cli_error(["export-c", folder, *cli_outputs(ws)[1]], capsys, folders, is_dir)
    cli_error(
        ["convert", folder, "--data", ws / "calib.npz", *cli_outputs(ws)[0]],
        capsys,
        folders,
        is_dir + " but not a SavedModel: pass a .keras file",
    )
    # an output path that is a folder
    cli_error(
        ["convert", ws / "model.keras", "--data", ws / "calib.npz", "--out", ws / "out"],
        capsys,
        folders,
        r"output '.*out' is a directory: give a file name",
    )


def test_1_output_folder_missing(ws, tmp_path, capsys, tflite):
    nowhere = tmp_path / "no" / "such"
    fix = r"folder '.*no/such' does not exist: create it first \(mkdir -p .*no/such\)"
    api_error(InputError, fix, tfedge.conversion.TFLiteModel(tflite).save, nowhere / "m.tflite")
    api_error(InputError, fix, tfedge.save_model, keras.Sequential([keras.layers.Dense(1)]), nowhere / "m.keras")
    api_error(InputError, fix, tfedge.files.atomic_write_bytes, nowhere / "x.bin", b"data")
    folders = (ws, tmp_path)
    # every CLI command creates a missing output folder (README: "output folders are created")
    assert (
        cli.main(
            [
                "convert",
                str(ws / "model.keras"),
                "--data",
                str(ws / "calib.npz"),
                "--out",
                str(tmp_path / "made" / "m.tflite"),
            ]
        )
        == 0
    )
    assert (tmp_path / "made" / "m.tflite").stat().st_size > 0
    cli_error(
        ["compress", ws / "model.keras", "--data", ws / "test.npz", "--out", nowhere / "run"],
        capsys,
        folders,
        r"output folder '.*no/such/run' does not exist: create it first",
    )
    # export-c creates its output folder (README, CLI: "output folders are created")
    assert tfedge.export_c_array(tflite, nowhere / "m", arena_bytes=1024) == (
        str(nowhere / "m.h"),
        str(nowhere / "m.cc"),
    )
    assert cli.main(["export-c", str(ws / "model.tflite"), "--out", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "model.h").exists()


def test_1_output_path_equal_to_an_input(ws, tmp_path, capsys, tflite):
    same = r"'.*' is also an input file: choose another output path"
    for out in ("model.keras", "calib.npz"):
        cli_error(["convert", ws / "model.keras", "--data", ws / "calib.npz", "--out", ws / out], capsys, (ws,), same)
    api_error(
        InputError,
        same,
        tfedge.files.check_output_path,
        ws / "calib.npz",
        inputs=(ws / "model.keras", ws / "calib.npz"),
    )
    # a model file named like the C source export-c would write next to it
    shutil.copy(ws / "model.tflite", tmp_path / "net.cc")
    itself = r"output '.*net\.cc' is the model file itself: choose another prefix"
    api_error(InputError, itself, tfedge.export_c_array, tmp_path / "net.cc", tmp_path / "net", arena_bytes=2048)
    cli_error(["export-c", tmp_path / "net.cc", "--out", tmp_path, "--name", "net"], capsys, (ws, tmp_path), itself)
    assert (tmp_path / "net.cc").read_bytes() == tflite


# -- 2 and 3. malformed flatbuffers -----------------------------------------------------------------------

BAD_FILES = {
    "empty": (lambda good: b"", r"is empty \(0 bytes\): re-create or re-download it"),
    "random bytes": (
        lambda good: random.Random(0).randbytes(4096),
        r"is not a TFLite model: its file identifier is .*, expected b'TFL3'; pass a \.tflite file",
    ),
    "truncated": (
        lambda good: good[: len(good) // 2],
        r"is not a valid TFLite model: .* lies outside the [\d,]+-byte file; the file is truncated or "
        r"corrupted: convert the model again",
    ),
    "wrong identifier": (
        lambda good: good[:4] + b"TFL2" + good[8:],
        r"its file identifier is b'TFL2', expected b'TFL3'",
    ),
    "8 bytes, root past the end": (
        lambda good: struct.pack("<I", 4096) + b"TFL3",
        r"is not a TFLite model: only 8 bytes .*the file is empty or truncated",
    ),
}


def _first_op_tensor(m):
    return m.subgraphs[0].operators[0].inputs[0]


FIX = r"; the file is truncated or corrupted: convert the model again or copy the file again"
BAD_FIELDS = {
    "tensor index out of range": (
        lambda m: m.subgraphs[0].operators[0].inputs.__setitem__(0, len(m.subgraphs[0].tensors) + 7),
        r"is not a valid TFLite model: operator 0 of subgraph 0 input tensor is \d+, out of range \(0\.\.\d+\)" + FIX,
    ),
    "buffer index out of range": (
        lambda m: setattr(m.subgraphs[0].tensors[0], "buffer", len(m.buffers) + 3),
        r"tensor 0 of subgraph 0 buffer index is \d+, out of range \(0\.\.\d+\)" + FIX,
    ),
    "opcode index out of range": (
        lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", len(m.operatorCodes) + 2),
        r"operator 0 of subgraph 0 opcode index is \d+, out of range \(0\.\.\d+\)" + FIX,
    ),
    "negative dimension": (
        lambda m: m.subgraphs[0].tensors[_first_op_tensor(m)].shape.__setitem__(1, -4),
        r"has a negative dimension in shape \[1, -4, 8, 1\]" + FIX,
    ),
    "zero point outside int8": (
        lambda m: setattr(m.subgraphs[0].tensors[_first_op_tensor(m)].quantization, "zeroPoint", [300]),
        r"has a zero point outside the int8 range \(-128, 127\)" + FIX,
    ),
    "per-channel scales missing": (
        lambda m: vars(m.subgraphs[0].tensors[m.subgraphs[0].operators[0].inputs[1]].quantization).update(
            scale=[0.01, 0.02], zeroPoint=[0, 0]
        ),
        r"has 2 per-channel scales for \d+ channels, and operator 0 \(CONV_2D\) reads it" + FIX,
    ),
}


def _check_bad_tflite(content: bytes, match: str, ws: Path, tmp_path: Path, capsys, digits) -> None:
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    api_error(InputError, match, tfedge.inspect, path)
    if content:
        api_error(InputError, match, tfedge.inspect, content)
    api_error(InputError, match, tfedge.validate, path, digits.x_test[:4], verbose=0)
    api_error(InputError, match, tfedge.export_c_array, path, tmp_path / "bad")
    folders = (ws, tmp_path)
    cli_error(["inspect", path], capsys, folders, match)
    cli_error(["validate", path, "--data", ws / "test.npz"], capsys, folders, match)
    cli_error(["export-c", path, *cli_outputs(ws)[1]], capsys, folders, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite"]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_2_malformed_file(kind, ws, tmp_path, capsys, digits, tflite):
    make, match = BAD_FILES[kind]
    _check_bad_tflite(make(tflite), match, ws, tmp_path, capsys, digits)


@pytest.mark.parametrize("kind", BAD_FIELDS)
def test_3_out_of_range_field(kind, ws, tmp_path, capsys, digits, tflite):
    edit, match = BAD_FIELDS[kind]
    tfedge.inspect(repack(tflite, lambda m: None))  # the repacking alone is harmless
    _check_bad_tflite(repack(tflite, edit), match, ws, tmp_path, capsys, digits)


@pytest.mark.parametrize("scale", [0.0, math.nan, 1e-40])
def test_3_degenerate_scale_is_read_and_flagged_not_called_corrupted(scale, tmp_path, capsys, tflite):
    """Not out of bounds: inspect reads it and names the tensor, the op that reads it and the likely cause."""
    path = tmp_path / "degenerate.tflite"
    path.write_bytes(
        repack(tflite, lambda m: setattr(m.subgraphs[0].tensors[_first_op_tensor(m)].quantization, "scale", [scale]))
    )
    (d,) = tfedge.inspect(path).degenerate_scales
    assert d["read_by"] == ["CONV_2D#0"] and "calibration data never exercised that layer" in d["message"]
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "degenerate quantization:" in out and "TFLite Micro  may fail: CONV_2D#0" in out


# -- 4. size cap ----------------------------------------------------------------------------------------


def test_4_file_over_the_size_cap(ws, tmp_path, capsys):
    assert MAX_FILE_BYTES < 2**31  # well under the 2 GB flatbuffer limit
    big = {}
    for name in ("big.tflite", "big.npz", "big.keras"):
        big[name] = tmp_path / name
        with open(big[name], "wb") as fh:  # sparse: costs no disk
            fh.truncate(MAX_FILE_BYTES + 1)
    cap = rf"is {MAX_FILE_BYTES + 1:,} bytes, over the {MAX_FILE_BYTES:,}-byte cap: pass a smaller file"
    api_error(InputError, cap, tfedge.inspect, big["big.tflite"])
    api_error(InputError, cap, tfedge.datasets.load_npz, big["big.npz"])
    api_error(InputError, cap, tfedge.load_model, big["big.keras"])
    folders = (ws, tmp_path)
    cli_error(["inspect", big["big.tflite"]], capsys, folders, cap)
    cli_error(["export-c", big["big.tflite"], *cli_outputs(ws)[1]], capsys, folders, cap)
    cli_error(["validate", ws / "model.tflite", "--data", big["big.npz"]], capsys, folders, cap)
    cli_error(["convert", big["big.keras"], "--data", ws / "calib.npz", *cli_outputs(ws)[0]], capsys, folders, cap)


def test_4_size_cap_is_read_when_used(ws, monkeypatch):
    """The message says the cap can be raised: the checks read tfedge.files.MAX_FILE_BYTES when they run."""
    size = (ws / "model.tflite").stat().st_size
    monkeypatch.setattr(tfedge.files, "MAX_FILE_BYTES", size - 1)
    cap = rf"is {size:,} bytes, over the {size - 1:,}-byte cap"
    api_error(InputError, cap, tfedge.inspect, ws / "model.tflite")
    api_error(InputError, cap, tfedge.inspect, (ws / "model.tflite").read_bytes())  # bytes: the same cap
    api_error(InputError, cap, tfedge.datasets.load_npz, ws / "model.tflite")
    monkeypatch.setattr(tfedge.files, "MAX_FILE_BYTES", size)
    assert tfedge.inspect(ws / "model.tflite").bytes == size


def test_4_archive_that_unpacks_over_the_cap(ws, tmp_path, capsys, monkeypatch, digits):
    """A few-KB .npz / .keras that would unpack to more than the cap is refused before unpacking."""
    monkeypatch.setattr(tfedge.files, "MAX_FILE_BYTES", 1_000_000)
    bomb_npz = tmp_path / "bomb.npz"
    np.savez_compressed(bomb_npz, x=np.zeros((400, 32, 32, 1), np.float32), y=np.zeros(400, np.int64))
    bomb_keras = tmp_path / "bomb.keras"
    shutil.copy(ws / "model.keras", bomb_keras)
    with zipfile.ZipFile(bomb_keras, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("assets/padding.bin", bytes(2_000_000))
    assert bomb_npz.stat().st_size < 100_000 and bomb_keras.stat().st_size < 100_000
    cap = r"unpacks to [\d,]+ bytes, over the 1,000,000-byte cap: pass (less data|a smaller model)"
    api_error(InputError, cap, tfedge.datasets.load_npz, bomb_npz)
    api_error(InputError, cap, tfedge.load_model, bomb_keras)
    folders = (ws, tmp_path)
    cli_error(["validate", ws / "model.tflite", "--data", bomb_npz], capsys, folders, cap)
    cli_error(["convert", bomb_keras, "--data", ws / "calib.npz", *cli_outputs(ws)[0]], capsys, folders, cap)


# -- 5. data files --------------------------------------------------------------------------------------


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


BAD_DATA = {
    "not a zip": (
        lambda p, d: p.write_bytes(b"x,y\n0.1,3\n") and p,
        r"is not an \.npz archive: save it with numpy\.savez\(path, x=\.\.\., y=\.\.\.\)",
    ),
    "object arrays": (
        lambda p, d: _npz(p, x=np.array([{"a": 1}, None], dtype=object)),
        r"holds Python objects .*refused for safety; save numeric arrays",
    ),
    "no x": (lambda p, d: _npz(p, inputs=d.x_test[:8]), r"has no array 'x' \(found: inputs\); save inputs as x=\.\.\."),
    "wrong rank": (
        lambda p, d: _npz(p, x=d.x_test[:20].reshape(20, 64), y=d.y_test[:20]),
        r"samples have shape 64, the model expects 8x8x1 \(array shape \(N, 8, 8, 1\)\)",
    ),
    "wrong shape": (
        lambda p, d: _npz(p, x=np.repeat(d.x_test[:20], 3, axis=-1), y=d.y_test[:20]),
        r"samples have shape 8x8x3, the model expects 8x8x1",
    ),
    "NaN": (
        lambda p, d: _npz(p, x=np.where(np.arange(64).reshape(8, 8, 1) == 5, np.nan, d.x_test[:20]), y=d.y_test[:20]),
        r"holds 20 NaN or Inf values; clean or drop those samples",
    ),
    "Inf": (
        lambda p, d: _npz(
            p, x=np.concatenate([d.x_test[:19], np.full((1, 8, 8, 1), np.inf, np.float32)]), y=d.y_test[:20]
        ),
        r"holds 64 NaN or Inf values; clean or drop those samples",
    ),
    "strings": (
        lambda p, d: _npz(p, x=np.array([["0.1", "0.2"]] * 20)),
        r"'x' has dtype <U3; expected float32 numbers",
    ),
}


@pytest.mark.parametrize("kind", BAD_DATA)
def test_5_bad_data_file(kind, ws, tmp_path, capsys, small_cnn, tflite, digits):
    make, match = BAD_DATA[kind]
    path = make(tmp_path / "bad.npz", digits)
    folders = (ws, tmp_path)
    if kind.startswith("wrong"):  # readable: the model says what is wrong with it
        x, y = tfedge.datasets.load_npz(path)
        api_error(InputError, match, tfedge.validate, tflite, x, y, verbose=0)
        api_error(
            InputError,
            match.replace("samples", "representative_data .*samples"),
            tfedge.convert,
            small_cnn,
            representative_data=x,
        )
    else:
        api_error(InputError, rf"data file '.*bad\.npz'.*{match}", tfedge.datasets.load_npz, path)
    cli_error(["validate", ws / "model.tflite", "--data", path], capsys, folders, match)
    cli_error(["convert", ws / "model.keras", "--data", path, *cli_outputs(ws)[0]], capsys, folders, match)


def test_5_labels_out_of_range(ws, tmp_path, capsys, digits, tflite):
    y = digits.y_test[:20].copy()
    y[3] = 12
    path = _npz(tmp_path / "labels.npz", x=digits.x_test[:20], y=y)
    match = r"label 12 is out of range for a model with 10 outputs \(classes 0\.\.9\)"
    api_error(InputError, match, tfedge.validate, tflite, *tfedge.datasets.load_npz(path), verbose=0)
    cli_error(["validate", ws / "model.tflite", "--data", path], capsys, (ws, tmp_path), match)
    cli_error(
        ["compress", ws / "model.keras", "--data", path, "--out", tmp_path / "run"], capsys, (ws, tmp_path), match
    )
    y[3] = -1
    path = _npz(tmp_path / "labels.npz", x=digits.x_test[:20], y=y)
    cli_error(
        ["validate", ws / "model.tflite", "--data", path],
        capsys,
        (ws, tmp_path),
        r"labels 'y' hold negative class ids \(min -1\); use 0\.\.num_classes-1",
    )


def test_5_float64_is_converted_silently(ws, tmp_path, capsys, digits, tflite):
    path = _npz(tmp_path / "f64.npz", x=digits.x_test[:20].astype(np.float64), y=digits.y_test[:20])
    x, y = tfedge.datasets.load_npz(path)
    assert x.dtype == np.float32 and np.array_equal(x, digits.x_test[:20])
    expected = tfedge.validate(tflite, digits.x_test[:20], digits.y_test[:20], runtimes=("litert",), verbose=0)
    capsys.readouterr()
    assert cli.main(["validate", str(ws / "model.tflite"), "--data", str(path), "--runtimes", "litert", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["accuracy"] == expected.accuracy
    assert "error" not in err


# -- 6. model files that are not safe to load -------------------------------------------------------------


def _rewrite_config(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """Copy a .keras archive with its config.json edited (how a crafted file is made)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return dst


@pytest.fixture(scope="module")
def unsafe_models(ws, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Each unsafe model file and the message that refuses it."""
    root = tmp_path_factory.mktemp("unsafe")
    found = {}
    (root / "not_zip.keras").write_bytes(b"this is not a zip archive")
    found["not a zip"] = (
        root / "not_zip.keras",
        r"is not a \.keras archive \(not a zip\): save it with model\.save\('model\.keras'\)",
    )

    lam = keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Lambda(lambda t: t * 2.0, name="double"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    lam.save(root / "lambda.keras")
    found["Lambda"] = (
        root / "lambda.keras",
        r"contains a Lambda layer 'double', refused because it runs arbitrary "
        r"Python code when loaded: replace it with built-in layers",
    )

    def add_tfsm(config: dict) -> None:  # tf_keras has no TFSMLayer: this is what a Keras 3 file would hold
        config["config"]["layers"].insert(
            1,
            {
                "module": "keras.layers",
                "class_name": "TFSMLayer",
                "config": {
                    "name": "hidden_savedmodel",
                    "filepath": "/tmp/elsewhere/saved_model",
                    "call_endpoint": "serve",
                },
            },
        )

    found["TFSMLayer"] = (
        _rewrite_config(ws / "model.keras", root / "tfsm.keras", add_tfsm),
        r"contains a TFSMLayer layer 'hidden_savedmodel', refused because it loads and runs a "
        r"SavedModel from another path",
    )

    def foreign(config: dict) -> None:  # Keras imports the module a config names: 'this' prints when imported
        config.update({"module": "this", "class_name": "Sequential", "registered_name": None})

    found["foreign module"] = (
        _rewrite_config(ws / "model.keras", root / "foreign.keras", foreign),
        r"names the class 'Sequential' from the Python module 'this', refused: loading it "
        r"would import and run code from outside Keras",
    )

    vocab = root / "vocab.txt"
    vocab.write_text("red\ngreen\nblue\n")
    inp = keras.layers.Input((1,), dtype="string")
    lookup = keras.Model(inp, keras.layers.StringLookup(vocabulary=str(vocab), name="colours")(inp))
    lookup.save(root / "lookup.keras")
    found["lookup file"] = (
        root / "lookup.keras",
        r"contains a StringLookup layer 'colours' that reads its "
        r"vocabulary from the file '.*vocab\.txt', refused: pass the "
        r"vocabulary as a list",
    )
    plain = keras.models.clone_model(tfedge.load_model(ws / "model.keras"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras calls .h5 "legacy": that is the point here
        plain.save(root / "model.h5")
    found[".h5"] = (
        root / "model.h5",
        r"is an \.h5 file, which Keras cannot load safely \(it can run code hidden in "
        r"the file\): re-save it as \.keras, or pass --trust-model",
    )
    plain.save(root / "saved_model")
    found["SavedModel"] = (root / "saved_model", r"is a SavedModel, which Keras cannot load safely .*--trust-model")
    return found


@pytest.mark.parametrize(
    "kind", ["not a zip", "Lambda", "TFSMLayer", "lookup file", "foreign module", ".h5", "SavedModel"]
)
def test_6_unsafe_model_file_refused(kind, unsafe_models, ws, tmp_path, capsys, digits):
    path, match = unsafe_models[kind]
    assert "this" not in sys.modules
    api_error(InputError, match, tfedge.load_model, path)
    api_error(InputError, match, tfedge.validate, ws / "model.tflite", digits.x_test[:4], reference=path, verbose=0)
    folders = (ws, tmp_path, path.parent)
    cli_error(["convert", path, "--data", ws / "calib.npz", *cli_outputs(ws)[0]], capsys, folders, match)
    cli_error(["validate", ws / "model.tflite", "--data", ws / "test.npz", "--reference", path], capsys, folders, match)
    cli_error(["compress", path, "--data", ws / "test.npz", "--out", tmp_path / "run"], capsys, folders, match)
    assert "this" not in sys.modules  # nothing named in a refused file was imported


def test_6_trust_model_loads_h5_and_savedmodel(unsafe_models, ws, capsys, digits, small_cnn):
    """The refusal is about trust, not a broken file: with trust the same files load and work."""
    for kind in (".h5", "SavedModel"):
        model = tfedge.load_model(unsafe_models[kind][0], trust=True)
        assert model.count_params() == small_cnn.count_params()
    capsys.readouterr()
    rc = cli.main(
        [
            "validate",
            str(ws / "model.tflite"),
            "--data",
            str(ws / "test.npz"),
            "--runtimes",
            "litert",
            "--reference",
            str(unsafe_models[".h5"][0]),
            "--trust-model",
            "--json",
            "--min-reference-agreement",
            "0",
        ]
    )  # a clone: same layers, fresh weights
    assert rc == 0
    assert set(json.loads(capsys.readouterr().out)["reference_agreement"]) == {"litert"}


# -- 7. models tfedge cannot handle ---------------------------------------------------------------------


def test_7_subclassed_model(ws, tmp_path, capsys, digits):
    model = Subclassed()
    model(digits.x_test[:2])
    sub = r"is a subclassed model \(Subclassed\); TF-MOT can only wrap Sequential or Functional models: rebuild it"
    api_error(ModelError, sub, tfedge.prune, model, target_sparsity=0.5, epochs=1)
    api_error(ModelError, sub, tfedge.quantize_aware, model)
    api_error(ModelError, sub, tfedge.convert, model, representative_data=digits.x_train[:20])
    model.save(tmp_path / "subclassed.keras")
    match = r"'Subclassed'.*(subclassed|custom).*rebuild it"
    api_error(InputError, match, tfedge.load_model, tmp_path / "subclassed.keras")
    folders = (ws, tmp_path)
    cli_error(
        ["convert", tmp_path / "subclassed.keras", "--data", ws / "calib.npz", *cli_outputs(ws)[0]],
        capsys,
        folders,
        match,
    )
    cli_error(
        ["compress", tmp_path / "subclassed.keras", "--data", ws / "test.npz", "--out", ws / "out"],
        capsys,
        folders,
        match,
    )


@pytest.mark.parametrize("kind", ["two outputs", "sequence output"])
def test_7_compress_needs_a_one_output_classifier(kind, ws, tmp_path, capsys, digits):
    """compress distils a classifier: a model with two heads, or one that outputs a sequence, is refused before any
    training with what it outputs and what to do (convert and validate take several outputs)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    if kind == "two outputs":
        flat = keras.layers.Flatten()(h)
        outputs = [keras.layers.Dense(10, name="cls")(flat), keras.layers.Dense(1, name="reg")(flat)]
        match = r"has 2 outputs \('cls', 'reg'\); compressing needs a classifier with one output: build a model"
    else:
        outputs = keras.layers.Dense(10)(keras.layers.Reshape((36, 4))(h))
        match = r"outputs shape \(None, 36, 10\); compressing needs a classifier whose output is \(batch, classes\)"
    model = keras.Model(inputs, outputs, name="heads")
    api_error(ModelError, match, tfedge.compress, model, (digits.x_train, digits.y_train), out_dir=str(ws / "out"))
    model.save(tmp_path / "heads.keras")
    cli_error(
        ["compress", tmp_path / "heads.keras", "--data", ws / "test.npz", "--out", ws / "out"],
        capsys,
        (ws, tmp_path),
        match,
    )


def test_7_keras3_model(ws, tmp_path, capsys, digits, tflite):
    k3 = importlib.import_module("keras")  # Keras 3 in this venv: only here, to build the bad object
    assert k3.__version__.startswith("3.")
    model = k3.Sequential([k3.layers.Input((8, 8, 1)), k3.layers.Flatten(), k3.layers.Dense(10)])
    k3_msg = (
        r"is a Keras 3 model \(Sequential from 'keras\.src.*'\); TF-MOT and tfedge need Keras 2: port it with "
        r"tfedge\.from_keras3\(model\)"
    )
    api_error(InputError, "model " + k3_msg, tfedge.convert, model, representative_data=digits.x_train[:20])
    api_error(InputError, "model " + k3_msg, tfedge.prune, model, target_sparsity=0.5, epochs=1)
    api_error(InputError, "model to quantize " + k3_msg, tfedge.quantize_aware, model)
    api_error(InputError, "student " + k3_msg, tfedge.Distiller, student=model, teacher=model)
    api_error(InputError, "reference " + k3_msg, tfedge.validate, tflite, digits.x_test[:4], reference=model, verbose=0)
    model.save(tmp_path / "keras3.keras")  # the same model, as a file, is ported (tests/test_keras3.py)
    assert isinstance(tfedge.load_model(tmp_path / "keras3.keras"), keras.Model)


def test_7_layer_qat_cannot_handle_with_strict(ws, tmp_path, capsys, digits):
    inp = keras.layers.Input((8, 8, 1))
    h = keras.layers.Dense(16)(keras.layers.Flatten()(inp))
    h = keras.layers.LayerNormalization(name="norm")(h)
    model = keras.Model(inp, keras.layers.Dense(10)(h))
    match = (
        r"strict=True and 1 layer of model '.*' cannot be quantized by TF-MOT [\d.]+: 'norm' \(LayerNormalization"
        r".*pass skip=\['norm'\] \(or strict=False\) to keep them float"
    )
    api_error(ModelError, match, tfedge.quantize_aware, model, strict=True)
    path = tmp_path / "norm.keras"
    tfedge.save_model(model, path)
    tfedge.datasets.save_npz(tmp_path / "train.npz", digits.x_train[:64], digits.y_train[:64])
    run = tmp_path / "run"
    run.mkdir()
    (run / "norm_student_int8.tflite").write_bytes(OLD_TFLITE)  # a previous run's deployed model
    before = snapshot(ws, tmp_path)
    capsys.readouterr()
    rc = cli.main(
        [
            "compress",
            str(path),
            "--data",
            str(tmp_path / "train.npz"),
            "--out",
            str(run),
            "--sparsity",
            "0",
            "--epochs",
            "1",
        ]
    )
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    # compress post-training quantizes what QAT cannot wrap; this untrained model is stopped earlier, at chance
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(
        r"stage 'baseline \(teacher, post-training int8\)' failed: the teacher's plain int8 model "
        r"scores [\d.]+ % .*no better than chance",
        lines[0],
    ), lines[0]
    after = snapshot(ws, tmp_path)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    # the pipeline keeps the outputs of the stages that completed (the float teacher), whole; nothing else
    assert {Path(p).name for p in changed} == {"norm_teacher_float32.tflite"}, changed
    tfedge.inspect(run / "norm_teacher_float32.tflite")
    assert (run / "norm_student_int8.tflite").read_bytes() == OLD_TFLITE


# -- 8. TFLite Micro crashes in its child process ---------------------------------------------------------


@pytest.fixture(scope="module")
def tflm_crasher(tmp_path_factory, digits) -> Path:
    """A model that passes tfedge's structural checks but crashes TFLite Micro (found by probing the ops
    whose constant operands verify does not bound-check).

    A SLICE whose constant ``begin`` lies far outside its input is well-formed data: LiteRT refuses it
    when preparing, TFLite Micro's kernel reads out of bounds and dies with SIGSEGV.
    """
    keras.utils.set_random_seed(0)
    inp = keras.layers.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = tf.slice(h, [0, 1, 1, 0], [-1, 4, 4, 4])
    model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    content = tfedge.convert(model, representative_data=digits.x_train[:64]).content
    sub = parse(content).subgraphs[0]
    (op,) = [op for op in sub.operators if op.op == "SLICE"]
    bad = patch_int32(content, sub.tensors[op.inputs[1]].buffer, 1, 1_000_000)  # begin = [0, 1000000, 1, 0]
    path = tmp_path_factory.mktemp("crash") / "crash.tflite"
    path.write_bytes(bad)
    return path


def test_8_tflite_micro_crash_is_a_clear_error(tflm_crasher, ws, tmp_path, capsys, digits):
    tfedge.inspect(tflm_crasher)  # structurally sound: only running it shows the problem
    crash = (
        r"TFLite Micro crashed \(signal 11, SIGSEGV\) on .*crash\.tflite'? while .*; the file may be corrupted, "
        r"or a tensor's quantization is degenerate"
    )
    # validate names the op the crash was in (graph prefixes run in the isolated worker)
    listed = (
        r"TFLite Micro crashed \(signal 11, SIGSEGV\) in SLICE \(op 1\) on .*crash\.tflite'? while .*; the "
        r"file may be corrupted"
    )
    api_error(ValidationError, listed, tfedge.validate, tflm_crasher, digits.x_test[:8], runtimes=("tflm",), verbose=0)
    # export-c writes any well-formed model: the arena is left out and the header says why (issue 14)
    files = tfedge.export_c_array(tflm_crasher, tmp_path / "crash")
    assert files.arena_bytes is None and re.search(crash, files.arena_note)
    assert "// Why: TFLite Micro crashed (signal 11, SIGSEGV)" in (tmp_path / "crash.h").read_text()
    # LiteRT (in its own child) refuses the same file cleanly, with its own reason
    api_error(
        ValidationError,
        r"LiteRT cannot prepare .*crash\.tflite",
        tfedge.validate,
        tflm_crasher,
        digits.x_test[:8],
        runtimes=("litert",),
        verbose=0,
    )
    folders = (ws, tmp_path, tflm_crasher.parent)
    cli_error(["validate", tflm_crasher, "--data", ws / "test.npz", "--runtimes", "tflm"], capsys, folders, listed)
    capsys.readouterr()
    assert cli.main(["export-c", str(tflm_crasher), "--out", str(tmp_path / "c")]) == 0
    assert re.search("no arena size: " + crash, capsys.readouterr().out)


def test_8_tiny_arena_segfault_names_the_runtime_and_signal(tflite, digits):
    api_error(
        ValidationError,
        r"TFLite Micro crashed \(signal 11, SIGSEGV\) .*arenas under 512 bytes crash it: "
        r"leave arena_size unset or give more",
        TFLiteMicro(tflite, arena_size=64).run,
        digits.x_test[:2],
        measure_arena=False,
    )


def test_8_console_script_shows_one_line_and_exit_2(tflm_crasher, ws, tmp_path):
    """Real runs of the installed ``tfedge``: what the user's terminal gets, with and without --debug."""
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(random.Random(1).randbytes(300))
    runs = {
        "crash": [
            *console_script(),
            "validate",
            str(tflm_crasher),
            "--data",
            str(ws / "test.npz"),
            "--runtimes",
            "tflm",
        ],
        "junk": [*console_script(), "inspect", str(junk)],
        "junk --debug": [*console_script(), "--debug", "inspect", str(junk)],
    }
    procs = {
        k: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k, argv in runs.items()
    }
    results = {k: (p.communicate(timeout=240), p.returncode) for k, p in procs.items()}
    for kind in ("crash", "junk"):
        (out, err), rc = results[kind]
        assert rc == 2 and out == "", (rc, out, err)
        assert err.count("\n") == 1 and err.startswith("tfedge: error: ") and "Traceback" not in err, err
    assert "TFLite Micro crashed (signal 11, SIGSEGV) in SLICE (op 1)" in results["crash"][0][1]
    assert "its file identifier is" in results["junk"][0][1]
    (out, err), rc = results["junk --debug"]
    assert rc == 1 and "Traceback (most recent call last)" in err and "tfedge.errors.InputError" in err


def test_8_debug_raises_instead_of_printing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        cli.main(["--debug", "inspect", str(tmp_path / "missing.tflite")])


# -- 9. Ctrl-C --------------------------------------------------------------------------------------------


def _interrupt(
    argv: list, ready: Callable[[int], bool], env: dict, what: str, restore: Callable[[], None] = lambda: None
) -> tuple[int, str]:
    """Start ``argv`` in its own process group, wait until ``ready(pid)``, then Ctrl-C the group.

    If the command finished before the signal landed (a loaded machine), ``restore`` and try again.
    """
    for _ in range(3):
        restore()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 180
        try:
            while not ready(proc.pid) and proc.poll() is None:
                if time.monotonic() > deadline:
                    pytest.fail(f"{what} never got under way")
                time.sleep(0.005)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            return proc.returncode, err
    pytest.fail(f"{what} finished three times before Ctrl-C reached it")


def _converter_running(pid: int) -> bool:
    """tfedge.convert sends the converter's native log (fd 2) to an anonymous temporary file while it runs."""
    try:
        return os.readlink(f"/proc/{pid}/fd/2").endswith("(deleted)")
    except OSError:
        return False


def _private_env(tmp: Path) -> dict:
    tmp.mkdir()
    return {**os.environ, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _assert_interrupted(rc: int, err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 130, err
    assert lines == ["tfedge: interrupted; no partial output files were left"], err


def test_9_ctrl_c_during_convert_leaves_the_old_file(ws, tmp_path):
    (tmp_path / "models").mkdir()
    out = tmp_path / "models" / "digits.tflite"

    def restore() -> None:
        out.write_bytes(OLD_TFLITE)
        os.utime(out, ns=(1_700_000_000_000_000_000,) * 2)

    restore()
    before = snapshot(tmp_path / "models")
    env = _private_env(tmp_path / "tmp")
    rc, err = _interrupt(
        [*console_script(), "convert", str(ws / "model.keras"), "--data", str(ws / "calib.npz"), "--out", str(out)],
        _converter_running,
        env,
        "tfedge convert",
        restore,
    )
    _assert_interrupted(rc, err)
    assert out.read_bytes() == OLD_TFLITE
    assert snapshot(tmp_path / "models") == before  # no temporary left beside it
    # nor any temporary file (TensorFlow's converter may leave an empty mkdtemp folder when Ctrl-C lands
    # in its own cleanup; it holds nothing)
    assert not [p for p in (tmp_path / "tmp").rglob("*") if not p.is_dir()]


def _tflm_worker_started(tmp: Path) -> Callable[[int], bool]:
    return lambda pid: any(tmp.glob("tfedge-tflm-*/options.json"))


def test_9_ctrl_c_during_export_c_leaves_the_old_files(ws, tmp_path):
    def restore() -> None:
        shutil.rmtree(tmp_path / "build", ignore_errors=True)
        shutil.copytree(ws / "out", tmp_path / "build")

    restore()
    before = snapshot(tmp_path / "build")
    env = _private_env(tmp_path / "tmp")
    rc, err = _interrupt(
        [*console_script(), "export-c", str(ws / "model.tflite"), "--out", str(tmp_path / "build"), "--name", "model"],
        _tflm_worker_started(tmp_path / "tmp"),
        env,
        "tfedge export-c",
        restore,
    )
    _assert_interrupted(rc, err)
    assert snapshot(tmp_path / "build") == before
    assert (tmp_path / "build" / "model.h").read_text() == OLD_H
    assert not list((tmp_path / "tmp").iterdir())  # the TFLite Micro work folder is gone
    for proc in Path("/proc").glob("[0-9]*/cmdline"):  # and so is its worker
        try:
            assert str(tmp_path / "tmp") not in proc.read_bytes().decode(errors="replace")
        except OSError:
            pass

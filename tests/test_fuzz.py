"""Fuzzing the flatbuffer readers: mutated copies of valid ``.tflite`` files through ``inspect``, the CLI
and ``validate`` (LiteRT + TFLite Micro). 0 crashes, 0 tracebacks, 0 hangs.

Every run makes the same mutants (fixed seeds) of the committed seed models in ``tests/fuzz_corpus/``
and of a freshly converted model, and replays the committed corpus of interesting cases found earlier
(``tests/fuzz_corpus/MANIFEST.json`` says what each one is). ``inspect`` runs in this process under a
time limit; ``validate`` runs LiteRT in-process by design, so the fuzz runs it in a child process
("the caller") that must never die: a crash there, a Python traceback or a hang fails the test.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import tfedge
from tfedge import cli
from tfedge.errors import InputError

CORPUS = Path(__file__).parent / "fuzz_corpus"
SEEDS = sorted(CORPUS.glob("seed_*.tflite"))
MUTANTS_PER_SEED = 50
MUTANTS_OF_FRESH_MODEL = 40
#: Seconds one ``inspect`` may take on a mutant before it counts as a hang (it takes milliseconds).
INSPECT_LIMIT_S = 5.0
#: Seconds the validating child may go without finishing a mutant before it counts as a hang.
VALIDATE_LIMIT_S = 60.0
KINDS = ("truncate", "bitflip", "zero", "overwrite", "offset32", "offset16", "splice")


def mutate(content: bytes, seed: int | str) -> tuple[str, bytes]:
    """A deterministic mutant of ``content``: the kind cycles with the seed, the details follow from it."""
    rng = random.Random(f"tfedge-fuzz:{seed}")
    kind = KINDS[int(rng.random() * len(KINDS))] if isinstance(seed, str) else KINDS[seed % len(KINDS)]
    data = bytearray(content)
    n = len(data)
    if kind == "truncate":
        cut = rng.choice([rng.randrange(0, 64), rng.randrange(0, n), n - rng.randrange(1, 65)])
        data = data[: max(0, cut)]
    elif kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "zero":
        start, size = rng.randrange(n), rng.choice([1, 2, 4, 8, 16, 64, 256])
        data[start : start + size] = bytes(len(data[start : start + size]))
    elif kind == "overwrite":
        start = rng.randrange(n)
        chunk = rng.randbytes(rng.randint(1, 16))
        data[start : start + len(chunk)] = chunk[: n - start]
    elif kind in ("offset32", "offset16"):  # the fields that hold offsets, lengths, indices and vtable slots
        width = 4 if kind == "offset32" else 2
        fmt = "<I" if width == 4 else "<H"
        top = 2 ** (8 * width)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(0, n - width + 1) & ~(width - 1)
            value = struct.unpack_from(fmt, data, pos)[0]
            new = rng.choice(
                [
                    value + width,
                    value - width,
                    value + rng.randint(-512, 512),
                    0,
                    top - 1,
                    top // 2 - 1,
                    top // 2,
                    n,
                    n - width,
                    rng.randrange(n),
                    value * 2,
                    value + n,
                ]
            )
            struct.pack_into(fmt, data, pos, new % top)
    else:  # splice: copy a region over another one, which aliases tables and vectors
        size = rng.randint(4, 64)
        src, dst = rng.randrange(n), rng.randrange(n)
        chunk = bytes(data[src : src + size])
        data[dst : dst + len(chunk)] = chunk[: n - dst]
    return kind, bytes(data)


@contextmanager
def time_limit(seconds: float, what: str):
    """Raise TimeoutError in this thread if the block runs longer than ``seconds`` (a hang)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"{what} took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def inspect_outcome(content: bytes, source: str) -> str:
    """``ok`` or ``InputError``; anything else (another exception, a hang) fails the test."""
    start = time.monotonic()
    try:
        with time_limit(INSPECT_LIMIT_S, f"inspect({source})"):
            info = tfedge.inspect(content)
            json.dumps(info.to_dict(), allow_nan=False)  # strict JSON, whatever the scales hold
            info.format_table()
            assert sum(info.bytes_breakdown.values()) == info.bytes == len(content), source
        outcome = "ok"
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("TFLite model (bytes) is not a"), (source, message)
        outcome = "InputError"
    assert time.monotonic() - start < INSPECT_LIMIT_S
    return outcome


# -- the child process that validates ----------------------------------------------------------------------

WORKER = r"""
import json, sys, traceback
import numpy as np
import tfedge
from tfedge.errors import TfedgeError

folder = sys.argv[1]
x, y = np.load(folder + "/x.npy"), np.load(folder + "/y.npy")
for name in sys.argv[2:]:
    print(json.dumps({"start": name}), flush=True)
    result = {}
    for runtime in ("litert", "tflm"):  # LiteRT in this process, TFLite Micro in its own child
        try:
            r = tfedge.validate(folder + "/" + name, x, y, runtimes=(runtime,), verbose=0, tflm_timeout=30)
            result[runtime] = {"outcome": "ok", "message": "accuracy %.3f" % r.accuracy[runtime]}
        except TfedgeError as exc:
            result[runtime] = {"outcome": type(exc).__name__, "message": str(exc)}
        except BaseException as exc:
            result[runtime] = {"outcome": "unexpected " + type(exc).__name__, "message": traceback.format_exc()}
    print(json.dumps({"name": name, **result}), flush=True)
"""


def validate_isolated(folder: Path, names: list[str], digits=None) -> dict[str, dict]:
    """Validate each file in a child process; a child that dies is a crash of the file it was on."""
    digits = digits or tfedge.datasets.digits()
    np.save(folder / "x.npy", digits.x_test[:8])
    np.save(folder / "y.npy", digits.y_test[:8])
    results: dict[str, dict] = {}
    todo = list(names)
    while todo:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder), *todo],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        current, pending = None, b""
        try:
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], VALIDATE_LIMIT_S)
                if not ready:
                    hang = {"outcome": "hang", "message": f"no answer in {VALIDATE_LIMIT_S} s"}
                    results[current or todo[0]] = {"litert": hang, "tflm": hang}
                    break
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    record = json.loads(line)
                    if "start" in record:
                        current = record["start"]
                    else:
                        results[record.pop("name")] = record
                        current = None
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr = proc.communicate()[1].decode(errors="replace")
        if current is not None and current not in results:
            crash = {"outcome": f"crash (exit {proc.returncode})", "message": stderr[-2000:]}
            results[current] = {"litert": crash, "tflm": crash}
        assert "Traceback" not in stderr, stderr[-3000:]
        todo = [n for n in todo if n not in results]
    return results


ALLOWED = {"ok", "InputError", "ModelError", "ValidationError"}


def check_validated(results: dict[str, dict]) -> None:
    """Only tfedge's own errors, each one line; a runtime failure names the runtime."""
    bad = {name: r for name, r in results.items() if {r["litert"]["outcome"], r["tflm"]["outcome"]} - ALLOWED}
    assert not bad, json.dumps(bad, indent=1)[:4000]
    for name, r in results.items():
        for runtime, label in (("litert", "LiteRT"), ("tflm", "TFLite Micro")):
            assert "\n" not in r[runtime]["message"], (name, r[runtime])
            if r[runtime]["outcome"] == "ValidationError":
                assert r[runtime]["message"].startswith(label + " "), (name, r[runtime])


def summary(result: dict) -> str:
    return " | ".join(f"{rt} {result[rt]['outcome']}: {result[rt]['message']}" for rt in ("litert", "tflm"))


# -- the tests ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_model(small_cnn, digits) -> bytes:
    """Today's converter output for the trained CNN: the mutants follow the toolkit's own files."""
    return tfedge.convert(small_cnn, representative_data=digits.x_train[:200]).content


def test_fuzz_mutants_of_third_party_files():
    """The files users really have (custom ops, int16 without quantization, metadata, signatures, a vendor op,
    LUT-compressed weights), which tfedge now reads rather than refuses: their mutants through ``inspect`` give
    a full report or one-line InputError, never a crash, another exception or a hang."""
    from tflite_builders import THIRD_PARTY, fc_lut_compressed

    bases = {kind: make() for kind, make in THIRD_PARTY.items()} | {"lut_compressed": fc_lut_compressed()}
    outcomes = []
    for stem, content in bases.items():
        for i in range(40):
            _kind, data = mutate(content, f"third-party:{stem}:{i}")
            if data != content:
                outcomes.append(inspect_outcome(data, f"{stem}.{i:03d}"))
    assert len(outcomes) >= 250 and outcomes.count("ok") >= 20 and outcomes.count("InputError") >= 100, (
        len(outcomes),
        outcomes.count("ok"),
    )


def test_seed_models_are_valid_and_small():
    assert len(SEEDS) >= 4
    for seed in SEEDS:
        info = tfedge.inspect(seed)
        assert info.inputs[0]["shape"] == [1, 8, 8, 1] and info.outputs[0]["shape"] == [1, 10]
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 200 * 1024


def test_fuzz_mutants(fresh_model, tmp_path, capsys, digits):
    """At least 200 mutants per run: inspect (in-process) and the CLI on all, validate on a subset."""
    bases = {p.stem: p.read_bytes() for p in SEEDS} | {"fresh_cnn_int8": fresh_model}
    mutants: dict[str, tuple[str, bytes]] = {}
    for stem, content in bases.items():
        count = MUTANTS_OF_FRESH_MODEL if stem.startswith("fresh") else MUTANTS_PER_SEED
        for i in range(count):
            kind, data = mutate(content, i)
            if data != content:
                mutants[f"{stem}.{i:03d}.{kind}.tflite"] = (kind, data)
    assert len(mutants) >= 200

    outcomes = {}
    for name, (_kind, data) in mutants.items():
        outcomes[name] = inspect_outcome(data, name)
    # what a user of the CLI sees: one line and exit 2, or the summary and exit 0
    for name, (_kind, data) in mutants.items():
        path = tmp_path / name
        path.write_bytes(data)
        rc = cli.main(["inspect", str(path)])
        out, err = capsys.readouterr()
        assert rc == (0 if outcomes[name] == "ok" else 2), (name, err)
        assert "Traceback" not in err and (err == "" or (err.count("\n") == 1 and err.startswith("tfedge: error: ")))
        path.unlink()
    accepted = [n for n, o in outcomes.items() if o == "ok"]
    rejected = [n for n, o in outcomes.items() if o != "ok"]
    kinds = {mutants[n][0] for n in rejected}
    assert len(kinds) == len(KINDS) and len(accepted) >= 10, (len(accepted), kinds)

    # validate, isolated: 24 accepted mutants spread over seeds and kinds go to both runtimes, plus 8 rejected
    subset = accepted[:: max(1, len(accepted) // 24)][:24] + rejected[:: max(1, len(rejected) // 8)][:8]
    for name in subset:
        (tmp_path / name).write_bytes(mutants[name][1])
    results = validate_isolated(tmp_path, subset, digits)
    check_validated(results)
    for name in subset:  # validate checks the structure first, exactly as inspect does
        if outcomes[name] == "InputError":
            assert results[name]["litert"]["outcome"] == results[name]["tflm"]["outcome"] == "InputError"
    ran = [r for r in results.values() if r["tflm"]["outcome"] in ("ok", "ValidationError")]
    assert len(ran) >= 10  # the runtimes themselves got plenty of mutants


def test_fuzz_corpus(tmp_path, digits):
    """The committed interesting cases, every run: each still handled the way MANIFEST.json says."""
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    files = sorted(p.name for p in CORPUS.glob("*.tflite") if not p.name.startswith("seed_"))
    assert files and sorted(manifest) == files
    remade = 0
    for name, entry in manifest.items():  # the fuzzer is deterministic: each mutant is re-made from its seed
        made = re.fullmatch(
            r"mutate\(seed, (\d+|'[^']+')\) in tests/test_fuzz.py \((\w+)\) of (seed_\w+\.tflite)", entry["made_by"]
        )
        if made:
            key = made[1].strip("'") if made[1].startswith("'") else int(made[1])
            kind, data = mutate((CORPUS / made[3]).read_bytes(), key)
            assert kind == made[2] and data == (CORPUS / name).read_bytes(), name
            remade += 1
    assert remade == len(files) - 1  # all but the hand-crafted SLICE model
    outcomes = {name: inspect_outcome((CORPUS / name).read_bytes(), name) for name in files}
    for name in files:
        (tmp_path / name).write_bytes((CORPUS / name).read_bytes())
    results = validate_isolated(tmp_path, files, digits)
    check_validated(results)
    for name, entry in manifest.items():
        assert outcomes[name] in entry["inspect"], (name, entry["why"])
        assert re.search(entry["validate"], summary(results[name])), (name, entry["why"], results[name])

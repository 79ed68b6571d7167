"""tfedge.validate and ``tfedge validate``: accuracy, agreement, arena, latency; corrupted files fail cleanly."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfedge
import tfedge.cli
from tfedge.errors import InputError
from tfedge.validation import ValidationResult, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def int8_file(small_cnn, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("validation") / "digits_int8.tflite"
    tfedge.convert(small_cnn, representative_data=digits.x_train, quantization="int8").save(path)
    return path


@pytest.fixture(scope="module")
def test_npz(digits, int8_file):
    path = int8_file.parent / "test.npz"
    tfedge.datasets.save_npz(path, digits.x_test, digits.y_test)
    return path


@pytest.fixture(scope="module")
def result(int8_file, small_cnn, digits) -> ValidationResult:
    return validate(int8_file, digits.x_test, digits.y_test, reference=small_cnn, verbose=0)


def _independent_litert(path, x):
    """Raw int8 outputs from a plain LiteRT loop written here, not with tfedge's helpers."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=path.read_bytes())
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = inp["quantization"]
    raw = []
    for sample in x:
        q = np.clip(np.round(sample / scale) + zero, -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], q[None])
        it.invoke()
        raw.append(it.get_tensor(out["index"])[0].copy())
    return np.array(raw)


def _independent_tflm(path, npz, tmp_path):
    """Raw int8 outputs from a plain TFLite Micro loop in a throwaway child process."""
    out = tmp_path / "tflm_raw.npy"
    code = f"""
import numpy as np
from tflite_micro.python.tflite_micro import runtime
it = runtime.Interpreter.from_bytes(open({str(path)!r}, "rb").read(), arena_size=100_000)
d = it.get_input_details(0)["quantization_parameters"]
scale, zero = float(d["scales"][0]), int(d["zero_points"][0])
raw = []
for sample in np.load({str(npz)!r})["x"]:
    it.set_input(np.clip(np.round(sample / scale) + zero, -128, 127).astype(np.int8)[None], 0)
    it.invoke()
    raw.append(it.get_output(0)[0].copy())
np.save({str(out)!r}, np.array(raw))
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    return np.load(out)


def test_every_kernel_set_runs_and_the_matrix_holds_every_pair(result, digits):
    assert result.runtimes == ("litert", "litert-ref", "tflm")
    assert result.status == {name: {"status": "ran"} for name in result.runtimes}
    assert result.num_samples == len(digits.x_test) == 450
    assert [(m["a"], m["b"]) for m in result.matrix] == [
        ("litert", "litert-ref"),
        ("litert", "tflm"),
        ("litert-ref", "tflm"),
    ]
    reference_pair = result.pair("tflm", "litert-ref")
    assert reference_pair["top1_agreement"] == 1.0 and reference_pair["max_raw_diff"] <= 1
    assert all(m["top1_agreement"] >= 0.99 and m["kind"] == "classification" for m in result.matrix)
    assert result.failed_checks() == []
    assert result.agreement == result.pair("litert", "litert-ref")["top1_agreement"]
    table = result.format_table()
    assert "litert-ref vs tflm" in table and "identical rows" in table
    assert result.input["dtype"] == result.output["dtype"] == "int8"
    claim = result.claim()
    assert "TFLite Micro reference kernels" in claim and "LiteRT XNNPACK kernels" in claim


def test_accuracy_and_differences_equal_independent_loops(result, int8_file, test_npz, digits, small_cnn, tmp_path):
    raw_litert = _independent_litert(int8_file, digits.x_test)
    raw_tflm = _independent_tflm(int8_file, test_npz, tmp_path)
    for name, raw in (("litert", raw_litert), ("tflm", raw_tflm)):
        independent = np.mean(np.argmax(raw, axis=-1) == digits.y_test)
        assert abs(result.accuracy[name] - independent) <= 0.001, name
    assert result.pair("litert", "tflm")["max_raw_diff"] == np.max(
        np.abs(raw_litert.astype(int) - raw_tflm.astype(int))
    )
    identical = np.mean(np.all(raw_litert == raw_tflm, axis=1))
    assert result.pair("litert", "tflm")["bit_identical"] == pytest.approx(identical)
    keras_top1 = np.argmax(small_cnn.predict(digits.x_test, verbose=0), axis=-1)
    assert result.reference_accuracy == pytest.approx(np.mean(keras_top1 == digits.y_test))
    assert result.reference_agreement["litert"] == pytest.approx(np.mean(np.argmax(raw_litert, -1) == keras_top1))
    assert result.accuracy["litert"] >= 0.9


def test_arena_and_latency_are_measured(result):
    assert 512 < result.arena_bytes < 64 * 1024
    assert 0 < result.latency_us["median"] <= result.latency_us["p90"] < 100_000


def test_result_serializes_and_reports_failed_checks(result):
    data = json.loads(result.to_json())
    assert data == result.to_dict()
    assert data["accuracy"] == result.accuracy and data["arena_bytes"] == result.arena_bytes
    assert data["runtimes"] == ["litert", "litert-ref", "tflm"] and data["latency_us"] == result.latency_us
    assert data["matrix"] == result.matrix and set(data["kernels"]) == set(result.runtimes)
    table = result.format_table()
    assert f"{result.arena_bytes:,} bytes" in table and f"{100 * result.accuracy['tflm']:.2f} %" in table

    worst = min(result.accuracy.values())
    assert result.failed_checks(min_accuracy=worst) == []
    failures = result.failed_checks(min_accuracy=min(1.0, worst + 0.01))
    assert failures and all(f.startswith("rule 'accuracy' failed") and "is below the minimum" in f for f in failures)
    matrix = [
        dict(m, top1_agreement=0.98, disagreements=9) if m["a"] == "litert" else dict(m, max_raw_diff=3)
        for m in result.matrix
    ]
    disagreeing = dataclasses.replace(result, matrix=matrix)
    failures = disagreeing.failed_checks()
    assert failures[0] == (
        "rule 'optimized kernels within tolerance' failed: litert vs litert-ref on output "
        f"'{result.output['name']}': top-1 agreement 98.00 % (9 differ) is below 99.00 % "
        "(--min-agreement)"
    )
    assert failures[-1].startswith("rule 'reference kernels agree' failed: litert-ref vs tflm")
    assert "3 steps apart, the rule allows 1" in failures[-1] and len(failures) == 3
    assert disagreeing.failed_checks(min_agreement=0.98) == failures[-1:]
    assert result.failed_checks(min_reference_agreement=1.0)[0].startswith("rule 'reference model' failed")
    with pytest.raises(InputError, match="min_accuracy must be in \\[0, 1\\], got 95"):
        result.failed_checks(min_accuracy=95)


def test_tflm_alone_with_progress_bar(int8_file, digits, result, capsys):
    alone = validate(int8_file, digits.x_test, digits.y_test, runtimes=["tflm"], verbose=1)
    shown = capsys.readouterr().out
    assert "tflm: running 450 samples" in shown and "450/450" in shown
    assert alone.accuracy == {"tflm": result.accuracy["tflm"]}
    assert alone.arena_bytes == result.arena_bytes
    assert alone.agreement is None and alone.latency_us is None and alone.reference_agreement == {}
    assert alone.matrix == [] and alone.claim() == "only TFLite Micro reference kernels ran"
    validate(int8_file, digits.x_test[:20], runtimes=("litert",), verbose=1)
    assert capsys.readouterr().out == ""  # short loops: no bar


def test_bad_data_is_refused_before_running(int8_file, digits, small_cnn):
    with pytest.raises(InputError, match=r"samples have shape 8x8, the model expects 8x8x1"):
        validate(int8_file, digits.x_test[..., 0], verbose=0)
    with pytest.raises(InputError, match="label 12 is out of range for a model with 10 outputs"):
        validate(int8_file, digits.x_test[:3], np.array([0, 12, 1]), verbose=0)
    with pytest.raises(InputError, match="x has 3 samples but y has 2 labels"):
        validate(int8_file, digits.x_test[:3], np.array([0, 1]), verbose=0)
    with pytest.raises(
        InputError, match="runtimes must be a non-empty list of litert, litert-ref, tflm, got \\('gpu',\\)"
    ):
        validate(int8_file, digits.x_test[:3], runtimes=("gpu",), verbose=0)
    with pytest.raises(InputError, match="Keras model .*tfedge.convert"):
        validate(small_cnn, digits.x_test[:3], verbose=0)
    with pytest.raises(InputError, match="does not exist"):
        validate(int8_file.parent / "missing.tflite", digits.x_test[:3], verbose=0)


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tfedge.cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_validate_exit_codes(int8_file, test_npz, result):
    code, out, _ = _cli("validate", str(int8_file), "--data", str(test_npz), "--json", "--min-accuracy", "0.5")
    assert code == 0
    data = json.loads(out)
    assert data["accuracy"] == result.accuracy and data["agreement"] == 1.0

    too_high = min(1.0, result.accuracy["litert"] + 0.01)
    code, out, err = _cli(
        "validate", str(int8_file), "--data", str(test_npz), "--runtimes", "litert", "--min-accuracy", str(too_high)
    )
    assert code == 1
    assert "litert" in out and "accuracy" in out  # the table is printed before the verdict
    assert err.strip() == (
        f"tfedge: error: rule 'accuracy' failed: litert accuracy {result.accuracy['litert']:.4f} "
        f"is below the minimum {too_high:.4f} (--min-accuracy)"
    )

    code, _, err = _cli("validate", str(int8_file), "--data", str(test_npz), "--runtimes", "litert,gpu")
    assert code == 2 and "runtimes must be a non-empty list" in err
    code, _, err = _cli("validate", str(int8_file), "--data", str(test_npz), "--min-accuracy", "95")
    assert code == 2 and "--min-accuracy must be in [0, 1], got 95.0" in err


def _corrupt(content: bytes, kind: str, rng: np.random.Generator) -> bytes:
    data = bytearray(content)
    if kind == "truncated":
        return bytes(data[: int(rng.integers(8, len(data)))])
    if kind == "bit-flipped":
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(0, len(data)))
            data[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(data)
    start, length = int(rng.integers(0, len(data))), int(rng.integers(4, 129))
    data[start : start + length] = bytes(len(data[start : start + length]))
    return bytes(data)


def test_corrupted_files_fail_cleanly(int8_file, test_npz, tmp_path):
    """75 corrupted copies through `tfedge validate` (both runtimes) and `tfedge inspect`, in-process.

    Truncation always breaks the structure. A bit flip or zeroed run inside weight data, a name or a
    scale leaves a well-formed model with other numbers, which no structural check can tell (TFLite
    has no checksum): those run and are reported (exit 0/1). Everything else must be exit 2 with one
    line naming the file, never a crash or a traceback.
    """
    content = int8_file.read_bytes()
    rng = np.random.default_rng(7)
    rejected, codes = 0, {}
    for i in range(75):
        kind = ("truncated", "bit-flipped", "zeroed")[i % 3]
        path = tmp_path / f"corrupt_{i:02d}.tflite"
        path.write_bytes(_corrupt(content, kind, rng))
        code_v, out_v, err_v = _cli(
            "validate", str(path), "--data", str(test_npz), "--json", "--runtimes", "litert,tflm"
        )
        code_i, _, err_i = _cli("inspect", str(path))
        codes[(kind, code_v, code_i)] = codes.get((kind, code_v, code_i), 0) + 1
        for code, err in ((code_v, err_v), (code_i, err_i)):
            assert "Traceback" not in err and "--debug" not in err, (i, kind, err)
            assert code in (0, 1, 2), (i, kind, code)
            if code == 2:
                lines = [ln for ln in err.splitlines() if ln.startswith("tfedge: error:")]
                assert len(lines) == 1 and path.name in lines[0], (i, kind, err)
        if code_i == 2:
            assert code_v == 2, (i, kind, err_i)  # validate runs inspect's checks first
        if code_v != 2:
            assert json.loads(out_v)["num_samples"] == 450  # it ran to the end and reported
        if kind == "truncated":
            assert code_v == code_i == 2, (i, err_v)
        rejected += code_v == 2
    assert rejected >= 50, codes
    assert path.read_bytes() != content and int8_file.read_bytes() == content


def test_cli_validate_in_a_real_process(int8_file, test_npz, tmp_path):
    bad = tmp_path / "zeroed.tflite"
    content = bytearray(int8_file.read_bytes())
    content[16:80] = bytes(64)
    bad.write_bytes(bytes(content))
    proc = subprocess.run(
        [sys.executable, "-m", "tfedge", "validate", str(bad), "--data", str(test_npz)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("tfedge: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "TFLite model" in errors[0]


def test_reference_kernels_a_step_apart_in_one_op_pass_and_say_where(digits):
    """A user's Conv1D classifier (compressed by tfedge, committed in tests/data): TFLite Micro's FULLY_CONNECTED
    lands one step off LiteRT's reference kernel on a few samples and the SOFTMAX after it doubles that, so the
    outputs are 2 steps apart. validate traces the pair by itself: every op within a step on the same inputs,
    so the rule holds; an op further off would be named as the kernel bug."""
    path = ROOT / "tests" / "data" / "conv1d_fc_softmax_int8.tflite"
    result = validate(path, digits.x_test[..., 0], digits.y_test, runtimes=("litert-ref", "tflm"), verbose=0)
    pair = result.pair("litert-ref", "tflm")
    assert pair["max_raw_diff"] == 2 and pair["top1_agreement"] == 1.0
    (trace,) = result.trace
    ops = {e["op"].split(" ")[0]: e for e in trace["ops"]}
    assert ops["FULLY_CONNECTED"]["local_max_diff"] == 1 and ops["SOFTMAX"]["local_max_diff"] == 0
    assert ops["SOFTMAX"]["max_diff"] == 2
    assert result.failed_checks() == []
    worse = json.loads(json.dumps(result.trace))
    next(e for e in worse[0]["ops"] if e["op"].startswith("FULLY_CONNECTED"))["local_max_diff"] = 3
    (failure,) = dataclasses.replace(result, trace=worse).failed_checks()
    assert "rule 'reference kernels agree' failed" in failure and "FULLY_CONNECTED (op 7) alone differs by 3" in failure

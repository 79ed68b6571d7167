"""tfedge.runtimes: the shared quantize helpers and the kernel sets (LiteRT XNNPACK, LiteRT reference, TFLite Micro),
each in its child process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tflite_builders as tb

import tfedge
from tfedge.errors import InputError, ValidationError
from tfedge.runtimes import (
    ARENA_LOWER_BOUND,
    RUNTIMES,
    LiteRT,
    TFLiteMicro,
    check_runtimes,
    dequantize,
    model_io,
    model_signature,
    open_runtime,
    quantize,
)

from conftest import accuracy


@pytest.fixture(scope="module")
def int8_bytes(small_cnn, digits) -> bytes:
    return tfedge.convert(small_cnn, representative_data=digits.x_train, quantization="int8").content


# -- quantize / dequantize ---------------------------------------------------------------------------


def test_quantize_round_trips_within_half_a_step_and_clips():
    scale, zp = 0.02, -5
    x = np.linspace(-2.4, 2.5, 1001)  # inside the int8 range: (-128 + 5) * 0.02 .. (127 + 5) * 0.02
    q = quantize(x, scale, zp)
    assert q.dtype == np.int8
    assert np.max(np.abs(dequantize(q, scale, zp) - x)) <= scale / 2 + 1e-6
    clipped = quantize([-1e9, -np.inf, 1e9, np.inf], scale, zp)
    assert clipped.tolist() == [-128, -128, 127, 127]
    assert quantize([0.5, -0.5, 1.5], 1.0, 0).tolist() == [1, -1, 2]  # half away from zero, like TFLite
    assert quantize([300.0], 1.0, 0, np.uint8).tolist() == [255]
    assert dequantize(np.int8(-5), scale, zp) == 0.0


@pytest.mark.parametrize(
    "args, match",
    [
        (([1.0], 0.0, 0), "scale must be a positive finite number, got 0.0"),
        (([1.0], float("nan"), 0), "scale must be a positive finite number"),
        (([1.0], 0.1, 0.5), "zero_point must be an integer, got 0.5"),
        (([np.nan, 1.0], 0.1, 0), "cannot quantize NaN: 1 input values"),
    ],
)
def test_quantize_rejects_bad_arguments(args, match):
    with pytest.raises(InputError, match=match):
        quantize(*args)
    with pytest.raises(InputError, match="integer dtype"):
        quantize([1.0], 0.1, 0, np.float32)


# -- both runtimes on the int8 digits model -----------------------------------------------------------


def test_litert_and_tflm_read_the_same_io_and_match_keras(int8_bytes, small_cnn, digits):
    x = digits.x_test[:120]
    io_in, io_out = model_io(int8_bytes, "digits")
    litert = LiteRT(int8_bytes)
    assert litert.input == io_in and litert.output == io_out
    assert io_in.dtype == io_out.dtype == "int8" and io_in.shape == (1, 8, 8, 1) and io_out.shape == (1, 10)

    tflm = TFLiteMicro(int8_bytes)
    got_tflm = tflm.run(x, measure_arena=False)
    got_litert = litert.run(x)
    assert got_tflm.outputs.dtype == got_litert.outputs.dtype == np.int8
    assert got_tflm.outputs.shape == got_litert.outputs.shape == (120, 10)
    assert got_tflm.input == io_in  # what TFLite Micro itself reported in the child
    assert tflm.child_info["tensorflow_imported"] is False
    assert got_tflm.arena_bytes is None
    assert len(got_litert.invoke_us) == 120 and np.all(got_litert.invoke_us > 0)

    keras_top1 = np.argmax(small_cnn.predict(x, verbose=0), axis=-1)
    for got in (got_litert, got_tflm):
        logits = got.dequantized()
        assert logits.dtype == np.float32
        assert np.mean(np.argmax(logits, -1) == keras_top1) >= 0.95
        keras_accuracy = accuracy(small_cnn.predict(x, verbose=0), digits.y_test[:120])
        assert abs(accuracy(logits, digits.y_test[:120]) - keras_accuracy) <= 0.05
    # same quantized inputs on both runtimes: raw int8 outputs differ by at most one step
    assert np.max(np.abs(got_litert.outputs.astype(int) - got_tflm.outputs.astype(int))) <= 1


def test_arena_is_the_smallest_that_works(int8_bytes, digits, tmp_path):
    arena = TFLiteMicro(int8_bytes).measure_arena()
    assert ARENA_LOWER_BOUND < arena < 64 * 1024
    # Independent check, in a plain child interpreter (never in this process): exactly that size
    # allocates and runs, one byte less and a quarter less fail cleanly.
    model = tmp_path / "m.tflite"
    model.write_bytes(int8_bytes)
    code = f"""
import json, numpy as np
from tflite_micro.python.tflite_micro import runtime
content = open({str(model)!r}, "rb").read()
out = {{}}
for size in ({arena}, {arena - 1}, {arena * 3 // 4}):
    try:
        it = runtime.Interpreter.from_bytes(content, arena_size=size)
        it.set_input(np.zeros((1, 8, 8, 1), np.int8), 0)
        it.invoke()
        out[size] = "ok"
    except RuntimeError as exc:
        out[size] = str(exc)
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-500:]
    verdict = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdict[str(arena)] == "ok"
    assert "failed to allocate" in verdict[str(arena - 1)]
    assert "failed to allocate" in verdict[str(arena * 3 // 4)]


def test_tflm_crash_becomes_a_validation_error_and_the_caller_lives(int8_bytes, digits):
    # a valid model in a 64-byte arena segfaults the TFLite Micro Python interpreter
    # bytes are named "TFLite model (bytes)" everywhere (tfedge.tflite.model_bytes), as inspect always did
    with pytest.raises(
        ValidationError,
        match=r"TFLite Micro crashed \(signal 11, SIGSEGV\) on TFLite model "
        r"\(bytes\) while loading the model \(arena 64 bytes\); arenas under 512 "
        r"bytes crash it",
    ):
        TFLiteMicro(int8_bytes, arena_size=64).run(digits.x_test[:5])
    # still alive, and a clean too-small arena is an ordinary error with TFLite Micro's reason
    with pytest.raises(ValidationError, match="TFLM failed to allocate tensors.*Requested"):
        TFLiteMicro(int8_bytes, arena_size=1024).run(digits.x_test[:5])
    assert TFLiteMicro(int8_bytes).run(digits.x_test[:5], measure_arena=False).outputs.shape == (5, 10)


def test_tflm_hang_is_stopped_by_the_timeout(int8_bytes, digits):
    # the child needs far longer than 20 ms to report progress: the supervisor must kill it
    with pytest.raises(ValidationError, match=r"stopped responding .* \(no progress for 0.02 s\) and was stopped"):
        TFLiteMicro(int8_bytes, timeout=0.02).run(digits.x_test[:5])


def test_float_model_runs_unquantized_on_every_runtime(small_cnn, digits):
    content = tfedge.convert(small_cnn, quantization="float32")
    x = digits.x_test[:50]
    expected = small_cnn.predict(x, verbose=0)
    for name in ("litert", "litert-ref", "tflm"):
        rt = open_runtime(name, content)
        got = rt.run(x, **({"measure_arena": False} if name == "tflm" else {}))
        assert got.outputs.dtype == np.float32
        np.testing.assert_allclose(got.dequantized(), expected, atol=1e-4)


def test_bad_arguments_are_clear_input_errors(int8_bytes, small_cnn, digits):
    with pytest.raises(InputError, match=r"samples have shape 4x8x1, the model expects 8x8x1"):
        LiteRT(int8_bytes).run(digits.x_test[:3, :4])
    with pytest.raises(InputError, match=r"samples have shape 8x8, the model expects 8x8x1"):
        TFLiteMicro(int8_bytes).run(digits.x_test[:3, ..., 0])
    with pytest.raises(InputError, match="Keras model .*tfedge.convert"):
        LiteRT(small_cnn)
    with pytest.raises(InputError, match="arena_size must be a positive number of bytes, got 0"):
        TFLiteMicro(int8_bytes, arena_size=0)
    with pytest.raises(InputError, match="threads must be an integer >= 1, got 0"):
        LiteRT(int8_bytes, threads=0)
    with pytest.raises(InputError, match="unknown runtime 'gpu'"):
        open_runtime("gpu", int8_bytes)
    with pytest.raises(
        InputError, match="runtimes must be a non-empty list of litert, litert-ref, tflm, got 'litert,gpu'"
    ):
        check_runtimes("litert,gpu")
    assert check_runtimes(" tflm ,litert") == ("tflm", "litert")
    with pytest.raises(InputError, match=r"is not a (valid )?TFLite model"):
        TFLiteMicro(int8_bytes[: len(int8_bytes) // 2])


def test_every_kernel_set_runs_in_a_child_and_feeds_several_inputs():
    content = tb.two_inputs_two_outputs()
    ins, outs = model_signature(content)
    assert [t.name for t in ins] == ["left", "right"] and [t.name for t in outs] == ["sum", "difference"]
    rng = np.random.default_rng(0)
    left, right = rng.uniform(-1, 1, (12, 8)), rng.uniform(-1, 1, (12, 8))
    results = {}
    for name in RUNTIMES:
        rt = open_runtime(name, content)
        results[name] = rt.run({"left": left, "x1": right})  # by name or by position
        assert rt.child_info["tensorflow_imported"] is False
        assert [a.shape for a in results[name].all_outputs] == [(12, 8), (12, 8)]
    # the two reference kernel sets compute the same integers; the difference output is left - right
    for k in range(2):
        np.testing.assert_array_equal(results["litert-ref"].all_outputs[k], results["tflm"].all_outputs[k])
    difference = results["tflm"].dequantized(1)
    np.testing.assert_allclose(difference, left - right, atol=0.05 + 0.1)
    with pytest.raises(InputError, match=r"has 2 inputs \('left', 'right'\): pass a list of 2 arrays"):
        open_runtime("litert", content).run(left)
    with pytest.raises(InputError, match=r"has no array for input 1 \('right'\): name it 'right' or 'x1'"):
        open_runtime("litert", content).run({"left": left})
    with pytest.raises(InputError, match=r"hold different numbers of samples \[5, 12\]"):
        open_runtime("tflm", content).run([left, right[:5]])
    with pytest.raises(InputError, match="one input and one output"):
        model_io(content)


def test_tensors_without_a_batch_dimension_are_fed_whole():
    """An audio-front-end-like model: (16,) in and out, no batch dimension (ADD of the input to itself)."""
    spec = tb.TensorSpec
    content = tb.build(
        [spec("audio", (16,), tb.T.INT8, [1 / 16], [0]), spec("doubled", (16,), tb.T.INT8, [1 / 8], [0])],
        [tb.OpSpec(tb.Op.ADD, [0, 0], [1], tb.Opt.AddOptions, tb.schema.AddOptionsT())],
        [0],
        [1],
    )
    x = np.random.default_rng(1).uniform(-4, 4, (5, 16))
    for name in RUNTIMES:
        rt = open_runtime(name, content)
        assert rt.input.sample_shape == (16,)
        got = rt.run(x)
        assert got.outputs.shape == (5, 16) and got.outputs.dtype == np.int8
        np.testing.assert_allclose(got.dequantized(), 2 * x, atol=1 / 8 + 1e-6)

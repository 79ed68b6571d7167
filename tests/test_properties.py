"""Property tests (hypothesis): the shared quantize / dequantize helpers, and the flatbuffer reader on any
byte string. Bounded (150 examples each, no deadline) so that they fit CI; hypothesis shrinks any failure
to a minimal example.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tfedge
from tfedge.conversion import TFLiteModel
from tfedge.errors import InputError
from tfedge.inspection import verify
from tfedge.runtimes import dequantize, quantize

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = sorted((Path(__file__).parent / "fuzz_corpus").glob("seed_*.tflite"))
VALID = [p.read_bytes() for p in SEEDS]

#: Any scale a TFLite file can hold (a positive float32; tfedge's verifier accepts 1e-30 .. 1e30).
scales = st.floats(min_value=1e-30, max_value=1e30).map(lambda s: float(np.float32(s)))
zero_points = st.integers(-128, 127)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)


def int8_range(scale: float, zero_point: int) -> tuple[float, float]:
    return (-128 - zero_point) * scale, (127 - zero_point) * scale


# -- quantize / dequantize ------------------------------------------------------------------------------


@st.composite
def inside_the_range(draw):
    """(x, scale, zero_point) with every value of x inside the representable int8 range."""
    scale, zero_point = draw(scales), draw(zero_points)
    lo, hi = int8_range(scale, zero_point)
    u = draw(hnp.arrays(np.float64, shapes, elements=st.floats(0.0, 1.0)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = np.clip(lo + u * (hi - lo), lo, hi).astype(dtype)
    return x[(x >= lo) & (x <= hi)], scale, zero_point  # float32 rounding may step just outside


@BOUNDED
@given(inside_the_range())
def test_round_trip_stays_within_half_a_step(case):
    x, scale, zero_point = case
    q = quantize(x, scale, zero_point)
    assert q.dtype == np.int8 and q.shape == x.shape
    back = dequantize(q, scale, zero_point)
    x64 = x.astype(np.float64)
    # scale / 2 from rounding, plus the float32 rounding of the dequantized value
    bound = scale / 2 * (1 + 1e-9) + np.abs(x64) * 2.0**-23
    assert np.all(np.abs(back.astype(np.float64) - x64) <= bound)


@BOUNDED
@given(
    hnp.arrays(st.sampled_from([np.float32, np.float64]), shapes, elements=st.floats(allow_nan=False, width=32)),
    scales,
    zero_points,
)
def test_any_float_lands_in_int8_saturating_and_in_order(x, scale, zero_point):
    q = quantize(x, scale, zero_point)
    assert q.dtype == np.int8 and q.shape == x.shape
    assert q.min(initial=127) >= -128 and q.max(initial=-128) <= 127
    order = np.argsort(x.reshape(-1), kind="stable")
    assert np.all(np.diff(q.reshape(-1)[order].astype(np.int64)) >= 0)  # saturates, never wraps around
    lo, hi = int8_range(scale, zero_point)
    x64 = x.astype(np.float64)
    assert np.all(q[x64 >= hi + scale] == 127) and np.all(q[x64 <= lo - scale] == -128)


@BOUNDED
@given(hnp.arrays(np.int8, shapes), scales, zero_points)
def test_grid_values_survive_the_round_trip(q, scale, zero_point):
    assert np.array_equal(quantize(dequantize(q, scale, zero_point), scale, zero_point), q)


@BOUNDED
@given(
    hnp.arrays(np.float64, shapes, elements=st.floats(width=32)),
    st.one_of(scales, st.sampled_from([0.0, -1.0, float("nan"), float("inf"), -0.0])),
    st.one_of(zero_points, st.sampled_from([0.5, float("nan")])),
)
def test_nan_and_bad_parameters_are_input_errors(x, scale, zero_point):
    bad = (
        np.isnan(x).any()
        or not (np.isfinite(scale) and scale > 0)
        or zero_point != zero_point
        or zero_point != round(zero_point)
    )
    try:
        q = quantize(x, scale, zero_point)
    except InputError as exc:
        assert bad and "\n" not in str(exc)
    else:
        assert not bad and q.dtype == np.int8


# -- the flatbuffer reader --------------------------------------------------------------------------------


def only_input_errors(content: bytes) -> None:
    """inspect, verify and TFLiteModel agree: all succeed, or all raise a one-line InputError."""
    outcomes = []
    for fn in (tfedge.inspect, verify, TFLiteModel.from_bytes):
        start = time.monotonic()
        try:
            result = fn(content)
        except InputError as exc:
            message = str(exc)
            assert "\n" not in message and " is not a" in message, message
            outcomes.append("InputError")
        else:
            if fn is tfedge.inspect:
                json.dumps(result.to_dict())
                result.format_table()
            outcomes.append("ok")
        assert time.monotonic() - start < 5.0, "a hang"
    assert len(set(outcomes)) == 1, outcomes


@BOUNDED
@given(st.binary(max_size=4096))
def test_inspect_any_bytes(content):
    only_input_errors(content)


@BOUNDED
@given(st.integers(0, 2**32 - 1), st.binary(max_size=4096))
def test_inspect_bytes_with_a_valid_header(root, tail):
    only_input_errors(struct.pack("<I", root) + b"TFL3" + tail)


@st.composite
def mutated_models(draw):
    """A committed valid model with random byte edits, aligned int32 overwrites and maybe a truncation."""
    data = bytearray(draw(st.sampled_from(VALID)))
    n = len(data)
    for pos, value in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), max_size=6)):
        data[pos] = value
    for pos, value in draw(
        st.lists(
            st.tuples(st.integers(0, n // 4 - 1), st.one_of(st.integers(0, 2**32 - 1), st.integers(0, n))), max_size=3
        )
    ):
        struct.pack_into("<I", data, 4 * pos, value)
    cut = draw(st.one_of(st.none(), st.integers(0, n)))
    return bytes(data[:cut])


@BOUNDED
@given(mutated_models())
def test_inspect_mutated_valid_models(content):
    only_input_errors(content)


@pytest.mark.parametrize("content", VALID, ids=[p.stem for p in SEEDS])
def test_the_valid_models_are_accepted(content):
    """The mutation property starts from files the reader accepts (else it would prove nothing)."""
    assert tfedge.inspect(content).bytes == len(content)

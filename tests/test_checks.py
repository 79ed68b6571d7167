"""tfedge.checks: the shared argument checks (fast, no TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfedge.checks import check_bool, check_choice, check_fraction, check_int, check_number, check_range
from tfedge.errors import InputError


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), (1, 1.0), (np.float32(0.25), 0.25), (0, 0.0)])
def test_check_fraction_returns_a_plain_float(value, expected):
    result = check_fraction(value, "ratio")
    assert result == expected and type(result) is float


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: check_fraction(1.5, "ratio", high_open=True, hint="e.g. 0.5"),
            r"^ratio must be in \[0, 1\), got 1.5: e.g. 0.5$",
        ),
        (lambda: check_fraction(0, "ratio", low_open=True), r"^ratio must be in \(0, 1\], got 0$"),
        (lambda: check_fraction(True, "ratio"), r"^ratio must be a number, got True$"),
        (lambda: check_fraction("0.5", "ratio"), r"^ratio must be a number, got '0.5'$"),
        (lambda: check_number(math.nan, "alpha"), r"^alpha must be a finite number, got nan$"),
        (lambda: check_range(-1, "t", 0, low_open=True), r"^t must be in \(0, inf\), got -1$"),
        (lambda: check_range(5, "t", None, 4), r"^t must be in \(-inf, 4\], got 5$"),
        (lambda: check_int(2.0, "epochs", minimum=1), r"^epochs must be an integer, got 2.0$"),
        (lambda: check_int(0, "epochs", minimum=1), r"^epochs must be an integer >= 1, got 0$"),
        (lambda: check_int(9, "bits", minimum=2, maximum=8), r"^bits must be an integer in \[2, 8\], got 9$"),
        (lambda: check_int(False, "n"), r"^n must be an integer, got False$"),
        (lambda: check_bool(1, "strict"), r"^strict must be True or False, got 1$"),
        (lambda: check_bool("yes", "strict"), r"^strict must be True or False, got 'yes'$"),
        (
            lambda: check_choice("cubic", "schedule", ("polynomial", "constant")),
            r"^schedule must be one of 'polynomial', 'constant', got 'cubic'$",
        ),
        (lambda: check_choice(None, "mode", ("a",)), r"^mode must be one of 'a', got None$"),
    ],
)
def test_bad_values_raise_one_line_naming_the_value(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_good_values_come_back_as_plain_python_types():
    assert check_int(np.int64(3), "n", minimum=1) == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_bool(np.bool_(True), "flag") is True
    assert check_choice("int8", "mode", ["int8", "float16"]) == "int8"
    assert check_range(4, "t", 0, low_open=True) == 4.0

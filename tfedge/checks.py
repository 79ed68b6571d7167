"""Argument checks shared by every public function: one place, one message style.

Each check returns the value converted to its plain Python type, or raises
:class:`tfedge.errors.InputError` with a one-line message that names the argument, shows the
value received and, where given, the fix.

>>> from tfedge.checks import check_fraction, check_int
>>> check_fraction(0.5, "target_sparsity", high_open=True)
0.5
>>> check_int(3, "epochs", minimum=1)
3
>>> check_fraction(1.5, "target_sparsity", high_open=True, hint="e.g. 0.8")
Traceback (most recent call last):
...
tfedge.errors.InputError: target_sparsity must be in [0, 1), got 1.5: e.g. 0.8
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from tfedge.errors import InputError


def _fail(name: str, requirement: str, value: Any, hint: str) -> InputError:
    return InputError(f"{name} must be {requirement}, got {value!r}" + (f": {hint}" if hint else ""))


def check_number(value: Any, name: str, *, hint: str = "") -> float:
    """A finite real number (``bool`` is refused: ``True`` is rarely meant as ``1.0``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, "a number", value, hint)
    number = float(value)
    if not math.isfinite(number):
        raise _fail(name, "a finite number", value, hint)
    return number


def check_range(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> float:
    """A finite number in the interval ``[low, high]``; ``*_open`` excludes that end, ``None`` leaves it open."""
    number = check_number(value, name, hint=hint)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        left = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        right = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise _fail(name, f"in {left}, {right}", value, hint)
    return number


def check_fraction(value: Any, name: str, *, low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """A number in [0, 1] (ends excluded with ``low_open`` / ``high_open``)."""
    return check_range(value, name, 0.0, 1.0, low_open=low_open, high_open=high_open, hint=hint)


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None, hint: str = "") -> int:
    """An integer (numpy integers too, never ``bool``) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(name, "an integer", value, hint)
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        if maximum is None:
            requirement = f"an integer >= {minimum}"
        elif minimum is None:
            requirement = f"an integer <= {maximum}"
        else:
            requirement = f"an integer in [{minimum}, {maximum}]"
        raise _fail(name, requirement, value, hint)
    return number


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` (numpy booleans too); ``0`` / ``1`` / strings are refused."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise _fail(name, "True or False", value, "")


def check_choice(value: Any, name: str, choices: Iterable[str], *, hint: str = "") -> str:
    """One of ``choices`` (compared exactly)."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise _fail(name, "one of " + ", ".join(repr(c) for c in options), value, hint)
    return value


__all__ = ["check_number", "check_range", "check_fraction", "check_int", "check_bool", "check_choice"]

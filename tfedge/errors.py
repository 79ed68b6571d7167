"""tfedge's exceptions: the CLI maps them to exit codes in one place (``tfedge.cli``).

>>> from tfedge.errors import InputError, TfedgeError
>>> issubclass(InputError, TfedgeError) and issubclass(InputError, ValueError)
True
"""

from __future__ import annotations


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    r"""The first non-blank line of an exception's message (or its class name), cut to ``limit``.

    >>> first_line(ValueError("bad shape\n  details..."))
    'bad shape'
    >>> first_line(KeyError())
    'KeyError'
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


class TfedgeError(Exception):
    """Base class of every error tfedge raises on purpose. Its message is one line: problem and fix."""

    exit_code = 2


class InputError(TfedgeError, ValueError):
    """Bad input from the user: a missing or malformed file, bad data, a bad argument. Exit code 2."""

    exit_code = 2


class ModelError(InputError):
    """A model tfedge cannot handle (subclassed, Keras 3, unsupported layers under ``strict``)."""


class ConversionError(TfedgeError):
    """A TFLite conversion failed or did not produce what was asked (e.g. float ops left in int8)."""

    exit_code = 2


class ValidationError(TfedgeError):
    """A runtime could not run a model (e.g. TFLite Micro crashed in its child process)."""

    exit_code = 2


class CheckFailed(TfedgeError):
    """A check the user asked for did not hold (accuracy below a threshold, runtimes disagree). Exit 1."""

    exit_code = 1


__all__ = ["first_line", "TfedgeError", "InputError", "ModelError", "ConversionError", "ValidationError", "CheckFailed"]

"""The bundled digits data (no download) and the ``.npz`` data convention.

>>> from tfedge import datasets
>>> data = datasets.digits()
>>> data.x_train.shape, data.x_test.shape
((1347, 8, 8, 1), (450, 8, 8, 1))
"""

from __future__ import annotations

import dataclasses
import zipfile
from typing import Any, Literal, overload

import numpy as np

from tfedge import files
from tfedge.checks import check_bool, check_int
from tfedge.errors import InputError, first_line
from tfedge.files import PathLike, atomic_writer, check_input_file


@dataclasses.dataclass(frozen=True)
class Split:
    """A train / test split: float32 NHWC inputs and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def digits() -> Split:
    """scikit-learn's 1,797 real 8x8 handwritten digits, in [0, 1], shape ``(N, 8, 8, 1)``.

    Split with ``train_test_split(test_size=0.25, random_state=0, stratify=target)``: 1,347 / 450.
    """
    from sklearn.datasets import load_digits  # here, not at the top: scikit-learn takes a second to import
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x = (raw.images / 16.0).astype(np.float32)[..., None]
    y = raw.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return Split(x_train, y_train, x_test, y_test)


def save_npz(path: PathLike, x: np.ndarray, y: np.ndarray | None = None) -> None:
    """Write ``x`` (and ``y``) in the tfedge ``.npz`` convention, atomically."""
    arrays: dict[str, Any] = {"x": np.asarray(x, np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, np.int64)
    with atomic_writer(path, "wb") as fh:
        np.savez(fh, **arrays)


def _check_array(name: str, arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype == object:
        raise InputError(
            f"{where}: '{name}' holds Python objects; save plain numeric arrays (np.savez(path, x=x.astype('float32')))"
        )
    if arr.size == 0:
        raise InputError(f"{where}: '{name}' is empty (shape {arr.shape}); it needs at least one sample")
    if arr.ndim == 0:
        raise InputError(f"{where}: '{name}' is a scalar; expected an array with a batch dimension")
    return arr


def _check_unpacked_size(p, where: str) -> None:
    """Refuse an archive that unpacks to more than the size cap (a small compressed file can hold gigabytes)."""
    try:
        with zipfile.ZipFile(p) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{where} is not a readable .npz: {exc}") from None
    if unpacked > files.MAX_FILE_BYTES:
        raise InputError(
            f"{where} unpacks to {unpacked:,} bytes, over the {files.MAX_FILE_BYTES:,}-byte cap: "
            "pass less data (or raise tfedge.files.MAX_FILE_BYTES if you trust it)"
        )


@overload
def load_npz(path: PathLike, labels: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def load_npz(path: PathLike, labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]: ...


def load_npz(path: PathLike, labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Load ``x`` (float32) and, if present, ``y`` (int64 labels) from an ``.npz`` file.

    ``labels=True`` requires ``y``. Loaded with ``allow_pickle=False``. Returns ``(x, y)``; ``y`` is
    ``None`` when the file has none. Every problem is an :class:`~tfedge.errors.InputError`
    naming the file.
    """
    labels = check_bool(labels, "labels")
    p = check_input_file(path, "data file")
    where = f"data file '{p}'"
    if not zipfile.is_zipfile(p):
        raise InputError(f"{where} is not an .npz archive: save it with numpy.savez(path, x=..., y=...)")
    _check_unpacked_size(p, where)
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = set(npz.files)
            if "x" not in keys:
                found = ", ".join(sorted(keys)) or "nothing"
                raise InputError(f"{where} has no array 'x' (found: {found}); save inputs as x=...")
            x = npz["x"]
            y = npz["y"] if "y" in keys else None
    except InputError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(
                f"{where} holds Python objects (pickled arrays), refused for safety; save numeric arrays"
            ) from None
        raise InputError(f"{where} is not a readable .npz: {exc}") from None
    except Exception as exc:  # numpy raises many types for a damaged archive
        raise InputError(f"{where} is not a readable .npz: {first_line(exc)}") from None
    for name, arr in (("x", x), ("y", y)):
        if arr is not None and not isinstance(arr, np.ndarray):
            raise InputError(f"{where} is not a readable .npz: member '{name}' is not a .npy array")

    x = _check_array("x", x, where)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
        raise InputError(f"{where}: 'x' has dtype {x.dtype}; expected float32 numbers")
    x = x.astype(np.float32, copy=False)
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise InputError(f"{where}: 'x' holds {bad} NaN or Inf values; clean or drop those samples")

    if y is None:
        if labels:
            raise InputError(f"{where} has no labels 'y'; save them as y=... (integer class ids)")
        return x, None
    y = _check_array("y", y, where)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputError(f"{where}: labels 'y' are not integers; save class ids (y.astype('int64'))")
    elif not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{where}: labels 'y' have dtype {y.dtype}; save integer class ids (y.astype('int64'))")
    y = y.astype(np.int64).reshape(-1) if y.ndim > 1 and y.shape[1:] == (1,) * (y.ndim - 1) else y.astype(np.int64)
    if y.ndim != 1:
        raise InputError(f"{where}: labels 'y' have shape {y.shape}; expected one integer class id per sample")
    if y.min() < 0:
        raise InputError(f"{where}: labels 'y' hold negative class ids (min {y.min()}); use 0..num_classes-1")
    if len(y) != len(x):
        raise InputError(f"{where}: 'x' has {len(x)} samples but 'y' has {len(y)}; they must match")
    return x, y


def check_inputs_match(x: np.ndarray, shape: tuple, where: str = "data") -> None:
    """Check that samples ``x`` fit a model input of ``shape`` (batch dimension aside)."""
    expected = tuple(d for d in shape[1:])
    got = tuple(x.shape[1:])
    if len(expected) != len(got) or any(e is not None and e > 0 and e != g for e, g in zip(expected, got)):
        exp = "x".join("?" if (e is None or e < 0) else str(e) for e in expected)
        raise InputError(
            f"{where}: samples have shape {'x'.join(map(str, got)) or 'scalar'}, the model expects {exp} "
            f"(array shape (N, {', '.join('?' if (e is None or e < 0) else str(e) for e in expected)}))"
        )


def check_labels_fit(y: np.ndarray, num_classes: int, where: str = "data") -> None:
    """Check that labels are valid class ids for a model with ``num_classes`` outputs."""
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    top = int(y.max())
    if top >= num_classes:
        raise InputError(
            f"{where}: label {top} is out of range for a model with {num_classes} outputs "
            f"(classes 0..{num_classes - 1})"
        )


__all__ = ["Split", "digits", "load_npz", "save_npz", "check_inputs_match", "check_labels_fit"]

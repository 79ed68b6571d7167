"""tfedge.datasets: the real bundled digits split and every bad-.npz case."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from tfedge import datasets
from tfedge.errors import InputError


def test_digits_is_the_real_split(digits):
    assert digits.x_train.shape == (1347, 8, 8, 1) and digits.x_test.shape == (450, 8, 8, 1)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert 0.0 == digits.x_train.min() and digits.x_train.max() == 1.0
    assert digits.num_classes == 10
    # stratified: every class in both parts, in proportion
    assert np.all(np.bincount(digits.y_test) >= 43)
    # deterministic and no overlap between train and test
    again = datasets.digits()
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    train_rows = {r.tobytes() for r in digits.x_train}
    assert sum(r.tobytes() in train_rows for r in digits.x_test) < 5  # the raw data has a few duplicate images


def test_npz_round_trip(tmp_path, digits):
    path = tmp_path / "d.npz"
    datasets.save_npz(path, digits.x_test, digits.y_test)
    x, y = datasets.load_npz(path, labels=True)
    np.testing.assert_array_equal(x, digits.x_test)
    np.testing.assert_array_equal(y, digits.y_test)
    x_only, none = datasets.load_npz(path)
    assert none is not None  # y present is returned even when not required
    np.savez(tmp_path / "x.npz", x=digits.x_test)
    assert datasets.load_npz(tmp_path / "x.npz")[1] is None


def test_float64_is_converted_silently(tmp_path):
    np.savez(tmp_path / "f64.npz", x=np.zeros((3, 8, 8, 1), np.float64), y=np.array([1, 2, 3]))
    x, y = datasets.load_npz(tmp_path / "f64.npz")
    assert x.dtype == np.float32 and y.dtype == np.int64


def _raw(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _write(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: t / "missing.npz", "does not exist"),
        (lambda t: t, "is a directory"),
        (lambda t: _raw(t, "empty.npz", b""), "is empty"),
        (lambda t: _raw(t, "text.npz", b"hello"), "not an .npz archive"),
        (lambda t: _write(t, "nox.npz", inputs=np.zeros((2, 2), np.float32)), "has no array 'x' (found: inputs)"),
        (lambda t: _write(t, "obj.npz", x=np.array([{"a": 1}], dtype=object)), "holds Python objects"),
        (lambda t: _write(t, "str.npz", x=np.array(["a", "b"])), "dtype <U1"),
        (lambda t: _write(t, "nan.npz", x=np.array([[np.nan, 1.0], [np.inf, 0.0]], np.float32)), "2 NaN or Inf"),
        (lambda t: _write(t, "emptyx.npz", x=np.zeros((0, 8, 8, 1), np.float32)), "'x' is empty"),
        (lambda t: _write(t, "floaty.npz", x=np.zeros((2, 1), np.float32), y=np.array([0.5, 1.0])), "not integers"),
        (lambda t: _write(t, "stry.npz", x=np.zeros((2, 1), np.float32), y=np.array(["a", "b"])), "integer class ids"),
        (lambda t: _write(t, "negy.npz", x=np.zeros((2, 1), np.float32), y=np.array([0, -1])), "negative class ids"),
        (
            lambda t: _write(t, "leny.npz", x=np.zeros((3, 1), np.float32), y=np.array([0, 1])),
            "3 samples but 'y' has 2",
        ),
    ],
)
def test_bad_npz_gives_one_line_error_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        datasets.load_npz(path)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert str(path) in text


def test_labels_required(tmp_path):
    path = _write(tmp_path, "x.npz", x=np.zeros((2, 1), np.float32))
    with pytest.raises(InputError, match="has no labels 'y'"):
        datasets.load_npz(path, labels=True)


def test_zip_that_is_not_npz(tmp_path):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", b"not a numpy file")
    with pytest.raises(InputError, match="not a readable .npz"):
        datasets.load_npz(path)


def test_shape_and_label_checks():
    datasets.check_inputs_match(np.zeros((2, 8, 8, 1)), (None, 8, 8, 1))
    with pytest.raises(InputError, match="samples have shape 8x8, the model expects 8x8x1"):
        datasets.check_inputs_match(np.zeros((2, 8, 8)), (None, 8, 8, 1))
    with pytest.raises(InputError, match="label 10 is out of range for a model with 10 outputs"):
        datasets.check_labels_fit(np.array([0, 10]), 10)


def test_argument_checks_name_the_value(tmp_path):
    path = _write(tmp_path, "x.npz", x=np.zeros((2, 1), np.float32))
    with pytest.raises(InputError, match="labels must be True or False, got 'y'"):
        datasets.load_npz(path, labels="y")
    with pytest.raises(InputError, match="num_classes must be an integer >= 1, got 0"):
        datasets.check_labels_fit(np.array([0, 1]), 0)
    with pytest.raises(InputError, match="num_classes must be an integer, got 10.0"):
        datasets.check_labels_fit(np.array([0, 1]), 10.0)

"""tfedge.native: native output capture on the real file descriptors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tfedge.native import capture_fds


def test_capture_restores_the_descriptors_even_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError), capture_fds((1, 2)) as captured:
        os.write(1, b"to stdout\n")
        os.write(2, b"to stderr\n")
        raise RuntimeError("boom")
    assert captured.text == "to stdout\nto stderr\n"
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_discarded_output_keeps_nothing(capfd):
    with capture_fds((2,), keep=False) as captured:
        os.write(2, b"noise\n")
    assert captured.text == "" and capfd.readouterr().err == ""


def test_the_module_imports_without_tensorflow_or_numpy():
    code = "import sys, tfedge.native; print('tensorflow' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

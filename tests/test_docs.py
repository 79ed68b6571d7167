"""Every docstring example in the package runs (an example that never runs rots)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tfedge

MODULES = sorted(m.name for m in pkgutil.iter_modules(tfedge.__path__, "tfedge.") if m.name != "tfedge.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_package_docstring_examples_exist():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES for t in finder.find(importlib.import_module(name)))
    assert examples >= 10

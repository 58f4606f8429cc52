"""The examples in the docstrings run and show what they say."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import karyopipe

MODULES = sorted(m.name for m in pkgutil.walk_packages(karyopipe.__path__, "karyopipe.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"

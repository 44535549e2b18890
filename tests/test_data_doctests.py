"""The runnable examples in the data modules' docstrings stay true (markdown fences stripped, as diffusers writes them)."""

import doctest
import importlib

import pytest


MODULES = ["filters", "balance", "captions", "agents", "env"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name == "env":
        pytest.importorskip("vizdoom")
    module = importlib.import_module(f"diffusers_yan.data.{name}")
    text = "\n".join(line for line in module.__doc__.splitlines() if not line.strip().startswith("```"))
    test = doctest.DocTestParser().get_doctest(text, {}, f"diffusers_yan.data.{name}", None, 0)
    assert test.examples, f"{name} has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0

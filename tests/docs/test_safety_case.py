"""The clinical safety case names real tests: every ``tests/...py::name`` in docs/safety/ must exist, so a
renamed or deleted test cannot leave a hazard claiming a control it no longer checks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SAFETY_DOCS = sorted((ROOT / "docs" / "safety").glob("*.md"))
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


def _test_names(path: Path) -> set[str]:
    """Test functions of a module, and of its test classes as Class::name and Class."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
    return names


def _references() -> list[tuple[str, str, str]]:
    return [(doc.name, path, name) for doc in SAFETY_DOCS for path, name in REFERENCE.findall(doc.read_text())]


def test_the_safety_case_names_tests():
    assert len(_references()) > 50


@pytest.mark.parametrize(("doc", "path", "name"), _references())
def test_every_named_test_exists(doc, path, name):
    module = ROOT / path
    assert module.is_file(), f"{doc} names {path}, which does not exist"
    assert name in _test_names(module), f"{doc} names {path}::{name}, which is not a test there"

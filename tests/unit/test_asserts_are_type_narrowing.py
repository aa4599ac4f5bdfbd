"""`run` starts the gateway under ``python -O`` (ADR 0011), which drops every
``assert``. So no check the gateway relies on may be one: in ``addons/`` and
``crypto/`` an assert only narrows a type for mypy (``x is not None``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("addons", "crypto") for p in (ROOT / d).rglob("*.py"))


def _is_not_none(test: ast.expr) -> bool:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return all(_is_not_none(value) for value in test.values)
    return (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.IsNot)
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value is None
    )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_assert_only_narrows_a_type(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    checks = [
        f"{path.name}:{node.lineno}: assert {ast.unparse(node.test)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Assert) and not _is_not_none(node.test)
    ]
    assert not checks, "checks that python -O would drop:\n" + "\n".join(checks)


def test_the_rule_sees_a_real_check() -> None:
    tree = ast.parse("assert size <= limit\nassert a is not None and b is not None")
    asserts = [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert [_is_not_none(node.test) for node in asserts] == [False, True]

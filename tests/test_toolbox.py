"""What the tests share lives in tests/support/, never in a test module: ruff's banned-api
(pyproject.toml) refuses an import of any module it lists, and lists modules one by one, so
this keeps the list to every test module there is (a new one fails here until it is added)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent


def ruff() -> dict[str, Any]:
    config = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())
    lint: dict[str, Any] = config["tool"]["ruff"]["lint"]
    return lint


def test_every_test_module_is_banned_from_being_imported() -> None:
    modules = {f"tests.{p.stem}" for p in TESTS.glob("test_*.py")} | {"tests.conftest"}
    banned = {
        name for name in ruff()["flake8-tidy-imports"]["banned-api"] if name.startswith("tests.")
    }
    assert sorted(modules - banned) == [], "add these to ruff's banned-api in pyproject.toml"
    assert sorted(banned - modules) == [], "these modules are gone: take them off the list"


def test_the_ban_is_checked_and_nothing_new_is_exempt() -> None:
    lint = ruff()
    assert "TID251" in lint["select"]
    exempt = {path for path, rules in lint["per-file-ignores"].items() if "TID251" in rules}
    assert exempt == set()

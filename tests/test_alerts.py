"""deploy/prometheus/alerts.yaml, checked by the real promtool, and unit-tested by the file
operators run themselves: `promtool test rules deploy/prometheus/alerts.test.yaml`. Every
alert there has a case that fires it and one that does not, and every counter alert a
series that appears mid-test with its first count (as one does for an event before
Prometheus' first scrape). tests/test_alerts_e2e.py runs the same rules in a real
Prometheus against a real daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus"
ALERTS = RULES / "alerts.yaml"
UNIT_TESTS = RULES / "alerts.test.yaml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    return found


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own files, the real promtool)
        [promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def rules() -> dict[str, dict[str, Any]]:
    (group,) = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def unit_tests() -> list[dict[str, Any]]:
    return list(yaml.safe_load(UNIT_TESTS.read_text())["tests"])


def counter_alerts() -> set[str]:
    return {name for name, rule in rules().items() if "increase(" in rule["expr"]}


def test_the_rules_pass_promtool_check(tmp_path: Path) -> None:
    checked = run("check", "rules", str(ALERTS), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_the_shipped_unit_tests_pass_as_an_operator_runs_them(tmp_path: Path) -> None:
    """From another directory, as after a fresh clone: the file names its rules relatively."""
    tested = run("test", "rules", str(UNIT_TESTS), cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in unit_tests():
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == set(rules())
    assert quiet == set(rules())


def test_every_counter_alert_fires_for_a_series_that_appears_with_its_first_count() -> None:
    """The case the rules once missed: a counter Prometheus first sees at 1 (`_x5 1...`)."""
    appearing = re.compile(r"^_x\d+ 1")
    covered = set()
    for case in unit_tests():
        if any(appearing.match(s["values"]) for s in case["input_series"]):
            covered |= {c["alertname"] for c in case["alert_rule_test"] if c["exp_alerts"]}
    assert counter_alerts() and counter_alerts() <= covered


def test_every_rule_says_how_bad_and_what_to_do() -> None:
    for rule in rules().values():
        assert {"summary", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The shipped tests can fail: the first firing case, expected quiet, is caught."""
    spec = yaml.safe_load(UNIT_TESTS.read_text())
    check = next(c for t in spec["tests"] for c in t["alert_rule_test"] if c["exp_alerts"])
    check["exp_alerts"] = []
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    wrong = tmp_path / UNIT_TESTS.name
    wrong.write_text(yaml.safe_dump(spec, sort_keys=False))
    failed = run("test", "rules", str(wrong), cwd=tmp_path)
    assert failed.returncode != 0
    assert check["alertname"] in failed.stdout + failed.stderr

"""deploy/prometheus/alerts.yaml, checked and unit-tested by the real promtool: every alert
has a case that fires it and one that does not (a rule without both fails here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
AT = {"job": "cloudtrail-adapter", "instance": "10.0.0.7:9100"}
SOURCE = AT | {"source": "s3-1"}


@dataclass(frozen=True)
class Case:
    alert: str
    series: dict[str, str]  # series selector -> promtool values
    at: str  # evaluation time
    labels: dict[str, str] | None  # the alert's labels when it fires; None: it must not


def series(metric: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def counter_cases(alert: str, metric: str, extra: dict[str, str]) -> list[Case]:
    name = series(f"cloudtrail_adapter_{metric}", SOURCE | extra)
    return [
        Case(alert, {name: "0 0 1 2 3 4 5 6"}, "6m", SOURCE | extra),
        Case(alert, {name: "3x20"}, "15m", None),  # counted long ago, nothing new
    ]


def gauge_cases(alert: str, metric: str, down: str, labels: dict[str, str]) -> list[Case]:
    name = series(metric, labels)
    return [
        Case(alert, {name: f"{down}x10"}, "6m", labels),
        Case(alert, {name: f"{down} {down} {down} 1x10"}, "6m", None),  # over in 3 minutes
    ]


CASES = [
    *gauge_cases("CloudTrailAdapterDown", "up", "0", AT),
    *gauge_cases("CloudTrailAdapterSourceDown", "cloudtrail_adapter_source_up", "0", SOURCE),
    *gauge_cases(
        "CloudTrailAdapterLimaCharlieUnreachable",
        "cloudtrail_adapter_limacharlie_reachable",
        "0",
        SOURCE,
    ),
    Case(
        "CloudTrailAdapterFallingBehind",
        {series("cloudtrail_adapter_oldest_unacknowledged_seconds", SOURCE): "0+60x40"},
        "30m",
        SOURCE,
    ),
    Case(  # long, but not growing: a big object in work, not a daemon falling behind
        "CloudTrailAdapterFallingBehind",
        {series("cloudtrail_adapter_oldest_unacknowledged_seconds", SOURCE): "1000x40"},
        "30m",
        None,
    ),
    *counter_cases(
        "CloudTrailAdapterObjectsFailing", "objects_failed_total", {"reason": "AccessDenied"}
    ),
    *counter_cases(
        "CloudTrailAdapterObjectsQuarantined", "objects_quarantined_total", {"reason": "not_json"}
    ),
    *counter_cases("CloudTrailAdapterSqsPoison", "sqs_messages_poison_total", {}),
    *counter_cases("CloudTrailAdapterDedupWindowShortened", "dedup_keys_forgotten_early_total", {}),
    *counter_cases(
        "CloudTrailAdapterIntegrityFileViolation",
        "integrity_files_total",
        {"verdict": "hash_mismatch"},
    ),
    *counter_cases(
        "CloudTrailAdapterIntegrityDigestViolation",
        "integrity_digests_total",
        {"verdict": "missing_digest"},
    ),
    Case(  # valid files counted: never an alert
        "CloudTrailAdapterIntegrityFileViolation",
        {
            series(
                "cloudtrail_adapter_integrity_files_total", SOURCE | {"verdict": "valid"}
            ): "0+5x20"
        },
        "15m",
        None,
    ),
    Case(
        "CloudTrailAdapterNoRecords",
        {
            series("cloudtrail_adapter_source_up", SOURCE): "1x100",
            series("cloudtrail_adapter_records_acknowledged_total", SOURCE): "500x100",
        },
        "70m",
        SOURCE,
    ),
    Case(
        "CloudTrailAdapterNoRecords",
        {
            series("cloudtrail_adapter_source_up", SOURCE): "1x100",
            series("cloudtrail_adapter_records_acknowledged_total", SOURCE): "0+40x100",
        },
        "70m",
        None,
    ),
]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    return found


def rules() -> dict[str, dict[str, Any]]:
    (group,) = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def rendered(annotations: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
    """The annotations as Prometheus fills in `{{ $labels.x }}`."""

    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)

    return {k: fill(v) for k, v in annotations.items()}


def unit_tests(cases: list[Case]) -> dict[str, Any]:
    by_name = rules()
    tests = []
    for case in cases:
        rule = by_name[case.alert]
        expected = []
        if case.labels is not None:
            labels = case.labels | rule["labels"]
            expected = [
                {"exp_labels": labels, "exp_annotations": rendered(rule["annotations"], labels)}
            ]
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {"eval_time": case.at, "alertname": case.alert, "exp_alerts": expected}
                ],
            }
        )
    return {"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own files, the real promtool)
        [promtool(), *args], capture_output=True, text=True, timeout=120
    )


def test_the_rules_pass_promtool_check() -> None:
    checked = run("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_every_alert_fires_when_it_should_and_not_when_it_should_not(tmp_path: Path) -> None:
    alerts = set(rules())
    assert {c.alert for c in CASES if c.labels is not None} == alerts
    assert {c.alert for c in CASES if c.labels is None} == alerts
    for rule in rules().values():
        assert {"summary", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(yaml.safe_dump(unit_tests(CASES), sort_keys=False))
    tested = run("test", "rules", str(spec))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The harness can fail: a case that expects no alert where one fires is caught."""
    firing = CASES[0]
    wrong = Case(firing.alert, firing.series, firing.at, None)
    spec = tmp_path / "wrong.yaml"
    spec.write_text(yaml.safe_dump(unit_tests([wrong]), sort_keys=False))
    assert run("test", "rules", str(spec)).returncode != 0

"""One step of `check`: what was tried, what came of it, and on a failure what to change.

A step is a value; `line` is how a person reads it (one line), `as_json` how a script does
(one object). Neither ever holds a secret: steps name buckets, queues, ARNs and URLs, and
the callers put nothing else in them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from cloudtrail_adapter.errors import EXIT_FAILED, EXIT_OK

__all__ = ["LABELS", "Status", "Step", "exit_code", "skipped"]

#: passed: proven; failed: the daemon would fail here; warning: works, but should change;
#: unproven: cannot be proven without changing something, and was not; skipped: an earlier
#: step failed, so this one could not run.
Status = Literal["passed", "failed", "warning", "unproven", "skipped"]
LABELS: dict[Status, str] = {
    "passed": "passed",
    "failed": "FAILED",
    "warning": "warning",
    "unproven": "unproven",
    "skipped": "skipped",
}


@dataclass(frozen=True, slots=True)
class Step:
    """`source` is the document's name (`s3[1]:bucket`), empty for a step of the process
    (the state directory). On a refusal `action` is the IAM action and `resource` the ARN it
    must be allowed on; `fix` says what to change."""

    source: str
    name: str
    status: Status
    tried: str
    result: str
    action: str | None = None
    resource: str | None = None
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def line(self) -> str:
        where = f"{self.source} {self.name}" if self.source else self.name
        text = f"{LABELS[self.status]:<8} {where}: {self.tried}: {self.result}"
        if self.action:
            text += f"; needs {self.action} on {self.resource or '*'}"
        if self.fix:
            text += f"; {self.fix}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source or None,
            "step": self.name,
            "status": self.status,
            "tried": self.tried,
            "result": self.result,
            "action": self.action,
            "resource": self.resource,
            "fix": self.fix,
        }


def skipped(source: str, names: Iterable[str], why: str) -> list[Step]:
    """The steps an earlier failure left without what they need."""
    return [Step(source, name, "skipped", "not tried", why) for name in names]


def exit_code(steps: Iterable[Step]) -> int:
    """0 when no step failed, else 1 (warnings and unproven steps do not fail a check)."""
    return EXIT_FAILED if any(step.failed for step in steps) else EXIT_OK

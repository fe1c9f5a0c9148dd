"""errors.py: the reasons logs and metrics give failures, and the one backoff policy."""

from __future__ import annotations

from botocore.exceptions import ClientError

from cloudtrail_adapter.errors import (
    Backoff,
    FatalSinkError,
    LayoutMissing,
    QueueUnavailable,
    aws_error_code,
    failure_reason,
)


def test_failures_are_named_by_our_reason_then_aws_code_then_type() -> None:
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")
    assert aws_error_code(denied) == "AccessDenied"
    assert failure_reason(denied) == "AccessDenied"
    assert aws_error_code(ClientError({}, "GetObject")) is None
    assert failure_reason(ClientError({}, "GetObject")) == "ClientError"
    assert failure_reason(TimeoutError()) == "TimeoutError"
    assert failure_reason(FatalSinkError("x")) == "limacharlie_refused"
    assert failure_reason(QueueUnavailable("x")) == "queue_unavailable"
    assert failure_reason(LayoutMissing("x")) == "layout_missing"


def test_backoff_doubles_to_its_maximum_and_jitter_only_adds() -> None:
    plain = Backoff(0.5, 4.0)
    assert [plain.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert plain.delay(0) == 0.5 and plain.delay(10_000) == 4.0  # no overflow
    spread = Backoff(5.0, 300.0, jitter=0.2)
    delays = [spread.delay(1) for _ in range(200)]
    assert all(5.0 <= d <= 6.0 for d in delays) and len(set(delays)) > 1

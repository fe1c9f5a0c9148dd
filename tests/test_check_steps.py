"""`check`'s pure parts: a step as a person and a script read it, the exit code, and the
ARNs a refusal names."""

from __future__ import annotations

import json

from cloudtrail_adapter.check.denials import bucket_arn, object_arn, principal_of
from cloudtrail_adapter.check.steps import Step, exit_code, skipped


def test_a_failed_step_is_one_line_naming_the_action_the_resource_and_the_fix() -> None:
    failed = Step(
        "s3[1]:trail",
        "get_object",
        "failed",
        "GetObject s3://trail/k",
        "refused (AccessDenied)",
        action="s3:GetObject",
        resource="arn:aws:s3:::trail/k",
        fix="allow it for arn:aws:iam::1:user/u",
    )
    assert failed.line() == (
        "FAILED   s3[1]:trail get_object: GetObject s3://trail/k: refused (AccessDenied); "
        "needs s3:GetObject on arn:aws:s3:::trail/k; allow it for arn:aws:iam::1:user/u"
    )
    assert json.loads(json.dumps(failed.as_json()))["action"] == "s3:GetObject"
    assert "\n" not in failed.line()


def test_only_a_failure_fails_a_check() -> None:
    calm = [
        Step("", "state", "passed", "t", "r"),
        Step("x", "receive", "unproven", "t", "r"),
        Step("x", "dead_letter", "warning", "t", "r"),
        *skipped("x", ("tls",), "plain"),
    ]
    assert exit_code(calm) == 0
    assert exit_code([*calm, Step("x", "handshake", "failed", "t", "r")]) == 1
    assert Step("", "state", "passed", "t", "r").as_json()["source"] is None


def test_a_refusal_names_the_identity_its_policy_belongs_to() -> None:
    session = "arn:aws:sts::222233334444:assumed-role/cloudtrail-reader/checking"
    assert principal_of(session) == "arn:aws:iam::222233334444:role/cloudtrail-reader"
    assert principal_of("arn:aws:iam::1:user/u") == "arn:aws:iam::1:user/u"
    gov = "arn:aws-us-gov:sts::1:assumed-role/r/s"
    assert principal_of(gov) == "arn:aws-us-gov:iam::1:role/r"
    assert bucket_arn("b", "us-gov-west-1") == "arn:aws-us-gov:s3:::b"
    assert object_arn("b", "AWSLogs/k", "cn-north-1") == "arn:aws-cn:s3:::b/AWSLogs/k"
    assert object_arn("b", "k", None) == "arn:aws:s3:::b/k"

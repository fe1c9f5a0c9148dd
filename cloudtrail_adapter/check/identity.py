"""Who we are to AWS: the identity of the document's credentials, then the role assumed with
them (`role_arn`), with the session's expiry.

The role is assumed by the same session the daemon would use (`aws.source_session`), so
every later step runs with the credentials the daemon would have, and a refusal names the
identity whose policy must change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiobotocore.session import AioSession

from cloudtrail_adapter import aws
from cloudtrail_adapter.check.denials import AWS_ERRORS, aws_failure, principal_of
from cloudtrail_adapter.check.steps import Step
from cloudtrail_adapter.config import SourceConfig

__all__ = ["AwsAccess", "who_we_are"]


@dataclass(frozen=True)
class AwsAccess:
    """What a document's AWS steps share: the session (the role's credentials when
    `role_arn` is set), and `grantee`, the identity whose policy a refusal is about."""

    cfg: SourceConfig
    session: AioSession
    grantee: str

    @property
    def source(self) -> str:
        return self.cfg.name

    @asynccontextmanager
    async def client(self, service: str, region: str | None = None) -> AsyncIterator[Any]:
        async with aws.client(service, self.cfg.aws, region=region, session=self.session) as made:
            yield made


async def who_we_are(cfg: SourceConfig) -> tuple[list[Step], AwsAccess | None]:
    """The `identity` step (and `role` with `role_arn`); no access when either failed."""
    tried = "sts:GetCallerIdentity"
    try:
        async with aws.client("sts", dataclasses.replace(cfg.aws, role_arn=None)) as sts:
            me = await sts.get_caller_identity()
    except AWS_ERRORS as exc:
        failed = aws_failure(
            cfg.name,
            "identity",
            tried,
            exc,
            action="sts:GetCallerIdentity",
            resource="*",
            grantee="these credentials",
        )
        return [failed], None
    caller = str(me["Arn"])
    how = "static keys" if cfg.aws.access_key else "the AWS credential chain"
    steps = [
        Step(
            cfg.name, "identity", "passed", tried, f"{caller} (account {me['Account']}), from {how}"
        )
    ]
    session = aws.source_session(cfg.aws)
    if not cfg.aws.role_arn:
        return steps, AwsAccess(cfg, session, principal_of(caller))
    role, assumed = await _assume(cfg, session, caller)
    steps.append(role)
    return steps, None if assumed is None else AwsAccess(cfg, session, principal_of(assumed))


async def _assume(cfg: SourceConfig, session: AioSession, caller: str) -> tuple[Step, str | None]:
    """The role, assumed through the session's own provider (as the daemon does); the
    step, and the assumed identity's ARN when it worked."""
    role_arn = cfg.aws.role_arn
    assert role_arn is not None
    external = " with the external ID" if cfg.aws.external_id is not None else ""
    tried = f"sts:AssumeRole {role_arn} as {caller}{external}"
    try:
        async with aws.client("sts", cfg.aws, session=session) as sts:
            me = await sts.get_caller_identity()
        credentials = await session.get_credentials()
    except AWS_ERRORS as exc:
        trust = (
            f"the role's trust policy must allow {principal_of(caller)}{external}, and that "
            f"identity's policy must allow sts:AssumeRole on the role"
        )
        failed = aws_failure(
            cfg.name,
            "role",
            tried,
            exc,
            action="sts:AssumeRole",
            resource=role_arn,
            grantee=caller,
            fix=trust,
        )
        return failed, None
    assumed = str(me["Arn"])
    return Step(cfg.name, "role", "passed", tried, f"{assumed}{_lasting(credentials)}"), assumed


def _lasting(credentials: Any) -> str:
    """When the role's session ends. botocore keeps the expiry of refreshable credentials
    only in `_expiry_time`; without it, the line just says nothing of it."""
    expiry = getattr(credentials, "_expiry_time", None)
    if not isinstance(expiry, datetime):
        return ""
    left = (expiry - datetime.now(UTC)).total_seconds()
    when = expiry.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f", session expires {when} (in {max(0, round(left / 60))} min; renewed before then)"

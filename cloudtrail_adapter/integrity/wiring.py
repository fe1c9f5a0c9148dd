"""The digest check's wiring beside an S3 source: its ledger, its CloudTrail clients and its
checker, opened in the source's stack and closed with it. Imported only by a source with
`integrity.verify`, so that other sources load neither the AWS stack's CloudTrail client
nor `cryptography`."""

from __future__ import annotations

import contextlib
from typing import Any

from cloudtrail_adapter import aws
from cloudtrail_adapter.config import S3SourceOptions, SourceConfig
from cloudtrail_adapter.integrity.checker import IntegrityChecker
from cloudtrail_adapter.integrity.keys import PublicKeys
from cloudtrail_adapter.integrity.ledger import Ledger
from cloudtrail_adapter.state import SourceState

__all__ = ["INTEGRITY_DB", "open_checker"]

INTEGRITY_DB = "integrity.db"  # beside the state database


def open_checker(
    cfg: SourceConfig,
    src: S3SourceOptions,
    s3: Any,
    state: SourceState,
    stack: contextlib.AsyncExitStack,
    session: Any,
) -> IntegrityChecker:
    """The digest check of an S3 source: its state in integrity.db beside the state
    database (in the directory and under the scope serve gave the source: serve alone holds
    the StateStore), CloudTrail clients made per region as digests need them (the source's
    credentials and `endpoint_url`)."""
    ledger = Ledger(
        state.directory / INTEGRITY_DB,
        state.scope,
        src.bucket_name,
        grace=src.integrity.grace,
        mine=src.selects,  # documents splitting one bucket share a scope; each judges its own
    )
    stack.callback(ledger.close)
    clients: dict[str, Any] = {}

    async def cloudtrail_in(region: str) -> Any:
        if region not in clients:
            made = aws.client("cloudtrail", cfg.aws, region=region, session=session)
            clients[region] = await stack.enter_async_context(made)
        return clients[region]

    return IntegrityChecker(
        cfg.name,
        src.integrity,
        bucket=src.bucket_name,
        s3=s3,
        keys=PublicKeys(cloudtrail_in),
        ledger=ledger,
        retention=src.lookback + 2 * 86400,
        owner=src.bucket_owner,
    )

"""CloudTrail's public keys, per region, from `ListPublicKeys`, cached.

CloudTrail signs each region's digests with that region's key, so a digest's key is asked
of CloudTrail in the digest's region, for the digest's time range (a backfill digest: the
hours around its generation). Keys seen are kept (a key signs a month of digests); a
fingerprint not found is asked again at most every `retry_after` seconds for the same
region, so an unknown key costs one call, not one per digest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

log = structlog.get_logger("cloudtrail_adapter.integrity")

__all__ = ["PublicKey", "PublicKeys"]

RETRY_AFTER: Final = 600.0

ClientFor = Callable[[str], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PublicKey:
    fingerprint: str
    der: bytes
    valid_from: float
    valid_until: float


class PublicKeys:
    """`client_for(region)` gives a CloudTrail client of that region (the source's
    credentials and `endpoint_url`)."""

    def __init__(self, client_for: ClientFor, *, retry_after: float = RETRY_AFTER) -> None:
        self._client_for = client_for
        self._retry_after = retry_after
        self._keys: dict[tuple[str, str], PublicKey] = {}
        self._misses: dict[tuple[str, str], float] = {}  # (region, fingerprint) -> monotonic
        self._locks: dict[str, asyncio.Lock] = {}
        self.calls = 0

    async def find(
        self, region: str, fingerprint: str, start: float, end: float
    ) -> PublicKey | None:
        """The key named `fingerprint` in `region`, or None when CloudTrail has none by that
        name for the time range. ClientError (AccessDenied...) is raised to the caller."""
        wanted = (region, fingerprint)
        if wanted in self._keys:
            return self._keys[wanted]
        async with self._locks.setdefault(region, asyncio.Lock()):
            if wanted in self._keys:
                return self._keys[wanted]
            missed = self._misses.get(wanted)
            if missed is not None and time.monotonic() - missed < self._retry_after:
                return None
            for key in await self._list(region, start, end):
                self._keys[(region, key.fingerprint)] = key
            if wanted in self._keys:
                return self._keys[wanted]
            self._misses[wanted] = time.monotonic()
            return None

    async def listed(self, region: str, start: float, end: float) -> list[PublicKey]:
        """Every key of `region` valid in the time range, asked of CloudTrail now (`check`
        proves the permission with it); ClientError is raised to the caller."""
        return await self._list(region, start, end)

    async def _list(self, region: str, start: float, end: float) -> list[PublicKey]:
        client = await self._client_for(region)
        found: list[PublicKey] = []
        params: dict[str, Any] = {
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
        }
        while True:
            self.calls += 1
            answer = await client.list_public_keys(**params)
            for item in answer.get("PublicKeyList", ()):
                found.append(
                    PublicKey(
                        str(item["Fingerprint"]),
                        bytes(item["Value"]),
                        _seconds(item.get("ValidityStartTime")),
                        _seconds(item.get("ValidityEndTime")),
                    )
                )
            token = answer.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        log.debug("public_keys_listed", region=region, keys=len(found))
        return found


def _seconds(when: Any) -> float:
    return when.timestamp() if isinstance(when, datetime) else 0.0

"""What the S3 and file sources share: list, skip what is done or in work, offer the rest.

A listed object is offered once per pass unless it is already checkpointed or still in
work from an earlier pass; a failed object is released and offered again on the next pass.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from cloudtrail_adapter.decode import is_digest_key
from cloudtrail_adapter.model import WorkItem
from cloudtrail_adapter.state import StateStore

log = structlog.get_logger("cloudtrail_adapter.sources")


@dataclass(frozen=True, slots=True)
class Listed:
    key: str
    size: int
    etag: str = ""


@dataclass
class PassStats:
    listed: int = 0
    offered: int = 0
    skipped_done: int = 0
    skipped_digest: int = 0
    skipped_in_work: int = 0


class PollingSource(ABC):
    """Subclasses list and load; this class decides what to offer and commits checkpoints."""

    def __init__(
        self,
        name: str,
        *,
        state: StateStore,
        scope: str,
        container: str,
        poll_interval: float,
        single_load: bool,
    ) -> None:
        self.name = name
        self._state = state
        self._scope = scope
        self._container = container
        self._poll_interval = poll_interval
        self._single_load = single_load
        self._in_work: set[str] = set()

    @abstractmethod
    def list_pages(self) -> AsyncIterator[list[Listed]]:
        """Everything currently there, a page at a time, digests included."""

    @abstractmethod
    async def load(self, listed: Listed) -> bytes: ...

    @abstractmethod
    def describe(self, listed: Listed) -> tuple[str, dict[str, str]]:
        """A reference for logs (`s3://bucket/key`) and the log fields naming it."""

    def problems(self) -> int:
        return 0  # a failed object is counted by the pipeline, and offered again next pass

    async def after_commit(self, listed: Listed) -> None:  # noqa: B027 (optional hook)
        """Runs after the checkpoint is written (the S3 source may delete the object)."""

    async def run(self, out: asyncio.Queue[WorkItem]) -> None:
        """One pass in single-load mode; otherwise a pass every poll interval, forever."""
        while True:
            stats = await self.one_pass(out)
            log.info(
                "source_pass_done",
                source=self.name,
                listed=stats.listed,
                offered=stats.offered,
                already_done=stats.skipped_done,
                digests=stats.skipped_digest,
                in_work=stats.skipped_in_work,
            )
            if self._single_load:
                return
            await asyncio.sleep(self._poll_interval)

    async def one_pass(self, out: asyncio.Queue[WorkItem]) -> PassStats:
        stats = PassStats()
        async for page in self.list_pages():
            stats.listed += len(page)
            candidates = [item for item in page if self._wanted(item, stats)]
            done = self._state.committed_keys(
                self._scope, self._container, [c.key for c in candidates]
            )
            for listed in candidates:
                if listed.key in done:
                    stats.skipped_done += 1
                    continue
                self._in_work.add(listed.key)
                stats.offered += 1
                await out.put(self._work_item(listed))
        return stats

    def _wanted(self, listed: Listed, stats: PassStats) -> bool:
        if is_digest_key(listed.key):
            stats.skipped_digest += 1
            return False
        if listed.key in self._in_work:
            stats.skipped_in_work += 1
            return False
        return not listed.key.endswith("/")

    def _work_item(self, listed: Listed) -> WorkItem:
        ref, fields = self.describe(listed)

        async def load() -> bytes:
            return await self.load(listed)

        async def commit() -> None:
            self._state.commit_object(
                self._scope, self._container, listed.key, etag=listed.etag, size=listed.size
            )
            self._in_work.discard(listed.key)
            await self.after_commit(listed)

        def release() -> None:
            self._in_work.discard(listed.key)

        return WorkItem(
            source=self.name,
            ref=ref,
            load=load,
            commit=commit,
            release=release,
            log_fields=fields,
            size_hint=listed.size,
        )

"""The local directory source: CloudTrail files on disk, for replay and benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cloudtrail_adapter.config import FileSourceOptions
from cloudtrail_adapter.readers import FileReader, Reader
from cloudtrail_adapter.sources.polling import Listed, PollingSource
from cloudtrail_adapter.state import Checkpoints

PAGE = 1000


class FileSource(PollingSource):
    """Keys are paths relative to the directory, in sorted order, like an S3 listing."""

    def __init__(self, name: str, options: FileSourceOptions, *, checkpoints: Checkpoints) -> None:
        super().__init__(
            name,
            checkpoints=checkpoints,
            poll_interval=options.poll_interval,
            single_load=options.single_load,
            quarantine_after=options.quarantine_after,
            retry_backoff=options.retry_backoff,
            max_object_size=options.max_object_size,
        )
        self._root = options.path

    async def list_pages(self) -> AsyncIterator[list[Listed]]:
        listed = await asyncio.to_thread(self._walk)
        for start in range(0, len(listed), PAGE):
            yield listed[start : start + PAGE]

    def _walk(self) -> list[Listed]:
        files = sorted(p for p in self._root.rglob("*") if p.is_file())
        return [Listed(p.relative_to(self._root).as_posix(), p.stat().st_size) for p in files]

    def reader(self, listed: Listed) -> Reader:
        return FileReader(self._root / listed.key, size=listed.size)

    def describe(self, listed: Listed) -> tuple[str, dict[str, str]]:
        path = self._root / listed.key
        return f"file://{path}", {"path": str(path)}

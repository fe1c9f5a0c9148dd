"""A real Prometheus (Debian's package) on 127.0.0.1, scraping and evaluating every second,
and its HTTP API: what the dashboard and alert tests wait on (targets scraped, rules
evaluated, alerts pending or firing) is Prometheus' own state, never a sleep."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

JOB = "cloudtrail-adapter"
#: How often Prometheus polls the API's answers below (it scrapes and evaluates every second).
POLL = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Prometheus:
    base: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def prometheus(
    workdir: Path, targets: Sequence[str], rule_files: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (job `cloudtrail-adapter`) and evaluating `rule_files`
    every second, until the block ends."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make test` installs Debian's prometheus package")
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(f) for f in rule_files],
                "scrape_configs": [
                    {"job_name": JOB, "static_configs": [{"targets": list(targets)}]}
                ],
            }
        )
    )
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 (the real server, our own config)
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def instant(text: str) -> float:
    """A Prometheus API time (RFC 3339, nanoseconds) as a Unix time."""
    head, _, tail = text.removesuffix("Z").partition(".")
    fraction = float(f"0.{tail}") if tail else 0.0
    return datetime.fromisoformat(f"{head}+00:00").timestamp() + fraction


class Api:
    """Prometheus' HTTP API; every call retries until Prometheus answers (it may still be
    starting), within the caller's timeout."""

    def __init__(self, http: aiohttp.ClientSession, server: Prometheus) -> None:
        self._http = http
        self.server = server

    async def get(self, path: str, **params: str) -> Any:
        while True:
            with contextlib.suppress(aiohttp.ClientError, KeyError, ValueError):
                async with self._http.get(f"{self.server.base}{path}", params=params) as answer:
                    if answer.status == 200:
                        return (await answer.json())["data"]
            await asyncio.sleep(POLL)

    async def targets(self) -> dict[str, dict[str, Any]]:
        """The scrape targets by address (`host:port`)."""
        active = (await self.get("/api/v1/targets"))["activeTargets"]
        return {t["labels"]["instance"]: t for t in active}

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert pending or firing now."""
        return list((await self.get("/api/v1/alerts"))["alerts"])

    async def scraped(self, target: str, health: str = "up") -> float:
        """Until `target` was scraped with `health`; the Unix time of that scrape."""
        while True:
            found = (await self.targets()).get(target)
            if found is not None and found["health"] == health:
                return instant(found["lastScrape"])
            await asyncio.sleep(POLL)

    async def scraped_after(self, target: str, when: float, scrapes: int = 2) -> None:
        """Until Prometheus began `scrapes` scrapes of `target` after Unix time `when` (the
        one before the last is then stored, whatever happened before `when`)."""
        seen: set[str] = set()
        while len(seen) < scrapes:
            found = (await self.targets()).get(target)
            if found and found["health"] == "up" and instant(found["lastScrape"]) > when:
                seen.add(found["lastScrape"])
            await asyncio.sleep(POLL)

    async def names(self) -> set[str]:
        """Every metric name Prometheus holds samples of."""
        return set(await self.get("/api/v1/label/__name__/values"))

    async def evaluations(self, count: int) -> None:
        """Until the rule groups were evaluated `count` more times."""
        seen: set[str] = set()
        while len(seen) < count + 1:
            groups = (await self.get("/api/v1/rules"))["groups"]
            seen.update(g["lastEvaluation"] for g in groups)
            await asyncio.sleep(POLL)

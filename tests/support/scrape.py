"""The daemon's HTTP endpoints as a monitoring system reads them: a GET, a wait for a status,
and a Prometheus scrape as samples."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.watch import eventually


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return answer.status, await answer.text()


async def until_status(url: str, status: int, timeout: float = 20.0) -> str:
    """Asks an endpoint (nothing pushes its state) until it answers `status`; that answer."""
    answered: list[str] = []

    async def answers() -> bool:
        got, text = await get(url)
        answered[:] = [text]
        return got == status

    await eventually(answers, timeout)
    return answered[0]


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample in a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found

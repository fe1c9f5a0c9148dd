"""The daemon's own HTTP endpoints: `/healthz`, `/readyz` and `/metrics`.

`/healthz` answers from the event loop, so an answer proves the loop runs. `/readyz` is 200
while every source runs and can reach LimaCharlie, 503 with the reasons otherwise (a
load balancer or an orchestrator reads the status; a human reads the text). `/metrics` is
Prometheus' text format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from cloudtrail_adapter.monitor import Monitor

log = structlog.get_logger("cloudtrail_adapter.http_api")


def app(monitor: Monitor) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reasons = monitor.unready()
        if reasons:
            return web.Response(status=503, text="".join(f"{r}\n" for r in reasons))
        return web.Response(text="ready\n")

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(monitor.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    application.router.add_get("/metrics", metrics)
    return application


@asynccontextmanager
async def serving(monitor: Monitor, host: str, port: int) -> AsyncIterator[int]:
    """Serves until the block ends; yields the bound port (useful with port 0)."""
    runner = web.AppRunner(app(monitor), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info(
            "http_listening", address=f"{host}:{bound}", paths=["/healthz", "/readyz", "/metrics"]
        )
        yield bound
    finally:
        await runner.cleanup()

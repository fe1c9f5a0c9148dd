"""The LimaCharlie emulator: one aiohttp server with the USP, webhook and discovery endpoints.

Routes:
- `GET  /v1/orgs/{oid}/url`        discovery; answers where USP and webhooks live (this server)
- `GET  /usp`                       the USP WebSocket (see usp.py)
- `POST /{oid}/{hook}[/{secret}]`  webhook ingestion (see webhook.py)
"""

from __future__ import annotations

import ssl
from types import TracebackType

from aiohttp import web

from cloudtrail_adapter.emulator.store import EventStore, Observer
from cloudtrail_adapter.emulator.usp import UspEndpoint, UspFaults
from cloudtrail_adapter.emulator.webhook import WebhookEndpoint, WebhookFaults


class LimaCharlieEmulator:
    """Start with `async with LimaCharlieEmulator() as lc:`; it binds 127.0.0.1 on a free port.

    `observer`, when given, is told of every connection, refusal and accepted batch (the
    `emulate` command logs them); tests read the store and the endpoints' counters instead.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        observer: Observer | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context  # TLS: https:// and wss://, as LimaCharlie serves them
        self.store = EventStore(observer)
        self.usp_faults = UspFaults()
        self.webhook_faults = WebhookFaults()
        self.usp = UspEndpoint(self.store, self.usp_faults, observer)
        self.webhook = WebhookEndpoint(self.store, self.webhook_faults, observer)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def usp_url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://{self.host}:{self.port}/usp"

    def webhook_url(self, oid: str, hook: str) -> str:
        return f"{self.base_url}/{oid}/{hook}"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/v1/orgs/{oid}/url", self._discovery)
        app.router.add_get("/usp", self.usp.handle)
        app.router.add_post("/{oid}/{hook}", self.webhook.handle)
        app.router.add_post("/{oid}/{hook}/{secret}", self.webhook.handle)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        where = f"{self.host}:{self.port}"
        return web.json_response({"url": {"lc_wss": where, "hooks": where}})

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self._app(), handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self.usp.close_all()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LimaCharlieEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

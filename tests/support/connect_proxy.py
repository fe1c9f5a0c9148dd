"""A real HTTP proxy on 127.0.0.1 for tests: CONNECT tunnels and absolute-form requests
(plain HTTP, and WebSocket upgrades over it), with basic authentication, in its own thread.
It records every request it was asked to carry, so a test can show which traffic went
through it (and never sees a password). A plain request goes on to the origin as proxies
send it, in origin form and without the credentials meant for the proxy; what follows on
that connection is passed through as it comes (a WebSocket, or keep-alive requests).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

_HOP_BY_HOP = frozenset({"proxy-authorization", "proxy-connection"})


@dataclass(frozen=True)
class ProxyRequest:
    method: str  # CONNECT, GET, POST, ...
    target: str  # host:port for CONNECT, the absolute URL otherwise
    user: str | None  # the basic-auth user given, if any
    allowed: bool


#: The credentials the tests' proxy asks for (a password that must never be logged).
PROXY_USER = "svc-lc"
PROXY_PASSWORD = "pr0xy-S3CRET-value"


@dataclass
class ConnectProxy:
    """`with ConnectProxy(user, password) as proxy:` serves at `proxy.url`."""

    user: str | None = None
    password: str | None = None
    requests: list[ProxyRequest] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connects(self) -> list[ProxyRequest]:
        return [r for r in list(self.requests) if r.method == "CONNECT" and r.allowed]

    def carried(self) -> list[ProxyRequest]:
        """Plain requests (not CONNECT) it let through."""
        return [r for r in list(self.requests) if r.method != "CONNECT" and r.allowed]

    def __enter__(self) -> ConnectProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._client, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="connect-proxy", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        loop = self._loop

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)

    def _authorised(self, headers: dict[str, str]) -> tuple[str | None, bool]:
        given = headers.get("proxy-authorization", "")
        scheme, _, token = given.partition(" ")
        user: str | None = None
        password = None
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                user, _, password = base64.b64decode(token).decode().partition(":")
        if self.user is None:
            return user, True
        return user, (user, password) == (self.user, self.password)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (h.partition(":") for h in header_lines if h)
        }
        user, allowed = self._authorised(headers)
        self.requests.append(ProxyRequest(method, target, user, allowed))
        if not allowed:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            parts = urlsplit(target)
            upstream = await asyncio.open_connection(parts.hostname, parts.port or 80)
            upstream[1].write(_to_origin(request_line, header_lines, parts))
        await self._pipe(reader, writer, *upstream)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


def _to_origin(request_line: str, header_lines: list[str], target: SplitResult) -> bytes:
    """The request as the origin gets it: its path in origin form, the proxy's headers
    dropped."""
    method, _, version = request_line.split(" ", 2)
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    kept = [h for h in header_lines if h and h.partition(":")[0].strip().lower() not in _HOP_BY_HOP]
    return "\r\n".join([f"{method} {path} {version}", *kept, "", ""]).encode("latin-1")

"""The LimaCharlie steps of a document: where the USP endpoint is (asked of `api_url` unless
`dest_url` is set), the route (direct, or through which proxy), the connection, TLS, and the
handshake, each made by the sink's own code (`UspSink.handshake_only`,
`WebhookSink.probe`) so that the check dials exactly as the daemon would.

The handshake sends no event: USP hangs up at `rd`; the webhook gets an empty gzip body,
which the hook answers as it answers a batch (its OID, name and secret) and holds nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import yarl

from cloudtrail_adapter.check.steps import Status, Step, skipped
from cloudtrail_adapter.config import ClientOptions, WebhookOptions
from cloudtrail_adapter.errors import FatalSinkError
from cloudtrail_adapter.model import Batch
from cloudtrail_adapter.sinks.proxies import Route, Routes, refused_by_proxy
from cloudtrail_adapter.sinks.usp import HandshakeProbe, UspSink, discover_usp_url, safe_url
from cloudtrail_adapter.sinks.webhook import ProbeAnswer, WebhookSink

__all__ = ["limacharlie_steps"]

_AFTER_ROUTE = ("connect", "tls", "handshake")
_IDENTITY_FIX = (
    "check client_options.identity: oid is the organization ID, installation_key the "
    "installation key's ID (a UUID, the web app's 'Adapter Key' column)"
)
_DIAL_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, FatalSinkError)


@dataclass(frozen=True)
class _Dial:
    """One LimaCharlie URL and how it is reached; `keys` are the proxy credentials' keys."""

    source: str
    url: str
    route: Route
    keys: str

    @property
    def shown(self) -> str:
        return safe_url(self.url)

    @property
    def secure(self) -> bool:
        return yarl.URL(self.url).scheme in ("https", "wss")

    @property
    def host(self) -> str:
        parts = yarl.URL(self.url)
        return f"{parts.host}:{parts.port}"

    def step(
        self, name: str, status: Status, tried: str, result: str, fix: str | None = None
    ) -> Step:
        return Step(self.source, name, status, tried, result, fix=fix)


async def limacharlie_steps(
    source: str,
    client_options: ClientOptions | None,
    webhook: WebhookOptions | None,
    env: Mapping[str, str],
) -> AsyncIterator[Step]:
    steps = (
        _webhook(source, webhook, env)
        if webhook is not None
        else _usp(source, _given(client_options), env)
    )
    async for step in steps:
        yield step


def _given(client_options: ClientOptions | None) -> ClientOptions:
    assert client_options is not None, "a document has client_options or webhook"
    return client_options


def _never_acked(batch: Batch) -> None:
    raise AssertionError("check sends no batch")


# -- USP -------------------------------------------------------------------------------------


async def _usp(source: str, options: ClientOptions, env: Mapping[str, str]) -> AsyncIterator[Step]:
    routes = Routes(options.proxy, env)
    url = options.dest_url
    if url is None:
        found, url = await _discovery(source, options, routes)
        yield found
        if url is None:
            for step in skipped(source, ("route", *_AFTER_ROUTE), "the USP endpoint is unknown"):
                yield step
            return
    dial = _Dial(source, url, routes.for_url(url), "client_options.proxy.username and password")
    sink = UspSink(dataclasses.replace(options, dest_url=url), _never_acked, routes=routes)
    try:
        probe = await sink.handshake_only()
    except _DIAL_ERRORS as exc:
        for step in _dial_failed(dial, exc):
            yield step
        return
    yield _route(dial)
    yield _connected(dial)
    yield _tls(dial, probe.tls)
    yield _usp_handshake(dial, options, probe)


async def _discovery(
    source: str, options: ClientOptions, routes: Routes
) -> tuple[Step, str | None]:
    api, oid = options.api_url, options.identity.oid
    route = routes.for_url(api)
    tried = f"GET {api.rstrip('/')}/v1/orgs/{oid}/url ({route.describe()})"
    try:
        async with aiohttp.ClientSession() as session:
            url = await discover_usp_url(session, api, oid, route)
    except FatalSinkError as exc:
        return Step(source, "discovery", "failed", tried, str(exc), fix=_IDENTITY_FIX), None
    except _DIAL_ERRORS as exc:
        said = f"unreachable ({_error(exc)})"
        fix = "check api_url, the network and any proxy, or set client_options.dest_url"
        return Step(source, "discovery", "failed", tried, said, fix=fix), None
    said = f"the USP endpoint is {safe_url(url)}"
    return Step(source, "discovery", "passed", tried, said), url


def _usp_handshake(dial: _Dial, options: ClientOptions, probe: HandshakeProbe) -> Step:
    oid = options.identity.oid
    tried = f"the USP connection header for oid={oid} (no event is sent)"
    if probe.refused is not None:
        return dial.step("handshake", "failed", tried, probe.refused, _IDENTITY_FIX)
    if probe.ended is not None:
        said = f"the connection ended before LimaCharlie was ready ({probe.ended})"
        return dial.step("handshake", "failed", tried, said, f"is {dial.shown} a USP endpoint?")
    said = "LimaCharlie accepted the OID and the installation key (rd); hung up before any data"
    return dial.step("handshake", "passed", tried, said)


# -- webhook ---------------------------------------------------------------------------------


async def _webhook(
    source: str, options: WebhookOptions, env: Mapping[str, str]
) -> AsyncIterator[Step]:
    routes = Routes(options.proxy, env)
    dial = _Dial(
        source, options.url, routes.for_url(options.url), "webhook.proxy.username and password"
    )
    sink = WebhookSink(options, _never_acked, routes=routes)
    try:
        answer = await sink.probe()
    except _DIAL_ERRORS as exc:
        for step in _dial_failed(dial, exc):
            yield step
        return
    finally:
        await sink.close()
    yield _route(dial)
    yield _connected(dial)
    yield _tls(dial, "certificate verified" if dial.secure else None)
    yield _hook_handshake(dial, answer)


def _hook_handshake(dial: _Dial, answer: ProbeAnswer) -> Step:
    tried = "POST of an empty body (no event) with the lc-secret header"
    said = f"HTTP {answer.status}" + (f": {answer.said}" if answer.said else "")
    if 200 <= answer.status < 300 or answer.status == 400:  # 400: the empty body, after the secret
        said = f"LimaCharlie accepted the hook's OID, name and secret ({said}); no event was sent"
        return dial.step("handshake", "passed", tried, said)
    if answer.status in (401, 403):
        return dial.step(
            "handshake",
            "failed",
            tried,
            f"the secret was refused ({said})",
            "check webhook.secret against the hook's secret",
        )
    if answer.status == 404:
        fix = "check the OID and hook name in webhook.url, and that the hook exists"
        return dial.step("handshake", "failed", tried, f"no such webhook ({said})", fix)
    if 300 <= answer.status < 400:
        fix = "configure the final URL (redirects are not followed, so that the secret stays put)"
        return dial.step("handshake", "failed", tried, f"the URL redirects ({said})", fix)
    later = "LimaCharlie is failing or throttling: check again later"
    return dial.step(
        "handshake", "failed", tried, f"refused ({said})", later if answer.status >= 429 else None
    )


# -- the dial, either transport --------------------------------------------------------------


def _route(dial: _Dial) -> Step:
    route = dial.route
    how = {
        "config": "as configured",
        "none": "no proxy configured or in the environment",
        "NO_PROXY": "the host is in $NO_PROXY",
    }.get(route.source, f"from ${route.source}")
    return dial.step("route", "passed", dial.shown, f"{route.describe()} ({how})")


def _connected(dial: _Dial) -> Step:
    via = "" if dial.route.proxy is None else f" through {dial.route.describe()}"
    return dial.step("connect", "passed", f"TCP to {dial.host}{via}", "reached")


def _tls(dial: _Dial, detail: str | None) -> Step:
    if not dial.secure:
        said = "plain text (a local emulator); LimaCharlie itself is served over TLS"
        return dial.step("tls", "skipped", dial.shown, said)
    return dial.step("tls", "passed", f"TLS with {dial.host}", detail or "certificate verified")


def _dial_failed(dial: _Dial, exc: BaseException) -> list[Step]:
    """The steps a failed dial leaves: the one that failed, those before it passed, those
    after it skipped."""
    via = f"TCP to {dial.host}" + (
        "" if dial.route.proxy is None else f" through {dial.route.describe()}"
    )
    refused = isinstance(exc, aiohttp.ClientHttpProxyError) and refused_by_proxy(
        exc, dial.route, dial.keys
    )
    if isinstance(exc, FatalSinkError) or refused:
        said = str(exc) if isinstance(exc, FatalSinkError) else str(refused)
        failed = dial.step("route", "failed", dial.shown, said, f"check {dial.keys}")
        return [failed, *skipped(dial.source, _AFTER_ROUTE, "the proxy refused us")]
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        failed = dial.step(
            "route",
            "failed",
            dial.shown,
            f"the proxy is unreachable ({_error(exc)})",
            "check the proxy's address",
        )
        return [failed, *skipped(dial.source, _AFTER_ROUTE, "the proxy is unreachable")]
    if isinstance(exc, aiohttp.ClientSSLError):
        fix = (
            "the system's CA store (or $SSL_CERT_FILE) must trust the server's certificate; a "
            "TLS-inspecting proxy needs its CA there"
        )
        failed = dial.step(
            "tls", "failed", f"TLS with {dial.host}", f"refused ({_error(exc)})", fix
        )
        return [
            _route(dial),
            _connected(dial),
            failed,
            *skipped(dial.source, ("handshake",), "TLS failed"),
        ]
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        said = f"no USP endpoint there (HTTP {exc.status} to the WebSocket upgrade)"
        failed = dial.step("handshake", "failed", dial.shown, said, "check client_options.dest_url")
        return [_route(dial), _connected(dial), _tls(dial, None), failed]
    said = f"unreachable ({_error(exc)})"
    fix = "check the URL, DNS, the network and firewall, and any proxy"
    failed = dial.step("connect", "failed", via, said, fix)
    return [_route(dial), failed, *skipped(dial.source, ("tls", "handshake"), "not connected")]


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

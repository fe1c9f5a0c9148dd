"""Which HTTP proxy LimaCharlie traffic goes through: `client_options.proxy` (or
`webhook.proxy`) when the document gives one, else the environment's `HTTPS_PROXY` /
`HTTP_PROXY` minus `NO_PROXY`, as curl and botocore read them (AWS traffic follows the
environment through botocore itself).

A proxy's password never reaches a log line or a repr: `Route` keeps it as a `Secret`
and makes the `Proxy-Authorization` header only at the point of use. Where it goes depends
on the destination: a `wss://`/`https://` one is tunnelled, and the header goes on the
CONNECT (aiohttp's `proxy_headers`, which reach nothing else); a `ws://`/`http://` one is
carried by the proxy itself, and the header goes on each request (the WebSocket upgrade, a
POST). aiohttp's `proxy_auth` would do both, but it is deprecated.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
import yarl

from cloudtrail_adapter.config.values import ProxyOptions
from cloudtrail_adapter.secret import Secret

# The standard library's NO_PROXY matcher (public, though typeshed does not list it).
_bypassed: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]

# Environment variables by URL scheme, lower case first as curl reads them.
_VARIABLES = {
    "https": ("https_proxy", "HTTPS_PROXY"),
    "wss": ("https_proxy", "HTTPS_PROXY"),
    "http": ("http_proxy", "HTTP_PROXY"),
    "ws": ("http_proxy", "HTTP_PROXY"),
}
_TLS = frozenset({"https", "wss"})


@dataclass(frozen=True)
class Route:
    """How to reach one URL: straight, or through `proxy` (a URL without credentials)."""

    proxy: str | None = None
    username: str | None = None
    password: Secret | None = None
    source: str = "none"  # "config", "HTTPS_PROXY", ... : said in logs, never a credential
    options: ProxyOptions | None = None  # the configured proxy's timeouts, when configured
    tunnelled: bool = True  # a TLS destination: the proxy sees only our CONNECT

    @property
    def headers(self) -> dict[str, str] | None:
        """For the CONNECT to a TLS destination (`proxy_headers`): `Proxy-Authorization`."""
        return self._credentials() if self.tunnelled else None

    @property
    def request_headers(self) -> dict[str, str]:
        """For the request itself, which a plain destination's proxy reads: the only place
        its credentials can go. Never for a tunnelled one: LimaCharlie would read them."""
        return {} if self.tunnelled else self._credentials() or {}

    def _credentials(self) -> dict[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return {
            "Proxy-Authorization": aiohttp.encode_basic_auth(self.username, self.password.reveal())
        }

    def describe(self) -> str:
        """The proxy as a log line may show it: scheme, host and port."""
        return self.proxy or "direct"


@dataclass(frozen=True)
class Routes:
    """Decides the route of each LimaCharlie URL from one document's proxy setting."""

    configured: ProxyOptions | None
    env: Mapping[str, str]

    def __repr__(self) -> str:
        return f"Routes(configured={self.configured is not None})"

    def for_url(self, url: str) -> Route:
        parts = yarl.URL(url)
        tunnelled = parts.scheme in _TLS
        if self.configured is not None:
            given = self.configured
            return Route(given.url, given.username, given.password, "config", given, tunnelled)
        for variable in _VARIABLES.get(parts.scheme, ()):
            value = self.env.get(variable, "").strip()
            if value:
                return self._from_env(value, variable, parts.host or "", tunnelled)
        return Route()

    def _from_env(self, value: str, variable: str, host: str, tunnelled: bool) -> Route:
        no_proxy = self.env.get("no_proxy") or self.env.get("NO_PROXY") or ""
        if no_proxy and _bypassed(host, {"no": no_proxy}):
            return Route(source="NO_PROXY")
        proxy = yarl.URL(value if "://" in value else f"http://{value}")
        password = Secret(proxy.password) if proxy.password is not None else None
        bare = str(proxy.with_user(None).with_password(None))
        return Route(bare, proxy.user, password, variable.upper(), tunnelled=tunnelled)


def refused_by_proxy(exc: BaseException, route: Route, keys: str) -> str | None:
    """The message for a proxy that refused our credentials, else None: its answer to a
    CONNECT (ClientHttpProxyError), or to a plain request or a WebSocket upgrade it carried
    itself (any other ClientResponseError)."""
    if not isinstance(exc, aiohttp.ClientResponseError):
        return None
    return proxy_refused(exc.status, route, keys)


def proxy_refused(status: int, route: Route, keys: str) -> str | None:
    """The message for HTTP 407 through a proxy, else None: retrying cannot fix a wrong
    password, so the caller gives up with this."""
    if status != 407 or route.proxy is None:
        return None
    via = "configured" if route.source == "config" else f"from ${route.source}"
    return (
        f"the proxy {route.describe()} ({via}) refused our credentials (HTTP 407 Proxy "
        f"Authentication Required); check {keys}"
    )

"""`cloudtrail-adapter emulate`: the LimaCharlie emulator on 127.0.0.1, to try a config with.

It prints where to point a document (USP `dest_url` or `api_url`, the webhook's URL and
secret) and a sample document, then logs, one line each, every connection, refusal and batch
it accepts, until SIGINT or SIGTERM. It binds loopback only. It accepts any OID and
installation key that are UUIDs: it tries a document's form and the path from the bucket or
queue, not whether a key is yours.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Mapping
from typing import Any, TextIO

import structlog

from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.errors import EXIT_FAILED, EXIT_OK
from cloudtrail_adapter.secret import Secret

HOST = "127.0.0.1"
#: The webhook secret's variable, as in config/webhook.yaml; one is made up when it is unset.
SECRET_VARIABLE = "LC_WEBHOOK_SECRET"  # noqa: S105 (a variable's name)

_log = structlog.get_logger("cloudtrail_adapter.emulate")


def _observe(event: str, fields: Mapping[str, Any]) -> None:
    _log.info(event, **fields)


async def emulate(
    port: int, oid: str, hook: str, secret: Secret, *, made_up: bool, out: TextIO
) -> int:
    """Serves until SIGINT or SIGTERM; EXIT_FAILED when the port cannot be had."""
    lc = LimaCharlieEmulator(HOST, port, observer=_observe)
    lc.webhook.register(oid, hook, secret.reveal())
    try:
        await lc.start()
    except OSError as exc:
        _log.error("emulator_listen_failed", host=HOST, port=port, error=str(exc))
        await lc.stop()
        return EXIT_FAILED
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        print(banner(lc, oid, hook, secret if made_up else None), file=out, flush=True)
        _log.info("emulator_started", usp_url=lc.usp_url, webhook_url=lc.webhook_url(oid, hook))
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await lc.stop()
    _log.info(
        "emulator_stopped",
        accepted=len(lc.store.events),
        usp_connections=lc.usp.connections,
        usp_refused=len(lc.usp.refused),
        webhook_requests=lc.webhook.requests,
    )
    return EXIT_OK


def banner(lc: LimaCharlieEmulator, oid: str, hook: str, made_up: Secret | None) -> str:
    """Where to point a document, and one that does; `made_up` is the webhook secret when
    the emulator chose it (the user has to be told it), None when it came from the user."""
    hook_url = lc.webhook_url(oid, hook)
    if made_up is None:
        secret_line = f"secret: ${SECRET_VARIABLE}, as the emulator was started"
    else:
        secret_line = (
            f"secret: made up for this run (set {SECRET_VARIABLE} before starting to choose "
            f"it):\n           export {SECRET_VARIABLE}={made_up.reveal()}"
        )
    return f"""\
LimaCharlie emulator on {lc.base_url} ({HOST} only); Ctrl-C or SIGTERM stops it.
It logs each connection, each batch it accepts and each request it refuses to stderr.

USP      dest_url: {lc.usp_url}
         (or api_url: {lc.base_url}, to find it the way LimaCharlie's API answers)
webhook  url: {hook_url}
         {secret_line}

A document to try (`cloudtrail-adapter validate FILE`, then `run FILE`); any OID and
installation key that are UUIDs will do:

s3:
  client_options:
    identity:
      installation_key: ${{LC_INSTALLATION_KEY}}
      oid: ${{LC_OID}}
    platform: aws
    sensor_seed_key: cloudtrail
    dest_url: {lc.usp_url}
  bucket_name: ${{CLOUDTRAIL_BUCKET}}
  single_load: true

or, over the webhook, in place of client_options:

  webhook:
    url: {hook_url}
    secret: ${{{SECRET_VARIABLE}}}
"""


def run(port: int, oid: str, hook: str, env: Mapping[str, str], out: TextIO) -> int:
    given = env.get(SECRET_VARIABLE, "")
    secret = Secret(given or secrets.token_urlsafe(18))
    return asyncio.run(emulate(port, oid, hook, secret, made_up=not given, out=out))

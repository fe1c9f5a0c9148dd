"""systemd's notification protocol, spoken by the daemon itself.

Under `Type=notify` systemd waits for READY=1 before it counts the service as started, kills
and restarts it when WATCHDOG=1 stops coming within `WatchdogSec=`, and shows STATUS= in
`systemctl status`. The protocol is one datagram per message to the socket named by
$NOTIFY_SOCKET, so it needs no library. Outside systemd the variable is unset and every
call does nothing.

The watchdog is fed from the event loop on purpose: a loop that is stuck stops feeding it,
and that is exactly what it should report.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("cloudtrail_adapter.systemd")


class SystemdNotifier:
    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        # A leading "@" names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_interval = watchdog_usec / 1e6 / 2 if watchdog_usec else None
        self._dropped = 0  # notifications dropped since the last one that went through

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SystemdNotifier:
        """$NOTIFY_SOCKET, and $WATCHDOG_USEC when $WATCHDOG_PID is unset or is us."""
        usec: int | None = None
        if env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "")) or None
            except ValueError:
                usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")

    async def feed_watchdog(self) -> None:
        """Until cancelled: WATCHDOG=1 twice per `WatchdogSec=`, as systemd recommends."""
        if self.watchdog_interval is None or not self.enabled:
            return
        while True:
            self._send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)

    def _send(self, message: str) -> None:
        """Never blocks: a notification socket nobody reads (its queue holds a few
        datagrams) must not freeze the event loop, and with it the data and /healthz. A
        notification that does not fit is dropped and said once per run of drops."""
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except BlockingIOError:
            self._dropped += 1
            if self._dropped == 1:
                log.warning(
                    "systemd_notify_dropped",
                    notification=message.split("\n", 1)[0],
                    reason="the notification socket's queue is full (nobody reads it)",
                )
            return
        except OSError as exc:  # systemd gone or the socket wrong: never fatal to the data path
            log.warning("systemd_notify_failed", error=str(exc))
            return
        if self._dropped:
            log.info("systemd_notify_resumed", dropped=self._dropped)
            self._dropped = 0

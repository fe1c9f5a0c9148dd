"""systemd integration: the daemon speaks sd_notify itself (READY, WATCHDOG, STATUS,
STOPPING) to a fake $NOTIFY_SOCKET, and the unit file passes `systemd-analyze verify`."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from cloudtrail_adapter.emulator.corpus import log_file
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.systemd import SystemdNotifier
from tests.support.configs import INSTALLATION_KEY, OID
from tests.support.corpus import records
from tests.support.process import DaemonProcess

UNIT = Path(__file__).parent.parent / "systemd" / "cloudtrail-adapter.service"


class FakeSystemd:
    """A datagram socket standing where systemd's notification socket would be."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def until(self, field: str, timeout: float = 30.0) -> str:
        """The next message holding `field` (e.g. "READY=1"); earlier ones are kept."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                message = (await loop.sock_recv(self.sock, 4096)).decode()
                self.messages.append(message)
                if field in message.splitlines():
                    return message


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    try:
        yield fake
    finally:
        fake.sock.close()


def file_source(tmp_path: Path, lc: LimaCharlieEmulator) -> Path:
    (tmp_path / "trail").mkdir()
    (tmp_path / "trail" / "one.json.gz").write_bytes(log_file(records(20, 900)))
    doc = {
        "file": {
            "path": str(tmp_path / "trail"),
            "single_load": False,
            "client_options": {
                "identity": {"installation_key": INSTALLATION_KEY, "oid": OID},
                "hostname": "systemd-test",
                "dest_url": lc.usp_url,
            },
        }
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_ready_watchdog_and_stopping_reach_systemd(
    systemd: FakeSystemd, lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}
    async with DaemonProcess(file_source(tmp_path, lc), tmp_path / "state", env=env) as daemon:
        ready = await systemd.until("READY=1")
        await lc.store.wait_for(20)
        for _ in range(3):  # fed every 0.2 s while running
            await systemd.until("WATCHDOG=1")
        assert await daemon.stop() == 0, daemon.tail()
        stopping = await systemd.until("STOPPING=1")

    assert "STATUS=running 1 source(s)" in ready.splitlines()
    assert "STATUS=stopping on SIGTERM: finishing in-flight work" in stopping.splitlines()
    first_ready = next(i for i, m in enumerate(systemd.messages) if "READY=1" in m)
    assert not any("WATCHDOG=1" in m for m in systemd.messages[:first_ready])


def test_a_watchdog_meant_for_another_process_is_not_fed() -> None:
    mine = SystemdNotifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000"})
    assert mine.watchdog_interval == 0.5
    other = SystemdNotifier.from_env(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    )
    assert other.watchdog_interval is None
    assert not SystemdNotifier.from_env({}).enabled


def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine; the unit was not verified")
    unit = tmp_path / UNIT.name
    # verify checks that ExecStart's binary exists: point it at one that does.
    unit.write_text(UNIT.read_text().replace("/opt/cloudtrail-adapter/bin/", "/usr/bin/env "))
    result = subprocess.run(  # noqa: S603 (our own unit file)
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


async def test_a_notify_socket_nobody_reads_never_freezes_the_daemon(
    lc: LimaCharlieEmulator, tmp_path: Path
) -> None:
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(tmp_path / "deaf.sock"))  # bound and never read: its queue fills at once
    env = {"NOTIFY_SOCKET": str(tmp_path / "deaf.sock"), "WATCHDOG_USEC": "2000"}  # 1 ms
    config = file_source(tmp_path, lc)
    try:
        async with DaemonProcess(
            config, tmp_path / "state", env=env, extra_args=["--http-address", "127.0.0.1:0"]
        ) as daemon:
            listening = await daemon.logs.wait_for("http_listening", timeout=30)
            await daemon.logs.wait_for("systemd_notify_dropped", timeout=30)
            await lc.store.wait_for(20)
            healthz = f"http://{listening['address']}/healthz"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                for _ in range(5):
                    async with http.get(healthz) as answer:
                        assert answer.status == 200
            # and data keeps flowing after the queue filled
            (tmp_path / "trail" / "two.json.gz").write_bytes(log_file(records(15, 901)))
            await lc.store.wait_for(35)
            assert await daemon.stop() == 0, daemon.tail()
        assert len(daemon.logs.named("systemd_notify_dropped")) == 1  # said once, not per drop
    finally:
        deaf.close()

"""`cloudtrail-adapter emulate`: LimaCharlie's side on 127.0.0.1, so a user can try a config
without LimaCharlie. It runs here as the user runs it, a process of its own (without moto:
it needs no extra), with the real daemon pointed at the URL it printed."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import re
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from cloudtrail_adapter.cli import main
from cloudtrail_adapter.emulator.corpus import org_trail, write_directory
from tests.support.configs import INSTALLATION_KEY, OID, WEBHOOK_SECRET

TIMEOUT = 60.0
SAMPLE_ENV = {"LC_INSTALLATION_KEY": INSTALLATION_KEY, "LC_OID": OID, "CLOUDTRAIL_BUCKET": "trail"}


class Emulate:
    """The `emulate` command as a child process: what it printed, and its JSON log lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.logs: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    async def follow(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.logs.append(orjson.loads(line))  # every line it logs is JSON
            async with self._changed:
                self._changed.notify_all()

    async def banner(self) -> str:
        """stdout up to the sample document's end (the webhook `secret:` line)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            while not self.out or not self.out[-1].lstrip().startswith("secret: ${"):
                line = await self.proc.stdout.readline()
                assert line, f"emulate ended early: {self.out}"
                self.out.append(line.decode())
        return "".join(self.out)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e["event"] == event]

    async def until(self, holds: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT), self._changed:
            await self._changed.wait_for(holds)

    def accepted(self, transport: str) -> int:
        return sum(
            e["records"] for e in self.named("events_accepted") if e["transport"] == transport
        )


#: The CLI as `cloudtrail-adapter` runs it, in an install without the demo extra (no moto).
WITHOUT_MOTO = (
    "import sys; sys.modules['moto'] = None; "
    "from cloudtrail_adapter.__main__ import entry; raise SystemExit(entry())"
)


@contextlib.asynccontextmanager
async def emulate(*args: str, **env: str) -> AsyncIterator[Emulate]:
    command = [sys.executable, "-c", WITHOUT_MOTO, "emulate", *args]
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=pipe, stderr=pipe, env={**os.environ, **env}
    )
    running = Emulate(proc)
    follower = asyncio.create_task(running.follow())
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await follower


def printed(banner: str, key: str) -> str:
    found = re.search(rf"^\S*\s+{key}: (\S+)$", banner, re.M)
    assert found, banner
    return found.group(1)


async def test_the_daemon_delivers_to_the_printed_url_and_sigterm_stops_it_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = org_trail(3, accounts=1, regions=2, days=1, files_per_day=3, records_per_file=(5, 60))
    write_directory(files, tmp_path / "trail")
    logs = [orjson.loads(gzip.decompress(f.body))["Records"] for f in files if f.kind == "log"]
    seeded = Counter(str(r["eventName"]) for records in logs for r in records)

    async with emulate("--port", "0", LC_OID=OID, LC_WEBHOOK_SECRET=WEBHOOK_SECRET) as lc:
        banner = await lc.banner()
        dest_url = printed(banner, "dest_url")
        hook_url = printed(banner, "url")
        port = re.fullmatch(r"ws://127\.0\.0\.1:(\d+)/usp", dest_url)
        assert port, banner
        assert hook_url == f"http://127.0.0.1:{port.group(1)}/{OID}/cloudtrail"
        assert WEBHOOK_SECRET not in banner  # the user's own: the banner names its variable

        # The sample document is valid as printed.
        sample = banner[banner.index("\ns3:\n") : banner.index("\nor, over")]
        (tmp_path / "sample.yaml").write_text(sample)
        for name, value in SAMPLE_ENV.items():
            monkeypatch.setenv(name, value)
        assert main(["validate", str(tmp_path / "sample.yaml")]) == 0
        assert f"dest_url={dest_url}" in capsys.readouterr().out

        # The daemon, with a document like it, pointed where it said.
        doc = yaml.safe_load(sample)
        client = doc["s3"]["client_options"]
        client["identity"] = {"installation_key": INSTALLATION_KEY, "oid": OID}
        config = tmp_path / "file.yaml"
        source = {"path": str(tmp_path / "trail"), "single_load": True, "client_options": client}
        config.write_text(yaml.safe_dump({"file": source}))
        run = ["run", str(config), "--state-dir", str(tmp_path / "state")]
        quiet = asyncio.subprocess.DEVNULL
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cloudtrail_adapter", *run, stdout=quiet, stderr=quiet
        )
        assert await asyncio.wait_for(daemon.wait(), TIMEOUT) == 0
        await lc.until(lambda: lc.accepted("usp") == seeded.total())

        # The webhook, as the banner gives it: the right secret is accepted, a wrong one not.
        async with aiohttp.ClientSession() as http:
            record = {"eventID": "webhook-1", "eventName": "GetCallerIdentity"}
            for secret, status in ((WEBHOOK_SECRET, 200), ("not-the-secret", 401)):
                headers = {"lc-secret": secret}
                async with http.post(hook_url, json=record, headers=headers) as answer:
                    assert answer.status == status
        await lc.until(lambda: bool(lc.named("webhook_rejected")))

        lc.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(lc.proc.wait(), TIMEOUT) == 0

    [connected] = lc.named("usp_connected")
    assert connected["sensor"].startswith(f"{OID}/")
    [gone] = lc.named("usp_disconnected")
    assert gone["sensor"] == connected["sensor"] and gone["messages"] >= 1
    names: Counter[str] = Counter()
    for batch in lc.named("events_accepted"):
        names.update(batch["event_names"])
    assert names == seeded + Counter({"GetCallerIdentity": 1})  # and the webhook's one
    assert lc.accepted("webhook") == 1
    [rejected] = lc.named("webhook_rejected")
    assert (rejected["status"], rejected["hook"]) == (401, f"{OID}/cloudtrail")
    [stopped] = lc.named("emulator_stopped")
    assert stopped["accepted"] == seeded.total() + 1
    assert lc.logs[-1] is stopped
    logged = orjson.dumps(lc.logs).decode()
    assert WEBHOOK_SECRET not in logged and "not-the-secret" not in logged
    assert INSTALLATION_KEY not in logged


async def test_without_a_secret_it_makes_one_up_and_says_it() -> None:
    async with emulate("--port", "0", LC_WEBHOOK_SECRET="") as lc:
        banner = await lc.banner()
        made_up = re.search(r"export LC_WEBHOOK_SECRET=(\S+)$", banner, re.M)
        assert made_up, banner
        async with aiohttp.ClientSession() as http:
            hook_url = printed(banner, "url")
            headers = {"lc-secret": made_up.group(1)}
            async with http.post(hook_url, json={"eventID": "x"}, headers=headers) as answer:
                assert answer.status == 200
        lc.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(lc.proc.wait(), TIMEOUT) == 0
    assert made_up.group(1) not in orjson.dumps(lc.logs).decode()


async def test_a_port_in_use_is_an_error_that_names_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with emulate("--port", str(port)) as lc:
            assert await asyncio.wait_for(lc.proc.wait(), TIMEOUT) == 1
    [failed] = lc.named("emulator_listen_failed")
    assert failed["port"] == port

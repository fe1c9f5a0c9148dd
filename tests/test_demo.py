"""`make demo` is the first thing a newcomer runs: it must pass, quickly, and tell a rate
of the delivery itself."""

from __future__ import annotations

import re

import pytest

from cloudtrail_adapter.emulator.demo import run_demo


async def test_the_demo_delivers_everything_and_reports_the_delivery_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_demo() == 0
    out = capsys.readouterr().out
    assert "every seeded eventID accepted exactly once (missing 0, duplicated 0)" in out
    assert re.search(
        r"delivery +[\d.]+ s from the first listing to the last ack, [\d,]+ records/s", out
    ), out

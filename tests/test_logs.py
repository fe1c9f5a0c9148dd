"""Every line the daemon writes is one JSON object: its own events and what the libraries
under it log (aiohttp through asyncio, botocore) alike."""

from __future__ import annotations

import gc
import io
import logging
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
import structlog

from cloudtrail_adapter.logs import configure_logging


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """configure_logging into a buffer; the previous set-up comes back afterwards."""
    stream = io.StringIO()
    previous = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info", stream)
    try:
        yield stream
    finally:
        structlog.configure(**previous)
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]  # each one JSON


async def test_a_library_warning_is_a_json_line_like_our_own(log_stream: io.StringIO) -> None:
    structlog.get_logger("cloudtrail_adapter.test").info("our_event", count=1)
    # a real one: aiohttp reports a session left unclosed through asyncio's logger
    session = aiohttp.ClientSession()
    del session
    gc.collect()
    logging.getLogger("botocore.credentials").warning("Refreshing temporary credentials")
    logging.getLogger("botocore.endpoint").info("per request: not wanted")

    found = lines(log_stream)
    assert found[0]["event"] == "our_event" and found[0]["level"] == "info"
    unclosed = [e for e in found if e.get("logger") == "asyncio"]
    assert unclosed and "Unclosed client session" in str(unclosed[0]["event"])
    assert unclosed[0]["level"] == "error" and "timestamp" in unclosed[0]
    botocore = [e for e in found if str(e.get("logger", "")).startswith("botocore")]
    assert [(e["event"], e["level"]) for e in botocore] == [
        ("Refreshing temporary credentials", "warning")
    ]

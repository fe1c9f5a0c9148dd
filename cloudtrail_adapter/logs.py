"""Logging set-up: every line the daemon writes is one structlog JSON object off a terminal
(readable colour on one), its own events and the standard library's (botocore, aiohttp,
asyncio) alike, so a log pipeline never meets a line it cannot parse."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
#: Libraries speak at WARNING and above only: their INFO and DEBUG are per request.
LIBRARY_LEVEL = logging.WARNING


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Every event is one line with a stable `event` name, a timestamp and a level; a
    standard-library record also names its `logger`."""
    out = stream if stream is not None else sys.stderr
    renderer: structlog.typing.Processor
    if out.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(LIBRARY_LEVEL, logging.getLevelNamesMapping()[level.upper()]))

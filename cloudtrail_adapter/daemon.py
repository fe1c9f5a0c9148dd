"""The wiring: one pipeline per source document, run together until done or signalled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from cloudtrail_adapter import aws
from cloudtrail_adapter.acks import AckTracker
from cloudtrail_adapter.config import (
    FileSourceOptions,
    S3SourceOptions,
    SourceConfig,
)
from cloudtrail_adapter.model import AckCallback, FatalSinkError, Sink, Source
from cloudtrail_adapter.pipeline import Pipeline
from cloudtrail_adapter.sinks.usp import UspSink
from cloudtrail_adapter.sinks.webhook import WebhookSink
from cloudtrail_adapter.sources.files import FileSource
from cloudtrail_adapter.sources.s3 import S3Source
from cloudtrail_adapter.sources.sqs import QueueUnavailable, SqsSource
from cloudtrail_adapter.state import StateError, StateStore

log = structlog.get_logger("cloudtrail_adapter.daemon")

EXIT_OK = 0
EXIT_FAILED = 1


@dataclass
class SourceOutcome:
    name: str
    ok: bool
    error: str = ""


def checkpoint_scope(cfg: SourceConfig) -> str:
    """Whose checkpoints these are: the LimaCharlie destination, not the (changing) hostname.

    Two documents reading one bucket into two different sensors keep separate checkpoints;
    a restart in a new container (new hostname) keeps the old ones.
    """
    if cfg.client_options is not None:
        ident = cfg.client_options.identity
        return f"usp:{ident.oid}/{cfg.client_options.sensor_seed_key}"
    assert cfg.webhook is not None
    return f"webhook:{cfg.webhook.url}"


def make_sink(cfg: SourceConfig, on_ack: AckCallback, http: aiohttp.ClientSession) -> Sink:
    if cfg.webhook is not None:
        return WebhookSink(cfg.webhook, on_ack, session=http)
    assert cfg.client_options is not None
    return UspSink(cfg.client_options, on_ack, session=http)


@contextlib.asynccontextmanager
async def open_source(cfg: SourceConfig, state: StateStore) -> AsyncIterator[Source]:
    scope = checkpoint_scope(cfg)
    src = cfg.source
    if isinstance(src, S3SourceOptions):
        region = await aws.bucket_region(cfg.aws, src.bucket_name)
        async with aws.client("s3", cfg.aws, region=region, pool=src.parallel_fetch) as s3:
            yield S3Source(cfg.name, src, s3=s3, state=state, scope=scope)
    elif isinstance(src, FileSourceOptions):
        yield FileSource(cfg.name, src, state=state, scope=scope)
    else:
        async with contextlib.AsyncExitStack() as stack:
            sqs = await stack.enter_async_context(aws.client("sqs", cfg.aws))
            buckets = aws.BucketClients(cfg.aws, stack, pool=src.parallel_fetch)
            yield SqsSource(cfg.name, src, sqs=sqs, buckets=buckets)


async def run_source(
    cfg: SourceConfig, state: StateStore, http: aiohttp.ClientSession, executor: Executor
) -> SourceOutcome:
    """Runs one document's source, pipeline, sink and committer; returns when single_load is
    done, or raises CancelledError when stopped."""
    tracker = AckTracker(cfg.name)
    sink = make_sink(cfg, tracker.on_batch_acked, http)
    pipeline = Pipeline(
        cfg.name,
        send=sink.send,
        tracker=tracker,
        delivery=cfg.delivery,
        workers=cfg.source.parallel_fetch,
        executor=executor,
    )
    try:
        async with open_source(cfg, state) as source:

            async def produce() -> None:
                await source.run(pipeline.work)
                await pipeline.drained()

            await _until_done(produce(), sink.run(), tracker.run_committer(), pipeline.run())
            given_up = source.problems()
    except FatalSinkError as exc:
        log.error("source_failed", source=cfg.name, reason="limacharlie_refused", error=str(exc))
        return SourceOutcome(cfg.name, ok=False, error=str(exc))
    except QueueUnavailable as exc:
        log.error("source_failed", source=cfg.name, reason="queue_unavailable", error=str(exc))
        return SourceOutcome(cfg.name, ok=False, error=str(exc))
    finally:
        await sink.close()
    failed = pipeline.stats.objects_failed + given_up
    log.info(
        "source_finished",
        source=cfg.name,
        objects=tracker.stats.committed,
        failed=failed,
        records=pipeline.stats.records_sent,
        batches=pipeline.stats.batches_sent,
    )
    return SourceOutcome(
        cfg.name, ok=failed == 0, error=f"{failed} objects failed" if failed else ""
    )


async def _until_done(main: Awaitable[None], *background: Awaitable[None]) -> None:
    """Awaits `main`; if a background task ends first (it only ends by failing), re-raises its
    error. Every task is cancelled on the way out."""
    main_task = asyncio.ensure_future(main)
    others = [asyncio.ensure_future(b) for b in background]
    try:
        await asyncio.wait([main_task, *others], return_when=asyncio.FIRST_COMPLETED)
        for task in others:
            if task.done():
                task.result()  # raises the background failure
                raise RuntimeError("a pipeline task ended unexpectedly")
        main_task.result()
    finally:
        for task in (main_task, *others):
            task.cancel()
        await asyncio.gather(main_task, *others, return_exceptions=True)


async def serve(sources: list[SourceConfig], state_dir: Path) -> int:
    """Runs every source until all single-load sources are done, or until SIGTERM/SIGINT."""
    try:
        state = StateStore.in_dir(state_dir)
    except StateError as exc:
        log.error("state_unavailable", error=str(exc))
        return EXIT_FAILED
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("daemon_started", sources=[s.name for s in sources], state_dir=str(state_dir))
    executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="decode")
    try:
        async with aiohttp.ClientSession() as http:
            runs = [asyncio.create_task(run_source(c, state, http, executor)) for c in sources]
            everything = asyncio.gather(*runs, return_exceptions=True)
            stopper = asyncio.create_task(stop.wait())
            waited: list[asyncio.Future[Any]] = [stopper, everything]
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            stopped = stop.is_set()
            stopper.cancel()
            for task in runs:
                task.cancel()
            results = await everything
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        executor.shutdown(wait=False, cancel_futures=True)
        state.close()
    outcomes = [r for r in results if isinstance(r, SourceOutcome)]
    crashed = [r for r in results if isinstance(r, BaseException) and not stopped]
    for crash in crashed:
        log.error("source_crashed", error=f"{type(crash).__name__}: {crash}")
    ok = not crashed and all(o.ok for o in outcomes)
    log.info("daemon_stopped", signalled=stopped, ok=ok)
    return EXIT_OK if ok else EXIT_FAILED

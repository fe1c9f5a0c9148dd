"""The wiring: one pipeline per source document, run together until done or signalled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import structlog

from cloudtrail_adapter.acks import AckTracker
from cloudtrail_adapter.aio import Stopped, unless_stopped
from cloudtrail_adapter.config import (
    DEFAULT_SHUTDOWN_GRACE,
    FileSourceOptions,
    S3SourceOptions,
    SourceConfig,
)
from cloudtrail_adapter.dedup import Deduplicator
from cloudtrail_adapter.errors import (
    EXIT_FAILED,
    EXIT_OK,
    AdapterError,
    Backoff,
    aws_refused_us,
    failure_reason,
)
from cloudtrail_adapter.model import AckCallback, Sink, Source
from cloudtrail_adapter.monitor import Monitor, SourceRuntime, log_progress
from cloudtrail_adapter.pipeline import Pipeline
from cloudtrail_adapter.progress import draw as draw_progress
from cloudtrail_adapter.progress import show as show_progress
from cloudtrail_adapter.sinks.proxies import Routes
from cloudtrail_adapter.sinks.usp import UspSink
from cloudtrail_adapter.sinks.webhook import WebhookSink
from cloudtrail_adapter.sources.files import FileSource
from cloudtrail_adapter.state import SourceState, StateError, StateStore
from cloudtrail_adapter.systemd import SystemdNotifier
from cloudtrail_adapter.workers import WorkerPool, tune_allocator, usable_cpus

log = structlog.get_logger("cloudtrail_adapter.daemon")


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
    """The document's destination. A configured proxy gets the sink its own HTTP session,
    whose timeouts are the proxy's; the environment's proxies apply to the shared one."""
    if cfg.webhook is not None:
        routes = Routes(cfg.webhook.proxy, os.environ)
        own = cfg.webhook.proxy is not None
        return WebhookSink(cfg.webhook, on_ack, session=None if own else http, routes=routes)
    assert cfg.client_options is not None
    routes = Routes(cfg.client_options.proxy, os.environ)
    own = cfg.client_options.proxy is not None
    return UspSink(cfg.client_options, on_ack, session=None if own else http, routes=routes)


def _pool_size(sources: list[SourceConfig]) -> int:
    """The `workers` key, else the CPUs this process may use."""
    given = next((s.workers for s in sources if s.workers), None)
    cpus = usable_cpus()
    size, why = (given, "the workers key") if given else (cpus.count, cpus.why)
    log.info("worker_pool_sized", workers=size, why=why, usable_cpus=cpus.count)
    return size


@contextlib.asynccontextmanager
async def open_source(cfg: SourceConfig, state: SourceState) -> AsyncIterator[Source]:
    """The source, with the checkpoints of its bucket or directory (an SQS source keeps
    none: SQS remembers what is deleted). The AWS stack (botocore: a fifth of a second of
    CPU to import) is imported only by a source that reads AWS."""
    src = cfg.source
    if isinstance(src, FileSourceOptions):
        checkpoints = state.checkpoints(str(src.path.resolve()))  # a directory: by its path
        yield FileSource(cfg.name, src, checkpoints=checkpoints)
        return
    from cloudtrail_adapter import aws

    if isinstance(src, S3SourceOptions):
        from cloudtrail_adapter.sources.s3 import S3Source

        session = aws.source_session(cfg.aws)
        region = await aws.bucket_region(cfg.aws, src.bucket_name, session)
        pool = src.parallel_fetch + src.parallel_list  # GETs and listings at once
        s3_client = aws.client("s3", cfg.aws, region=region, pool=pool, session=session)
        async with s3_client as s3, contextlib.AsyncExitStack() as stack:
            integrity = None
            if src.integrity.verify:
                from cloudtrail_adapter.integrity.wiring import open_checker

                integrity = open_checker(cfg, src, s3, state, stack, session)
            checkpoints = state.checkpoints(src.bucket_name)
            yield S3Source(cfg.name, src, s3=s3, checkpoints=checkpoints, integrity=integrity)
    else:
        from cloudtrail_adapter.sources.sqs import SqsSource

        async with contextlib.AsyncExitStack() as stack:
            session = aws.source_session(cfg.aws)
            sqs = await stack.enter_async_context(aws.client("sqs", cfg.aws, session=session))
            buckets = aws.BucketClients(cfg.aws, stack, pool=src.parallel_fetch, session=session)
            yield SqsSource(cfg.name, src, sqs=sqs, buckets=buckets)


def open_dedup(cfg: SourceConfig, state: SourceState) -> Deduplicator | None:
    """The source's de-duplication, with the keys delivered within its window read back."""
    if not cfg.dedup.enabled:
        return None
    started = time.monotonic()
    dedup = Deduplicator(cfg.name, state.delivered_keys(), cfg.dedup)
    loaded = dedup.load()
    log.info("dedup_loaded", keys=loaded, seconds=round(time.monotonic() - started, 3))
    return dedup


RESTART_INITIAL = 5.0
RESTART_MAX = 300.0
RESTART = Backoff(RESTART_INITIAL, RESTART_MAX, jitter=0.2)


@dataclass(frozen=True)
class Shutdown:
    """What every source watches: the first signal asks for a graceful stop, which may take
    up to `grace` seconds; the second (see serve) cuts it short."""

    stopping: asyncio.Event
    grace: float


async def supervise(
    cfg: SourceConfig,
    state: SourceState,
    http: aiohttp.ClientSession,
    executor: Executor,
    shutdown: Shutdown,
    runtime: SourceRuntime,
) -> SourceOutcome:
    """Runs a source. A single-load source runs once; a long-running one that fails (LimaCharlie
    refused us, the queue is gone, credentials are refused) is restarted with exponential
    backoff until stopped, and never takes the other sources down with it. Every log line of
    the source (and of the tasks it starts) carries `source=` from here."""
    structlog.contextvars.bind_contextvars(source=cfg.name)  # this task's context only
    failures = 0
    while True:
        started = time.monotonic()
        try:
            return await run_source(cfg, state, http, executor, shutdown, runtime)
        except Exception as exc:
            exc = aws_refused_us(exc) or exc  # a listing refused so says what to do, too
            error = str(exc) if isinstance(exc, AdapterError) else f"{type(exc).__name__}: {exc}"
            log.error("source_failed", reason=failure_reason(exc), error=error)
            outcome = SourceOutcome(cfg.name, ok=False, error=error)
        if cfg.source.single_load or shutdown.stopping.is_set():
            return outcome
        failures = 1 if time.monotonic() - started > RESTART_MAX else failures + 1
        delay = RESTART.delay(failures)
        log.warning("source_restart_scheduled", retry_in=round(delay, 1))
        runtime.restarts += 1
        try:
            await unless_stopped(shutdown.stopping, asyncio.sleep(delay))
        except Stopped:
            return outcome


async def run_source(
    cfg: SourceConfig,
    state: SourceState,
    http: aiohttp.ClientSession,
    executor: Executor,
    shutdown: Shutdown,
    runtime: SourceRuntime | None = None,
) -> SourceOutcome:
    """One document's source, pipeline, sink and committer, until single-load is done or a
    graceful stop finished. Raises what made the source fail."""
    runtime = runtime or SourceRuntime(cfg.name, cfg.kind)
    tracker = AckTracker(cfg.name, on_latency=runtime.observe_latency)
    sink = make_sink(cfg, tracker.on_batch_acked, http)
    dedup = open_dedup(cfg, state)
    pipeline = Pipeline(
        cfg.name,
        send=sink.send,
        tracker=tracker,
        delivery=cfg.delivery,
        fetchers=cfg.source.parallel_fetch,
        executor=executor,
        keep=cfg.record_filter,
        dedup=dedup,
        set_aside=state.set_aside,
        hash_content=isinstance(cfg.source, S3SourceOptions) and cfg.source.integrity.verify,
    )
    runtime.attach(pipeline, tracker, sink)
    try:
        async with open_source(cfg, state) as source:
            runtime.source = source
            produce = _produce(source, pipeline, tracker, shutdown)
            await _until_done(
                produce, sink.run(), tracker.run_committer(), pipeline.run(), log_progress(runtime)
            )
            given_up = source.problems() - source.recovered()
    finally:
        runtime.detach()
        await sink.close()
    failed = pipeline.stats.objects_failed + given_up
    unreadable = sum(pipeline.stats.records_unreadable.values())
    log.info(
        "source_finished",
        objects=tracker.stats.committed,
        failed=failed,
        failures=pipeline.stats.failures_by_reason,
        records=pipeline.stats.records_sent,
        batches=pipeline.stats.batches_sent,
        oversized=pipeline.stats.records_oversized,
        unreadable=unreadable,
        filtered=pipeline.stats.records_filtered,
        duplicates=dedup.stats.duplicates if dedup else None,
    )
    # A single-load run is a job: anything left undone, or set aside as unreadable, fails it.
    # A long-running source reports failures as they happen; being stopped is its normal end.
    ok = (failed == 0 and unreadable == 0) or not cfg.source.single_load
    error = f"{failed} items failed" if failed else ""
    if unreadable:
        error = ", ".join(filter(None, [error, f"{unreadable} records unreadable"]))
    return SourceOutcome(cfg.name, ok=ok, error=error)


async def _produce(
    source: Source, pipeline: Pipeline, tracker: AckTracker, shutdown: Shutdown
) -> None:
    """Feeds the pipeline until the source is done and everything committed, or until a
    stop: then intake ends, in-flight work gets the grace period to be acknowledged and
    committed, and whatever is still open is handed back."""
    intake = asyncio.create_task(source.run(pipeline.work))
    try:
        await unless_stopped(shutdown.stopping, asyncio.shield(intake))
        await unless_stopped(shutdown.stopping, pipeline.drained())
        return
    except Stopped:
        pass
    finally:
        if intake.done() and not intake.cancelled() and intake.exception() is not None:
            intake.result()
    source.stop_intake()
    log.info("source_stopping", source=source.name, grace=shutdown.grace, open=tracker.open_items)
    try:
        async with asyncio.timeout(shutdown.grace):
            await asyncio.shield(intake)  # expiry must not cancel a receive under way
            await pipeline.drained()
    except TimeoutError:
        log.warning("shutdown_grace_expired", source=source.name, open=tracker.open_items)
        await source.hand_back()
    finally:
        intake.cancel()
        await asyncio.gather(intake, return_exceptions=True)


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


async def serve(
    sources: list[SourceConfig],
    state_dir: Path,
    *,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    notifier: SystemdNotifier | None = None,
    monitor: Monitor | None = None,
    http_address: tuple[str, int] | None = None,
    progress: TextIO | None = None,
) -> int:
    """Runs every source until all single-load sources are done, or until SIGTERM/SIGINT:
    the first asks for a graceful stop, a second stops at once (still safely: nothing that
    LimaCharlie did not acknowledge was ever committed). `notifier` tells systemd.

    The state database is opened and closed here, and nowhere else in a run: each source
    is given only its own scope's part of it (`StateStore.scoped`)."""
    notifier = notifier or SystemdNotifier()
    monitor = monitor or Monitor()
    try:
        state = StateStore.in_dir(state_dir)
    except StateError as exc:
        log.error("state_unavailable", error=str(exc))
        return EXIT_FAILED
    signals = _Signals(Shutdown(asyncio.Event(), shutdown_grace), asyncio.Event(), notifier)
    try:
        # Handled before anything slow starts: a SIGTERM while the workers spawn is a
        # graceful stop too, never the default action's death.
        with signals.handled():
            log.info("daemon_started", sources=[s.name for s in sources], state_dir=str(state_dir))
            tune_allocator()
            executor = WorkerPool(_pool_size(sources))
            executor.warm_up()
            try:
                results = await _Run(sources, state, executor, signals, monitor).all(
                    http_address, progress
                )
            finally:
                executor.shutdown(wait=False, cancel_futures=True)
    finally:
        state.close()
    return _exit_code(results, signals)


@dataclass
class _Signals:
    """SIGTERM/SIGINT while serving: the first asks every source to stop gracefully, the
    second (`forced`) stops at once."""

    shutdown: Shutdown
    forced: asyncio.Event
    notifier: SystemdNotifier

    def on_signal(self, sig: signal.Signals) -> None:
        if self.shutdown.stopping.is_set():
            log.warning("shutdown_forced", signal=sig.name)
            self.forced.set()
        else:
            log.info("shutdown_requested", signal=sig.name, grace=self.shutdown.grace)
            self.notifier.stopping(f"stopping on {sig.name}: finishing in-flight work")
            self.shutdown.stopping.set()

    @contextlib.contextmanager
    def handled(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


@dataclass
class _Run:
    """Every source supervised at once over one HTTP session and one worker pool, with the
    health server, the watchdog and the progress line beside them."""

    sources: list[SourceConfig]
    state: StateStore
    executor: Executor
    signals: _Signals
    monitor: Monitor

    async def all(self, http_address: tuple[str, int] | None, progress: TextIO | None) -> list[Any]:
        """Each source's outcome (or what it raised), once every one ended or a second
        signal forced the stop."""
        notifier = self.signals.notifier
        async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as stack:
            if http_address is not None:
                from cloudtrail_adapter import http_api  # aiohttp's server, only when asked

                await stack.enter_async_context(http_api.serving(self.monitor, *http_address))
            runs = [asyncio.create_task(self._supervised(c, http)) for c in self.sources]
            everything = asyncio.gather(*runs, return_exceptions=True)
            force = asyncio.create_task(self.signals.forced.wait())
            watchdog = asyncio.create_task(notifier.feed_watchdog())
            started = time.monotonic()
            bar = asyncio.create_task(show_progress(self.monitor, progress)) if progress else None
            notifier.ready(f"running {len(self.sources)} source(s)")
            waited: list[asyncio.Future[Any]] = [force, everything]
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            force.cancel()
            watchdog.cancel()
            if bar is not None and progress is not None:
                bar.cancel()
                draw_progress(self.monitor, progress, started)
                progress.write("\n")
            if not self.signals.shutdown.stopping.is_set():
                notifier.stopping("every single-load source is done")
            for task in runs:
                task.cancel()
            return await everything

    async def _supervised(self, cfg: SourceConfig, http: aiohttp.ClientSession) -> SourceOutcome:
        return await supervise(
            cfg,
            self.state.scoped(checkpoint_scope(cfg)),
            http,
            self.executor,
            self.signals.shutdown,
            self.monitor.add(cfg.name, cfg.kind),
        )


def _exit_code(results: list[Any], signals: _Signals) -> int:
    forced = signals.forced.is_set()
    outcomes = [r for r in results if isinstance(r, SourceOutcome)]
    crashed = [r for r in results if isinstance(r, BaseException) and not forced]
    for crash in crashed:
        log.error("source_crashed", error=f"{type(crash).__name__}: {crash}")
    ok = not crashed and all(o.ok for o in outcomes)
    stopping = signals.shutdown.stopping.is_set()
    log.info("daemon_stopped", signalled=stopping, forced=forced, ok=ok)
    return EXIT_OK if ok else EXIT_FAILED

"""Command line: `run`, `validate`, `check`, LimaCharlie's `s3`/`sqs`/`sqs-files` forms,
`quarantine`, `emulate` and `demo`.

The daemon, emulator and demo modules are imported only by the commands that need them, so
`validate` stays light and works without the network stack.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import structlog

from cloudtrail_adapter import logs
from cloudtrail_adapter.config import (
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_UNREADY_AFTER,
    ConfigError,
    ConfigProblem,
    SourceConfig,
    SourceKind,
    load_config,
    parse_dotted,
)
from cloudtrail_adapter.errors import EXIT_OK, EXIT_USAGE

DEFAULT_STATE_DIR = Path("state")
#: LimaCharlie's adapter commands: `KIND CONFIG` or `KIND key=value ...`.
_FORMS: tuple[SourceKind, ...] = ("s3", "sqs", "sqs-files")
DEFAULT_EMULATOR_PORT = 8787
CHECK_FORMS = "CONFIG | {s3,sqs,sqs-files} CONFIG | {s3,sqs,sqs-files} KEY=VALUE ..."


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    env = os.environ
    command: str | None = args.command
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if command == "demo":
        return _demo()
    if command == "emulate":
        return _emulate(args, env)
    if command == "validate":
        return _validate(Path(args.config), env)
    if command == "check":
        return _check(args, env)
    if command == "quarantine":
        from cloudtrail_adapter.quarantine import run as quarantine

        return quarantine(args.action, args.keys, state_dir(args.state_dir, env), args.to)
    kind = next((k for k in _FORMS if k == command), None)
    arguments: list[str] = [args.config] if command == "run" else args.arguments
    state = state_dir(args.state_dir, env)
    return _run(kind, arguments, state, args, env)


def state_dir(given: str | None, env: Mapping[str, str]) -> Path:
    """`--state-dir`, else systemd's `$STATE_DIRECTORY` (its first entry), else `./state`."""
    if given:
        return Path(given)
    from_systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(from_systemd) if from_systemd else DEFAULT_STATE_DIR


def read_sources(
    kind: SourceKind | None,
    arguments: list[str],
    env: Mapping[str, str],
    warnings: list[ConfigProblem],
) -> list[SourceConfig]:
    """`run CONFIG`, `s3 CONFIG` / `sqs CONFIG` (every document of that kind), or
    `s3 key=value ...` / `sqs key=value ...`."""
    if kind is None or (len(arguments) == 1 and "=" not in arguments[0]):
        return load_config(Path(arguments[0]), env, expect_kind=kind, warnings=warnings)
    return parse_dotted(kind, arguments, env, warnings=warnings)


def _run(
    kind: SourceKind | None,
    arguments: list[str],
    state: Path,
    args: argparse.Namespace,
    env: Mapping[str, str],
) -> int:
    logs.configure_logging(args.log_level)
    warnings: list[ConfigProblem] = []
    try:
        sources = read_sources(kind, arguments, env, warnings)
    except ConfigError as exc:
        _print_problems(warnings, exc, sys.stderr)
        return EXIT_USAGE
    log = structlog.get_logger("cloudtrail_adapter.cli")
    for warning in warnings:
        write = log.info if warning.level == "info" else log.warning
        write(
            "config_note" if warning.level == "info" else "config_warning",
            origin=warning.origin,
            document=warning.document,
            line=warning.line,
            key=warning.key,
            message=warning.message,
        )

    from cloudtrail_adapter import daemon
    from cloudtrail_adapter.monitor import Monitor
    from cloudtrail_adapter.systemd import SystemdNotifier

    serving = daemon.serve(
        sources,
        state,
        shutdown_grace=args.shutdown_grace,
        notifier=SystemdNotifier.from_env(env),
        monitor=Monitor(unready_after=args.unready_after),
        http_address=args.http_address or _healthcheck(sources),
        progress=sys.stderr if _backfill_on_a_terminal(sources) else None,
    )
    return asyncio.run(serving)


def _backfill_on_a_terminal(sources: list[SourceConfig]) -> bool:
    return sys.stderr.isatty() and all(s.source.single_load for s in sources)


def _healthcheck(sources: list[SourceConfig]) -> tuple[str, int] | None:
    """LimaCharlie's `healthcheck: PORT`: the same endpoints, on every interface."""
    ports = [s.healthcheck for s in sources if s.healthcheck]
    return ("0.0.0.0", ports[0]) if ports else None  # noqa: S104 (as lc_adapter does)


def _validate(config: Path, env: Mapping[str, str]) -> int:
    warnings: list[ConfigProblem] = []
    try:
        sources = load_config(config, env, warnings=warnings)
    except ConfigError as exc:
        _print_problems(warnings, exc, sys.stderr)
        return EXIT_USAGE
    _print_problems(warnings, None, sys.stderr)
    for source in sources:
        print(summary(source))
    return EXIT_OK


def _check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`check CONFIG`, or LimaCharlie's forms after it: `check s3 CONFIG`, `check s3 k=v ...`."""
    logs.configure_logging(args.log_level)
    given: list[str] = args.arguments
    kind = next((k for k in _FORMS if k == given[0]), None)
    arguments = given[1:] if kind is not None else given
    if not arguments or (kind is None and len(arguments) > 1):
        print(f"usage: cloudtrail-adapter check {CHECK_FORMS}", file=sys.stderr)
        return EXIT_USAGE
    warnings: list[ConfigProblem] = []
    try:
        sources = read_sources(kind, arguments, env, warnings)
    except ConfigError as exc:
        _print_problems(warnings, exc, sys.stderr)
        return EXIT_USAGE
    _print_problems(warnings, None, sys.stderr)
    from cloudtrail_adapter import check

    state = state_dir(args.state_dir, env)
    return asyncio.run(check.run(sources, state, env, sys.stdout, as_json=args.json))


def _emulate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """LimaCharlie's side, on loopback: its own log lines are the point of it."""
    logs.configure_logging(args.log_level)
    from cloudtrail_adapter.emulator import emulate

    oid = args.oid or env.get("LC_OID") or str(uuid.uuid4())
    return emulate.run(args.port, oid, args.hook, env, sys.stdout)


DEMO_INSTALL = "pip install 'cloudtrail-adapter[demo]'"


def _demo() -> int:
    missing = _missing_demo_extra()
    if missing is not None:
        print(
            f"cloudtrail-adapter demo needs the demo extra, moto in server mode "
            f"(cannot import {missing}).\nInstall it with: {DEMO_INSTALL}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from cloudtrail_adapter.emulator import demo

    return asyncio.run(demo.run_demo())


def _missing_demo_extra() -> str | None:
    """The module the demo's local S3 lacks (moto, or what its server needs), else None.

    Only this import is checked, so that any other import error in the demo still shows as
    the bug it is."""
    with warnings.catch_warnings():  # moto warns "install moto[server]" before failing
        warnings.simplefilter("ignore")
        try:
            importlib.import_module("moto.server")
        except ModuleNotFoundError as exc:
            return exc.name or "moto"
    return None


def _print_problems(warnings: list[ConfigProblem], error: ConfigError | None, out: TextIO) -> None:
    for warning in warnings:
        print(f"{'note' if warning.level == 'info' else 'warning'}: {warning}", file=out)
    if error is not None:
        print(error, file=out)


def summary(source: SourceConfig) -> str:
    """One secret-free line: what is read, where it goes, which credentials."""
    if source.client_options is not None:
        client = source.client_options
        where = f"usp oid={client.identity.oid} hostname={client.hostname}"
        where += f" platform={client.platform}"
        if client.dest_url:
            where += f" dest_url={client.dest_url}"
    else:
        assert source.webhook is not None
        where = f"webhook {source.webhook.url}"
    if source.kind == "file":
        return f"{source.name} -> {where}"
    aws = source.aws
    credentials = "static keys" if aws.access_key else "default credential chain"
    extra = f", region {aws.region}" if aws.region else ""
    extra += f", endpoint {aws.endpoint_url}" if aws.endpoint_url else ""
    return f"{source.name} -> {where} ({credentials}{extra})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudtrail-adapter",
        description="Ships AWS CloudTrail events from S3 or SQS into LimaCharlie.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run every source in a config file")
    run.add_argument("config", metavar="CONFIG", help="YAML file of one or more documents")
    _daemon_options(run)

    validate = commands.add_parser(
        "validate", help="check a config file: every error, then one line per source"
    )
    validate.add_argument("config", metavar="CONFIG")

    check = commands.add_parser(
        "check",
        help="prove every permission and connection a config needs, one line a step; "
        "changes nothing",
        description="Runs each step for real (who we are to AWS, the bucket or queue, the "
        "permissions, LimaCharlie's route, TLS and handshake) and prints one line per step: "
        "passed or failed, what was tried and, on a failure, the IAM action, the resource "
        "ARN and what to change. Ships nothing, commits nothing, deletes nothing, changes no "
        "message and creates no state directory. Exit 0 when no step failed, 1 when one "
        "did, 2 when the config is invalid.",
    )
    check.add_argument("arguments", nargs="+", metavar=CHECK_FORMS)
    check.add_argument("--json", action="store_true", help="one JSON object per step, a line each")
    check.add_argument("--state-dir", metavar="DIR", help="as for run (looked at, never created)")
    check.add_argument(
        "--log-level", default="error", type=str.lower, choices=logs.LEVELS, help="default: error"
    )

    for kind in _FORMS:
        form = commands.add_parser(
            kind,
            help=f"LimaCharlie's form: `{kind} CONFIG` or `{kind} key=value ...`",
            description=(
                f"Either a config file whose documents are all `{kind}:` sources, or dotted "
                "keys relative to the source, e.g. client_options.identity.oid=... "
                + ("bucket_name=..." if kind == "s3" else "queue_url=...")
                + "; environment entries named like a key set it too"
            ),
        )
        form.add_argument("arguments", nargs="+", metavar="CONFIG | KEY=VALUE")
        _daemon_options(form)

    quarantine = commands.add_parser(
        "quarantine",
        help="what was given up on: objects that kept failing, records that were unreadable",
        description="list: both; retry [KEY ...]: fetch quarantined objects again; "
        "show [REF ...]: the unreadable records, with the bytes around each fault; "
        "export --to DIR [REF ...]: write each unreadable record's bytes to a file",
    )
    quarantine.add_argument("action", choices=("list", "retry", "show", "export"))
    quarantine.add_argument(
        "keys", nargs="*", metavar="KEY|REF", help="only these objects (keys, or refs as listed)"
    )
    quarantine.add_argument("--state-dir", metavar="DIR", help="as for run")
    quarantine.add_argument("--to", metavar="DIR", type=Path, help="export: where to write")

    emulate = commands.add_parser(
        "emulate",
        help="LimaCharlie's side (USP and webhook) on 127.0.0.1, to try a config without it",
        description="Runs the LimaCharlie emulator on 127.0.0.1, prints where to point a "
        "document and a sample one, and logs every connection and batch it accepts until "
        "Ctrl-C or SIGTERM.",
    )
    emulate.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_EMULATOR_PORT,
        help=f"on 127.0.0.1 (default: {DEFAULT_EMULATOR_PORT}; 0 picks a free one)",
    )
    emulate.add_argument(
        "--oid", help="the organization in the webhook's URL (default: $LC_OID, else a new UUID)"
    )
    emulate.add_argument(
        "--hook", default="cloudtrail", help="the webhook's name (default: %(default)s)"
    )
    emulate.add_argument(
        "--log-level", default="info", type=str.lower, choices=logs.LEVELS, help="default: info"
    )

    commands.add_parser(
        "demo",
        help="the daemon against a local S3 and a LimaCharlie emulator (needs the demo extra: "
        f"{DEMO_INSTALL})",
    )
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (an explicit ":PORT")


def _daemon_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="checkpoints and quarantine (default: $STATE_DIRECTORY, else ./state)",
    )
    parser.add_argument(
        "--log-level", default="info", type=str.lower, choices=logs.LEVELS, help="default: info"
    )
    parser.add_argument(
        "--http-address",
        metavar="HOST:PORT",
        type=_address,
        help="serve /healthz, /readyz and /metrics there, e.g. 127.0.0.1:9108 (default: off; "
        "a document's `healthcheck: PORT` means 0.0.0.0:PORT)",
    )
    parser.add_argument(
        "--unready-after",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_UNREADY_AFTER,
        help="/readyz turns unready once LimaCharlie was unreachable this long "
        f"(default: {DEFAULT_UNREADY_AFTER:g})",
    )
    parser.add_argument(
        "--shutdown-grace",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_SHUTDOWN_GRACE,
        help="on SIGTERM/SIGINT, how long in-flight work may take to be acknowledged and "
        f"committed before it is handed back (default: {DEFAULT_SHUTDOWN_GRACE:g}; a second "
        "signal stops at once)",
    )

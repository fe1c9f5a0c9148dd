"""`cloudtrail-adapter check`: every permission and connection a configuration needs, proven
live before the first run, one step a line.

It changes nothing. It ships no record, writes no checkpoint, deletes nothing, changes no
message's visibility and creates no state directory, so running it twice gives the same
answer. What cannot be proven without a change (receiving a message) is said to be
unproven, and left alone.

- `steps`: the step, as a line and as a JSON object;
- `denials`: AWS's refusals read as the IAM action and ARN to allow;
- `identity`: who we are (STS), and the role assumed;
- `s3`, `sqs`: each source's steps; `limacharlie`: the destination's;
- `local`: the state directory and a `file:` source's directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TextIO

import orjson

from cloudtrail_adapter.check.identity import who_we_are
from cloudtrail_adapter.check.limacharlie import limacharlie_steps
from cloudtrail_adapter.check.local import directory_step, state_step
from cloudtrail_adapter.check.s3 import s3_step_names, s3_steps
from cloudtrail_adapter.check.sqs import SQS_STEPS, sqs_steps
from cloudtrail_adapter.check.steps import LABELS, Step, exit_code, skipped
from cloudtrail_adapter.config import FileSourceOptions, S3SourceOptions, SourceConfig

__all__ = ["Step", "check_steps", "run"]


async def run(
    sources: list[SourceConfig],
    state: Path,
    env: Mapping[str, str],
    out: TextIO,
    *,
    as_json: bool = False,
) -> int:
    """Prints each step as it is done (a line, or a JSON object per line); the exit code."""
    steps: list[Step] = []
    async for step in check_steps(sources, state, env):
        steps.append(step)
        print(
            orjson.dumps(step.as_json()).decode() if as_json else step.line(), file=out, flush=True
        )
    if not as_json:
        print(_summary(steps), file=out)
    return exit_code(steps)


async def check_steps(
    sources: list[SourceConfig], state: Path, env: Mapping[str, str]
) -> AsyncIterator[Step]:
    yield state_step(state)
    for cfg in sources:
        async for step in _document(cfg, env):
            yield step


async def _document(cfg: SourceConfig, env: Mapping[str, str]) -> AsyncIterator[Step]:
    if isinstance(cfg.source, FileSourceOptions):
        yield directory_step(cfg.name, cfg.source.path)
    else:
        async for step in _aws(cfg):
            yield step
    async for step in limacharlie_steps(cfg.name, cfg.client_options, cfg.webhook, env):
        yield step


async def _aws(cfg: SourceConfig) -> AsyncIterator[Step]:
    found, access = await who_we_are(cfg)
    for step in found:
        yield step
    src = cfg.source
    if access is None:
        names = s3_step_names(src) if isinstance(src, S3SourceOptions) else SQS_STEPS
        for step in skipped(cfg.name, names, "no AWS identity to try them with"):
            yield step
    elif isinstance(src, S3SourceOptions):
        async for step in s3_steps(access, src):
            yield step
    else:
        assert not isinstance(src, FileSourceOptions)
        async for step in sqs_steps(access, src):
            yield step


def _summary(steps: list[Step]) -> str:
    counts = {status: sum(s.status == status for s in steps) for status in LABELS}
    said = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    verdict = "failed" if counts["failed"] else "passed"
    return f"check {verdict}: {said}"

"""`python -m bench.profile`: where the daemon's CPU goes, the main process and the workers
apart, on the bench corpus (a file source, or `--source s3` over moto, to the emulator over
USP; defaults, dedup on).

py-spy samples the daemon's main process while it holds the GIL (`--gil`: the event loop
and the threads' Python work, not the C work they do without it), and each worker process
from the moment it is spawned. Printed: each side's samples, then the functions with the most
samples of their own ("self") and of their callees too ("total"). The README's Performance
section quotes a run of this.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.aws_rows import Totals, document, file_document, moto_process, upload, write_config
from bench.corpus import bench_corpus
from bench.kill_harness import aws_options
from cloudtrail_adapter.emulator.corpus import write_directory
from cloudtrail_adapter.emulator.server import LimaCharlieEmulator
from cloudtrail_adapter.logs import configure_logging
from cloudtrail_adapter.workers import usable_cpus
from tests.support.process import descendants

RATE = 200  # samples per second
_OURS = "cloudtrail_adapter/"


@dataclass
class Profile:
    """py-spy's raw output folded by function: samples of its own and with its callees."""

    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)
    ours: set[str] = field(default_factory=set)  # the functions of this package

    def add(self, raw: Path) -> None:
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            frames = [_function(f) for f in stack.split(";")]
            self.ours.update(
                name for name, f in zip(frames, stack.split(";"), strict=True) if _OURS in f
            )
            self.samples += int(count)
            self.own[frames[-1]] += int(count)
            for name in set(frames):
                self.total[name] += int(count)

    def render(self, title: str, top: int) -> str:
        lines = [f"{title}: {self.samples} samples ({self.samples / RATE:.2f} s)"]
        for label, counts in (("self", self.own), ("total, this package's", self.total)):
            lines.append(f"  by {label}:")
            ours = [(n, c) for n, c in counts.most_common() if label == "self" or n in self.ours]
            for name, count in ours[:top]:
                lines.append(f"    {count / self.samples:6.1%}  {name}")
        return "\n".join(lines)


def _function(frame: str) -> str:
    """`name (path/module.py:line)` -> `name (module.py)`: lines of one function together."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def _is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmdline


async def _spy(*args: str) -> asyncio.subprocess.Process:
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit(f"{py_spy} is missing: pip install -e '.[dev]' installs it")
    return await asyncio.create_subprocess_exec(
        str(py_spy),
        "record",
        "--format",
        "raw",
        "-r",
        str(RATE),
        "--nonblocking",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def profile(out: Path, scale: float, source: str) -> None:
    """Runs the daemon over the corpus under py-spy: main.txt and a worker-PID.txt each."""
    files = bench_corpus(42, scale)
    total = Totals.of(files).records
    async with contextlib.AsyncExitStack() as stack:
        lc = await stack.enter_async_context(LimaCharlieEmulator())
        if source == "s3":
            endpoint = await stack.enter_async_context(moto_process())
            bucket = await upload(files, aws_options(endpoint))
            doc = document("s3", lc, endpoint, bucket_name=bucket, single_load=True)
        else:
            write_directory(files, out / "corpus")
            doc = file_document(lc, out / "corpus", "profile")
        config, state = write_config(out, source, doc)
        command = [sys.executable, "-m", "cloudtrail_adapter", "run", str(config)]
        command += ["--state-dir", str(state), "--log-level", "warning"]
        main = await _spy("--gil", "-o", str(out / "main.txt"), "--", *command)
        spies = await _follow_workers(main, out)
        await asyncio.wait_for(main.wait(), 600)
        for spy in spies:
            await spy.wait()
        await lc.store.wait_for(total, 60)


async def _follow_workers(
    spy: asyncio.subprocess.Process, out: Path
) -> list[asyncio.subprocess.Process]:
    """A py-spy on each worker the daemon (py-spy's child) spawns, until it has them all.
    Nothing announces a spawn, so /proc is polled."""
    spies: dict[int, asyncio.subprocess.Process] = {}
    workers = usable_cpus().count
    for _ in range(600):
        for pid in set(descendants(spy.pid)) - spies.keys():
            if _is_worker(pid):
                spies[pid] = await _spy("--pid", str(pid), "-o", str(out / f"worker-{pid}.txt"))
        if len(spies) >= workers or spy.returncode is not None:
            break
        await asyncio.sleep(0.01)
    return list(spies.values())


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--source", choices=["file", "s3"], default="file")
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw files in this directory")
    args = parser.parse_args()
    configure_logging("warning")
    main_profile, workers = Profile(), Profile()
    with tempfile.TemporaryDirectory(prefix="ct-profile-") as tmp:
        out = Path(tmp) if args.keep is None else args.keep
        out.mkdir(parents=True, exist_ok=True)
        asyncio.run(profile(out, args.scale, args.source))
        main_profile.add(out / "main.txt")
        for raw in out.glob("worker-*.txt"):
            workers.add(raw)
    print(main_profile.render("main process (holding the GIL)", args.top))
    print(workers.render("worker processes", args.top))


if __name__ == "__main__":
    main()

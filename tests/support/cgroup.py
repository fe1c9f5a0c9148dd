"""A memory limit for one process tree: a cgroup v2 child with `memory.max`, as a container
runtime or systemd's `MemoryMax=` would set, when this machine lets us make one (root, the
unified hierarchy, the memory controller); None where it does not, for the caller to fall
back to measuring the tree's peak RSS.

The process is moved in by the command prefix `wrapper` gives, before it runs anything,
so that everything it starts is in the cgroup too.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class MemoryLimit:
    """`MemoryLimit.make(bytes)`; `remove` once the processes in it have ended."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def make(cls, limit: int, root: Path = ROOT) -> MemoryLimit | None:
        """A new cgroup under `root` holding at most `limit` bytes, or None."""
        if os.geteuid() != 0:
            return None
        try:
            if "memory" not in (root / "cgroup.controllers").read_text().split():
                return None
            enabled = (root / "cgroup.subtree_control").read_text().split()
            if "memory" not in enabled:
                (root / "cgroup.subtree_control").write_text("+memory")
            path = root / f"cloudtrail-adapter-test-{uuid.uuid4().hex[:8]}"
            path.mkdir()
        except OSError:
            return None
        made = cls(path)
        try:
            (path / "memory.max").write_text(str(limit))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")  # swap would hide the limit
        except OSError:
            made.remove()
            return None
        return made

    def wrapper(self) -> list[str]:
        """A command prefix that moves itself in, then runs the rest of the command line:
        the daemon starts inside, and everything it starts with it."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs")]

    def oom_kills(self) -> int:
        """Processes the kernel killed for this cgroup's limit."""
        for line in (self.path / "memory.events").read_text().splitlines():
            name, value = line.split()
            if name == "oom_kill":
                return int(value)
        return 0

    def peak_mb(self) -> float | None:
        """The most memory the cgroup was charged (kernels from 5.19), or None."""
        try:
            return int((self.path / "memory.peak").read_text()) / (1 << 20)
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()

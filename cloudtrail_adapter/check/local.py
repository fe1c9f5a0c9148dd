"""The steps on this machine: the state directory and a `file:` source's directory. Both are
looked at, never made or written: the first run creates the state directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cloudtrail_adapter.check.steps import Step

__all__ = ["directory_step", "state_step"]


def state_step(state: Path) -> Step:
    tried = f"the state directory {state}"
    if state.is_dir():
        mode = stat.S_IMODE(state.stat().st_mode)
        if not os.access(state, os.W_OK | os.X_OK):
            said = f"exists ({mode:04o}) but this user cannot write it"
            return Step(
                "", "state", "failed", tried, said, fix="run as its owner, or give --state-dir"
            )
        said = f"exists ({mode:04o}), writable"
        if mode & 0o077:
            fix = "chmod 0700: it holds the records set aside, which are audit data"
            return Step("", "state", "warning", tried, f"{said}; others may read it", fix=fix)
        return Step("", "state", "passed", tried, said)
    if state.exists():
        return Step(
            "", "state", "failed", tried, "exists but is not a directory", fix="give --state-dir"
        )
    parent = _existing_parent(state)
    if not os.access(parent, os.W_OK | os.X_OK):
        said = f"does not exist, and this user cannot create it in {parent}"
        return Step(
            "", "state", "failed", tried, said, fix="create it for this user, or give --state-dir"
        )
    return Step("", "state", "passed", tried, "does not exist yet; the first run creates it (0700)")


def _existing_parent(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def directory_step(source: str, path: Path) -> Step:
    tried = f"the directory {path}"
    if not path.is_dir():
        return Step(source, "directory", "failed", tried, "not a directory", fix="check path")
    if not os.access(path, os.R_OK | os.X_OK):
        return Step(source, "directory", "failed", tried, "this user cannot read it")
    return Step(source, "directory", "passed", tried, "readable")

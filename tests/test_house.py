"""The house rules a newcomer relies on, held by reading the package's source: no import
cycle, no runtime module too long to read, the demo's moto kept off every other path, the
worker side free of the event loop's libraries, and one home for what makes a key a digest."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cloudtrail_adapter"
MAX_LINES = 650
#: The key declarations are a table, one entry per key (DEVELOPERS.md).
LONG_BY_DESIGN = {"config/values.py"}
#: What runs in the worker processes imports none of these (start-up, and no event loop).
NOT_IN_WORKERS = ("asyncio", "aiohttp", "aiobotocore", "botocore", "structlog", "yaml")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """Statements run at import: the module's own, and those in top-level try/if blocks,
    except `if TYPE_CHECKING:` (never run)."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        yield node
        if isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)


def imported(path: Path, *, top_level: bool) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = _top_level(tree) if top_level else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {}
    for name, path in mods.items():
        deps = {d for d in imported(path, top_level=True) if d in mods and d != name}
        # importing a.b.c runs a and a.b first
        graph[name] = deps | {p for d in deps for p in _parents(d) if p in mods and p != name}
    return graph


def _parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle a depth-first walk meets, as the path that closes it. A package's
    `__init__` importing its own submodule is not one: importing the submodule ran it."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1 and not node.startswith(dep + "."):
                found.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def test_no_runtime_module_imports_itself_back() -> None:
    assert cycles(_graph()) == []


def test_a_cycle_is_found_and_a_package_importing_its_own_module_is_not_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"p": {"p.m"}, "p.m": {"p"}}) == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_runtime_module_is_over_650_lines(name: str) -> None:
    path = modules()[name]
    relative = str(path.relative_to(PACKAGE))
    lines = len(path.read_text().splitlines())
    assert relative in LONG_BY_DESIGN or lines <= MAX_LINES, f"{relative}: {lines} lines"


def test_moto_is_imported_only_on_the_demos_path() -> None:
    users = {
        name
        for name, path in modules().items()
        if any(d == "moto" or d.startswith("moto.") for d in imported(path, top_level=False))
    }
    assert users == {"cloudtrail_adapter.emulator.local_aws"}
    for name, path in modules().items():
        if "cloudtrail_adapter.emulator.local_aws" in imported(path, top_level=True):
            assert name == "cloudtrail_adapter.emulator.demo", name


def test_the_worker_side_imports_nothing_of_the_event_loop() -> None:
    graph = _graph()
    mods = modules()
    reached: set[str] = set()
    pending = [n for n in mods if n.startswith("cloudtrail_adapter.decoding.")]
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending.extend(graph[name])
    for name in reached:
        outside = {d.split(".")[0] for d in imported(mods[name], top_level=True)}
        assert not outside & set(NOT_IN_WORKERS), (name, outside & set(NOT_IN_WORKERS))


def test_one_runtime_module_names_the_digest_folder() -> None:
    holders = [
        str(path.relative_to(PACKAGE))
        for path in modules().values()
        if "CloudTrail-Digest" in path.read_text()
    ]
    assert holders == ["sources/trail_layout.py"]


def test_a_file_source_run_loads_no_aws_stack() -> None:
    """botocore costs a fifth of a second of CPU to import: the daemon, a file source and
    the decoders must not load it (daemon.open_source imports the AWS stack for AWS only)."""
    code = (
        "import sys, cloudtrail_adapter.daemon, cloudtrail_adapter.sources.files, "
        "cloudtrail_adapter.decoding.packing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'aiobotocore')))"
    )
    loaded = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"

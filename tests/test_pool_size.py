"""The worker pool is sized to the CPUs this process may use, not the machine's: a container
limited to 2 CPUs on a 64-core host starts 2 workers. Read from a cgroup tree built in a
temporary directory, as the kernel lays it out (v2, and v1's cpu controller)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudtrail_adapter.config import ConfigError, parse_documents
from cloudtrail_adapter.workers import usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def tree(tmp_path: Path, cgroup_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_line + "\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root, proc


def test_a_v2_quota_below_the_affinity_sizes_the_pool(tmp_path: Path) -> None:
    root, proc = tree(
        tmp_path,
        "0::/system.slice/adapter.service",
        {"system.slice/adapter.service/cpu.max": "50000 100000\n"},
    )
    cpus = usable_cpus(root, proc)
    assert cpus.count == 1 and "0.5" in cpus.why


def test_a_parents_quota_counts_too(tmp_path: Path) -> None:
    root, proc = tree(
        tmp_path,
        "0::/kubepods/pod1/ctr",
        {"kubepods/pod1/ctr/cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "100000 100000\n"},
    )
    assert usable_cpus(root, proc).count == 1


def test_v1_cfs_quota(tmp_path: Path) -> None:
    root, proc = tree(
        tmp_path,
        "4:cpu,cpuacct:/docker/abc",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert usable_cpus(root, proc).count == 1


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    root, proc = tree(tmp_path, "0::/", {"cpu.max": "max 100000\n"})
    assert usable_cpus(root, proc).count == AFFINITY
    assert usable_cpus(tmp_path / "none", tmp_path / "none").count == AFFINITY


SEED = """\
s3:
  bucket_name: trail
  webhook: {url: "https://hooks.example/o/h", secret: s}
"""


def test_the_workers_key_overrides_and_documents_must_agree() -> None:
    [cfg] = parse_documents("workers: 3\n" + SEED, {}, "t")
    assert cfg.workers == 3
    with pytest.raises(ConfigError) as bad:
        parse_documents(f"workers: 3\n{SEED}---\nworkers: 4\n{SEED}", {}, "t")
    [error] = bad.value.errors
    assert error.key == "workers" and "different values (1: 3, 2: 4)" in error.message

"""Sizing the local Neo4j to the machine (platform/neo4j_memory.py): pure functions, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from kclip.platform import local_neo4j
from kclip.platform.neo4j_memory import (GiB, MAX_HEAP, MiB, MachineMemory, MemorySizes, machine_memory,
                                         neo4j_recommendation, recommended_sizes, resolve, size_string)
from kclip.platform.settings import Settings


def test_neo4j_table_matches_neo4j_admin_on_16_gib():
    # `neo4j-admin server memory-recommendation --memory=16g`: heap 5g, page cache 7g (4g left to the OS).
    assert neo4j_recommendation(16 * GiB) == (4 * GiB, 5 * GiB, 7 * GiB)


@pytest.mark.parametrize("gib, heap, pagecache", [
    (2, "512m", "512m"),
    (8, "2560m", "1280m"),
    (16, "3328m", "4608m"),
    (24, "5376m", "6656m"),
    (64, "15104m", "17g"),
    (256, "17152m", "111g"),
])
def test_auto_takes_half_the_machine_in_neo4j_proportions(gib, heap, pagecache):
    chosen_heap, chosen_pagecache = recommended_sizes(MachineMemory(gib * GiB, gib * GiB))
    assert (size_string(chosen_heap), size_string(chosen_pagecache)) == (heap, pagecache)
    assert chosen_heap + chosen_pagecache <= gib * GiB / 2
    _, neo4j_heap, neo4j_pagecache = neo4j_recommendation(gib * GiB)
    assert chosen_heap <= min(neo4j_heap, MAX_HEAP) and chosen_pagecache <= neo4j_pagecache


def test_tiny_machines_get_the_floors():
    assert recommended_sizes(MachineMemory(GiB, GiB)) == (512 * MiB, 128 * MiB)


def test_less_free_memory_means_less_for_neo4j():
    busy = recommended_sizes(MachineMemory(24 * GiB, 8 * GiB))
    idle = recommended_sizes(MachineMemory(24 * GiB, 24 * GiB))
    assert busy[0] < idle[0] and busy[1] < idle[1] and sum(busy) <= 4 * GiB


def _fake_root(tmp_path: Path, total_kb: int, available_kb: int, cgroup: dict[str, str]) -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text(
        f"MemTotal:       {total_kb} kB\nMemFree:         1000 kB\nMemAvailable:   {available_kb} kB\nHugePages_Total: 0\n")
    for name, value in cgroup.items():
        path = tmp_path / "sys" / "fs" / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return tmp_path


def test_machine_memory_reads_meminfo(tmp_path):
    root = _fake_root(tmp_path, 24 * 1024 * 1024, 20 * 1024 * 1024, {"memory.max": "max", "memory.current": "5"})
    assert machine_memory(root) == MachineMemory(24 * GiB, 20 * GiB)


def test_a_cgroup_v2_limit_narrows_the_machine(tmp_path):
    root = _fake_root(tmp_path, 24 * 1024 * 1024, 20 * 1024 * 1024,
                      {"memory.max": str(8 * GiB), "memory.current": str(2 * GiB)})
    assert machine_memory(root) == MachineMemory(8 * GiB, 6 * GiB)


def test_an_unlimited_cgroup_v1_is_ignored(tmp_path):
    root = _fake_root(tmp_path, 24 * 1024 * 1024, 20 * 1024 * 1024,
                      {"memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": "7"})
    assert machine_memory(root) == MachineMemory(24 * GiB, 20 * GiB)


def test_explicit_sizes_win_and_each_auto_resolves_alone():
    machine = MachineMemory(24 * GiB, 24 * GiB)
    assert resolve("2g", "300m", machine) == MemorySizes("2g", "300m")
    assert resolve("2g", "auto", machine) == MemorySizes("2g", "6656m")
    assert resolve("auto", "auto", machine) == MemorySizes("5376m", "6656m")


def test_status_shows_the_sizes_a_start_would_use(tmp_path):
    settings = Settings(home=tmp_path, neo4j_heap="768m", neo4j_pagecache="auto")
    st = local_neo4j.status(settings)
    assert not st.running and st.heap == "768m" and st.pagecache.endswith(("m", "g"))


def test_settings_default_to_auto(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KCLIP_NEO4J_HEAP", raising=False)
    monkeypatch.delenv("KCLIP_NEO4J_PAGECACHE", raising=False)
    assert (Settings().neo4j_heap, Settings().neo4j_pagecache) == ("auto", "auto")

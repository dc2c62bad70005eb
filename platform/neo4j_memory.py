"""Heap and page cache of the local Neo4j, sized to the machine it runs on.

``KCLIP_NEO4J_HEAP`` and ``KCLIP_NEO4J_PAGECACHE`` take a size (``4g``, ``512m``) or ``auto``,
the default. ``auto`` follows Neo4j's own sizing rule (``neo4j-admin server
memory-recommendation``), then leaves room for kclip's trainer:

1. The machine's memory is the smaller of ``MemTotal`` and the cgroup limit
   (``/sys/fs/cgroup/memory.max``, or ``memory/memory.limit_in_bytes`` on cgroup v1).
2. Neo4j's table (``NEO4J_BRACKETS``, interpolated) gives, for that memory, what to leave to the
   OS and the heap; the page cache would get the rest. On 24 GiB: OS 6, heap 8, page cache 10.
3. Neo4j gets half of that memory, and never more than half of what is free right now
   (``MemAvailable``, or the cgroup limit minus its usage): Neo4j's rule assumes a machine
   dedicated to the database, but here the trainer, its sampler workers (one Neo4j session and
   an entity cache each) and the UI share it, and PyTorch alone wants several GiB.
4. That share is split between heap and page cache in the proportion of step 2, each capped at
   Neo4j's own figure, the heap at 31 GiB (compressed object pointers end there), rounded down
   to 256 MiB, and at least 512 MiB of heap and 128 MiB of page cache.

On the 24 GiB development machine (23.5 GiB total, 21.7 free) that is a 4864m heap and a 6g page
cache; with all 24 GiB free, 5376m and 6656m. Each value resolves on its own: setting one of the
two variables leaves the other's ``auto`` figure unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MiB = 1024**2
GiB = 1024**3

# neo4j-admin's brackets (Neo4j 5.x, MemoryRecommendationsCommand): machine memory -> memory left
# to the OS, heap; all in GiB. Between two rows the figures are interpolated linearly.
NEO4J_BRACKETS: tuple[tuple[float, float, float], ...] = (
    (1, 0.65, 0.3), (2, 1, 0.5), (4, 1.5, 2), (6, 2, 3), (8, 2.5, 3.5), (10, 3, 4), (12, 3.5, 4.5),
    (16, 4, 5), (24, 6, 8), (32, 8, 12), (64, 12, 24), (128, 16, 31), (256, 20, 31), (512, 24, 31),
    (1024, 30, 31),
)  # fmt: skip
NEO4J_SHARE = 0.5  # of the machine, and of its free memory: the rest is the trainer's (docstring, step 3)
MAX_HEAP = 31 * GiB  # above this the JVM loses compressed object pointers: a bigger heap holds less
MIN_HEAP = 512 * MiB  # below this Neo4j 5 struggles to plan and run queries at all
MIN_PAGECACHE = 128 * MiB
STEP = 256 * MiB

_CGROUP_LIMITS = (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"))


@dataclass(frozen=True)
class MachineMemory:
    total: int  # bytes this process may use at most: MemTotal or the cgroup limit
    available: int  # bytes free now


@dataclass(frozen=True)
class MemorySizes:
    heap: str  # Neo4j / JVM size strings: "5g", "6656m"
    pagecache: str


def neo4j_recommendation(total: int) -> tuple[int, int, int]:
    """Neo4j's own (OS reserve, heap, page cache) in bytes for a dedicated machine of ``total`` bytes."""
    gib = total / GiB
    rows = NEO4J_BRACKETS
    if gib <= rows[0][0]:
        os_gib, heap_gib = rows[0][1] * gib / rows[0][0], rows[0][2] * gib / rows[0][0]
    elif gib >= rows[-1][0]:
        os_gib, heap_gib = rows[-1][1], rows[-1][2]
    else:
        (m0, o0, h0), (m1, o1, h1) = next((a, b) for a, b in zip(rows, rows[1:]) if a[0] <= gib <= b[0])
        f = (gib - m0) / (m1 - m0)
        os_gib, heap_gib = o0 + f * (o1 - o0), h0 + f * (h1 - h0)
    reserve, heap = int(os_gib * GiB), int(min(heap_gib * GiB, MAX_HEAP))
    return reserve, heap, max(0, total - reserve - heap)


def recommended_sizes(memory: MachineMemory) -> tuple[int, int]:
    """kclip's (heap, page cache) in bytes for a machine it shares with training (docstring)."""
    _, heap, pagecache = neo4j_recommendation(memory.total)
    share = NEO4J_SHARE * min(memory.total, memory.available)
    heap_share = share * heap / (heap + pagecache) if heap + pagecache else share
    chosen_heap = max(MIN_HEAP, _round_down(min(heap_share, heap)))
    chosen_pagecache = max(MIN_PAGECACHE, _round_down(min(share - heap_share, pagecache)))
    return chosen_heap, chosen_pagecache


def resolve(heap: str, pagecache: str, memory: MachineMemory | None = None) -> MemorySizes:
    """The sizes to start Neo4j with: each setting as given, or kclip's figure where it is ``auto``."""
    if heap != "auto" and pagecache != "auto":
        return MemorySizes(heap, pagecache)
    auto_heap, auto_pagecache = recommended_sizes(memory or machine_memory())
    return MemorySizes(heap if heap != "auto" else size_string(auto_heap),
                       pagecache if pagecache != "auto" else size_string(auto_pagecache))


def size_string(n: int) -> str:
    """Bytes as a Neo4j size: whole GiB as ``5g``, else MiB (``6656m``)."""
    return f"{n // GiB}g" if n % GiB == 0 else f"{n // MiB}m"


def machine_memory(root: Path = Path("/")) -> MachineMemory:
    """Total and free memory from /proc/meminfo, narrowed by a cgroup limit (containers, CI jobs)."""
    meminfo = _meminfo(root / "proc" / "meminfo")
    if meminfo:
        total = meminfo["MemTotal"]
        available = meminfo.get("MemAvailable", meminfo.get("MemFree", total))
    else:  # no /proc (macOS): physical memory, and no way to tell what is free
        total = available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file, usage_file in _CGROUP_LIMITS:
        limit = _read_int(root / "sys" / "fs" / "cgroup" / limit_file)
        if limit is not None and limit < total:  # "max", or v1's 2^63 - 4096, mean no limit
            usage = _read_int(root / "sys" / "fs" / "cgroup" / usage_file) or 0
            total, available = limit, min(available, max(0, limit - usage))
            break
    return MachineMemory(total=total, available=available)


def _round_down(n: float) -> int:
    return int(n // STEP) * STEP


def _meminfo(path: Path) -> dict[str, int]:
    """/proc/meminfo's ``Name: 123 kB`` lines as bytes; empty where there is no such file."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

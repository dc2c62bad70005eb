"""Shared by the benchmarks: make sure a KG is in Neo4j, and time a callable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from kclip.kg_loaders import get_loader
from kclip.platform.graph_store import GraphStore
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore
from kclip.platform.settings import Settings

DEFAULT_WN18RR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wn18rr"


def ensure_kg(store: GraphStore, settings: Settings, kg: str, fmt: str, path: Path) -> None:
    """Load ``path`` into ``kg`` unless it is there already (loads are idempotent anyway)."""
    if kg in store.list_kgs() and store.stats(kg).total_triplets:
        return
    load_kg(store, get_loader(fmt)(path, kg=kg), MediaStore(settings.media_root), progress=False)


def rate(fn: Callable[[], int], warmup: int = 0) -> tuple[float, float]:
    """(items/s, seconds) of ``fn``, which returns how many items it processed."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    n = fn()
    seconds = time.perf_counter() - start
    return n / seconds, seconds

"""Managing a KG in place: ``kclip drop`` deletes one, ``kclip verify`` checks one.

A drop holds the KG's write lock (``kg_lock``), so no load writes into the KG meanwhile. It
deletes the media files no other KG references first, then the graph (triplets, entities,
relations, the KG node, its vector index) a slice of entities at a time. In that order an
interrupted drop never strands files that nothing references any more: run it again and it
finishes, the KG's remaining entities still naming their keys.

A verify reads the KG (no lock: it writes nothing) and reports, besides the counts, duplicate
triplets, dev/test triplets also in train, triplets whose relation or other end lies outside the
KG, and image keys whose file is missing from the media store. Each has a count and examples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kclip.platform.graph_store import Finding, GraphStore, KGStats, TripletChecks
from kclip.platform.kg_lock import DEFAULT_WAIT_S, kg_write_lock
from kclip.platform.media import MediaStore, delete_media
from kclip.platform.progress import Progress


@dataclass(frozen=True)
class DropPlan:
    """What dropping a KG deletes (or, once done, deleted)."""

    kg: str
    stats: KGStats
    media_keys: int  # distinct media keys the KG references
    media_files: frozenset[str] = field(default_factory=frozenset)  # keys of the files only it uses

    def describe(self) -> str:
        s = self.stats
        kept = self.media_keys - len(self.media_files)
        return (f"KG {self.kg!r}: {s.total_entities:,} entities, {s.relations:,} relations, "
                f"{s.total_triplets:,} triplets, its vector index if any, and {len(self.media_files):,} media "
                f"files" + (f" ({kept:,} more it references stay: other KGs use them, or they are missing)"
                            if kept else ""))

    def as_dict(self) -> dict:
        return {"kg": self.kg, **_stats_dict(self.stats), "media_files": len(self.media_files),
                "media_keys": self.media_keys}


def plan_drop(store: GraphStore, media: MediaStore, kg: str) -> DropPlan:
    """What ``drop_kg`` would delete now; deletes nothing."""
    keys = store.media_keys(kg)
    unused = keys - store.media_keys_used_elsewhere(kg, keys)
    present = frozenset(k for k in unused if media.path(k).is_file())
    return DropPlan(kg, store.stats(kg), len(keys), present)


def drop_kg(store: GraphStore, media: MediaStore, kg: str, *, wait: float = DEFAULT_WAIT_S,
            progress: bool = True) -> DropPlan:
    """Delete the KG and the media only it used, under its write lock; returns what went."""
    with kg_write_lock(store, kg, wait=wait):
        plan = plan_drop(store, media, kg)
        delete_media(media, set(plan.media_files))
        total = plan.stats.total_entities
        with Progress(f"dropping {kg}", total=total, unit="entities", enabled=progress) as bar:
            store.drop_kg(kg, on_progress=bar.advance)
    return plan


@dataclass
class VerifyReport:
    kg: str
    stats: KGStats
    triplets: TripletChecks
    missing_media: Finding  # image keys without a file in the media store
    seconds: float = 0.0

    @property
    def findings(self) -> dict[str, Finding]:
        return {**vars(self.triplets), "missing_media": self.missing_media}

    @property
    def problems(self) -> int:
        return sum(finding.count for finding in self.findings.values())

    @property
    def ok(self) -> bool:
        return self.problems == 0

    def as_dict(self) -> dict:
        findings = {name: {"count": f.count, "examples": f.examples} for name, f in self.findings.items()}
        return {"kg": self.kg, "ok": self.ok, **_stats_dict(self.stats), "problems": findings,
                "seconds": round(self.seconds, 3)}


def verify_kg(store: GraphStore, media: MediaStore, kg: str, examples: int = 5,
              progress: bool = True) -> VerifyReport:
    """Counts and problems of one KG (module docstring); raises ``NotFoundError`` for an unknown KG."""
    started = time.perf_counter()
    store.require_kg(kg)
    first, last, _ = store.entity_idx_range(kg)
    with Progress(f"verifying {kg}", total=last - first + 1, unit="entities", enabled=progress) as bar:
        triplets = store.verify(kg, examples=examples, on_progress=bar.advance)
    missing = sorted(key for key in store.media_keys(kg) if not media.path(key).is_file())
    report = VerifyReport(kg, store.stats(kg), triplets, Finding(len(missing), [{"key": k} for k in missing[:examples]]))
    report.seconds = time.perf_counter() - started
    return report


def _stats_dict(stats: KGStats) -> dict:
    return {"entities": stats.entities, "relations": stats.relations, "triplets": stats.triplets}

"""Loading a KG: validate everything a loader yields, then write it to Neo4j in batches.

Two passes, so that bad input never half-lands:

1. *validate*: read the loader's records once, check every row (parse errors, entities defined
   twice with different content, triplets whose entities exist neither in the input nor in the
   KG), and decode every image file the entities use, once per file, in a few threads while the
   loader reads on (missing, truncated, corrupt, over the pixel limit, a box outside the image);
   the good rows are spooled to temporary files.
2. *write*: only if pass 1 found nothing wrong (or ``skip_bad`` was asked for), write relations,
   then entities, then triplets, from the spools. Each image file goes into the media store once,
   as it is; a region entity (a scene-graph object) holds its source's key and its box.

Writes are idempotent (MERGE on each record's identity), so loading the same data twice changes
nothing and a load killed half-way ends complete when run again. A KG with no entities or no
triplets yet takes a faster CREATE path, duplicates having been dropped in pass 1.

A KG new to the database has nothing to lose, so its entities are written during pass 1, in the
writer threads, while the loader reads on (Neo4j and the parsing then share the cores); a load
that ends refused, or is interrupted before pass 2, drops the KG and the media files it added
(``_discard_new_kg``), so refusal still leaves the graph and the media store as they were.
"""

from __future__ import annotations

import csv
import pickle
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
import tempfile
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from kclip.kg_loaders.base import KGLoader
from kclip.platform.errors import InputError, LoadRefused
from kclip.platform.graph_store import GraphStore, WriteCounts, entity_properties
from kclip.platform.kg_lock import DEFAULT_WAIT_S, kg_write_lock
from kclip.platform.neo4j_client import reporting_lost_neo4j
from kclip.platform.media import BadImage, ImageInfo, MediaStore, StoredImage, check_image, delete_media, region_size
from kclip.platform.progress import Progress
from kclip.platform.records import Entity, ImageSource, Reject, Relation, SourceRef, Triplet

ENTITY_BATCH = 5_000
TRIPLET_BATCH = 5_000
WRITER_THREADS = 2
IMAGE_CHECK_THREADS = 2
IMAGES_IN_FLIGHT = 32  # source images being decoded while the loader reads on
MAX_ERRORS_SHOWN = 20


@dataclass
class KindCounts:
    added: int = 0
    present: int = 0
    rejected: int = 0

    def record(self, counts: WriteCounts) -> None:
        self.added += counts.added
        self.present += counts.present


@dataclass
class LoadSummary:
    kg: str
    entities: KindCounts = field(default_factory=KindCounts)
    relations: KindCounts = field(default_factory=KindCounts)
    triplets: KindCounts = field(default_factory=KindCounts)
    unparsed_rows: int = 0
    rejects_path: Path | None = None
    seconds: float = 0.0
    # dev/test triplets of the KG that are also in train, by split (a leak evaluation would hide)
    leaked: dict[str, int] = field(default_factory=dict)

    def leak_warning(self) -> str | None:
        if not self.leaked:
            return None
        counts = " and ".join(f"{n:,} {split}" for split, n in sorted(self.leaked.items()))
        return (f"{counts} triplet(s) of KG {self.kg!r} also appear in train: evaluation on them measures "
                f"memory, not prediction (details: kclip verify --kg {self.kg})")

    def as_dict(self) -> dict[str, Any]:
        kinds = {k: vars(getattr(self, k)) for k in ("entities", "relations", "triplets")}
        return {"kg": self.kg, **kinds, "unparsed_rows": self.unparsed_rows,
                "rejects": str(self.rejects_path) if self.rejects_path else None, "seconds": round(self.seconds, 3),
                "leaked": self.leaked}


class _Spool:
    """Rows pickled to a temporary file in chunks and read back in order: bounded memory."""

    def __init__(self, directory: Path, name: str, chunk: int = 10_000):
        self.path = directory / name
        self._file = open(self.path, "wb")
        self._buffer: list = []
        self._chunk = chunk
        self.count = 0

    def append(self, row: Any) -> None:
        self._buffer.append(row)
        self.count += 1
        if len(self._buffer) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            pickle.dump(self._buffer, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self._buffer = []

    def __iter__(self) -> Iterator[Any]:
        self._flush()
        self._file.close()
        with open(self.path, "rb") as f:
            while True:
                try:
                    yield from pickle.load(f)
                except EOFError:
                    return


@dataclass
class _Validation:
    """What pass 1 learned: the good rows (entities spooled, or already written for a new KG;
    triplets spooled), the bad ones, and the relations."""

    entities: "_Spool | _EntityWrites"
    triplets: _Spool
    relations: dict[str, Relation] = field(default_factory=dict)
    entity_seen: dict[str, tuple[int, SourceRef | None]] = field(default_factory=dict)
    # entity id -> the sources of triplets that use it before we know it exists
    pending: dict[str, list[SourceRef]] = field(default_factory=lambda: defaultdict(list))
    # entity id -> node element id, for entities the triplets use that were already in the KG
    existing_nodes: dict[str, str] = field(default_factory=dict)
    bad: set[SourceRef] = field(default_factory=set)
    errors: list[InputError] = field(default_factory=list)
    error_count: int = 0
    duplicate_entities: int = 0
    triplet_keys: set[int] = field(default_factory=set)
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # entities rejected after their triplets were spooled (their image turned out bad)
    bad_entities: set[str] = field(default_factory=set)

    def reject(self, kind: str, source: SourceRef | None, problem: str) -> None:
        self.error_count += 1
        self.rejected[kind] += 1
        if source is not None:
            self.bad.add(source)
        if len(self.errors) < 10_000:  # enough for any report; keeps memory bounded
            self.errors.append(InputError(source.file if source else "?", source.line if source else None, problem))


def load_kg(store: GraphStore, loader: KGLoader, media: MediaStore, *, skip_bad: bool = False,
            rejects_path: Path | None = None, progress: bool = True, wait: float = DEFAULT_WAIT_S) -> LoadSummary:
    """Validate then write everything ``loader`` yields into its KG; see the module docstring.

    One writer per KG: waits up to ``wait`` seconds while another process writes it (``kg_lock``).
    Losing Neo4j ends in ``Neo4jLost``, which says what this load wrote and that rerunning finishes it.
    """
    started = time.perf_counter()
    kg = loader.kg
    summary = LoadSummary(kg=kg)

    def written_so_far() -> str:
        return (f"confirmed written before that: {summary.entities.added:,} new entities and "
                f"{summary.triplets.added:,} new triplets in KG {kg!r}; run the same command again once Neo4j "
                "is back to finish the load")

    with (reporting_lost_neo4j(written_so_far), kg_write_lock(store, kg, wait=wait),
          tempfile.TemporaryDirectory(prefix="kclip-load-") as tmp, _ParallelWriter() as writer):
        store.ensure_schema()
        new_kg = kg not in store.list_kgs()
        if new_kg:
            store.ensure_kg(kg)
        # The lock is held from here to the end: whether the KG has entities cannot change meanwhile.
        entities = _EntityWrites(store, kg, media, summary, writer, fresh=new_kg or not store.has_entities(kg))
        try:
            # A new KG's entities are written as pass 1 checks them; others wait in a spool.
            sink = entities if new_kg else _Spool(Path(tmp), "entities")
            checked = _validate(store, loader, Path(tmp), progress, media, sink)
            if checked.error_count and not skip_bad:
                raise LoadRefused(checked.errors[:MAX_ERRORS_SHOWN], checked.error_count)
        except BaseException:
            if new_kg:
                _discard_new_kg(store, media, kg, entities)
            raise
        summary.unparsed_rows = checked.rejected.pop("row", 0)
        for kind, n in checked.rejected.items():
            getattr(summary, kind).rejected = n
        if checked.error_count:
            summary.rejects_path = _write_rejects(checked, rejects_path or Path(f"rejects-{kg}.tsv"))
        _write(store, kg, checked, entities, writer, summary, progress)
        summary.leaked = {split: n for split, n in store.split_overlap(kg).items() if n}
    summary.seconds = time.perf_counter() - started
    return summary


# -- pass 1 ------------------------------------------------------------------------------------

def _validate(store: GraphStore, loader: KGLoader, tmp: Path, progress: bool, media: MediaStore,
              entities: "_Spool | _EntityWrites") -> _Validation:
    """Pass 1; good entity rows are appended to ``entities``."""
    checked = _Validation(entities=entities, triplets=_Spool(tmp, "triplets"))
    images = _ImageChecks(checked, media.max_image_pixels)
    total_bytes = sum(p.stat().st_size for p in loader.input_files())
    try:
        with Progress(f"checking {loader.kg}", total=total_bytes / 1e6, unit="MB", enabled=progress) as bar:
            read = 0
            for record in loader.records():
                if isinstance(record, Reject):
                    checked.reject("row", record.source, record.problem)
                elif isinstance(record, Triplet):
                    _check_triplet(checked, record)
                elif isinstance(record, Entity):
                    _check_entity(checked, record, images)
                else:
                    _check_relation(checked, record)
                if loader.bytes_read - read > 1_000_000:
                    bar.advance((loader.bytes_read - read) / 1e6)
                    read = loader.bytes_read
            images.settle(wait=True)
    finally:
        images.close()
    _resolve_pending(store, loader.kg, checked)
    if checked.bad_entities:
        _reject_triplets_of_bad_entities(checked, tmp)
    return checked


def _fingerprint(entity: Entity) -> int:
    return hash((entity.modality, entity.text, entity.image, tuple(sorted(entity.attributes.items()))))


def _check_entity(checked: _Validation, entity: Entity, images: "_ImageChecks") -> None:
    fingerprint = _fingerprint(entity)
    seen = checked.entity_seen.get(entity.id)
    if seen is not None:
        if seen[0] != fingerprint:
            checked.reject("entities", entity.source,
                           f"entity {entity.id!r} is defined again with different content (first at {seen[1]})")
        else:
            checked.duplicate_entities += 1
        return
    checked.entity_seen[entity.id] = (fingerprint, entity.source)
    if entity.image is None:
        checked.entities.append((entity.id, entity_properties(entity), None, None))
    else:
        images.check(entity)


def _checked_image(path: Path, max_pixels: int) -> ImageInfo | BadImage:
    try:
        return check_image(path, max_pixels)
    except BadImage as exc:
        return exc


def _box_problem(image: ImageSource, whole: ImageInfo) -> str | None:
    try:
        region_size(image, whole)
    except BadImage as exc:
        return str(exc)
    return None


class _ImageChecks:
    """Image entities wait here while their source files are decoded in a few threads.

    Each source file is checked once however many regions cut it (scene graphs: dozens of
    objects per photo); Pillow releases the GIL while decoding, so the loader reads on. Settled
    entities are spooled with their source image's size, or rejected naming their row.
    """

    def __init__(self, checked: _Validation, max_pixels: int, threads: int = IMAGE_CHECK_THREADS):
        self._checked = checked
        self._max_pixels = max_pixels
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kclip-image-check")
        self._results: dict[Path, Future] = {}
        self._in_flight: deque[Future] = deque()
        self._waiting: deque[Entity] = deque()

    def check(self, entity: Entity) -> None:
        path = entity.image.path
        if path not in self._results:
            future = self._pool.submit(_checked_image, path, self._max_pixels)
            self._results[path] = future
            self._in_flight.append(future)
        self._waiting.append(entity)
        while len(self._in_flight) > IMAGES_IN_FLIGHT:  # back-pressure: wait for the oldest image
            self._in_flight.popleft().result()
        self.settle()

    def settle(self, wait: bool = False) -> None:
        """Spool or reject, in input order, the waiting entities whose image is checked; ``wait``
        (at the end of the input) blocks until every one is."""
        while self._in_flight and self._in_flight[0].done():
            self._in_flight.popleft()
        while self._waiting and (wait or self._results[self._waiting[0].image.path].done()):
            self._settle_one(self._waiting.popleft())

    def _settle_one(self, entity: Entity) -> None:
        whole = self._results[entity.image.path].result()
        problem = str(whole) if isinstance(whole, BadImage) else _box_problem(entity.image, whole)
        if problem is not None:
            self._checked.reject("entities", entity.source, problem)
            self._checked.bad_entities.add(entity.id)
            return
        # The image as a plain (path, box) tuple: a pydantic model costs ~4x more to pickle into
        # the spool and back (~1.5 s of a 1,000-photo scene-graph load).
        image = (str(entity.image.path), entity.image.box)
        self._checked.entities.append((entity.id, entity_properties(entity), image, whole))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _check_relation(checked: _Validation, relation: Relation) -> None:
    known = checked.relations.get(relation.name)
    if known is not None and known.text != relation.text and known.source is not None:
        checked.reject("relations", relation.source,
                       f"relation {relation.name!r} is defined again with different text (first at {known.source})")
        return
    checked.relations[relation.name] = relation


def _check_triplet(checked: _Validation, triplet: Triplet) -> None:
    for entity_id in (triplet.head, triplet.tail):
        if entity_id not in checked.entity_seen:
            checked.pending[entity_id].append(triplet.source)
    if triplet.relation not in checked.relations:
        checked.relations[triplet.relation] = Relation.named(triplet.kg, triplet.relation)
    # A plain tuple for the source: it equals the SourceRef in checked.bad and pickles far faster.
    checked.triplets.append((triplet.head, triplet.relation, triplet.tail, triplet.split, tuple(triplet.source)))


def _resolve_pending(store: GraphStore, kg: str, checked: _Validation) -> None:
    """Entities used by triplets but not (yet) seen: defined later in the input, or already in the KG."""
    unknown = [e for e in checked.pending if e not in checked.entity_seen]
    missing: set[str] = set()
    for start in range(0, len(unknown), 10_000):
        chunk = unknown[start:start + 10_000]
        found = store.existing_entities(kg, chunk)
        checked.existing_nodes.update(found)
        missing |= set(chunk) - found.keys()
    for entity_id in sorted(missing):
        for source in checked.pending[entity_id]:
            checked.reject("triplets", source,
                           f"unknown entity {entity_id!r}: not defined in the input nor in KG {kg!r}")
    checked.pending.clear()


def _reject_triplets_of_bad_entities(checked: _Validation, tmp: Path) -> None:
    """Triplets spooled before their entity's image was found bad: rejected too, naming their row."""
    kept = _Spool(tmp, "triplets-kept")
    for row in checked.triplets:
        head, _, tail, _, source = row
        bad = next((e for e in (head, tail) if e in checked.bad_entities), None)
        if bad is not None:
            checked.reject("triplets", SourceRef(*source), f"entity {bad!r} was rejected (its image is bad)")
        else:
            kept.append(row)
    checked.triplets = kept


def _write_rejects(checked: _Validation, path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["file", "line", "problem"])
        for err in checked.errors:
            writer.writerow([err.path, err.line if err.line is not None else "", err.problem])
    return path


# -- pass 2 ------------------------------------------------------------------------------------

class _ParallelWriter:
    """Batches written by a few threads, a bounded number in flight: Neo4j then uses more than one
    core, while this thread prepares the next batches. ``drain()`` waits for all and re-raises."""

    def __init__(self, threads: int = WRITER_THREADS, in_flight: int = 2 * WRITER_THREADS):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kclip-writer")
        self._in_flight = in_flight
        self._futures: list[Future] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        while len(self._futures) >= self._in_flight:
            self._futures.pop(0).result()
        self._futures.append(self._pool.submit(fn, *args))

    def drain(self) -> None:
        while self._futures:
            self._futures.pop(0).result()

    def __enter__(self) -> "_ParallelWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _EntityWrites:
    """Entity rows (as pass 1 checked them) written in batches by the writer threads, images put
    in the media store on the way; collects each entity's node element id for the triplets.

    Pass 2 feeds it the spooled batches; for a new KG, pass 1 appends rows one by one instead."""

    def __init__(self, store: GraphStore, kg: str, media: MediaStore, summary: LoadSummary, writer: _ParallelWriter,
                 fresh: bool):
        self._store, self._kg, self._summary, self._writer = store, kg, summary, writer
        self._fresh = fresh  # no entity of the KG existed before: CREATE instead of MERGE
        self.stored = _StoredSources(media)
        self.nodes: dict[str, str] = {}
        self.lock = threading.Lock()  # writer threads add to nodes and the summary
        self.on_written: Callable[[int], None] | None = None
        self.count = 0  # rows appended
        self._batch: list = []

    def append(self, row: tuple) -> None:
        self._batch.append(row)
        self.count += 1
        if len(self._batch) >= ENTITY_BATCH:
            self.submit(self._batch)
            self._batch = []

    def submit(self, batch: list) -> None:
        self._writer.submit(self._write, batch)

    def cancel(self) -> None:
        """Write nothing more; wait for the batches in flight (their errors no longer matter)."""
        self._batch = []
        try:
            self._writer.drain()
        except Exception:
            pass

    def finish(self) -> None:
        """Write what is left and wait for every batch (re-raising a failed one)."""
        if self._batch:
            self.submit(self._batch)
            self._batch = []
        self._writer.drain()

    def _write(self, batch: list) -> None:
        # Images are stored here, in the writer threads: reading and hashing them in parallel
        # with the other batches' Neo4j writes (hashlib releases the GIL).
        rows = [_entity_row(e, props, image, whole, self.stored) for e, props, image, whole in batch]
        counts, written = self._store.write_entities(self._kg, rows, fresh=self._fresh)
        with self.lock:
            self.nodes.update(written)
            self._summary.entities.record(counts)
            if self.on_written is not None:
                self.on_written(len(rows))


def _discard_new_kg(store: GraphStore, media: MediaStore, kg: str, entities: _EntityWrites) -> None:
    """Undo a new KG's load that will not finish (refused, failed, interrupted): its graph and the
    media files it added that no other KG uses. The exception being raised stays the news; if the
    undoing fails too (Neo4j gone), one line says what is left and how to remove it."""
    entities.cancel()  # no batch may land after the drop
    try:
        created = entities.stored.created_keys()
        delete_media(media, created - store.media_keys_used_elsewhere(kg, created))
        store.drop_kg(kg)
    except Exception as exc:
        print(f"note: could not remove KG {kg!r}, written in part before the load stopped ({type(exc).__name__}): "
              f"`kclip drop --kg {kg} --yes` removes it; with good input, running the load again finishes it",
              file=sys.stderr)


def _write(store: GraphStore, kg: str, checked: _Validation, entities: _EntityWrites, writer: _ParallelWriter,
           summary: LoadSummary, progress: bool) -> None:
    store.ensure_kg(kg)
    fresh_triplets = not store.has_triplets(kg)
    rel_idx, counts = store.write_relations(kg, checked.relations.values())
    summary.relations.record(counts)
    summary.entities.present += checked.duplicate_entities
    if checked.entities is entities:  # a new KG's: written during pass 1
        entities.finish()
    else:
        with Progress(f"writing {kg} entities", total=checked.entities.count, unit="entities", enabled=progress) as bar:
            entities.on_written = bar.advance
            for batch in _batches(checked.entities, ENTITY_BATCH):
                entities.submit(batch)
            entities.finish()  # every triplet's ends must exist before the triplets go in
    store.touch_content(kg)
    nodes = {**checked.existing_nodes, **entities.nodes}
    counted = entities.lock
    with Progress(f"writing {kg} triplets", total=checked.triplets.count, unit="triplets", enabled=progress) as bar:
        def write_triplets(split: str, rows: list[list], n: int) -> None:
            counts = store.write_triplets(kg, rows, split, fresh=fresh_triplets)
            with counted:
                summary.triplets.record(counts)
                bar.advance(n)

        for batch in _batches(checked.triplets, TRIPLET_BATCH):
            by_split, repeated = _triplet_rows(batch, checked, rel_idx, nodes, fresh_triplets)
            with counted:
                summary.triplets.present += repeated
            for split, rows in by_split.items():
                writer.submit(write_triplets, split, rows, len(rows))
        writer.drain()


def _triplet_rows(batch: list, checked: _Validation, rel_idx: dict[str, int], nodes: dict[str, str],
                  dedupe: bool) -> tuple[dict[str, list[list]], int]:
    """A spool batch as write_triplets rows by split, leaving out rejected and repeated rows
    (returned with the number of repeats)."""
    by_split: dict[str, list[list]] = defaultdict(list)
    repeated = 0
    for head, relation, tail, split, source in batch:
        if source in checked.bad:
            continue
        if dedupe:
            # Dropping in-input duplicates is what lets a fresh KG use CREATE. A 64-bit hash keeps
            # memory small; a collision (p ~ n^2 / 2^65) would drop one row.
            key = hash((head, relation, tail, split))
            if key in checked.triplet_keys:
                repeated += 1
                continue
            checked.triplet_keys.add(key)
        by_split[split].append([nodes[head], rel_idx[relation], nodes[tail]])
    return by_split, repeated


class _StoredSources:
    """Source image files put in the media store once per load, however many entities cut them."""

    def __init__(self, media: MediaStore):
        self._media = media
        self._stored: dict[str, StoredImage] = {}
        self._created: set[str] = set()  # keys of files this load added to the store
        self._lock = threading.Lock()

    def put(self, path: str, info: ImageInfo) -> StoredImage:
        with self._lock:
            known = self._stored.get(path)
        if known is None:
            # Two writer threads may store the same file at once: harmless, the key is its hash.
            known = self._media.put_file(Path(path), info)
            with self._lock:
                self._stored[path] = known
                if known.created:
                    self._created.add(known.key)
        return known

    def created_keys(self) -> set[str]:
        with self._lock:
            return set(self._created)


def _entity_row(entity_id: str, props: dict, image: tuple[str, tuple[int, int, int, int] | None] | None,
                whole: ImageInfo | None, stored: _StoredSources) -> dict:
    """A ``write_entities`` row; ``image`` is the spooled (source path, box or None)."""
    if image is not None:
        path, box = image
        source = stored.put(path, whole)
        props = {**props, "image": source.key}
        if box is None:
            props.update(image_width=source.width, image_height=source.height)
        else:  # a region: a reference to the source image and its box, cut when read
            props.update(image_box=list(box), image_width=box[2], image_height=box[3])
    return {"id": entity_id, "props": props}


def _batches(rows, size: int) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

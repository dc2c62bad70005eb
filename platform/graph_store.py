"""The graph store: kclip's typed API over Neo4j. Cypher text lives in ``cypher.py``.

The driver is passed in; every call names its database. Writes are ``UNWIND`` batches in one
transaction each, so a batch lands whole or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, TypeVar

import neo4j
import numpy as np
from neo4j.exceptions import Neo4jError, TransientError

from kclip.platform import cypher
from kclip.platform.errors import GraphStoreError, NotFoundError
from kclip.platform.records import CAPTION_OF, IMAGE_OF, SPLITS, Entity, Relation

T = TypeVar("T")


@dataclass
class WriteCounts:
    added: int = 0
    present: int = 0

    def __iadd__(self, other: "WriteCounts") -> "WriteCounts":
        self.added += other.added
        self.present += other.present
        return self


@dataclass
class KGStats:
    kg: str
    entities: dict[str, int] = field(default_factory=dict)  # by modality
    relations: int = 0
    triplets: dict[str, int] = field(default_factory=dict)  # by split

    @property
    def total_entities(self) -> int:
        return sum(self.entities.values())

    @property
    def total_triplets(self) -> int:
        return sum(self.triplets.values())


@dataclass(frozen=True)
class RelationRow:
    idx: int
    name: str
    text: str


@dataclass(frozen=True)
class EntityRow:
    idx: int
    id: str
    modality: str
    text: str | None
    image: str | None  # media store key
    image_box: tuple[int, int, int, int] | None = None  # a region of that image (x, y, w, h)


@dataclass(frozen=True)
class SearchPage:
    """A page of a KG's entities matching a search (``GraphStore.search_entities``), and how many match in all."""

    hits: list[tuple[EntityRow, float]]  # (entity, Lucene score), best first
    total: int  # matches in the whole KG
    skip: int  # matches before this page
    words: int  # words searched
    given: int  # words given: more than ``words`` when the search was cut (``note``)

    @property
    def note(self) -> str | None:
        """Why some words were not searched, when some were not."""
        if self.given <= self.words:
            return None
        return (f"searched the first {self.words} of {self.given:,} words "
                f"(a search takes at most {cypher.MAX_SEARCH_WORDS})")


@dataclass(frozen=True)
class EntityDetail:
    entity: EntityRow
    attributes: dict
    image_size: tuple[int, int] | None


@dataclass(frozen=True)
class Edge:
    """A triplet seen from one entity: ``outgoing`` when the entity is its head."""

    outgoing: bool
    relation: str
    split: str
    other: EntityRow


@dataclass(frozen=True)
class EdgeCount:
    """How many triplets of one entity share a direction and a relation (the whole group, never a page)."""

    outgoing: bool
    relation: str
    count: int


@dataclass(frozen=True)
class Expansion:
    """A page of one entity's triplets (``edges``) and how many pass the same filters in all (``total``)."""

    entity: str
    total: int
    edges: tuple[Edge, ...]


@dataclass(frozen=True)
class TripletArrays:
    """All triplets of one split as parallel int64 arrays, sorted by (head, rel, tail)."""

    heads: np.ndarray
    rels: np.ndarray
    tails: np.ndarray

    def __len__(self) -> int:
        return int(self.heads.shape[0])


@dataclass(frozen=True)
class Neighbourhood:
    """Sampled edges around a frontier: edge i joins ``nodes[i]`` and ``others[i]`` by ``rels[i]``."""

    nodes: np.ndarray
    rels: np.ndarray
    others: np.ndarray
    outgoing: np.ndarray  # bool: the edge points from nodes[i] to others[i]


@dataclass
class Finding:
    """One kind of problem ``verify`` looks for: how many, and a few examples."""

    count: int = 0
    examples: list[dict] = field(default_factory=list)


@dataclass
class TripletChecks:
    """The triplet problems of a KG (``GraphStore.verify``); counts are triplets (copies, for duplicates)."""

    duplicates: Finding = field(default_factory=Finding)  # same head, relation, tail and split again
    leaked: Finding = field(default_factory=Finding)  # dev/test triplets that are in train too
    cross_kg: Finding = field(default_factory=Finding)  # joining an entity of another KG (or a non-entity)
    unknown_relations: Finding = field(default_factory=Finding)  # rel idx with no Relation node in the KG


@dataclass(frozen=True)
class EmbeddingOrigin:
    """Which run wrote a KG's embeddings (``kclip embed``): its name and checkpoint step, the
    vectors' dimension, and the KG's content version then (a later load changes it)."""

    run: str
    step: int
    dimensions: int
    content_version: str | None
    embedded_at: str | None = None  # ISO time, as Neo4j wrote it


def entity_properties(entity: Entity) -> dict:
    """The node properties of an entity, but its image's (set once the media store holds it)."""
    props: dict = {"modality": entity.modality}
    if entity.text is not None:
        props["text"] = entity.text
    if entity.attributes:
        # Neo4j properties cannot nest; attributes round-trip as one JSON string.
        props["attributes"] = json.dumps(entity.attributes, ensure_ascii=False, sort_keys=True)
    return props


class GraphStore:
    """kclip's queries over one Neo4j database.

    ``read_only=True`` (the explorer's store) runs every query in a read-access transaction, so
    Neo4j itself refuses any write, whatever the Cypher; the write helpers refuse before sending.
    """

    def __init__(self, driver: neo4j.Driver, database: str = "neo4j", read_only: bool = False):
        self.driver = driver
        self.database = database
        self.read_only = read_only

    # -- plumbing ----------------------------------------------------------------------------

    def run(self, cypher_text: str, /, **params) -> list[neo4j.Record]:
        """Run a read or schema query in an auto-commit transaction and return all records."""
        try:
            records, _, _ = self.driver.execute_query(cypher_text, params, database_=self.database,
                                                      routing_=self._routing)
        except TransientError:
            raise  # a restart or a deadlock: callers such as with_reconnect retry these
        except Neo4jError as exc:
            raise GraphStoreError(f"Neo4j query failed: {exc.message or exc}") from exc
        return records

    @property
    def _routing(self) -> neo4j.RoutingControl:
        return neo4j.RoutingControl.READ if self.read_only else neo4j.RoutingControl.WRITE

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise GraphStoreError("this connection to Neo4j is read-only (the explorer never writes)")

    def _write(self, cypher_text: str, /, **params) -> neo4j.ResultSummary:
        return self._write_tx(lambda tx: tx.run(cypher_text, params).consume())

    def _write_tx(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        """Run ``work`` in a write transaction, retried by the driver on transient errors (deadlocks)."""
        self._refuse_if_read_only()
        try:
            with self.driver.session(database=self.database) as session:
                return session.execute_write(work)
        except TransientError:
            raise
        except Neo4jError as exc:
            raise GraphStoreError(f"Neo4j write failed: {exc.message or exc}") from exc

    # -- schema and KGs ----------------------------------------------------------------------

    def ensure_schema(self, wait_seconds: int = 300) -> None:
        """Constraints and indexes, created if missing; a database of an older kclip is brought up
        to date on the way (its full-text index rebuilt, its entities given ``kg_key``)."""
        self._drop_outdated_search_index()
        for statement in cypher.SCHEMA:
            self.run(statement)
        self.run(cypher.AWAIT_INDEXES, seconds=wait_seconds)
        self.backfill_search_keys()

    def ensure_kg(self, kg: str) -> None:
        self._write(cypher.ENSURE_KG, kg=kg, kg_key=cypher.search_key(kg))

    def touch_content(self, kg: str) -> None:
        """Mark the KG's entity content as changed (every load does, once its entities are written)."""
        self._write(cypher.TOUCH_KG_CONTENT, kg=kg)

    def content_version(self, kg: str) -> str | None:
        """Changes whenever a load writes entities; None for a KG loaded before versions existed."""
        rows = self.run(cypher.KG_CONTENT_VERSION, kg=kg)
        return rows[0]["version"] if rows else None

    def list_kgs(self) -> list[str]:
        return [r["name"] for r in self.run(cypher.LIST_KGS)]

    def require_kg(self, kg: str) -> None:
        if kg not in self.list_kgs():
            known = ", ".join(self.list_kgs()) or "none yet"
            raise NotFoundError(f"no KG named {kg!r} in Neo4j (known: {known}); load one with `kclip load`.")

    def has_entities(self, kg: str) -> bool:
        return bool(self.run(cypher.KG_HAS_ENTITIES, kg=kg))

    def has_triplets(self, kg: str) -> bool:
        return bool(self.run(cypher.KG_HAS_TRIPLETS, kg=kg))

    def drop_kg(self, kg: str, on_progress: Callable[[int], None] | None = None, slice_size: int = 20_000) -> None:
        """Delete a KG, everything in it and its vector index, in bounded transactions.

        Entities go a slice of idx at a time, their triplets first; ``on_progress`` receives the
        number of entities deleted after each slice. Interrupted, running it again finishes the job.
        """
        first, last, _ = self.entity_idx_range(kg)
        try:
            for lo in range(first, last + 1, slice_size):
                bounds = {"kg": kg, "lo": lo, "hi": lo + slice_size}
                self._auto_commit(cypher.DELETE_KG_TRIPLETS, **bounds)
                deleted = self._auto_commit(cypher.DELETE_KG_NODES, **bounds)[1].counters.nodes_deleted
                if on_progress is not None:
                    on_progress(deleted)
            self._auto_commit(cypher.DELETE_KG_RELATIONS, kg=kg)
            self._auto_commit(cypher.DELETE_KG, kg=kg)
        except Neo4jError as exc:
            raise GraphStoreError(f"dropping KG {kg!r} failed: {exc.message or exc}") from exc
        self.run(cypher.with_names(cypher.DROP_INDEX, index=cypher.embedding_index(kg)))

    def _auto_commit(self, cypher_text: str, /, timeout: float | None = None,
                     **params) -> tuple[list[neo4j.Record], neo4j.ResultSummary]:
        """One auto-commit query, never retried by the driver: CALL { } IN TRANSACTIONS needs one
        (a managed transaction cannot), and lock heartbeats use one to fail fast when Neo4j is gone.
        ``timeout`` is a server-side limit in seconds."""
        self._refuse_if_read_only()
        with self.driver.session(database=self.database) as session:
            result = session.run(neo4j.Query(cypher_text, timeout=timeout), params)
            return list(result), result.consume()

    # -- management: media references, split overlap, verification ---------------------------

    def media_keys(self, kg: str) -> set[str]:
        """Every media store key the KG's entities reference (``cypher.MEDIA_KEY_PROPERTIES``)."""
        rows = self.run(cypher.KG_MEDIA_KEYS, kg=kg, properties=cypher.MEDIA_KEY_PROPERTIES)
        return set(rows[0]["keys"])

    def media_keys_used_elsewhere(self, kg: str, keys: Iterable[str], chunk: int = 100_000) -> set[str]:
        """Those of ``keys`` that an entity of another KG references too."""
        keys, used = sorted(keys), set()
        for start in range(0, len(keys), chunk):
            rows = self.run(cypher.MEDIA_KEYS_USED_ELSEWHERE, kg=kg, keys=keys[start:start + chunk],
                            properties=cypher.MEDIA_KEY_PROPERTIES)
            used.update(rows[0]["keys"])
        return used

    def split_overlap(self, kg: str) -> dict[str, int]:
        """How many triplets of each split but train also appear in train (leakage), e.g.
        ``{"dev": 0, "test": 3}``. One pass over the KG's edges: about a second on WN18RR."""
        counts = {r["split"]: r["n"] for r in self.run(cypher.SPLIT_OVERLAP, kg=kg, train=SPLITS[0])}
        return {split: counts.get(split, 0) for split in SPLITS[1:]} | counts

    def verify(self, kg: str, examples: int = 5, on_progress: Callable[[int], None] | None = None,
               slice_size: int = 20_000) -> TripletChecks:
        """Duplicate, leaked and dangling triplets (``TripletChecks``), read a slice of head idx at a
        time; ``on_progress`` receives the width of each slice done, in entity idx (the total is
        the KG's idx span, ``entity_idx_range``)."""
        names = {r.idx: r.name for r in self.relations(kg)}
        first, last, _ = self.entity_idx_range(kg)
        checks = TripletChecks()
        for lo in range(first, last + 1, slice_size):
            row = self.run(cypher.VERIFY_TRIPLET_SLICE, kg=kg, lo=lo, hi=lo + slice_size, rels=list(names),
                           train=SPLITS[0], k=examples)[0]
            for kind, finding in vars(checks).items():
                finding.count += row[kind]
                room = examples - len(finding.examples)
                finding.examples += [_triplet_example(kg, e, names) for e in row[f"{kind}_examples"][:room]]
            if on_progress is not None:
                on_progress(min(slice_size, last + 1 - lo))
        return checks

    # -- writes ------------------------------------------------------------------------------

    def write_entities(self, kg: str, rows: Sequence[dict], fresh: bool = False) -> tuple[WriteCounts, dict[str, str]]:
        """Rows are ``{"id": str, "props": dict}``; ``fresh`` promises none exists yet (faster CREATE).

        Returns the counts and each entity's node element id, by entity id, for ``write_triplets``.
        """
        if not rows:
            return WriteCounts(), {}
        base = self.run(cypher.RESERVE_ENTITY_IDX, kg=kg, n=len(rows))[0]["base"]
        params = {"kg": kg, "kg_key": cypher.search_key(kg), "base": base,
                  "rows": [{"id": r["id"], "ord": i, "props": r["props"]} for i, r in enumerate(rows)]}

        def work(tx: neo4j.ManagedTransaction):
            # One record of two lists: a record per row costs the driver more than Neo4j's writes.
            result = tx.run(cypher.CREATE_ENTITIES if fresh else cypher.MERGE_ENTITIES, params)
            record = result.single(strict=True)
            nodes = {rows[o]["id"]: node for o, node in zip(record["ords"], record["nodes"])}
            return nodes, result.consume().counters.nodes_created

        nodes, created = self._write_tx(work)
        return WriteCounts(added=created, present=len(rows) - created), nodes

    def write_relations(self, kg: str, relations: Iterable[Relation]) -> tuple[dict[str, int], WriteCounts]:
        """Create or update relations; returns every given relation's idx by name, and counts."""
        rows = [{"name": r.name, "text": r.text, "ord": i} for i, r in enumerate(relations)]
        if not rows:
            return {}, WriteCounts()

        def work(tx: neo4j.ManagedTransaction):
            result = tx.run(cypher.MERGE_RELATIONS, kg=kg, rows=rows)
            idx = {r["name"]: r["idx"] for r in result}
            return idx, result.consume().counters.nodes_created

        idx, created = self._write_tx(work)
        return idx, WriteCounts(added=created, present=len(rows) - created)

    def write_triplets(self, kg: str, rows: Sequence[list], split: str, fresh: bool = False) -> WriteCounts:
        """Rows are ``[head node, relation idx, tail node]`` of one split, nodes as ``write_entities`` returns them."""
        if not rows:
            return WriteCounts()
        query = cypher.CREATE_TRIPLETS if fresh else cypher.MERGE_TRIPLETS
        created = self._write(query, kg=kg, rows=list(rows), split=split).counters.relationships_created
        return WriteCounts(added=created, present=len(rows) - created)

    def existing_entities(self, kg: str, ids: Sequence[str]) -> dict[str, str]:
        """The node element id of each of ``ids`` that exists in the KG."""
        return {r["id"]: r["node"] for r in self.run(cypher.EXISTING_ENTITY_IDS, kg=kg, ids=list(ids))}

    # -- reads -------------------------------------------------------------------------------

    def stats(self, kg: str) -> KGStats:
        stats = KGStats(kg=kg)
        stats.entities = self.entity_counts(kg)
        stats.relations = self.run(cypher.RELATION_COUNT, kg=kg)[0]["n"]
        counts = {r["split"]: r["n"] for r in self.run(cypher.TRIPLET_COUNTS, kg=kg)}
        stats.triplets = {s: counts.get(s, 0) for s in SPLITS}
        return stats

    def entity_counts(self, kg: str) -> dict[str, int]:
        """{modality: number of entities} of the KG (one index read; ``stats`` also counts triplets)."""
        return {r["modality"]: r["n"] for r in self.run(cypher.ENTITY_COUNTS, kg=kg)}

    def relations(self, kg: str) -> list[RelationRow]:
        return [RelationRow(r["idx"], r["name"], r["text"]) for r in self.run(cypher.RELATIONS, kg=kg)]

    # -- sampler reads -----------------------------------------------------------------------

    def triplet_arrays(self, kg: str, split: str, slice_size: int = 50_000) -> TripletArrays:
        """Every triplet of ``split``, read in slices of head idx, sorted for a deterministic order."""
        first, last, count = self.entity_idx_range(kg)
        parts: list[tuple[list, list, list]] = []
        if count:
            for lo in range(first, last + 1, slice_size):
                r = self.run(cypher.TRIPLET_SLICE, kg=kg, split=split, lo=lo, hi=lo + slice_size)[0]
                parts.append((r["heads"], r["rels"], r["tails"]))
        arrays = [np.concatenate([np.asarray(p[k], dtype=np.int64) for p in parts] or [np.zeros(0, np.int64)])
                  for k in range(3)]
        order = np.lexsort((arrays[2], arrays[1], arrays[0]))
        return TripletArrays(*(a[order] for a in arrays))

    def entity_content(self, kg: str, idxs: Sequence[int]) -> list[EntityRow]:
        rows = self.run(cypher.ENTITY_CONTENT, kg=kg, idxs=[int(i) for i in idxs])[0]["rows"]
        return [EntityRow(*row[:5], _box(row[5])) for row in rows]

    def entities_page(self, kg: str, lo: int, hi: int) -> list[EntityRow]:
        """Entities with ``lo <= idx < hi``, in idx order (for embedding a whole KG)."""
        return [_entity_row(r) for r in self.run(cypher.ENTITIES_PAGE, kg=kg, lo=lo, hi=hi)]

    def image_text_pairs(self, kg: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """(image idx, caption idx) of the split's 'image of' and 'caption of' triplets, each pair once."""
        by_name = {r.name: r.idx for r in self.relations(kg)}
        t = self.triplet_arrays(kg, split) if IMAGE_OF in by_name or CAPTION_OF in by_name else None
        if t is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        image_of, caption_of = t.rels == by_name.get(IMAGE_OF, -1), t.rels == by_name.get(CAPTION_OF, -1)
        pairs = np.unique(np.stack([np.concatenate([t.heads[image_of], t.tails[caption_of]]),
                                    np.concatenate([t.tails[image_of], t.heads[caption_of]])], axis=1), axis=0)
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    def entity_idx_range(self, kg: str) -> tuple[int, int, int]:
        """(lowest idx, highest idx, count) of the KG's entities; (0, -1, 0) when empty."""
        r = self.run(cypher.ENTITY_IDX_RANGE, kg=kg)[0]
        return (r["lo"], r["hi"], r["n"]) if r["n"] else (0, -1, 0)

    def neighbours(self, kg: str, frontier: Sequence[int], fanout: int, salt: int,
                   splits: Sequence[str] = ("train",)) -> Neighbourhood:
        """Up to ``fanout`` incident triplets per frontier node, sampled deterministically from ``salt``."""
        r = self.run(cypher.NEIGHBOURS, kg=kg, frontier=[int(i) for i in frontier], fanout=fanout,
                     salt=int(salt) % 2147483647, splits=list(splits))[0]
        return Neighbourhood(np.asarray(r["nodes"], dtype=np.int64), np.asarray(r["rels"], dtype=np.int64),
                             np.asarray(r["others"], dtype=np.int64), np.asarray(r["outgoing"], dtype=bool))

    # -- exploration -------------------------------------------------------------------------

    def search_entities(self, kg: str, text: str, limit: int = 20, skip: int = 0) -> SearchPage:
        """The KG's entities matching ``text`` (every word, in text or id; the last one as the start
        of a word too: ``cypher.search_query``), the page ``skip .. skip + limit`` of them, those
        matching the last word whole first, then by score (ties: shorter text first, where at most
        ``cypher.SORTED_SEARCH_MAX`` match); with the number of matches in all.

        Raises ``GraphStoreError`` when nothing matches because the database was written by an
        older kclip and is not searchable yet (``search_ready``)."""
        if limit < 1 or skip < 0:
            raise ValueError(f"limit must be >= 1 and skip >= 0 (got limit={limit}, skip={skip})")
        query = cypher.search_query(kg, text)
        if query is None:
            return SearchPage([], 0, skip, 0, 0)
        row = self.run(cypher.SEARCH_ENTITIES, index=cypher.SEARCH_INDEX, exact=query.exact, prefix=query.prefix,
                       skip=skip, limit=limit, sort_max=cypher.SORTED_SEARCH_MAX)[0]
        if not row["total"] and not self.search_ready(kg):
            raise GraphStoreError(f"KG {kg!r} cannot be searched yet: Neo4j's search index predates this kclip. "
                                  f"`kclip search WORD --kg {kg}` (or any `kclip load`) updates it, once.")
        hits = [(EntityRow(*h[:5], _box(h[5])), h[6]) for h in row["page"]]
        return SearchPage(hits, row["total"], skip, query.words, query.given)

    def search_ready(self, kg: str) -> bool:
        """Whether a search of the KG finds everything: the full-text index is this kclip's, and
        the KG's entities carry ``kg_key`` (False in a database of an older kclip until ``ensure_schema``)."""
        info = self.run(cypher.SEARCH_INDEX_INFO, name=cypher.SEARCH_INDEX)
        key = self.run(cypher.KG_SEARCH_KEY, kg=kg)
        return bool(info) and _is_current_search_index(info[0]) and (not key or key[0]["key"] is not None)

    def backfill_search_keys(self) -> list[str]:
        """Give ``kg_key`` to the entities of the KGs an older kclip created, in batched transactions
        (idempotent: a run cut short is finished by the next); returns those KGs' names."""
        kgs = [r["name"] for r in self.run(cypher.KGS_WITHOUT_SEARCH_KEY)]
        for kg in kgs:
            key = cypher.search_key(kg)
            self._run_once(cypher.BACKFILL_SEARCH_KEY, None, kg=kg, kg_key=key)
            self._write(cypher.SET_SEARCH_KEY, kg=kg, kg_key=key)
        return kgs

    def _drop_outdated_search_index(self) -> None:
        """Drop the full-text index when an older kclip defined it (``ensure_schema`` then builds it anew)."""
        info = self.run(cypher.SEARCH_INDEX_INFO, name=cypher.SEARCH_INDEX)
        if info and not _is_current_search_index(info[0]):
            self.run(cypher.with_names(cypher.DROP_INDEX, index=cypher.SEARCH_INDEX))

    def entity(self, kg: str, entity_id: str) -> EntityDetail:
        rows = self.run(cypher.ENTITY_BY_ID, kg=kg, id=entity_id)
        if not rows:
            raise NotFoundError(f"no entity {entity_id!r} in KG {kg!r}")
        r = rows[0]
        size = (r["image_width"], r["image_height"]) if r["image_width"] is not None else None
        return EntityDetail(_entity_row(r), json.loads(r["attributes"]) if r["attributes"] else {}, size)

    def entity_triplets(self, kg: str, entity_id: str, limit: int = 100) -> list[Edge]:
        """Triplets touching an entity, with the relation's name and the entity at the other end."""
        rows = self.run(cypher.ENTITY_TRIPLETS, kg=kg, id=entity_id, limit=limit)
        return [Edge(r["outgoing"], r["relation"], r["split"], _entity_row(r)) for r in rows]

    def entity_edge_counts(self, kg: str, entity_id: str) -> list[EdgeCount]:
        """The entity's triplets counted by (direction, relation): outgoing first, relations by name."""
        rows = self.run(cypher.ENTITY_EDGE_COUNTS, kg=kg, id=entity_id)
        return [EdgeCount(r["outgoing"], r["relation"], r["n"]) for r in rows]

    def entity_edges(self, kg: str, entity_id: str, relation: str | None = None, outgoing: bool | None = None,
                     skip: int = 0, limit: int = 24) -> list[Edge]:
        """One page of the entity's triplets, optionally of one relation and one direction; [] for no such entity."""
        found = self.expand(kg, [entity_id], None if relation is None else [relation], outgoing, skip, limit)
        return list(found[0].edges) if found else []

    def expand(self, kg: str, entity_ids: Sequence[str], relations: Sequence[str] | None = None,
               outgoing: bool | None = None, skip: int = 0, limit: int = 100) -> list[Expansion]:
        """A page of the triplets of each entity in ``entity_ids`` (one round trip), in their order.

        ``relations`` (names) and ``outgoing`` filter; None means all. Pages follow a fixed order
        (direction, relation, neighbour idx, split), so ``skip=limit`` gives the next one. Ids not
        in the KG are left out.
        """
        rows = self.run(cypher.EXPAND_ENTITIES, kg=kg, ids=list(entity_ids), skip=skip, limit=limit,
                        relations=None if relations is None else list(relations), outgoing=outgoing)
        return [Expansion(r["id"], r["total"], tuple(Edge(e["outgoing"], e["relation"], e["split"], _entity_row(e))
                                                     for e in r["edges"]))
                for r in rows]

    def sample_entities(self, kg: str, modalities: Sequence[str] = ("text", "image"), limit: int = 50) -> list[EntityRow]:
        return [_entity_row(r) for r in self.run(cypher.SAMPLE_ENTITIES, kg=kg, modalities=list(modalities), limit=limit)]

    # -- embeddings --------------------------------------------------------------------------

    def write_embeddings(self, kg: str, idxs: Sequence[int], vectors: np.ndarray) -> None:
        rows = [[int(i), [float(x) for x in v]] for i, v in zip(idxs, vectors)]
        self._write(cypher.with_names(cypher.SET_EMBEDDINGS, label=cypher.embedding_label(kg)), kg=kg, rows=rows)

    def ensure_vector_index(self, kg: str, dimensions: int) -> None:
        """A cosine vector index over the KG's embeddings, rebuilt if its dimension changed."""
        name = cypher.embedding_index(kg)
        info = self.run(cypher.VECTOR_INDEX_INFO, name=name)
        if info and info[0]["options"]["indexConfig"].get("vector.dimensions") != dimensions:
            self.run(cypher.with_names(cypher.DROP_INDEX, index=name))
        query = cypher.with_names(cypher.CREATE_VECTOR_INDEX, index=name, label=cypher.embedding_label(kg))
        self.run(query, dimensions=dimensions)
        self.run(cypher.AWAIT_INDEXES, seconds=300)

    def vector_index_dimensions(self, kg: str) -> int | None:
        """The dimension of the KG's vector index; None when it has none (``kclip embed`` never ran)."""
        info = self.run(cypher.VECTOR_INDEX_INFO, name=cypher.embedding_index(kg))
        return int(info[0]["options"]["indexConfig"]["vector.dimensions"]) if info else None

    def similar_entities(self, kg: str, entity_id: str, k: int = 10) -> list[tuple[EntityRow, float]]:
        """Nearest entities by embedding, best first; ``NotFoundError`` before ``kclip embed`` ran for the KG."""
        index = cypher.embedding_index(kg)
        if not self.run(cypher.VECTOR_INDEX_INFO, name=index):
            raise NotFoundError(f"KG {kg!r} has no embeddings yet; run `kclip embed --run RUN --kg {kg}`")
        rows = self.run(cypher.SIMILAR_ENTITIES, kg=kg, id=entity_id, k=k, index=index)
        return [(_entity_row(r), r["score"]) for r in rows]

    # -- embeddings read back: origin, bulk vectors, search by vector (Predict, Neighbours) ---

    def record_embedding_origin(self, kg: str, origin: EmbeddingOrigin) -> None:
        self._write(cypher.SET_EMBEDDING_ORIGIN, kg=kg, run=origin.run, step=origin.step,
                    dimensions=origin.dimensions, content_version=origin.content_version)

    def clear_embedding_origin(self, kg: str) -> None:
        self._write(cypher.CLEAR_EMBEDDING_ORIGIN, kg=kg)

    def embedding_origin(self, kg: str) -> EmbeddingOrigin | None:
        """The run that wrote the KG's embeddings; None when none did, or one did not say (an older kclip)."""
        rows = self.run(cypher.EMBEDDING_ORIGIN, kg=kg)
        return EmbeddingOrigin(**rows[0].data()) if rows else None

    def embedding_vectors(self, kg: str, slice_size: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(idx (N,) int64 ascending, modality (N,), vectors (N, D) float32) of every embedded entity."""
        first, last, _ = self.entity_idx_range(kg)
        idx, modality, vectors = [], [], []
        for lo in range(first, last + 1, slice_size):
            r = self.run(cypher.EMBEDDING_SLICE, kg=kg, lo=lo, hi=lo + slice_size)[0]
            idx += r["idx"]
            modality += r["modality"]
            vectors += r["vectors"]
        order = np.argsort(np.asarray(idx, dtype=np.int64), kind="stable")
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(idx), -1)
        return np.asarray(idx, dtype=np.int64)[order], np.asarray(modality, dtype=object)[order], matrix[order]

    def entity_embedding(self, kg: str, entity_id: str) -> np.ndarray | None:
        """The entity's stored embedding; None when it has none (``NotFoundError`` when no such entity)."""
        rows = self.run(cypher.ENTITY_EMBEDDING, kg=kg, id=entity_id)
        if not rows:
            raise NotFoundError(f"no entity {entity_id!r} in KG {kg!r}")
        vector = rows[0]["vector"]
        return None if vector is None else np.asarray(vector, dtype=np.float32)

    def embedding_sample(self, kg: str, n: int = 200) -> np.ndarray:
        """(≤ n, D) embeddings of a fixed pseudo-random sample of the KG's embedded entities."""
        query = cypher.with_names(cypher.EMBEDDING_SAMPLE, label=cypher.embedding_label(kg))
        vectors = self.run(query, kg=kg, n=n)[0]["vectors"]
        return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)

    def nearest_by_vector(self, kg: str, vector: Sequence[float], k: int = 10, modality: str | None = None,
                          exclude: Sequence[str] = ()) -> list[tuple[EntityRow, float]]:
        """The ``k`` entities nearest to ``vector`` in the KG's vector index, as (row, cosine in
        [-1, 1]), best first; only ``modality`` ones when given, never those whose id is in ``exclude``.

        The filter applies inside the search: the index is asked for twice the candidates needed,
        then 4x more each round until k are kept or it has no more, so a rare modality is still
        found (in the worst case, the last round reads the whole index). Candidates are scored
        exactly. ``NotFoundError`` before ``kclip embed`` ran for the KG.
        """
        index = cypher.embedding_index(kg)
        if not self.run(cypher.VECTOR_INDEX_INFO, name=index):
            raise NotFoundError(f"KG {kg!r} has no embeddings yet; run `kclip embed --run RUN --kg {kg}`")
        params = {"index": index, "vector": [float(x) for x in vector], "k": k, "modality": modality,
                  "exclude": list(exclude)}
        n = 2 * (k + len(exclude))  # twice: the index's approximate top k may miss an exact one
        while True:
            r = self.run(cypher.NEAREST_BY_VECTOR, n=n, **params)[0]
            if len(r["hits"]) >= k or r["scanned"] < n:
                break
            n *= 4
        hits = sorted(r["hits"], key=lambda h: -h[6])
        return [(EntityRow(*h[:5], _box(h[5])), 2 * h[6] - 1) for h in hits]

    # -- evaluation and prediction -----------------------------------------------------------

    def swap_candidates(self, kg: str, split: str, in_image: str, limit: int = 5000) -> list[dict]:
        """Scene-graph relationships (subject text, predicate text, object text, image idx) for the swap test."""
        return [dict(r) for r in self.run(cypher.SWAP_CANDIDATES, kg=kg, split=split, in_image=in_image, limit=limit)]

    def known_tails(self, kg: str, head_id: str, rel: int) -> set[int]:
        return {r["idx"] for r in self.run(cypher.KNOWN_TAILS, kg=kg, id=head_id, rel=rel)}

    def known_heads(self, kg: str, rel: int, tail_id: str) -> set[int]:
        return {r["idx"] for r in self.run(cypher.KNOWN_HEADS, kg=kg, id=tail_id, rel=rel)}

    def known_relations(self, kg: str, head_id: str, tail_id: str) -> set[int]:
        return {r["rel"] for r in self.run(cypher.KNOWN_RELATIONS, kg=kg, head=head_id, tail=tail_id)}

    # -- KG write locks (platform/kg_lock.py) ------------------------------------------------

    def ensure_lock_schema(self) -> None:
        """The uniqueness constraint that makes taking a KG's lock atomic (part of ``ensure_schema`` too)."""
        self.run(cypher.KG_LOCK_CONSTRAINT)

    def try_lock_kg(self, kg: str, token: str, owner: dict, dead_token: str = "") -> dict:
        """Take the KG's write lock for ``token`` if it is free, stale or held by ``dead_token``.

        ``owner`` holds host, machine, pid, command and ttl_ms. Returns the lock's state after
        the attempt: ``acquired`` and the holder's token, host, machine, pid, command, since, age_ms.
        """
        params = {"kg": kg, "token": token, "dead_token": dead_token, **owner}
        return self._write_tx(lambda tx: tx.run(cypher.TRY_LOCK_KG, params).single().data())

    def refresh_kg_lock(self, kg: str, token: str, timeout: float) -> bool:
        """Renew the heartbeat; False when the lock is no longer ``token``'s (it was taken over)."""
        return self._run_once(cypher.REFRESH_KG_LOCK, timeout, kg=kg, token=token)[0]["held"] > 0

    def release_kg_lock(self, kg: str, token: str, timeout: float) -> None:
        self._run_once(cypher.RELEASE_KG_LOCK, timeout, kg=kg, token=token)

    def _run_once(self, cypher_text: str, timeout: float, /, **params) -> list[neo4j.Record]:
        """``_auto_commit``'s records, a query failure as ``GraphStoreError``."""
        try:
            return self._auto_commit(cypher_text, timeout, **params)[0]
        except Neo4jError as exc:
            raise GraphStoreError(f"Neo4j query failed: {exc.message or exc}") from exc


def _is_current_search_index(info: neo4j.Record) -> bool:
    """Whether a ``SEARCH_INDEX_INFO`` row describes the full-text index this kclip defines."""
    return (info["labels"] == ["Entity"] and info["properties"] == cypher.SEARCH_PROPERTIES
            and info["analyzer"] == cypher.SEARCH_ANALYZER)


def _triplet_example(kg: str, example: list, relation_names: dict[int, str]) -> dict:
    """A VERIFY_TRIPLET_SLICE example, ``[head id, rel idx, tail id, splits, other end's KG]``, for people."""
    head, rel, tail, splits, other_kg = example
    found = {"head": head, "relation": relation_names.get(rel), "rel": rel, "tail": tail, "splits": sorted(splits)}
    return found if other_kg == kg else found | {"other_kg": other_kg}


def _entity_row(r: neo4j.Record) -> EntityRow:
    return EntityRow(r["idx"], r["id"], r["modality"], r["text"], r["image"], _box(r.get("image_box")))


def _box(value: list | None) -> tuple[int, int, int, int] | None:
    return tuple(int(v) for v in value) if value else None

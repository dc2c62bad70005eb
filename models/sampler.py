"""The Neo4j sampler: triplets (and their neighbourhoods) streamed live from Neo4j to the trainer.

    plan    = EpochPlan.make(num_triplets, batch_size, seed, epoch, world_size, rank)
    stream  = TripletStream(settings, spec, featurizer, world_size, rank)
    loader  = stream.loader(epoch, num_workers=4)          # a plain torch DataLoader
    for batch in loader: ...                               # TripletBatch, see models/batch.py

At the start of every epoch the main process reads the split's triplets from Neo4j as integer
arrays (so triplets added between epochs appear in the next), and orders them with a seeded
permutation that depends only on (seed, epoch): every rank computes the same order and takes its
own shard. The DataLoader's sampler, in the main process, hands each batch of that shard to a
worker as a ``BatchRequest`` (round robin, results back in order), so each triplet is seen
exactly once per epoch overall. With G2E on, each request also carries the batch's k-hop
neighbourhood, sampled from the epoch's in-memory projection of the graph (or, with
``neighbourhoods="neo4j"``, sampled by the worker through Cypher; see models/neighbourhood.py).
Workers fetch entity content through their own Neo4j driver (drivers are not fork-safe),
retrying across a Neo4j restart; the plan is already fixed, so a restart skips and repeats
nothing. What is copied into each worker: the spec, the settings and the featurizer (its caches
then grow per worker); never a driver in use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from kclip.models.batch import SubgraphBatch, TripletBatch
from kclip.models.batching import candidate_relations, triplet_batch, with_pair_stream
from kclip.models.dgl_compat import import_dgl
from kclip.models.features import Featurizer
from kclip.models.neighbourhood import GraphProjection, SampledSubgraph, sample_subgraph
from kclip.models.train_config import pairs_per_batch
from kclip.platform.errors import ConfigError, KclipError
from kclip.platform.graph_store import EntityRow, GraphStore, RelationRow, TripletArrays
from kclip.platform.neo4j_client import connect, with_reconnect
from kclip.platform.records import CAPTION_OF, IMAGE_OF
from kclip.platform.settings import Settings

if TYPE_CHECKING:
    from kclip.models.train_config import TrainConfig


RESUME_HINT = ("training stopped; once Neo4j answers again, `kclip train --resume RUN` continues from the "
               "last checkpoint")


@dataclass(frozen=True)
class SamplerSpec:
    kg: str
    split: str = "train"
    batch_size: int = 64
    seed: int = 0
    hops: int = 1  # 0: no subgraphs (no G2E)
    fanout: int = 8
    graph_splits: tuple[str, ...] = ("train",)  # neighbourhoods never see dev/test triplets
    max_relation_candidates: int = 1024
    relations: tuple[str, ...] | None = None  # only triplets of these relations (None: all)
    neighbourhoods: Literal["projection", "neo4j"] = "projection"  # see models/neighbourhood.py
    pair_fraction: float = 0.0  # share of each batch given to image-text pairs (EpochPlan.make_with_pairs)
    pairs_kg: str | None = None  # the pairs come from this KG instead, for ITC and KD only (batching.with_pair_stream)
    reconnect_timeout: float = 300.0  # how long a Neo4j restart may take before training stops (Neo4jLost)


def spec_from_config(kg: str, config: "TrainConfig") -> SamplerSpec:
    """The sampler a training config asks for."""
    d = config.data
    return SamplerSpec(kg=kg, split=d.split, batch_size=d.batch_size, seed=config.seed, hops=d.hops, fanout=d.fanout,
                       max_relation_candidates=d.max_relation_candidates, neighbourhoods=d.neighbourhoods,
                       pair_fraction=d.pair_fraction, pairs_kg=d.pairs_kg,
                       relations=tuple(d.relations) if d.relations is not None else None)


@dataclass(frozen=True)
class EpochPlan:
    """This rank's batches for one epoch, each an array of positions into the triplet arrays."""

    epoch: int
    batches: list[np.ndarray]

    @classmethod
    def make(cls, num_triplets: int, batch_size: int, seed: int, epoch: int,
             world_size: int = 1, rank: int = 0) -> "EpochPlan":
        order = np.random.default_rng([seed, epoch]).permutation(num_triplets)
        shards = np.array_split(order, world_size)  # sizes differ by at most one
        # Every rank runs the same number of steps (DDP needs it): the largest shard's count.
        per_rank = -(-len(shards[0]) // batch_size) if num_triplets else 0
        shard = shards[rank]
        batches = [b for b in np.array_split(shard, per_rank) if len(b)] if per_rank else []
        return cls(epoch, batches)

    @classmethod
    def make_with_pairs(cls, is_pair: np.ndarray, batch_size: int, pair_fraction: float, seed: int, epoch: int,
                        world_size: int = 1, rank: int = 0) -> "EpochPlan":
        """Batches that give ``pair_fraction`` of their rows to image-text pair triplets.

        The other triplets are planned as by ``make``: each exactly once per epoch overall. Pairs
        fill their share of every batch from a seeded order of their own, starting over when
        used up, so a KG with few pairs next to many triplets still trains retrieval every step
        (as plain CLIP, which sees nothing but pairs, does). Where a KG is all pairs or has none,
        this is ``make``.
        """
        per_batch = pairs_per_batch(batch_size, pair_fraction)
        if not per_batch or is_pair.all() or not is_pair.any():
            return cls.make(len(is_pair), batch_size, seed, epoch, world_size, rank)
        others, pairs = np.flatnonzero(~is_pair), np.flatnonzero(is_pair)
        plan = cls.make(len(others), batch_size - per_batch, seed, epoch, world_size, rank)
        cycle = PairCycle(len(pairs), per_batch, seed, epoch, world_size, rank)
        return cls(epoch, [np.concatenate([others[b], pairs[cycle.take(step)]]) for step, b in enumerate(plan.batches)])

    def __len__(self) -> int:
        return len(self.batches)


class PairCycle:
    """An endless seeded order over ``n`` pairs: ``take(step)`` is this rank's ``per_batch``
    positions at a step, disjoint across ranks; a fresh permutation each time all were used."""

    def __init__(self, n: int, per_batch: int, seed: int, epoch: int, world_size: int = 1, rank: int = 0,
                 stream: int = 1):
        self.n, self.per_batch, self.world_size, self.rank = n, per_batch, world_size, rank
        self._key = [seed, epoch, stream]  # stream: the KG's own pairs (1) or another KG's (2)
        self._cycles: dict[int, np.ndarray] = {}

    def take(self, step: int) -> np.ndarray:
        slots = (step * self.world_size + self.rank) * self.per_batch + np.arange(self.per_batch)
        cycle, at = np.divmod(slots, self.n)
        for c in np.unique(cycle).tolist():
            if c not in self._cycles:
                self._cycles[c] = np.random.default_rng([*self._key, c]).permutation(self.n)
        return np.array([self._cycles[c][a] for c, a in zip(cycle.tolist(), at.tolist())], dtype=np.int64)


def _yield_to_trainer(worker_id: int) -> None:
    """Workers run at a lower priority: where they share CPU cores with the training step, they
    fill its idle moments instead of preempting it."""
    os.nice(5)


@dataclass(frozen=True)
class BatchRequest:
    """One batch to build: what the main process hands a worker (triplets as KG idx)."""

    epoch: int
    index: int  # position in the epoch: seeds the neighbourhood sampling
    content_version: str  # the KG's entity content version at the epoch's start: workers' row caches follow it
    heads: np.ndarray
    tails: np.ndarray
    candidates: tuple[RelationRow, ...]  # the E2R candidates, from this epoch's relation table
    rel_positions: np.ndarray  # each triplet's relation among the candidates
    subgraph: SampledSubgraph | None = None  # sampled from the epoch's projection; None: the worker asks Neo4j
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # (image idx, caption idx) of data.pairs_kg
    pairs_version: str = ""  # that KG's content version


@dataclass(frozen=True)
class _WorkerFailure:
    """A worker's kclip error, sent back as the batch: raised in a worker, torch would re-raise it
    in the main process with the worker's whole traceback as its message, and the CLI would print
    that instead of one line. ``_Loader`` raises it again, as itself."""

    kind: type
    message: str
    exit_code: int

    def error(self) -> KclipError:
        try:
            error = self.kind(self.message)
        except Exception:  # an error class whose constructor takes other arguments
            error = KclipError(self.message)
        error.exit_code = self.exit_code
        return error


class _Loader(DataLoader):
    """A DataLoader that re-raises the kclip errors of its workers as they were (see ``_WorkerFailure``)."""

    def __iter__(self) -> Iterator[TripletBatch]:
        for batch in super().__iter__():
            if isinstance(batch, _WorkerFailure):
                raise batch.error()
            yield batch


class _EpochRequests(Sampler):
    """This epoch's requests from ``start_batch`` on; runs in the main process, so a new epoch's
    plan reaches persistent workers without re-forking them."""

    def __init__(self, stream: "TripletStream"):
        self.stream = stream

    def __iter__(self) -> Iterator[BatchRequest]:
        stream = self.stream
        for i in range(stream.start_batch, len(stream.plan)):
            yield stream.request(i)

    def __len__(self) -> int:
        return len(self.stream)


class TripletStream(Dataset):
    """Batches of one KG split for one rank; iterate through ``loader(epoch)``.

    Workers are persistent: each keeps its Neo4j session and its token and image caches from one
    epoch to the next, and receives every batch as a ``BatchRequest``.
    """

    def __init__(self, settings: Settings, spec: SamplerSpec, featurizer: Featurizer,
                 world_size: int = 1, rank: int = 0):
        self.settings, self.spec, self.featurizer = settings, spec, featurizer
        self.world_size, self.rank = world_size, rank
        self.triplets: TripletArrays | None = None
        self.plan: EpochPlan | None = None
        self.content_version = ""
        self.projection: GraphProjection | None = None
        self.start_batch = 0
        self._store: GraphStore | None = None
        self._store_pid = -1
        self._inherited: list[GraphStore] = []
        self._loader: DataLoader | None = None
        self._loader_args: tuple | None = None
        # Entity rows already fetched (per worker): an entity recurs in many batches, and refetching
        # it each time costs Neo4j work. Kept while the KG's content version stays the same (every
        # kclip load that writes entities changes it), so content edits reach training by the next
        # epoch; new entities are new idx and always fetched.
        self._rows: dict[str, dict[int, EntityRow]] = {}  # by KG (the pairs KG has its own idx)
        self._rows_version: dict[str, str] = {}
        self.pairs: tuple[np.ndarray, np.ndarray] | None = None  # data.pairs_kg's (image idx, caption idx)
        self.pair_cycle: PairCycle | None = None
        self.pairs_version = ""
        self.relations: list[RelationRow] = self._read_relations()

    def _read_relations(self) -> list[RelationRow]:
        relations = self._read(lambda s: s.relations(self.spec.kg), "reading relations")
        unknown = sorted(set(self.spec.relations or ()) - {r.name for r in relations})
        if unknown:
            known = ", ".join(sorted(r.name for r in relations)[:20])
            raise ConfigError(f"data.relations names {unknown} that KG {self.spec.kg!r} does not have (it has: {known})")
        return relations

    # -- main process ------------------------------------------------------------------------

    def set_epoch(self, epoch: int, start_batch: int = 0) -> EpochPlan:
        """Read the split's triplets afresh and fix this epoch's order; skip ``start_batch`` batches."""
        spec = self.spec
        self.relations = self._read_relations()  # read before the triplets: every triplet's relation is known
        version = self._read(lambda s: s.content_version(spec.kg), "reading the content version")
        self.content_version = version or f"epoch {epoch}"  # KGs loaded before versions: refetch each epoch
        triplets = self._read(lambda s: s.triplet_arrays(spec.kg, spec.split), "reading triplets")
        self.triplets = self._only_wanted(triplets)
        if spec.hops and spec.neighbourhoods == "projection":
            self.projection = GraphProjection([
                triplets if split == spec.split else self._read(lambda s: s.triplet_arrays(spec.kg, split), "reading triplets")
                for split in spec.graph_splits])
        if spec.pairs_kg:
            self._plan_with_pair_stream(epoch)
        else:
            pair_relations = [r.idx for r in self.relations if r.name in (IMAGE_OF, CAPTION_OF)]
            self.plan = EpochPlan.make_with_pairs(np.isin(self.triplets.rels, pair_relations), spec.batch_size,
                                                  spec.pair_fraction, spec.seed, epoch, self.world_size, self.rank)
        self.start_batch = start_batch
        return self.plan

    def _plan_with_pair_stream(self, epoch: int) -> None:
        """The KG's triplets each once per epoch in batches of ``batch_size - P``; P pairs of
        ``pairs_kg`` beside each (an endless seeded order: a small pair set recurs)."""
        spec = self.spec
        per_batch = pairs_per_batch(spec.batch_size, spec.pair_fraction)
        self.pairs = self._read(lambda s: s.image_text_pairs(spec.pairs_kg), "reading image-text pairs")
        if not len(self.pairs[0]):
            known = self._read(lambda s: s.list_kgs(), "listing KGs")
            if spec.pairs_kg not in known:
                raise ConfigError(f"data.pairs_kg={spec.pairs_kg!r}: no such KG in this database "
                                  f"(it has: {', '.join(sorted(known)) or 'none'})")
            raise ConfigError(f"data.pairs_kg={spec.pairs_kg!r}: that KG has no '{IMAGE_OF}' or '{CAPTION_OF}' "
                              "triplets in its train split (kclip stats --kg NAME lists KGs and relations)")
        self.pairs_version = self._read(lambda s: s.content_version(spec.pairs_kg), "reading the content version") \
            or f"epoch {epoch}"
        self.plan = EpochPlan.make(len(self.triplets.heads), spec.batch_size - per_batch, spec.seed, epoch,
                                   self.world_size, self.rank)
        self.pair_cycle = PairCycle(len(self.pairs[0]), per_batch, spec.seed, epoch, self.world_size, self.rank,
                                    stream=2)

    def _only_wanted(self, triplets: TripletArrays) -> TripletArrays:
        """The triplets of the wanted relations (all of them by default), whose relation is known."""
        wanted = [r.idx for r in self.relations if self.spec.relations is None or r.name in self.spec.relations]
        keep = np.isin(triplets.rels, wanted)
        if keep.all():
            return triplets
        return TripletArrays(triplets.heads[keep], triplets.rels[keep], triplets.tails[keep])

    def request(self, index: int) -> BatchRequest:
        positions = self.plan.batches[index]
        t = self.triplets
        rels = t.rels[positions]
        candidates, rel_positions = candidate_relations(self.relations, rels, self.spec.max_relation_candidates)
        heads, tails = t.heads[positions], t.tails[positions]
        # Sampled here, in the main process: it takes well under a millisecond, and only the main
        # process holds this epoch's projection (persistent workers were forked epochs ago).
        subgraph = self._projected_subgraph(heads, tails, index) if self.projection is not None else None
        pairs = None
        if self.pair_cycle is not None:
            at = self.pair_cycle.take(index)
            pairs = (self.pairs[0][at], self.pairs[1][at])
        return BatchRequest(self.plan.epoch, index, self.content_version, heads, tails, tuple(candidates),
                            np.asarray(rel_positions, dtype=np.int64), subgraph, pairs, self.pairs_version)

    def _projected_subgraph(self, heads: np.ndarray, tails: np.ndarray, index: int) -> SampledSubgraph:
        epoch, fanout = self.plan.epoch, self.spec.fanout
        return sample_subgraph(_batch_entities(heads, tails), self.spec.hops,
                               lambda frontier, hop: self.projection.sample(frontier, fanout, self._hop_rng(epoch, index, hop)))

    def _hop_rng(self, epoch: int, index: int, hop: int) -> np.random.Generator:
        # Depends only on (seed, epoch, batch, hop): resumed runs sample the same subgraphs.
        return np.random.default_rng([self.spec.seed, epoch, index, hop])

    def loader(self, epoch: int, start_batch: int = 0, num_workers: int = 2, pin_memory: bool = False,
               prefetch_factor: int = 4) -> DataLoader:
        """The DataLoader over ``epoch`` (from ``start_batch``); the same one, workers and all, every epoch."""
        self.set_epoch(epoch, start_batch)
        args = (num_workers, pin_memory, prefetch_factor)
        if self._loader is None or self._loader_args != args:
            self._loader = _Loader(
                self, batch_size=None, sampler=_EpochRequests(self), num_workers=num_workers,
                pin_memory=pin_memory, prefetch_factor=prefetch_factor if num_workers else None,
                persistent_workers=num_workers > 0, multiprocessing_context="fork" if num_workers else None,
                worker_init_fn=_yield_to_trainer if num_workers else None)
            self._loader_args = args
        return self._loader

    def __len__(self) -> int:
        return max(0, len(self.plan) - self.start_batch) if self.plan else 0

    def close(self) -> None:
        """Stop the workers and close this process's Neo4j driver."""
        self._loader = None  # dropping the loader shuts its persistent workers down
        if self._store is not None and self._store_pid == os.getpid():
            self._store.driver.close()
        self._store = None

    # -- workers -----------------------------------------------------------------------------

    def __getitem__(self, request: BatchRequest) -> TripletBatch | _WorkerFailure:
        try:
            return self.make_batch(request)
        except KclipError as exc:
            if get_worker_info() is None:
                raise  # the main process: nothing wraps it
            return _WorkerFailure(type(exc), str(exc), exc.exit_code)

    def make_batch(self, request: BatchRequest) -> TripletBatch:
        heads, tails = request.heads, request.tails
        entities = _batch_entities(heads, tails)
        sampled = request.subgraph
        if sampled is None and self.spec.hops:
            sampled = self._neo4j_subgraph(entities, request)
        rows = self._entity_rows(sampled.nodes if sampled is not None else entities, request.content_version)
        by_idx = {r.idx: r for r in rows}
        batch = triplet_batch(self.featurizer, [by_idx[int(h)] for h in heads], request.rel_positions.tolist(),
                              [by_idx[int(x)] for x in tails], request.candidates)
        if sampled is not None:
            batch.subgraph = self._subgraph(sampled, len(entities), rows)
        if request.pairs is not None:
            batch = self._with_pairs(batch, request)
        return batch

    def _with_pairs(self, batch: TripletBatch, request: BatchRequest) -> TripletBatch:
        images, texts = request.pairs
        kg = self.spec.pairs_kg
        rows = self._entity_rows(np.concatenate([images, texts]), request.pairs_version, kg)
        n = len(images)
        pairs = [(image, text) for image, text in zip(rows[:n], rows[n:])
                 if image.modality == "image" and text.modality == "text"]
        return with_pair_stream(batch, self.featurizer, pairs)

    # -- pieces ------------------------------------------------------------------------------

    def _worker_store(self) -> GraphStore:
        if self._store is not None and self._store_pid != os.getpid():
            # A forked worker inherited the parent's driver, whose sockets it shares: keep it
            # referenced but unused, since closing it (even by garbage collection) would say
            # goodbye on the parent's connections.
            self._inherited.append(self._store)
            self._store = None
        if self._store is None:
            self._store = GraphStore(connect(self.settings), self.settings.neo4j_database)
            self._store_pid = os.getpid()
        return self._store

    def _read(self, fn, what: str):
        return with_reconnect(lambda: fn(self._worker_store()), self.spec.reconnect_timeout, what, then=RESUME_HINT)

    def _entity_rows(self, idxs: np.ndarray, content_version: str, kg: str | None = None) -> list[EntityRow]:
        kg = kg or self.spec.kg
        if content_version != self._rows_version.get(kg):
            self._rows[kg], self._rows_version[kg] = {}, content_version
        cache = self._rows[kg]
        wanted = [int(i) for i in idxs if int(i) not in cache]
        if wanted:
            fetched = self._read(lambda s: s.entity_content(kg, wanted), "reading entities")
            cache.update((r.idx, r) for r in fetched)
        missing = [i for i in wanted if i not in cache]
        if missing:
            raise KclipError(f"entities {missing[:5]} of KG {kg!r} vanished from Neo4j mid-epoch")
        return [cache[int(i)] for i in idxs]

    def _neo4j_subgraph(self, entities: np.ndarray, request: BatchRequest) -> SampledSubgraph:
        spec = self.spec

        def sample_hop(frontier: np.ndarray, hop: int):
            salt = int(self._hop_rng(request.epoch, request.index, hop).integers(2**31 - 1))
            return self._read(lambda s: s.neighbours(spec.kg, frontier, spec.fanout, salt, spec.graph_splits),
                              "sampling neighbours")

        return sample_subgraph(entities, spec.hops, sample_hop)

    def _subgraph(self, sampled: SampledSubgraph, in_batch: int, rows: list[EntityRow]) -> SubgraphBatch:
        dgl = import_dgl()
        nodes = sampled.nodes
        graph = dgl.graph((torch.as_tensor(sampled.src), torch.as_tensor(sampled.dst)), num_nodes=len(nodes))
        graph.ndata["entity_idx"] = torch.as_tensor(nodes)
        batch_row = torch.full((len(nodes),), -1, dtype=torch.long)
        batch_row[:in_batch] = torch.arange(in_batch)
        graph.ndata["batch_row"] = batch_row
        graph.edata["rel"] = torch.as_tensor(sampled.rels)
        tokens, text_rows, images, image_rows = self.featurizer.entity_tensors(rows[in_batch:])
        return SubgraphBatch(
            graph=graph,
            neighbour_text_tokens=tokens,
            neighbour_text_rows=torch.as_tensor(text_rows, dtype=torch.long) + in_batch,
            neighbour_images=images,
            neighbour_image_rows=torch.as_tensor(image_rows, dtype=torch.long) + in_batch,
        )


def _batch_entities(heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """The batch's distinct entities, sorted, as ``triplet_batch`` orders them."""
    return np.unique(np.concatenate([heads, tails]))

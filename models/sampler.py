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
exactly once per epoch overall. Workers fetch entity content and neighbourhoods through their
own Neo4j driver (drivers are not fork-safe), retrying across a Neo4j restart; the plan is
already fixed, so a restart skips and repeats nothing. What is copied into each worker: the
spec, the settings and the featurizer (its caches then grow per worker); never a driver in use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kclip.models.batch import SubgraphBatch, TripletBatch
from kclip.models.batching import candidate_relations, triplet_batch
from kclip.models.dgl_compat import import_dgl
from kclip.models.features import Featurizer
from kclip.platform.errors import ConfigError, KclipError
from kclip.platform.graph_store import EntityRow, GraphStore, RelationRow, TripletArrays
from kclip.platform.neo4j_client import connect, with_reconnect
from kclip.platform.settings import Settings

if TYPE_CHECKING:
    from kclip.models.train_config import TrainConfig


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
    reconnect_timeout: float = 300.0


def spec_from_config(kg: str, config: "TrainConfig") -> SamplerSpec:
    """The sampler a training config asks for."""
    d = config.data
    return SamplerSpec(kg=kg, split=d.split, batch_size=d.batch_size, seed=config.seed, hops=d.hops, fanout=d.fanout,
                       max_relation_candidates=d.max_relation_candidates,
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

    def __len__(self) -> int:
        return len(self.batches)


def _yield_to_trainer(worker_id: int) -> None:
    """Workers run at a lower priority: where they share CPU cores with the training step, they
    fill its idle moments instead of preempting it."""
    os.nice(5)


@dataclass(frozen=True)
class BatchRequest:
    """One batch to build: what the main process hands a worker (triplets as KG idx)."""

    epoch: int
    index: int  # position in the epoch: seeds the neighbourhood sampling
    heads: np.ndarray
    tails: np.ndarray
    candidates: tuple[RelationRow, ...]  # the E2R candidates, from this epoch's relation table
    rel_positions: np.ndarray  # each triplet's relation among the candidates


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
        self.start_batch = 0
        self._store: GraphStore | None = None
        self._store_pid = -1
        self._inherited: list[GraphStore] = []
        self._loader: DataLoader | None = None
        self._loader_args: tuple | None = None
        # Entity rows fetched this epoch (per worker). An entity recurs in many batches of an
        # epoch; refetching it each time costs Neo4j round trips. Cleared when the epoch changes,
        # so edits made in Neo4j reach training by the next epoch at the latest.
        self._rows: dict[int, EntityRow] = {}
        self._rows_epoch = -1
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
        triplets = self._read(lambda s: s.triplet_arrays(spec.kg, spec.split), "reading triplets")
        self.triplets = self._only_wanted(triplets)
        self.plan = EpochPlan.make(len(self.triplets), spec.batch_size, spec.seed, epoch, self.world_size, self.rank)
        self.start_batch = start_batch
        return self.plan

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
        return BatchRequest(self.plan.epoch, index, t.heads[positions], t.tails[positions], tuple(candidates),
                            np.asarray(rel_positions, dtype=np.int64))

    def loader(self, epoch: int, start_batch: int = 0, num_workers: int = 2, pin_memory: bool = False,
               prefetch_factor: int = 4) -> DataLoader:
        """The DataLoader over ``epoch`` (from ``start_batch``); the same one, workers and all, every epoch."""
        self.set_epoch(epoch, start_batch)
        args = (num_workers, pin_memory, prefetch_factor)
        if self._loader is None or self._loader_args != args:
            self._loader = DataLoader(
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

    def __getitem__(self, request: BatchRequest) -> TripletBatch:
        return self.make_batch(request)

    def make_batch(self, request: BatchRequest) -> TripletBatch:
        heads, tails = request.heads, request.tails
        entities = np.unique(np.concatenate([heads, tails]))  # sorted, as triplet_batch orders them
        nodes, edges = self._neighbourhood(entities, request) if self.spec.hops else (entities, None)
        rows = self._entity_rows(nodes, request.epoch)
        by_idx = {r.idx: r for r in rows}
        batch = triplet_batch(self.featurizer, [by_idx[int(h)] for h in heads], request.rel_positions.tolist(),
                              [by_idx[int(x)] for x in tails], request.candidates)
        if edges is not None:
            batch.subgraph = self._subgraph(nodes, len(entities), edges, rows)
        return batch

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
        return with_reconnect(lambda: fn(self._worker_store()), self.spec.reconnect_timeout, what)

    def _entity_rows(self, idxs: np.ndarray, epoch: int) -> list[EntityRow]:
        if epoch != self._rows_epoch:
            self._rows, self._rows_epoch = {}, epoch
        wanted = [int(i) for i in idxs if int(i) not in self._rows]
        if wanted:
            fetched = self._read(lambda s: s.entity_content(self.spec.kg, wanted), "reading entities")
            self._rows.update((r.idx, r) for r in fetched)
        missing = [i for i in wanted if i not in self._rows]
        if missing:
            raise KclipError(f"entities {missing[:5]} of KG {self.spec.kg!r} vanished from Neo4j mid-epoch")
        return [self._rows[int(i)] for i in idxs]

    def _neighbourhood(self, entities: np.ndarray, request: BatchRequest) -> tuple[np.ndarray, tuple[list, list, list]]:
        """k-hop sampled neighbourhood: subgraph nodes (batch entities first) and edges by node position."""
        spec, epoch, index = self.spec, request.epoch, request.index
        position = {int(e): i for i, e in enumerate(entities)}
        nodes = [int(e) for e in entities]
        src, dst, rel, seen = [], [], [], set()
        frontier = nodes
        for hop in range(spec.hops):
            # The salt depends only on (seed, epoch, batch, hop): resumed runs sample the same subgraphs.
            salt = int(np.random.default_rng([spec.seed, epoch, index, hop]).integers(2**31 - 1))
            found = self._read(lambda s: s.neighbours(spec.kg, frontier, spec.fanout, salt, spec.graph_splits),
                               "sampling neighbours")
            discovered = []
            for node, r, other, outgoing in zip(found.nodes, found.rels, found.others, found.outgoing):
                other = int(other)
                if other not in position:
                    position[other] = len(nodes)
                    nodes.append(other)
                    discovered.append(other)
                a, b = position[int(node)], position[other]
                edge = (a, b, int(r)) if outgoing else (b, a, int(r))
                if edge not in seen:
                    seen.add(edge)
                    src.append(edge[0]), dst.append(edge[1]), rel.append(edge[2])
            frontier = discovered
            if not frontier:
                break
        return np.asarray(nodes, dtype=np.int64), (src, dst, rel)

    def _subgraph(self, nodes: np.ndarray, in_batch: int, edges, rows: list[EntityRow]) -> SubgraphBatch:
        dgl = import_dgl()
        src, dst, rel = edges
        graph = dgl.graph((torch.as_tensor(src, dtype=torch.long), torch.as_tensor(dst, dtype=torch.long)),
                          num_nodes=len(nodes))
        graph.ndata["entity_idx"] = torch.as_tensor(nodes)
        batch_row = torch.full((len(nodes),), -1, dtype=torch.long)
        batch_row[:in_batch] = torch.arange(in_batch)
        graph.ndata["batch_row"] = batch_row
        graph.edata["rel"] = torch.as_tensor(rel, dtype=torch.long)
        tokens, text_rows, images, image_rows = self.featurizer.entity_tensors(rows[in_batch:])
        return SubgraphBatch(
            graph=graph,
            neighbour_text_tokens=tokens,
            neighbour_text_rows=torch.as_tensor(text_rows, dtype=torch.long) + in_batch,
            neighbour_images=images,
            neighbour_image_rows=torch.as_tensor(image_rows, dtype=torch.long) + in_batch,
        )

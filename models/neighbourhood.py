"""k-hop neighbourhood sampling for G2E, from either of two sources of one-hop samples.

- ``GraphProjection``: the KG's neighbourhood graph read from Neo4j into memory once per epoch
  (the idea of a Neo4j GDS projection) and sampled with numpy. A batch costs well under a
  millisecond and no Neo4j work, which matters where the trainer and Neo4j share CPU cores.
- Neo4j itself (``GraphStore.neighbours``): sampled by Cypher per batch; nothing held in memory,
  for graphs too large for the trainer host.

Either way Neo4j is the source of truth: the projection is rebuilt from it every epoch, so
triplets added between epochs appear in the next. ``sample_subgraph`` grows the k-hop graph
from whichever source, so both give subgraphs of the same shape and node order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from kclip.platform.graph_store import Neighbourhood, TripletArrays

SampleHop = Callable[[np.ndarray, int], Neighbourhood]  # (frontier entity idx, hop) -> sampled edges


@dataclass(frozen=True)
class SampledSubgraph:
    """Subgraph nodes (entity idx, the batch's entities first) and edges as node positions."""

    nodes: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    rels: np.ndarray


class GraphProjection:
    """Every triplet of the given splits as an incidence list sorted by entity: each triplet is
    listed at its head (outgoing) and at its tail (incoming), as Neo4j's undirected expand sees it."""

    def __init__(self, parts: Sequence[TripletArrays]):
        heads, rels, tails = (np.concatenate([getattr(p, k) for p in parts] or [np.zeros(0, np.int64)])
                              for k in ("heads", "rels", "tails"))
        node = np.concatenate([heads, tails])
        order = np.argsort(node, kind="stable")
        self.node = node[order]
        self.other = np.concatenate([tails, heads])[order]
        self.rel = np.concatenate([rels, rels])[order]
        self.outgoing = np.concatenate([np.ones(len(heads), bool), np.zeros(len(tails), bool)])[order]

    def sample(self, frontier: np.ndarray, fanout: int, rng: np.random.Generator) -> Neighbourhood:
        """Up to ``fanout`` incident triplets per frontier node, drawn without replacement."""
        frontier = np.asarray(frontier, dtype=np.int64)
        start = np.searchsorted(self.node, frontier, "left")
        degree = np.searchsorted(self.node, frontier, "right") - start
        owners, positions = [], []
        small = degree <= fanout
        if small.any():  # every incident triplet of a low-degree node is taken
            owners.append(np.repeat(np.flatnonzero(small), degree[small]))
            positions.append(_ranges(start[small], degree[small]))
        for i in np.flatnonzero(~small):  # hubs: a few per batch, each drawn directly
            owners.append(np.full(fanout, i))
            positions.append(start[i] + rng.choice(int(degree[i]), fanout, replace=False))
        if not owners:
            empty = np.zeros(0, np.int64)
            return Neighbourhood(empty, empty, empty, np.zeros(0, bool))
        owner, picked = np.concatenate(owners), np.concatenate(positions)
        order = np.argsort(owner, kind="stable")  # frontier order, as Cypher's collect() returns it
        owner, picked = owner[order], picked[order]
        return Neighbourhood(frontier[owner], self.rel[picked], self.other[picked], self.outgoing[picked])


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of range(s, s + n) for each (s, n)."""
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def sample_subgraph(entities: np.ndarray, hops: int, sample_hop: SampleHop) -> SampledSubgraph:
    """The k-hop neighbourhood of ``entities`` (unique): nodes in order of discovery, edges deduplicated
    (a triplet between two frontier nodes can be drawn from both ends)."""
    nodes = np.asarray(entities, dtype=np.int64)
    src, dst, rels = [], [], []
    frontier = nodes
    for hop in range(hops):
        found = sample_hop(frontier, hop)
        unseen = found.others[~np.isin(found.others, nodes)]
        _, first = np.unique(unseen, return_index=True)
        discovered = unseen[np.sort(first)]
        nodes = np.concatenate([nodes, discovered])
        a, b = _positions(nodes, found.nodes), _positions(nodes, found.others)
        src.append(np.where(found.outgoing, a, b)), dst.append(np.where(found.outgoing, b, a)), rels.append(found.rels)
        frontier = discovered
        if not len(frontier):
            break
    if not src:
        empty = np.zeros(0, np.int64)
        return SampledSubgraph(nodes, empty, empty, empty)
    edges = np.stack([np.concatenate(src), np.concatenate(dst), np.concatenate(rels)]).astype(np.int64)
    _, first = np.unique(edges, axis=1, return_index=True)
    keep = np.sort(first)
    return SampledSubgraph(nodes, edges[0, keep], edges[1, keep], edges[2, keep])


def _positions(nodes: np.ndarray, idxs: np.ndarray) -> np.ndarray:
    sorter = np.argsort(nodes)
    return sorter[np.searchsorted(nodes, idxs, sorter=sorter)]

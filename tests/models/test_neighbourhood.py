"""Neighbourhood sampling from an in-memory projection: fanout, no repeats, real edges, k hops."""

from __future__ import annotations

import numpy as np

from kclip.models.neighbourhood import GraphProjection, sample_subgraph
from kclip.platform.graph_store import TripletArrays

# A star: hub 0 -> 1..30 (rel 0), plus a path 1 -> 100 -> 101 (rel 1) and a self-contained pair 7 <-> 8.
HEADS = np.array([0] * 30 + [1, 100, 7, 8])
TAILS = np.array(list(range(1, 31)) + [100, 101, 8, 7])
RELS = np.array([0] * 30 + [1, 1, 2, 3])


def projection() -> GraphProjection:
    half = len(HEADS) // 2  # two "splits", as the sampler combines graph_splits
    return GraphProjection([TripletArrays(HEADS[:half], RELS[:half], TAILS[:half]),
                            TripletArrays(HEADS[half:], RELS[half:], TAILS[half:])])


def test_hub_gets_fanout_distinct_edges_and_small_nodes_all_of_theirs():
    p = projection()
    found = p.sample(np.array([0, 100, 5]), fanout=4, rng=np.random.default_rng(0))
    hub = found.others[found.nodes == 0]
    assert len(hub) == 4 and len(set(hub.tolist())) == 4 and set(hub.tolist()) <= set(range(1, 31))
    assert found.outgoing[found.nodes == 0].all()
    # node 100: one incoming (from 1) and one outgoing (to 101) edge, both taken
    at_100 = {(int(o), bool(out)) for o, out in zip(found.others[found.nodes == 100], found.outgoing[found.nodes == 100])}
    assert at_100 == {(1, False), (101, True)}
    assert found.others[found.nodes == 5].tolist() == [0]
    assert found.nodes.tolist() == sorted(found.nodes.tolist(), key=[0, 100, 5].index)  # frontier order


def test_unknown_nodes_and_empty_frontiers_sample_nothing():
    p = projection()
    assert len(p.sample(np.array([999]), 4, np.random.default_rng(0)).nodes) == 0
    assert len(p.sample(np.array([], dtype=np.int64), 4, np.random.default_rng(0)).nodes) == 0


def test_sampling_is_seeded():
    p = projection()
    draw = lambda seed: p.sample(np.array([0]), 4, np.random.default_rng(seed)).others.tolist()
    assert draw(1) == draw(1)
    assert len({tuple(draw(s)) for s in range(10)}) > 1


def test_two_hop_subgraph_is_made_of_real_edges_without_repeats():
    p = projection()
    real = {(int(h), int(r), int(t)) for h, r, t in zip(HEADS, RELS, TAILS)}
    sub = sample_subgraph(np.array([1, 7]), 2, lambda frontier, hop: p.sample(frontier, 50, np.random.default_rng(hop)))
    nodes = sub.nodes.tolist()
    assert nodes[:2] == [1, 7] and len(set(nodes)) == len(nodes)
    edges = [(nodes[s], int(r), nodes[d]) for s, d, r in zip(sub.src, sub.dst, sub.rels)]
    assert len(edges) == len(set(edges)) and set(edges) <= real
    # hop 1 from 1: 0->1, 1->100; from 7: 7->8, 8->7 (drawn from both ends, kept once); hop 2 adds
    # the hub's other 29 edges and 100->101
    assert len(edges) == 4 + 29 + 1 and set(nodes) == set(range(0, 31)) | {100, 101}

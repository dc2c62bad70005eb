"""The Neo4j sampler against a real Neo4j: exactly-once sharding, reshuffling, subgraphs."""

from __future__ import annotations

import collections
import time

import numpy as np
import open_clip
import pytest
import torch
from kg_fixtures import HUB, RING, write_tsv_kg

from kclip.kg_loaders.tsv import TsvLoader
from kclip.models.features import Featurizer
from kclip.models.sampler import EpochPlan, SamplerSpec, TripletStream
from kclip.platform.ingest import load_kg

@pytest.fixture(scope="module")
def featurizer(tmp_path_factory) -> Featurizer:
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    preprocess = open_clip.image_transform(32, is_train=False)
    return Featurizer(tokenizer, preprocess, tmp_path_factory.mktemp("media"))


@pytest.fixture
def make_stream(neo4j_settings, featurizer):
    """TripletStreams over the test Neo4j, closed (with their drivers) after the test."""
    made = []

    def make(spec: SamplerSpec, **kwargs) -> TripletStream:
        made.append(TripletStream(neo4j_settings, spec, featurizer, **kwargs))
        return made[-1]

    yield make
    for stream in made:
        stream.close()


def triplet_keys(stream: TripletStream, batch) -> list[tuple[int, int, int]]:
    ent = batch.entity_idx
    rel = batch.relation_idx
    return [(int(ent[h]), int(rel[r]), int(ent[t])) for h, r, t in zip(batch.heads, batch.rels, batch.tails)]


def test_epoch_plan_covers_every_triplet_once_across_ranks():
    for n, batch, world in [(100, 7, 1), (101, 8, 2), (5, 4, 2), (1000, 64, 3)]:
        plans = [EpochPlan.make(n, batch, seed=3, epoch=1, world_size=world, rank=r) for r in range(world)]
        seen = np.concatenate([b for p in plans for b in p.batches])
        assert sorted(seen.tolist()) == list(range(n))
        assert len({len(p) for p in plans}) == 1, "every rank must run the same number of steps"
        assert max(len(b) for p in plans for b in p.batches) <= batch


def test_epoch_plan_reshuffles_each_epoch_and_is_reproducible():
    a = EpochPlan.make(50, 10, seed=0, epoch=0)
    b = EpochPlan.make(50, 10, seed=0, epoch=1)
    again = EpochPlan.make(50, 10, seed=0, epoch=0)
    assert not np.array_equal(np.concatenate(a.batches), np.concatenate(b.batches))
    assert np.array_equal(np.concatenate(a.batches), np.concatenate(again.batches))


def test_pair_share_of_each_batch_and_the_others_exactly_once():
    is_pair = np.zeros(103, bool)
    is_pair[[3, 17, 40, 41, 99]] = True  # 5 pairs among 98 other triplets
    plans = [EpochPlan.make_with_pairs(is_pair, 8, 0.25, seed=2, epoch=1, world_size=2, rank=r) for r in range(2)]
    assert len(plans[0]) == len(plans[1]) == 9  # ceil(49 others per rank / 6)
    for plan in plans:
        assert all(len(b) <= 8 and is_pair[b].sum() == 2 for b in plan.batches)
    others = np.concatenate([b[~is_pair[b]] for p in plans for b in p.batches])
    assert sorted(others.tolist()) == np.flatnonzero(~is_pair).tolist()
    # Pairs in step order, ranks interleaved: every run of 5 slots is each pair once.
    slots = np.concatenate([b[is_pair[b]] for step in range(9) for b in (plans[0].batches[step], plans[1].batches[step])])
    assert all(sorted(slots[i:i + 5].tolist()) == [3, 17, 40, 41, 99] for i in range(0, 35, 5))
    again = EpochPlan.make_with_pairs(is_pair, 8, 0.25, seed=2, epoch=1, world_size=2, rank=0)
    assert all(np.array_equal(a, b) for a, b in zip(again.batches, plans[0].batches))


def test_pair_share_changes_nothing_where_a_kg_is_all_pairs_or_has_none():
    for is_pair in (np.zeros(50, bool), np.ones(50, bool)):
        mixed, plain = EpochPlan.make_with_pairs(is_pair, 8, 0.5, seed=0, epoch=0), EpochPlan.make(50, 8, seed=0, epoch=0)
        assert all(np.array_equal(a, b) for a, b in zip(mixed.batches, plain.batches)) and len(mixed) == len(plain)


def test_stream_gives_pairs_their_share(neo4j_settings, graph_store, media_store, kg_name, tmp_path, make_stream):
    pairs = [(f"p{i}", "image of", f"c{i}") for i in range(3)]  # names alone make them pairs to the planner
    load_kg(graph_store, TsvLoader(write_tsv_kg(tmp_path / "kg", RING + pairs), kg=kg_name), media_store, progress=False)
    stream = make_stream(SamplerSpec(kg=kg_name, batch_size=4, hops=0, pair_fraction=0.5))
    seen = collections.Counter()
    for batch in stream.loader(epoch=0, num_workers=0):
        keys = triplet_keys(stream, batch)
        names = {r.idx: r.name for r in stream.relations}
        assert [names[r] for _, r, _ in keys].count("image of") == 2
        seen.update(k for k in keys if names[k[1]] != "image of")
    assert len(seen) == 10 and set(seen.values()) == {1}  # the ring, once; 5 batches of 2 + 2 pairs


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_sees_each_triplet_exactly_once_across_workers_and_ranks(neo4j_settings, ring_kg, featurizer, workers, make_stream):
    seen = collections.Counter()
    for rank in range(2):
        spec = SamplerSpec(kg=ring_kg, batch_size=3, seed=1, hops=0)
        stream = make_stream(spec, world_size=2, rank=rank)
        for batch in stream.loader(epoch=0, num_workers=workers):
            seen.update(triplet_keys(stream, batch))
    assert sum(seen.values()) == 20 and set(seen.values()) == {1}  # the 20 train triplets


def test_stream_order_differs_between_epochs(neo4j_settings, ring_kg, featurizer, make_stream):
    stream = make_stream(SamplerSpec(kg=ring_kg, batch_size=4, hops=0))
    orders = [[k for b in stream.loader(epoch=e, num_workers=0) for k in triplet_keys(stream, b)] for e in (0, 1)]
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]


def test_triplets_added_between_epochs_appear_in_the_next(neo4j_settings, graph_store, media_store, ring_kg,
                                                          featurizer, tmp_path, make_stream):
    stream = make_stream(SamplerSpec(kg=ring_kg, batch_size=8, hops=0))
    assert sum(len(b.heads) for b in stream.loader(epoch=0, num_workers=0)) == 20
    extra = write_tsv_kg(tmp_path / "extra", [("a3", "next", "a7"), ("h", "has", "a0")])
    load_kg(graph_store, TsvLoader(extra, kg=ring_kg), media_store, progress=False)
    assert sum(len(b.heads) for b in stream.loader(epoch=1, num_workers=0)) == 21  # (h, has, a0) existed


def test_entity_content_is_cached_across_epochs_until_a_load_changes_it(neo4j_settings, graph_store, media_store,
                                                                        ring_kg, featurizer, tmp_path, make_stream):
    stream = make_stream(SamplerSpec(kg=ring_kg, batch_size=20, hops=0))

    def text_of(epoch: int, entity_id: str) -> torch.Tensor:
        batch = next(iter(stream.loader(epoch=epoch, num_workers=0)))
        idx = next(r.idx for r in stream._rows[ring_kg].values() if r.id == entity_id)
        row = batch.entity_idx.tolist().index(idx)
        return batch.text_tokens[batch.text_rows.tolist().index(row)]

    assert torch.equal(text_of(0, "a0"), featurizer.tokens(["the entity a0"])[0])
    cached = dict(stream._rows[ring_kg])
    text_of(1, "a0")
    assert len(cached) == 11 and all(stream._rows[ring_kg][i] is row for i, row in cached.items())  # none fetched again
    edit = tmp_path / "edit"
    edit.mkdir()
    (edit / "train.tsv").write_text("a0\tnext\ta1\n")
    (edit / "entity2text.txt").write_text("a0\tzero renamed\na1\tthe entity a1\n")
    load_kg(graph_store, TsvLoader(edit, kg=ring_kg), media_store, progress=False)
    assert torch.equal(text_of(2, "a0"), featurizer.tokens(["zero renamed"])[0])


def test_batch_content_matches_neo4j(neo4j_settings, graph_store, ring_kg, featurizer, make_stream):
    stream = make_stream(SamplerSpec(kg=ring_kg, batch_size=20, hops=0))
    batch = next(iter(stream.loader(epoch=0, num_workers=0)))
    rows = {r.idx: r for r in graph_store.entity_content(ring_kg, batch.entity_idx.tolist())}
    expected = featurizer.tokenizer([rows[int(batch.entity_idx[i])].text for i in batch.text_rows])
    assert (batch.text_tokens == expected).all()
    assert sorted(batch.text_rows.tolist()) == list(range(batch.num_entities))  # all text entities
    names = {r.idx: r.name for r in graph_store.relations(ring_kg)}
    assert sorted(names[int(i)] for i in batch.relation_idx) == ["has", "next"]


@pytest.mark.parametrize("source", ["projection", "neo4j"])
def test_subgraph_is_the_sampled_neighbourhood(neo4j_settings, graph_store, ring_kg, featurizer, make_stream, source):
    """One batch holding (a0, next, a1): its 1-hop neighbourhood with fanout 20 is every train edge at a0 or a1."""
    by_id = {}
    for idx in range(graph_store.entity_idx_range(ring_kg)[2]):
        for r in graph_store.entity_content(ring_kg, [idx]):
            by_id[r.idx] = r.id
    names = {r.idx: r.name for r in graph_store.relations(ring_kg)}
    spec = SamplerSpec(kg=ring_kg, batch_size=1, hops=1, fanout=20, neighbourhoods=source)
    stream = make_stream(spec)
    stream.set_epoch(0)
    position = next(i for i in range(20) if (by_id[int(stream.triplets.heads[i])], by_id[int(stream.triplets.tails[i])]) == ("a0", "a1"))
    stream.plan.batches[0] = np.array([position])
    batch = stream.make_batch(stream.request(0))
    g = batch.subgraph.graph
    node_ids = [by_id[int(i)] for i in g.ndata["entity_idx"]]
    assert node_ids[:2] == [by_id[int(i)] for i in batch.entity_idx]  # batch entities come first
    assert g.ndata["batch_row"].tolist()[:2] == [0, 1] and set(g.ndata["batch_row"].tolist()[2:]) <= {-1}
    src, dst = g.edges()
    edges = {(node_ids[s], names[int(r)], node_ids[d]) for s, d, r in zip(src.tolist(), dst.tolist(), g.edata["rel"])}
    expected = {e for e in RING + HUB if {"a0", "a1"} & {e[0], e[2]}}  # dev edge (a0, has, a5) excluded
    assert edges == expected
    # neighbours carry their own content
    sub = batch.subgraph
    assert sorted(sub.neighbour_text_rows.tolist()) == list(range(2, g.num_nodes()))


@pytest.mark.parametrize("source", ["projection", "neo4j"])
def test_fanout_limits_and_sampling_is_deterministic(neo4j_settings, ring_kg, featurizer, make_stream, source):
    spec = SamplerSpec(kg=ring_kg, batch_size=2, hops=2, fanout=2, neighbourhoods=source)
    stream = make_stream(spec)
    stream.set_epoch(0)
    batch = stream.make_batch(stream.request(0))
    a, b = batch.subgraph.graph, stream.make_batch(stream.request(0)).subgraph.graph
    assert a.edges()[0].tolist() == b.edges()[0].tolist() and a.ndata["entity_idx"].tolist() == b.ndata["entity_idx"].tolist()
    # each frontier node contributes at most `fanout` edges per hop: E batch entities, then <= 2E new nodes
    entities = batch.num_entities
    assert a.num_edges() <= 2 * entities + 2 * (2 * entities)
    other_epoch = make_stream(spec)
    other_epoch.set_epoch(1)
    graphs = [other_epoch.make_batch(other_epoch.request(i)).subgraph.graph for i in range(len(other_epoch.plan))]
    assert any(g.num_edges() > 0 for g in graphs)


def test_subgraphs_follow_triplets_added_between_epochs(neo4j_settings, graph_store, media_store, ring_kg,
                                                        featurizer, tmp_path, make_stream):
    stream = make_stream(SamplerSpec(kg=ring_kg, batch_size=20, hops=1, fanout=50))

    def edges(epoch: int) -> set[tuple[int, int, int]]:
        """Every (head, rel, tail) the epoch's subgraphs hold: all train triplets, as fanout exceeds every degree."""
        found = set()
        for batch in stream.loader(epoch=epoch, num_workers=0):
            g = batch.subgraph.graph
            ent, (src, dst) = g.ndata["entity_idx"], g.edges()
            found |= {(int(ent[s]), int(r), int(ent[d])) for s, d, r in zip(src, dst, g.edata["rel"])}
        return found

    before = edges(0)
    extra = write_tsv_kg(tmp_path / "extra", [("a3", "next", "a7"), ("a3", "next", "a8")])
    load_kg(graph_store, TsvLoader(extra, kg=ring_kg), media_store, progress=False)
    assert len(before) == 20 and len(edges(1) - before) == 2


def test_batches_cross_from_workers_intact(neo4j_settings, ring_kg, featurizer, make_stream):
    """What a worker process hands over (packed, see TripletBatch.__reduce__) equals the batch it built."""
    stream = make_stream(SamplerSpec(kg=ring_kg, batch_size=4, hops=2, fanout=3))
    from_workers = list(stream.loader(epoch=0, num_workers=2))
    built_here = [stream.make_batch(stream.request(i)) for i in range(len(stream.plan))]
    assert len(from_workers) == len(built_here) == 5
    for got, want in zip(from_workers, built_here):
        for name in ("heads", "rels", "tails", "entity_idx", "text_tokens", "text_rows", "images", "relation_tokens"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        g, w = got.subgraph.graph, want.subgraph.graph
        assert [t.tolist() for t in g.edges()] == [t.tolist() for t in w.edges()] and g.num_nodes() == w.num_nodes()
        for key in ("entity_idx", "batch_row"):
            assert torch.equal(g.ndata[key], w.ndata[key])
        assert torch.equal(g.edata["rel"], w.edata["rel"])
        assert torch.equal(got.subgraph.neighbour_text_tokens, want.subgraph.neighbour_text_tokens)


def test_a_neo4j_restart_mid_epoch_skips_and_repeats_nothing(neo4j_settings, ring_kg, featurizer, make_stream):
    if not neo4j_settings.uses_local_service:
        pytest.skip("restarting Neo4j needs the local service (KCLIP_NEO4J_URI or Docker is in use)")
    import threading

    from kclip.platform import local_neo4j

    # Neighbourhoods from Neo4j: every batch then queries it, so the restart is felt mid-epoch.
    stream = make_stream(SamplerSpec(kg=ring_kg, batch_size=2, hops=1, neighbourhoods="neo4j", reconnect_timeout=120))
    seen = collections.Counter()
    restart = None
    for i, batch in enumerate(stream.loader(epoch=0, num_workers=0)):
        seen.update(triplet_keys(stream, batch))
        if i == 2:  # mid-epoch: Neo4j goes away and comes back a moment later
            local_neo4j.stop(neo4j_settings)
            restart = threading.Thread(target=lambda: (time.sleep(1.0), local_neo4j.start(neo4j_settings)))
            restart.start()
    restart.join()
    assert sum(seen.values()) == 20 and set(seen.values()) == {1}

"""Prediction from a trained run: which run's embeddings it may read back from Neo4j, and one
score scale (cosines) for entities and relations. Against a real Neo4j and a real 3-step run."""

from __future__ import annotations

import pytest
import torch

from kclip.models.batching import triplet_batch
from kclip.models.embed import write_embeddings
from kclip.models.inference import load_run
from kclip.models.predict import Predictor
from kclip.models.train import train
from kclip.models.train_config import load_train_config


@pytest.fixture
def trained(neo4j_settings, ring_kg):
    config = load_train_config("tiny", {"max_steps": 3, "data.num_workers": 0, "data.batch_size": 8})
    return load_run(neo4j_settings, train(neo4j_settings, ring_kg, config, progress=False))


def test_embed_records_its_run_and_predict_trusts_only_that(trained, graph_store, ring_kg):
    assert graph_store.embedding_origin(ring_kg) is None
    write_embeddings(trained, graph_store, ring_kg, progress=False)
    origin = graph_store.embedding_origin(ring_kg)
    assert (origin.run, origin.step, origin.dimensions) == (trained.name, trained.step, trained.model.embed_dim)
    assert origin.content_version == graph_store.content_version(ring_kg) is not None
    assert Predictor(trained, graph_store).embeddings(ring_kg).source == "neo4j"
    graph_store.touch_content(ring_kg)  # a load wrote entities since: the vectors may miss some
    assert Predictor(trained, graph_store).embeddings(ring_kg).source == "encoded"


def test_an_embed_cut_short_records_no_run(trained, graph_store, ring_kg, monkeypatch):
    write_embeddings(trained, graph_store, ring_kg, progress=False)
    real, batches = graph_store.write_embeddings, []

    def dies_after_one_batch(*args):
        if batches:
            raise RuntimeError("killed")
        batches.append(args)
        real(*args)

    monkeypatch.setattr(graph_store, "write_embeddings", dies_after_one_batch)
    with pytest.raises(RuntimeError):
        write_embeddings(trained, graph_store, ring_kg, batch_size=4, progress=False)
    assert graph_store.embedding_origin(ring_kg) is None
    assert Predictor(trained, graph_store).embeddings(ring_kg).source == "encoded"


def test_relation_scores_are_the_e2r_cosines(trained, graph_store, ring_kg):
    predictor = Predictor(trained, graph_store)
    scores = {p.relation.name: p.score for p in predictor.relations(ring_kg, "a0", "a1", k=10)}
    relations = graph_store.relations(ring_kg)
    head, tail = (graph_store.entity(ring_kg, i).entity for i in ("a0", "a1"))
    with torch.no_grad():
        batch = triplet_batch(trained.featurizer, [head], [0], [tail], relations)
        cosines = trained.model.relation_logits(batch)[0] / trained.model.scales["e2r"]()
    assert scores == pytest.approx({r.name: float(c) for r, c in zip(relations, cosines)}, abs=1e-5)
    tails = [p.score for p in predictor.tails(ring_kg, "a0", "next", k=11)]
    assert all(-1 <= s <= 1 for s in [*scores.values(), *tails])

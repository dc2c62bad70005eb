"""Evaluation, prediction and embeddings of a trained run, against a real Neo4j."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kclip.models.embed import write_embeddings
from kclip.models.evaluate import evaluate
from kclip.models.inference import embed_kg, load_run
from kclip.models.predict import Predictor
from kclip.models.train import train
from kclip.models.train_config import load_train_config


@pytest.fixture
def trained(neo4j_settings, ring_kg):
    config = load_train_config("tiny", {"max_steps": 8, "data.num_workers": 0, "data.batch_size": 8})
    run = train(neo4j_settings, ring_kg, config, progress=False)
    return load_run(neo4j_settings, run)


def test_eval_reports_every_link_and_relation_metric(trained, graph_store, ring_kg):
    metrics = evaluate(trained, graph_store, ring_kg, "test", progress=False)
    for key in ("mrr", "hits@1", "hits@3", "hits@10", "mean_rank", "relation_mrr", "relation_hits@1", "relation_hits@3"):
        assert key in metrics
    assert 0 < metrics["mrr"] <= 1 and 1 <= metrics["mean_rank"] <= 11  # 11 entities
    assert metrics["hits@1"] <= metrics["hits@3"] <= metrics["hits@10"]
    assert metrics["mrr"] == pytest.approx((metrics["tail_mrr"] + metrics["head_mrr"]) / 2)
    assert "i2t_r@1" not in metrics  # a text-only KG has no retrieval


def test_eval_tail_ranks_match_the_predictor(trained, graph_store, ring_kg):
    """Two paths to the same number: the evaluator's filtered tail MRR, and ranks read off predict."""
    metrics = evaluate(trained, graph_store, ring_kg, "test", progress=False)
    predictor = Predictor(trained, graph_store)
    by_idx = {}
    lo, hi, _ = graph_store.entity_idx_range(ring_kg)
    for row in graph_store.entities_page(ring_kg, lo, hi + 1):
        by_idx[row.idx] = row.id
    names = {r.idx: r.name for r in graph_store.relations(ring_kg)}
    test = graph_store.triplet_arrays(ring_kg, "test")
    reciprocal = []
    for h, r, t in zip(test.heads, test.rels, test.tails):
        ranked = predictor.tails(ring_kg, by_idx[int(h)], names[int(r)], k=100)
        # filtered: drop other known tails (those 'known' in the KG), keep the answer
        kept = [p for p in ranked if not p.known or p.entity.idx == int(t)]
        position = next(i for i, p in enumerate(kept) if p.entity.idx == int(t))
        reciprocal.append(1 / (position + 1))
    assert metrics["tail_mrr"] == pytest.approx(float(np.mean(reciprocal)), abs=1e-6)


def test_predict_relations_and_cli_json(trained, neo4j_settings, graph_store, ring_kg, monkeypatch):
    predictor = Predictor(trained, graph_store)
    relations = predictor.relations(ring_kg, "a0", "a1", k=5)
    assert sorted(p.relation.name for p in relations) == ["has", "next"]
    assert next(p for p in relations if p.relation.name == "next").known
    from kclip.cli import app
    from kclip.platform import settings as settings_module

    monkeypatch.setattr(settings_module, "get_settings", lambda: neo4j_settings)
    monkeypatch.setattr("kclip.cli.get_settings", lambda: neo4j_settings)
    result = CliRunner().invoke(app, ["eval", "--run", trained.name, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert {"mrr", "hits@1", "hits@3", "hits@10", "mean_rank"} <= set(payload)


def test_embed_writes_vectors_the_vector_index_returns(trained, graph_store, ring_kg):
    summary = write_embeddings(trained, graph_store, ring_kg, progress=False)
    assert summary.entities == 11 and summary.dimensions == trained.model.embed_dim
    embeddings = embed_kg(trained, graph_store, ring_kg, progress=False)
    stored = {r["idx"]: r["v"] for r in graph_store.run(
        "MATCH (e:Entity {kg: $kg}) RETURN e.idx AS idx, e.embedding AS v", kg=ring_kg)}
    for i, idx in enumerate(embeddings.idx.tolist()):
        assert torch.allclose(torch.tensor(stored[idx]), embeddings.vectors[i].float(), atol=1e-6)
    sims = embeddings.vectors @ embeddings.vectors[embeddings.rows([0])[0]]
    cosine = {int(embeddings.idx[i]): float(sims[i]) for i in range(len(sims)) if int(embeddings.idx[i]) != 0}
    query_id = graph_store.entities_page(ring_kg, 0, 1)[0].id
    found = graph_store.similar_entities(ring_kg, query_id, k=3)
    # The index's top 3 are the brute-force top 3 up to its approximations (HNSW over quantized
    # vectors: scores seen off by ~3e-4 here); scores are Neo4j's (1 + cos) / 2, best first.
    third_best = sorted(cosine.values(), reverse=True)[2]
    assert len(found) == 3 and all(cosine[row.idx] >= third_best - 2e-3 for row, _ in found)
    assert all(abs(score - (1 + cosine[row.idx]) / 2) < 2e-3 for row, score in found)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


def test_compare_trains_each_variant_on_the_same_budget(neo4j_settings, ring_kg):
    from kclip.models.compare import compare

    config = load_train_config("tiny", {"max_steps": 3, "data.num_workers": 0, "data.batch_size": 8})
    results = compare(neo4j_settings, ring_kg, config, f"{ring_kg}-cmp", ["clip", "knowledge-clip", "no-kd", "no-g2e"],
                      progress=False)
    by_variant = {r.variant: r for r in results}
    assert by_variant["no-kd"].note  # kd is already 0 from random init: nothing to ablate
    assert "no 'image of' pairs" in by_variant["clip"].note  # a text-only KG gives plain CLIP nothing to learn
    for variant in ("knowledge-clip", "no-g2e"):
        run = by_variant[variant]
        assert "mrr" in run.metrics and load_run(neo4j_settings, run.run).step == 3
    assert load_run(neo4j_settings, by_variant["no-g2e"].run).model.gnn is None

"""The learned per-entity table (docs/METHOD.md, section 7): hybrid with content, zero at the start,
sized from the KG by ``kclip train``, carried by checkpoints and by --init-from on the same KG."""

from __future__ import annotations

import pytest
import torch

from kclip.models.knowledge_clip import entity_table_rows
from kclip.models.inference import embed_rows, load_run
from kclip.models.train import train
from kclip.models.train_config import load_train_config

ALL_ON = dict(e2e=1.0, e2r=1.0, g2e=1.0, kd=0.5, itc=1.0)
TABLE = {"entity_rows": 200, "entity_embedding": "on"}


def test_the_table_starts_small_so_the_embeddings_start_near_clips(make_model, toy_batch):
    """KD and ITC see content only: equal to the model without table; the embeddings E2E and G2E
    compare start within cos 0.99 of the content's; the fusion gets one more token per entity."""
    plain, hybrid = make_model(**ALL_ON), make_model(model=TABLE, **ALL_ON)
    assert plain.entity_table is None and hybrid.entity_table.weight.shape[0] == 200
    norms = hybrid.entity_table.weight.norm(dim=1)
    assert 0.05 < norms.mean().item() < 0.15
    with torch.no_grad():
        a, b = plain(toy_batch), hybrid(toy_batch)
        for term in ("kd", "itc"):
            assert a[term].item() == pytest.approx(b[term].item(), rel=1e-5, abs=1e-6), term
        entities = hybrid._encode_entities(toy_batch, [])
        content = torch.nn.functional.normalize(entities.content, dim=-1)
        assert (torch.nn.functional.cosine_similarity(entities.pooled, content) > 0.99).all()
    lengths = (~entities.tokens.padding).sum(dim=1)
    plain_lengths = (~plain._encode_entities(toy_batch, []).tokens.padding).sum(dim=1)
    assert torch.equal(lengths, plain_lengths + 1) and not entities.tokens.padding[:, 0].any()


def test_training_moves_only_the_rows_of_entities_it_saw(make_model, toy_batch):
    model = make_model(model=TABLE, **ALL_ON)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    start = model.entity_table.weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        model(toy_batch)["loss"].backward()
        optimizer.step()
    moved = (model.entity_table.weight.detach() - start).abs().sum(dim=1) > 0
    # The batch's entities; G2E's neighbours (106, 107) are read without gradient (neighbour_grad).
    assert set(torch.nonzero(moved).flatten().tolist()) == set(toy_batch.entity_idx.tolist())


@pytest.mark.parametrize("only", ["e2e", "e2r", "g2e", "itc"])
def test_every_parameter_gets_a_gradient_whatever_term_is_on(make_model, toy_batch, only):
    model = make_model(model=TABLE, **{t: (1.0 if t == only else 0.0) for t in ALL_ON})
    model(toy_batch)["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_entities_outside_the_table_have_no_learned_vector(make_model):
    model = make_model(model={"entity_rows": 4, "entity_embedding": "on"}, e2e=1.0)
    with torch.no_grad():
        model.entity_table.weight.fill_(1.0)  # rows 0..3
        vectors = model.learned_vectors(torch.tensor([-1, 0, 3, 4, 99]))
    assert vectors.abs().sum(dim=1).tolist() == [0.0, pytest.approx(vectors.shape[1]), pytest.approx(vectors.shape[1]), 0.0, 0.0]


def test_auto_stays_off_beyond_the_budget_and_on_forces_it():
    from kclip.models.knowledge_clip import ModelConfig

    assert entity_table_rows(ModelConfig(entity_rows=1000, entity_budget=64_000), 64) == 1000
    assert entity_table_rows(ModelConfig(entity_rows=1001, entity_budget=64_000), 64) == 0
    assert entity_table_rows(ModelConfig(entity_rows=1001, entity_budget=64_000, entity_embedding="on"), 64) == 1001
    assert entity_table_rows(ModelConfig(entity_rows=10, entity_embedding="off"), 64) == 0
    assert entity_table_rows(ModelConfig(entity_rows=None), 64) == 0


def test_train_sizes_the_table_from_the_kg_and_the_run_uses_it(neo4j_settings, ring_kg, graph_store):
    config = load_train_config("tiny", {"max_steps": 4, "data.num_workers": 0, "checkpoint_every": 4})
    run = train(neo4j_settings, ring_kg, config, run_name=f"{ring_kg}-table", progress=False)
    loaded = load_run(neo4j_settings, run)
    _, last, _ = graph_store.entity_idx_range(ring_kg)
    assert loaded.config.model.entity_rows == last + 1
    assert loaded.model.entity_table.weight.shape[0] == last + 1
    rows = graph_store.entity_content(ring_kg, [0, 1, 2])
    hybrid = embed_rows(loaded, rows)
    with torch.no_grad():
        content = loaded.model.entity_embeddings(text_tokens=loaded.featurizer.tokens([r.text for r in rows]))
    assert not torch.allclose(hybrid, content, atol=1e-4)  # four steps moved the rows it trained on

    # Continued on the same KG, the table carries over; the off switch builds none.
    child = train(neo4j_settings, ring_kg, load_train_config("tiny", {
        "max_steps": 1, "data.num_workers": 0, "model.init_from": run, "optim.lr": 1e-12, "optim.entity_lr": 1e-12}),
        run_name=f"{ring_kg}-table-child", progress=False)
    parent_table = loaded.model.entity_table.weight
    assert torch.allclose(load_run(neo4j_settings, child).model.entity_table.weight, parent_table, atol=1e-6)
    off = train(neo4j_settings, ring_kg, load_train_config("tiny", {
        "max_steps": 1, "data.num_workers": 0, "model.entity_embedding": "off"}), run_name=f"{ring_kg}-off", progress=False)
    assert load_run(neo4j_settings, off).model.entity_table is None


def test_the_table_trains_at_its_own_rate_without_decay(make_model):
    from kclip.models.train import build_optimizer

    model = make_model(model=TABLE, e2e=1.0)
    config = load_train_config("tiny", {"optim.lr": 1e-5, "optim.entity_lr": 3e-2})
    groups = build_optimizer(model, config, torch.device("cpu")).param_groups
    table = [g for g in groups if any(p is model.entity_table.weight for p in g["params"])]
    assert len(table) == 1 and table[0]["params"] == [model.entity_table.weight]
    assert table[0]["lr"] == 3e-2 and table[0]["weight_decay"] == 0.0
    assert {g["lr"] for g in groups if g is not table[0]} == {1e-5}


def test_an_id_only_kg_is_learned_through_the_table(tmp_path):
    """A ring of 64 entities named only by ids, "next" from each to a random other: content cannot
    tell them apart (CLIP sees every "nK" alike), the table can. E2E alone, 100 steps, CPU (measured:
    the same model without the table stays at 3.87 after 160 steps)."""
    import random

    from kclip.models.batching import triplet_batch
    from kclip.models.features import featurizer_for
    from kclip.models.knowledge_clip import KnowledgeCLIP, LossWeights, ModelConfig
    from kclip.models.train import build_optimizer
    from kclip.platform.graph_store import EntityRow, RelationRow

    n = 64
    order = random.Random(0).sample(range(n), n)
    rows = [EntityRow(i, f"n{i}", "text", f"n{i}", None) for i in range(n)]
    ring = [(order[k], order[(k + 1) % n]) for k in range(n)]
    torch.manual_seed(0)
    model = KnowledgeCLIP(ModelConfig(clip="kclip-tiny", entity_rows=n, fusion_layers=1), LossWeights(e2e=1.0, e2r=0.0, g2e=0.0))
    optimizer = build_optimizer(model, load_train_config("tiny"), torch.device("cpu"))
    featurizer = featurizer_for(model, tmp_path, 8)
    relation = [RelationRow(0, "next", "next")]
    losses = []
    for step in range(100):
        chosen = random.Random(step).sample(ring, 32)
        batch = triplet_batch(featurizer, [rows[h] for h, _ in chosen], [0] * 32, [rows[t] for _, t in chosen], relation)
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[:10]) / 10 > 3.0  # chance: ln(~45 candidates)
    assert sum(losses[-10:]) / 10 < 1.5

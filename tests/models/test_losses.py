"""Each Knowledge-CLIP loss on hand-made features: value, direction of change, gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from kclip.models.gnn import RelationalGNN
from kclip.models.losses import (batch_known, e2e_loss, e2r_loss, g2e_loss, itc_loss, kd_loss, ranking_loss,
                                 structure_kd_loss)

torch.manual_seed(0)


def _toy_triplets():
    heads, rels, tails = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 0, 0]), torch.tensor([3, 4, 5, 5])
    return heads, rels, tails


def test_e2e_falls_when_true_tail_moves_toward_query():
    heads, rels, tails = _toy_triplets()
    queries, entities = torch.randn(4, 16), torch.randn(6, 16)
    before = e2e_loss(queries, None, entities, heads, rels, tails, 10.0)["e2e"]
    closer = entities.clone()
    closer[tails] += 3 * F.normalize(queries, dim=-1) * entities[tails].norm(dim=-1, keepdim=True)
    after = e2e_loss(queries, None, closer, heads, rels, tails, 10.0)["e2e"]
    assert after < before


def test_e2e_gradient_reaches_queries_and_entities():
    heads, rels, tails = _toy_triplets()
    tail_q = torch.randn(4, 16, requires_grad=True)
    head_q = torch.randn(4, 16, requires_grad=True)
    entities = torch.randn(6, 16, requires_grad=True)
    loss = e2e_loss(tail_q, head_q, entities, heads, rels, tails, torch.tensor(10.0))["e2e"]
    loss.backward()
    for t in (tail_q, head_q, entities):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_e2e_averages_directions_and_filters_other_true_tails():
    heads, rels, tails = _toy_triplets()  # rows 0 and 3 share (h=0, r=0): tails 3 and 5 both true
    tail_q, head_q, entities = torch.randn(4, 8), torch.randn(4, 8), torch.randn(6, 8)
    known_tails = batch_known((heads, rels), tails, 6)
    assert known_tails[0].nonzero().flatten().tolist() == [5]
    assert known_tails[3].nonzero().flatten().tolist() == [3]
    tail = ranking_loss(tail_q, entities, tails, 5.0, known_tails)
    # Row 0 by hand: column 5 left out of the softmax.
    logits = 5.0 * F.normalize(tail_q, dim=-1) @ F.normalize(entities, dim=-1).T
    row0 = -logits[0, 3] + torch.logsumexp(logits[0, [0, 1, 2, 3, 4]], 0)
    filtered = logits.masked_fill(known_tails, float("-inf"))
    assert torch.allclose(F.cross_entropy(filtered, tails, reduction="none")[0], row0)
    head = ranking_loss(head_q, entities, heads, 5.0, batch_known((tails, rels), heads, 6))
    both = e2e_loss(tail_q, head_q, entities, heads, rels, tails, 5.0)["e2e"]
    assert torch.allclose(both, (tail + head) / 2)


def test_e2r_picks_the_right_relation_when_features_say_so():
    relations = torch.eye(8)[:5]  # (R=5, D=8), orthonormal
    heads, tails, rels = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([4, 0, 2])
    queries = relations[rels] + 0.1 * torch.randn(3, 8)
    logits = F.normalize(queries, dim=-1) @ relations.T
    assert logits.argmax(dim=1).tolist() == rels.tolist()
    good = e2r_loss(queries, relations, rels, heads, tails, 20.0)["e2r"]
    wrong = e2r_loss(queries, relations, torch.tensor([1, 2, 3]), heads, tails, 20.0)["e2r"]
    assert good < 0.1 < math.log(5) < wrong


def test_g2e_is_minimal_when_propagation_preserves_features():
    original = torch.randn(6, 32)
    kept = g2e_loss(original, original, 20.0)["g2e"]
    shuffled = g2e_loss(original[torch.randperm(6)], original, 20.0)["g2e"]
    noisy = g2e_loss(original + 0.5 * torch.randn(6, 32), original, 20.0)["g2e"]
    assert kept < noisy and kept < shuffled and kept < 0.05


def test_gnn_first_layer_has_no_identity_shortcut():
    """G2E would be trivial if a node's own feature reached its propagated feature directly."""
    gnn = RelationalGNN(16, layers=1)
    x = torch.randn(5, 16)
    src, dst, rel = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 0])
    rel_table = torch.randn(2, 16)
    out = gnn(x, src, dst, rel_table, rel)
    moved = x.clone()
    moved[3] += torch.randn(16)  # node 3's own feature: only its neighbour 2 may notice
    changed = (gnn(moved, src, dst, rel_table, rel) - out).abs().sum(dim=1) > 1e-6
    assert changed.tolist() == [False, False, True, False, False]
    assert torch.equal(out[4], torch.zeros(16))  # isolated: nothing propagated


def test_gnn_passes_messages_only_along_edges_and_runs_under_bf16():
    gnn = RelationalGNN(16, layers=1)
    x = torch.randn(5, 16, requires_grad=True)
    src, dst, rel = torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([0, 1])
    rel_table = torch.randn(2, 16)
    out = gnn(x, src, dst, rel_table, rel)
    moved = x.detach().clone()
    moved[0] += torch.randn(16)  # node 0 is a neighbour of 1 only (not a constant: LayerNorm ignores those)
    out2 = gnn(moved, src, dst, rel_table, rel)
    changed = (out2 - out).abs().sum(dim=1) > 1e-6
    assert changed.tolist() == [False, True, False, False, False]  # node 0 reaches only its neighbour
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = gnn(x, src, dst, rel_table, rel)
    low.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.allclose(low.float(), out, atol=0.1)


def test_kd_is_zero_for_student_equal_to_teacher_and_positive_after_perturbing():
    image, text = torch.randn(4, 16), torch.randn(4, 16)
    same = kd_loss(image, text, 10.0, image.clone(), text.clone(), 10.0)["kd"]
    assert same.abs() < 1e-6
    student_image = (image + 0.5 * torch.randn(4, 16)).requires_grad_()
    moved = kd_loss(student_image, text, 10.0, image, text, 10.0)["kd"]
    assert moved > 1e-3
    moved.backward()
    assert student_image.grad.abs().sum() > 0


def test_structure_kd_is_zero_for_equal_embeddings_and_ignores_self_similarity():
    entities = torch.randn(5, 16)
    assert structure_kd_loss(entities, 10.0, entities.clone(), 10.0)["kd"].abs() < 1e-6
    # A rescaled copy has the same cosines: nothing to distil.
    assert structure_kd_loss(3 * entities, 10.0, entities, 10.0)["kd"].abs() < 1e-6
    moved = (entities + 0.5 * torch.randn(5, 16)).requires_grad_()
    loss = structure_kd_loss(moved, 10.0, entities, 10.0)["kd"]
    assert loss > 1e-3
    loss.backward()
    assert moved.grad.abs().sum() > 0


def test_itc_matches_a_hand_computation_on_2x2():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # cosine logits (scale 1): [[1, 0.6], [0, 0.8]]
    i2t = -math.log(math.e / (math.e + math.exp(0.6))) - math.log(math.exp(0.8) / (1 + math.exp(0.8)))
    t2i = -math.log(math.e / (math.e + 1)) - math.log(math.exp(0.8) / (math.exp(0.6) + math.exp(0.8)))
    expected = (i2t / 2 + t2i / 2) / 2
    assert itc_loss(image, text, 1.0)["itc"].item() == pytest.approx(expected, rel=1e-6)


def test_losses_compute_in_float32_from_bf16_features():
    a, b = torch.randn(3, 8).bfloat16(), torch.randn(3, 8).bfloat16()
    for value in (itc_loss(a, b, 10.0)["itc"], kd_loss(a, b, 10.0, b, a, 10.0)["kd"], g2e_loss(a, b, 10.0)["g2e"]):
        assert value.dtype == torch.float32 and torch.isfinite(value)

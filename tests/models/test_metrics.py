"""Ranks and metrics against hand-computed values."""

import numpy as np
import pytest
import torch

from kclip.models.metrics import KnownTriplets, RankEvaluator, realistic_ranks, recall_at


def test_realistic_rank_counts_higher_scores_and_half_the_ties():
    scores = torch.tensor([[0.9, 0.5, 0.7, 0.1],   # true col 2: one higher (0.9) -> rank 2
                           [0.3, 0.3, 0.3, 0.3],   # true col 0: three ties -> 1 + 3/2 = 2.5
                           [0.2, 0.8, 0.9, 0.4]])  # true col 0: three higher -> 4
    ranks = realistic_ranks(scores, torch.tensor([2, 0, 0]), [[], [], []])
    assert ranks.tolist() == [2.0, 2.5, 4.0]


def test_filtering_removes_other_true_answers_but_not_the_answer_itself():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    assert realistic_ranks(scores, torch.tensor([2]), [[]]).tolist() == [3.0]
    assert realistic_ranks(scores, torch.tensor([2]), [[0, 2]]).tolist() == [2.0]  # col 0 also true
    assert realistic_ranks(scores, torch.tensor([2]), [[0, 1, 2]]).tolist() == [1.0]


def test_rank_evaluator_metrics():
    ev = RankEvaluator("tail_")
    ev.process(np.array([1.0, 2.0]))
    ev.process(np.array([4.0, 20.0]))
    m = ev.finalize()
    assert m["tail_mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 20) / 4)
    assert m["tail_hits@1"] == 0.25 and m["tail_hits@3"] == 0.5 and m["tail_hits@10"] == 0.75
    assert m["tail_mean_rank"] == pytest.approx(6.75)


def test_known_triplets_index_every_direction():
    known = KnownTriplets(np.array([0, 0, 1]), np.array([5, 5, 5]), np.array([1, 2, 2]))
    assert known.tails_of[(0, 5)] == {1, 2}
    assert known.heads_of[(5, 2)] == {0, 1}
    assert known.rels_of[(0, 2)] == {5}


def test_recall_at_k():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    r = recall_at(sim, [{2}, {1}], (1, 2))
    assert r == {1: 0.5, 2: 1.0}

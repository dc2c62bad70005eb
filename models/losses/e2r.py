"""E2R (entity-relation): (h, [mask], t)'s relation-position output picks the true relation."""

from __future__ import annotations

import torch

from kclip.models.losses.ranking import batch_known, ranking_loss


def e2r_loss(
    relation_queries: torch.Tensor,  # (B, D) fused relation-position outputs, projected to the CLIP embedding
    relations: torch.Tensor,  # (R, D) pooled CLIP text embeddings of the candidate relations
    rels: torch.Tensor,  # (B,) rows into relations
    heads: torch.Tensor,  # (B,) entity rows, to filter other relations between the same pair
    tails: torch.Tensor,  # (B,)
    logit_scale: torch.Tensor | float,
) -> dict[str, torch.Tensor]:
    known = batch_known((heads, tails), rels, relations.shape[0])  # (B, R)
    return {"e2r": ranking_loss(relation_queries, relations, rels, logit_scale, known)}

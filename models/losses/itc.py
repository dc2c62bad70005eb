"""ITC: CLIP's symmetric image-text contrastive loss (open_clip's ClipLoss, on one device)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def itc_loss(
    image: torch.Tensor,  # (P, D) pooled image embeddings of the pairs
    text: torch.Tensor,  # (P, D) pooled text embeddings, row i describes image i
    logit_scale: torch.Tensor | float,
) -> dict[str, torch.Tensor]:
    logits = logit_scale * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T  # (P, P)
    labels = torch.arange(image.shape[0], device=image.device)
    return {"itc": (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2}

"""ITC: CLIP's symmetric image-text contrastive loss (open_clip's ClipLoss, on one device)."""

from __future__ import annotations

import torch

from kclip.models.losses.ranking import ranking_loss


def itc_loss(
    image: torch.Tensor,  # (P, D) pooled image embeddings of the pairs
    text: torch.Tensor,  # (P, D) pooled text embeddings, row i describes image i
    logit_scale: torch.Tensor | float,
) -> dict[str, torch.Tensor]:
    """Each image picks its text among the pairs' texts and each text its image, averaged."""
    pairs = torch.arange(image.shape[0], device=image.device)
    i2t = ranking_loss(image, text, pairs, logit_scale)
    t2i = ranking_loss(text, image, pairs, logit_scale)
    return {"itc": (i2t + t2i) / 2}

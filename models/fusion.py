"""The multimodal fusion transformer over one triplet.

Input sequence, one per triplet:  [CLS ; x_h + e_h ; x̄_r + e_r ; x_t + e_t]
- x_h, x_t: the head's and tail's token-level tower features, projected from their tower's width
  (text or image) to the fusion width; variable length, so padded and masked out of attention;
- x̄_r: the relation's pooled CLIP text embedding (D), projected to the fusion width;
- e_h, e_r, e_t: learnable type encodings marking each element's role.
A masked element (the tail for E2E, the relation for E2R) is replaced by one learnable mask
embedding (plus its type encoding) and takes a single position.
Outputs: the CLS position (the whole triplet) and the relation position (relation in context).

Where the paper is silent we chose: no extra positional encoding (tower tokens already carry
their own, and the type encodings separate the three elements); pre-LayerNorm blocks with a
final LayerNorm, as in CLIP's own towers.

Method: docs/METHOD.md (section 4, fusion and masking).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kclip.models.encoders import TowerOutput

# Which element of a triplet is masked, per query row.
NONE, HEAD, REL, TAIL = 0, 1, 2, 3


@dataclass
class EntityTokens:
    """Every batch entity's tokens in fusion width; rows follow the batch's entity list."""

    tokens: torch.Tensor  # (E, L, F)
    padding: torch.Tensor  # (E, L) bool, True = padding; real tokens always come first


class FusionEncoder(nn.Module):
    def __init__(self, text_width: int, image_width: int, embed_dim: int, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.text_proj = nn.Linear(text_width, width)
        self.image_proj = nn.Linear(image_width, width)
        self.rel_proj = nn.Linear(embed_dim, width)
        scale = width**-0.5  # CLIP's init scale for class/positional embeddings
        self.cls_token = nn.Parameter(torch.randn(width) * scale)
        self.type_embedding = nn.Parameter(torch.randn(3, width) * scale)  # e_h, e_r, e_t
        self.mask_embedding = nn.Parameter(torch.randn(width) * scale)
        # torch's encoder layer rather than open_clip's Transformer: it takes a key padding mask
        # directly, where open_clip's blocks would need a (B * heads, S, S) additive mask (GBs for
        # image triplets of ViT-B/16, S ~ 400).
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_out = nn.LayerNorm(width)

    def entity_tokens(
        self,
        text: TowerOutput | None,
        image: TowerOutput | None,
        text_rows: torch.Tensor,
        image_rows: torch.Tensor,
        num_entities: int,
    ) -> EntityTokens:
        """Project each modality's tower tokens to the fusion width and lay them out in entity order."""
        parts = []  # (rows, tokens (n, L_m, F), padding (n, L_m))
        if text is not None:
            parts.append((text_rows, self.text_proj(text.tokens), text.padding))
        if image is not None:
            parts.append((image_rows, self.image_proj(image.tokens), image.padding))
        L = max(t.shape[1] for _, t, _ in parts)
        first = parts[0][1]
        tokens = first.new_zeros(num_entities, L, self.width)  # (E, L, F)
        padding = torch.ones(num_entities, L, dtype=torch.bool, device=first.device)  # (E, L)
        for rows, t, p in parts:
            n, Lm = p.shape
            t = torch.cat([t.to(tokens.dtype), t.new_zeros(n, L - Lm, self.width, dtype=tokens.dtype)], dim=1)
            p = torch.cat([p, p.new_ones(n, L - Lm)], dim=1)
            tokens = tokens.index_put((rows,), t)  # out of place: keeps autograd simple
            padding = padding.index_put((rows,), p)
        return EntityTokens(tokens, padding)

    def forward(
        self,
        entities: EntityTokens,
        relations: torch.Tensor,  # (R, D) pooled relation text embeddings
        heads: torch.Tensor,  # (Q,) rows into the entity list
        rels: torch.Tensor,  # (Q,) rows into ``relations``
        tails: torch.Tensor,  # (Q,)
        masked: torch.Tensor,  # (Q,) long: NONE, HEAD, REL or TAIL per row
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(triplet (Q, F) at the CLS position, relation in context (Q, F) at the relation position)."""
        Q = heads.shape[0]
        h, h_pad = self._masked(entities.tokens[heads], entities.padding[heads], masked == HEAD)
        r = self.rel_proj(relations)[rels][:, None, :]  # (Q, 1, F)
        r, r_pad = self._masked(r, torch.zeros(Q, 1, dtype=torch.bool, device=r.device), masked == REL)
        t, t_pad = self._masked(entities.tokens[tails], entities.padding[tails], masked == TAIL)
        h, h_pad = _trim(h, h_pad)
        t, t_pad = _trim(t, t_pad)
        e_h, e_r, e_t = self.type_embedding.to(h.dtype)
        cls = self.cls_token.to(h.dtype).expand(Q, 1, -1)  # (Q, 1, F)
        x = torch.cat([cls, h + e_h, r.to(h.dtype) + e_r, t + e_t], dim=1)  # (Q, S, F)
        pad = torch.cat([h_pad.new_zeros(Q, 1), h_pad, r_pad, t_pad], dim=1)  # (Q, S)
        x = self.ln_out(self.transformer(x, src_key_padding_mask=pad))
        return x[:, 0], x[:, 1 + h.shape[1]]

    def _masked(
        self, x: torch.Tensor, pad: torch.Tensor, masked: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace masked rows of one element by the mask embedding, at its first position only."""
        x = torch.where(masked[:, None, None], self.mask_embedding.to(x.dtype), x)  # (Q, L, F)
        first_only = torch.arange(pad.shape[1], device=pad.device)[None, :] > 0  # (1, L)
        pad = torch.where(masked[:, None], first_only, pad)  # (Q, L)
        return x, pad


def _trim(x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop trailing positions that are padding in every row (real tokens come first)."""
    keep = max(int((~pad).sum(dim=1).max()), 1) if pad.shape[0] else 1
    return x[:, :keep], pad[:, :keep]


def default_heads(width: int) -> int:
    """CLIP's convention: 64-dim heads, at least one; a divisor of ``width``."""
    heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    return heads


__all__ = ["FusionEncoder", "EntityTokens", "NONE", "HEAD", "REL", "TAIL", "default_heads"]

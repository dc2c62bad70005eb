"""Token-level features from open_clip's two towers (docs/METHOD.md, section 3).

Entities keep every token (x_h, x_t in R^{L x width}) for the fusion transformer; the pooled,
projected embedding CLIP would return is computed in the same pass, for contrastive targets and
retrieval. The encoders walk open_clip 3.3.0's own modules (``CLIP.encode_text``,
``HFTextEncoder.forward`` for Hugging Face text towers, ``VisionTransformer.forward``) step by
step instead of reimplementing them, so pretrained weights mean exactly what they meant there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kclip.models.open_clip_lazy import CLIP, HFTextEncoder, text_global_pool


@dataclass
class TowerOutput:
    tokens: torch.Tensor  # (N, L, width) token-level features, after the tower's final LayerNorm
    padding: torch.Tensor  # (N, L) bool, True where a position is padding
    pooled: torch.Tensor  # (N, D) pooled and projected, as CLIP's encode_* (not normalised)


def text_lengths(text: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """(N,) real length of each token row: the last non-pad position + 1 (at least 1).

    Not ``(text != pad).sum()``: CLIP's BPE id 0 is "!", which may appear inside a sentence.
    """
    positions = torch.arange(1, text.shape[1] + 1, device=text.device)  # (L,)
    return ((text != pad_id) * positions).amax(dim=1).clamp(min=1)


def encode_text_tokens(clip: nn.Module, text: torch.Tensor) -> TowerOutput:
    """Per-token text features (N, T, width), T the batch's longest real sequence, plus pooled (N, D),
    from CLIP's own text tower or a Hugging Face one (a ``CustomTextCLIP`` built by ``create_clip``)."""
    tower = getattr(clip, "text", None)
    if isinstance(tower, HFTextEncoder):
        return _encode_hf_text_tokens(tower, text)
    return _encode_clip_text_tokens(clip, text)


def _encode_clip_text_tokens(clip: CLIP, text: torch.Tensor) -> TowerOutput:
    """CLIP's text tower. Trimming the padding before the transformer is exact: its causal mask
    already keeps every real token from seeing the padding after it, and the EOT token used for
    pooling is real."""
    lengths = text_lengths(text)  # (N,)
    T = int(lengths.max()) if text.shape[0] else 1
    text = text[:, :T]  # (N, T)
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(text).to(cast_dtype)  # (N, T, W)
    x = x + clip.positional_embedding[:T].to(cast_dtype)
    attn_mask = clip.attn_mask[:T, :T] if clip.attn_mask is not None else None
    x = clip.transformer(x, attn_mask=attn_mask)
    x = clip.ln_final(x)  # (N, T, W)
    pooled = text_global_pool(x, text, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if isinstance(clip.text_projection, nn.Linear):
        pooled = clip.text_projection(pooled)
    elif clip.text_projection is not None:
        pooled = pooled @ clip.text_projection  # (N, D)
    padding = torch.arange(T, device=text.device)[None, :] >= lengths[:, None]  # (N, T)
    return TowerOutput(x, padding, pooled)


def _encode_hf_text_tokens(tower: HFTextEncoder, text: torch.Tensor) -> TowerOutput:
    """A Hugging Face text tower: tokens are the transformer's last hidden state (N, T, width),
    pooled is the tower's pooler and projection, as ``HFTextEncoder.forward`` computes them.

    Trimming trailing padding first is exact here too: padding is masked out of attention (the
    same mask the pooler averages over), and positions are absolute, counted from the start.
    """
    pad = tower.config.pad_token_id
    lengths = text_lengths(text, pad)  # (N,)
    T = int(lengths.max()) if text.shape[0] else 1
    text = text[:, :T]  # (N, T)
    attn_mask = (text != pad).long()  # (N, T) 1 = real token, as HFTextEncoder.forward
    out = tower.transformer(input_ids=text, attention_mask=attn_mask)
    pooled = tower.proj(tower.pooler(out, attn_mask))  # (N, D)
    return TowerOutput(out.last_hidden_state, attn_mask == 0, pooled)


def encode_image_tokens(clip: CLIP, images: torch.Tensor) -> TowerOutput:
    """All ViT tokens (N, 1 + P, width), class token first, plus the pooled embedding (N, D).

    Mirrors ``VisionTransformer.forward`` with ``output_tokens``, except that the class token is
    kept in the token sequence too (it summarises the image for the fusion transformer).
    """
    visual = clip.visual
    x = visual._embeds(images)  # (N, 1 + P, W): patches, class token, positions, ln_pre
    x = visual.transformer(x)
    pooled, _ = visual._pool(x)  # (N, W): honours the config's pool_type and ln_post placement
    if visual.proj is not None:
        pooled = pooled @ visual.proj  # (N, D)
    tokens = visual.ln_post(x)  # (N, 1 + P, W)
    padding = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # images never pad
    return TowerOutput(tokens, padding, pooled)

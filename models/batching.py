"""Turning entities and relations read from Neo4j into a ``TripletBatch``.

Shared by the sampler (training batches), evaluation and prediction (query batches), so every
path feeds the model exactly the same tensors for the same triplets.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from kclip.models.batch import TripletBatch
from kclip.models.features import Featurizer
from kclip.platform.graph_store import EntityRow, RelationRow
from kclip.platform.records import CAPTION_OF, IMAGE_OF


def triplet_batch(featurizer: Featurizer, heads: Sequence[EntityRow], rel_positions: Sequence[int],
                  tails: Sequence[EntityRow], candidates: Sequence[RelationRow]) -> TripletBatch:
    """A batch of triplets given by their entities, each relation a position in ``candidates``.

    Entities are deduplicated by idx (sorted), so an entity mentioned twice is encoded once.
    """
    by_idx = {e.idx: e for e in (*heads, *tails)}
    order = sorted(by_idx)
    row_of = {idx: row for row, idx in enumerate(order)}
    rows = [by_idx[i] for i in order]
    tokens, text_rows, images, image_rows = featurizer.entity_tensors(rows)
    heads_t = torch.as_tensor([row_of[e.idx] for e in heads], dtype=torch.long)
    tails_t = torch.as_tensor([row_of[e.idx] for e in tails], dtype=torch.long)
    rels_t = torch.as_tensor(list(rel_positions), dtype=torch.long)
    pair_image, pair_text = image_text_pairs(candidates, rels_t, heads_t, tails_t, rows)
    return TripletBatch(
        heads=heads_t, rels=rels_t, tails=tails_t,
        entity_idx=torch.as_tensor(order, dtype=torch.long),
        text_tokens=tokens, text_rows=torch.as_tensor(text_rows, dtype=torch.long),
        images=images, image_rows=torch.as_tensor(image_rows, dtype=torch.long),
        relation_idx=torch.as_tensor([r.idx for r in candidates], dtype=torch.long),
        relation_tokens=featurizer.tokens([r.text for r in candidates]),
        pair_image=pair_image, pair_text=pair_text,
    )


def image_text_pairs(candidates: Sequence[RelationRow], rels: torch.Tensor, heads: torch.Tensor, tails: torch.Tensor,
                     rows: Sequence[EntityRow]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image rows, text rows) of the batch's image-text pairs, from its 'image of' / 'caption of' triplets.

    One caption per image, so the contrastive terms over pairs have a single positive per row.
    """
    pairs: dict[int, int] = {}
    for r, h, t in zip(rels.tolist(), heads.tolist(), tails.tolist()):
        name = candidates[r].name
        if name == IMAGE_OF and rows[h].modality == "image" and rows[t].modality == "text":
            pairs.setdefault(h, t)
        elif name == CAPTION_OF and rows[h].modality == "text" and rows[t].modality == "image":
            pairs.setdefault(t, h)
    texts_used: set[int] = set()
    image_rows, text_rows = [], []
    for image, text in pairs.items():
        if text not in texts_used:
            texts_used.add(text)
            image_rows.append(image), text_rows.append(text)
    return torch.as_tensor(image_rows, dtype=torch.long), torch.as_tensor(text_rows, dtype=torch.long)


def candidate_relations(all_relations: Sequence[RelationRow], batch_rel_idx: np.ndarray,
                        limit: int) -> tuple[list[RelationRow], list[int]]:
    """E2R candidates: every relation of the KG, or the batch's own when there are more than ``limit``."""
    if len(all_relations) <= limit:
        chosen = list(all_relations)
    else:  # very many relations (scene graphs): contrast against those in the batch
        wanted = set(int(i) for i in batch_rel_idx)
        chosen = [r for r in all_relations if r.idx in wanted]
    position = {r.idx: i for i, r in enumerate(chosen)}
    return chosen, [position[int(i)] for i in batch_rel_idx]


def with_pair_stream(batch: TripletBatch, featurizer: Featurizer,
                     pairs: Sequence[tuple[EntityRow, EntityRow]]) -> TripletBatch:
    """``batch`` plus (image, caption) pairs of another KG (``data.pairs_kg``), for ITC and KD only.

    Their entities follow the batch's own, with entity idx -1 (they are not entities of the KG
    trained on: no learned vectors, no triplets, no neighbourhood). One caption per image and one
    image per caption, so each pair row has a single positive.
    """
    images, texts, chosen = set(), set(), []
    for image, text in pairs:
        if image.idx not in images and text.idx not in texts:
            images.add(image.idx), texts.add(text.idx), chosen.append((image, text))
    if not chosen:
        return batch
    E = batch.num_entities
    rows = [image for image, _ in chosen] + [text for _, text in chosen]  # images, then their captions
    tokens, text_pos, pixels, image_pos = featurizer.entity_tensors(rows)
    n = len(chosen)
    return replace(
        batch,
        entity_idx=torch.cat([batch.entity_idx, torch.full((2 * n,), -1, dtype=torch.long)]),
        text_tokens=torch.cat([batch.text_tokens, tokens]),
        text_rows=torch.cat([batch.text_rows, torch.as_tensor(text_pos, dtype=torch.long) + E]),
        images=torch.cat([batch.images, pixels]) if batch.images.shape[0] else pixels,
        image_rows=torch.cat([batch.image_rows, torch.as_tensor(image_pos, dtype=torch.long) + E]),
        pair_image=torch.cat([batch.pair_image, torch.arange(E, E + n)]),
        pair_text=torch.cat([batch.pair_text, torch.arange(E + n, E + 2 * n)]),
    )

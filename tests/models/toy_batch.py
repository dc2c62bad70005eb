"""A hand-built TripletBatch over a six-entity toy KG, for model and trainer tests (CPU, instant).

    from toy_batch import make_toy_batch        # tests/models is on sys.path under pytest
    batch = make_toy_batch(model.tokenizer)      # or make_toy_batch(tokenizer, subgraph=False, pairs=False)

Entities (rows, mixing modalities on purpose so row bookkeeping is exercised):
    0 "a horse" (text)   1 horse photo (image)   2 "grass" (text)
    3 "a dog" (text)     4 dog photo (image)     5 "a field" (text)
Relations (KG idx 10..13): "eats", "stands on", "image of", "caption of".
Triplets: (horse, eats, grass), (dog, stands on, field), (horse photo, image of, horse),
          (dog photo, image of, dog), (horse, stands on, field).
Subgraph: the batch's entities, then neighbours 6 "a cow" (text) and 7 a cow photo (image);
edges: the five triplets, (cow, eats, grass), (cow photo, image of, cow), and one edge whose
relation (KG idx 99) is not among the candidates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kclip.models.batch import SubgraphBatch, TripletBatch
from kclip.models.dgl_compat import import_dgl

ENTITY_TEXTS = {0: "a horse", 2: "grass", 3: "a dog", 5: "a field"}
IMAGE_ROWS = [1, 4]
RELATIONS = ["eats", "stands on", "image of", "caption of"]
RELATION_IDX = [10, 11, 12, 13]
HEADS, RELS, TAILS = [0, 3, 1, 4, 0], [0, 1, 2, 2, 1], [2, 5, 0, 3, 5]


def make_toy_batch(
    tokenizer: Callable[[list[str]], torch.Tensor],
    image_size: int = 32,
    subgraph: bool = True,
    pairs: bool = True,
    seed: int = 0,
) -> TripletBatch:
    """The toy batch above; images are fixed random tensors of ``image_size``."""
    g = torch.Generator().manual_seed(seed)
    text_rows = sorted(ENTITY_TEXTS)
    return TripletBatch(
        heads=torch.tensor(HEADS),
        rels=torch.tensor(RELS),
        tails=torch.tensor(TAILS),
        entity_idx=torch.arange(100, 106),
        text_tokens=tokenizer([ENTITY_TEXTS[r] for r in text_rows]),
        text_rows=torch.tensor(text_rows),
        images=torch.randn(len(IMAGE_ROWS), 3, image_size, image_size, generator=g),
        image_rows=torch.tensor(IMAGE_ROWS),
        relation_idx=torch.tensor(RELATION_IDX),
        relation_tokens=tokenizer(RELATIONS),
        pair_image=torch.tensor([1, 4]) if pairs else torch.zeros(0, dtype=torch.long),
        pair_text=torch.tensor([0, 3]) if pairs else torch.zeros(0, dtype=torch.long),
        subgraph=_toy_subgraph(tokenizer, image_size, g) if subgraph else None,
    )


def _toy_subgraph(tokenizer: Callable, image_size: int, g: torch.Generator) -> SubgraphBatch:
    dgl = import_dgl()
    src = HEADS + [6, 7, 0]
    dst = TAILS + [2, 6, 6]
    rel = [RELATION_IDX[r] for r in RELS] + [10, 12, 99]
    graph = dgl.graph((torch.tensor(src), torch.tensor(dst)), num_nodes=8)
    graph.ndata["entity_idx"] = torch.arange(100, 108)
    graph.ndata["batch_row"] = torch.tensor([0, 1, 2, 3, 4, 5, -1, -1])
    graph.edata["rel"] = torch.tensor(rel)
    return SubgraphBatch(
        graph=graph,
        neighbour_text_tokens=tokenizer(["a cow"]),
        neighbour_text_rows=torch.tensor([6]),
        neighbour_images=torch.randn(1, 3, image_size, image_size, generator=g),
        neighbour_image_rows=torch.tensor([7]),
    )

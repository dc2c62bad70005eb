"""What the sampler hands the model: one batch of triplets with its entities, relations and subgraph.

Entities appear once per batch however many triplets mention them; triplets index into the
entity and relation lists. Shapes: B triplets, E unique entities (Et text + Ei image), R candidate
relations, L text context length (77 for CLIP's tokenizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # DGL is imported lazily, through models/dgl_compat.py
    import dgl


@dataclass
class SubgraphBatch:
    """A k-hop neighbourhood around the batch's entities, sampled from Neo4j.

    ``graph`` is a DGL graph on the CPU (PyPI's DGL has no CUDA): ``ndata["entity_idx"]`` is each
    node's KG entity idx, ``ndata["batch_row"]`` its position in the batch's entity list (-1 for
    neighbours outside the batch), ``edata["rel"]`` each edge's KG relation idx. The first E nodes
    are the batch's entities in batch order. Neighbours' content is in ``neighbour_*``, rows given
    as subgraph node indices. Message passing takes ``edge_index(device)`` to run on any device.
    """

    graph: "dgl.DGLGraph"
    neighbour_text_tokens: torch.Tensor  # (Nt, L) long
    neighbour_text_rows: torch.Tensor  # (Nt,) long
    neighbour_images: torch.Tensor  # (Ni, 3, H, W) float
    neighbour_image_rows: torch.Tensor  # (Ni,) long

    @property
    def num_nodes(self) -> int:
        return int(self.graph.num_nodes())

    @property
    def batch_entities(self) -> int:
        """How many of the first nodes are the batch's own entities (the rest are neighbours)."""
        return int((self.graph.ndata["batch_row"] >= 0).sum())

    def edge_index(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(src, dst, rel), each (M,) long, on ``device``."""
        src, dst = self.graph.edges()
        return src.to(device), dst.to(device), self.graph.edata["rel"].to(device)


@dataclass
class TripletBatch:
    # Triplets: indices into the entity list (heads, tails) and the relation list (rels).
    heads: torch.Tensor  # (B,) long
    rels: torch.Tensor  # (B,) long
    tails: torch.Tensor  # (B,) long
    # Entities: KG idx, and content by modality. text_rows / image_rows give each row's entity position.
    entity_idx: torch.Tensor  # (E,) long
    text_tokens: torch.Tensor  # (Et, L) long
    text_rows: torch.Tensor  # (Et,) long
    images: torch.Tensor  # (Ei, 3, H, W) float, already preprocessed for the image tower
    image_rows: torch.Tensor  # (Ei,) long
    # Candidate relations: the KG's relations (or those of the batch when the KG has very many).
    relation_idx: torch.Tensor  # (R,) long: KG relation idx of each candidate
    relation_tokens: torch.Tensor  # (R, L) long
    # Image-text pairs (for KD): rows into the entity list, image first.
    pair_image: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (P,)
    pair_text: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (P,)
    subgraph: SubgraphBatch | None = None

    @property
    def num_entities(self) -> int:
        return int(self.entity_idx.numel())

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "TripletBatch":
        """Move every tensor (and the subgraph's) to ``device``."""
        return _move(self, device, non_blocking)

    def pin_memory(self) -> "TripletBatch":
        return _move(self, "pin", True)

    def __reduce__(self):
        # DataLoader workers hand a batch over by pickling it, and torch shares every tensor through
        # its own shared-memory segment and file descriptor: ~30 per batch, ~5 ms of the trainer's
        # main thread. Packed, a batch crosses as one buffer per dtype.
        return _unpack_batch, _pack_batch(self)


def _move(obj, device, non_blocking):
    changes = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, torch.Tensor):
            changes[f.name] = value.pin_memory() if device == "pin" else value.to(device, non_blocking=non_blocking)
        elif isinstance(value, SubgraphBatch):  # its DGL graph stays on the CPU
            changes[f.name] = _move(value, device, non_blocking)
    return replace(obj, **changes)


def _batch_tensors(batch: TripletBatch) -> tuple[dict[str, torch.Tensor], int | None]:
    """Every tensor of a batch by a flat name, and its subgraph's node count (None: no subgraph)."""
    tensors = {f.name: getattr(batch, f.name) for f in fields(batch) if f.name != "subgraph"}
    sub = batch.subgraph
    if sub is None:
        return tensors, None
    tensors |= {f"subgraph.{f.name}": getattr(sub, f.name) for f in fields(sub) if f.name != "graph"}
    src, dst = sub.graph.edges()
    tensors |= {"graph.src": src, "graph.dst": dst}
    tensors |= {f"graph.ndata.{k}": v for k, v in sub.graph.ndata.items()}
    tensors |= {f"graph.edata.{k}": v for k, v in sub.graph.edata.items()}
    return tensors, sub.num_nodes


def _pack_batch(batch: TripletBatch) -> tuple:
    tensors, num_nodes = _batch_tensors(batch)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    filled: dict[torch.dtype, int] = {}
    layout = []
    for name, t in tensors.items():
        offset = filled.get(t.dtype, 0)
        layout.append((name, t.dtype, offset, tuple(t.shape)))
        by_dtype.setdefault(t.dtype, []).append(t.reshape(-1))
        filled[t.dtype] = offset + t.numel()
    buffers = {dtype: torch.cat(parts) for dtype, parts in by_dtype.items()}
    return buffers, layout, num_nodes


def _unpack_batch(buffers: dict, layout: list, num_nodes: int | None) -> TripletBatch:
    tensors = {name: buffers[dtype].narrow(0, offset, math.prod(shape)).view(shape)
               for name, dtype, offset, shape in layout}
    top = {k: v for k, v in tensors.items() if "." not in k}
    if num_nodes is None:
        return TripletBatch(**top)
    from kclip.models.dgl_compat import import_dgl

    graph = import_dgl().graph((tensors["graph.src"], tensors["graph.dst"]), num_nodes=num_nodes)
    for prefix, frame in (("graph.ndata.", graph.ndata), ("graph.edata.", graph.edata)):
        for name, value in tensors.items():
            if name.startswith(prefix):
                frame[name[len(prefix):]] = value
    sub = {k[len("subgraph."):]: v for k, v in tensors.items() if k.startswith("subgraph.")}
    return TripletBatch(**top, subgraph=SubgraphBatch(graph=graph, **sub))

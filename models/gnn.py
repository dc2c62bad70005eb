"""A relation-aware GNN for the G2E objective.

R-GCN in spirit (Schlichtkrull et al. 2018): each edge (s, r, d) sends W_out (h_s + W_rel x̄_r) to d
and, as an inverse relation, W_in (h_d + W_rel x̄_r) back to s; each node averages what it receives,
adds its own W_self h, and keeps a residual. Relations are not an id table but their CLIP text
embeddings x̄_r, so the GNN needs no per-KG size and sees relations the way the fusion does.

Message passing is plain torch (``index_add_`` over an edge index) so it runs on the features'
device: PyPI's DGL has no CUDA, and its graphs stay on the CPU (see SubgraphBatch.edge_index).

Method: docs/METHOD.md (section 5.4, G2E).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RelationalLayer(nn.Module):
    def __init__(self, dim: int, keep_self: bool = True):
        super().__init__()
        self.keep_self = keep_self
        self.norm = nn.LayerNorm(dim)
        self.w_self = nn.Linear(dim, dim) if keep_self else None
        self.w_out = nn.Linear(dim, dim, bias=False)  # along the edge, s -> d
        self.w_in = nn.Linear(dim, dim, bias=False)  # against the edge, d -> s (inverse relation)
        self.w_rel = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        h: torch.Tensor,  # (N, D)
        src: torch.Tensor,  # (M,)
        dst: torch.Tensor,  # (M,)
        rel_table: torch.Tensor,  # (R', D) one row per relation
        rel: torch.Tensor,  # (M,) rows into rel_table
    ) -> torch.Tensor:
        N = h.shape[0]
        z = self.norm(h)
        r = self.w_rel(rel_table)[rel]  # (M, D): project the R' relations once, then gather
        to_dst = self.w_out(z[src] + r)  # (M, D)
        to_src = self.w_in(z[dst] + r)  # (M, D)
        # Sum in float32 whatever autocast chose: bf16 sums over high-degree nodes lose precision.
        agg = torch.zeros(N, h.shape[1], dtype=torch.float32, device=h.device)  # (N, D)
        agg.index_add_(0, dst, to_dst.float()).index_add_(0, src, to_src.float())
        degree = torch.zeros(N, dtype=torch.float32, device=h.device)
        ones = torch.ones_like(src, dtype=torch.float32)
        degree.index_add_(0, dst, ones).index_add_(0, src, ones)
        agg = agg / degree.clamp(min=1)[:, None]  # mean over incident edges; isolated nodes get 0
        if not self.keep_self:
            return F.gelu(agg).to(h.dtype)
        return h + F.gelu(self.w_self(z) + agg)


class RelationalGNN(nn.Module):
    """L pre-norm relational layers over a subgraph's edge index; width in = width out.

    The first layer sees only a node's neighbours, not the node itself: otherwise G2E ("an entity
    after propagation stays close to itself before") has a trivial solution, the identity, and
    teaches the encoders nothing about the graph. Later layers are residual.
    """

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(RelationalLayer(dim, keep_self=i > 0) for i in range(layers))

    def forward(
        self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, rel_table: torch.Tensor, rel: torch.Tensor
    ) -> torch.Tensor:
        """x (N, D) node features -> (N, D) propagated features; src/dst/rel (M,) on x's device."""
        h = x
        for layer in self.layers:
            h = layer(h, src, dst, rel_table, rel)
        return h

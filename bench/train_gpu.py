"""Trainer benchmark on a GPU: samples/s, model FLOPs utilisation and memory of a training step.

    .venv/bin/python bench/train_gpu.py --config vit-b-16 --batch 256              # on a CUDA machine
    .venv/bin/python bench/train_gpu.py --config tiny --batch 8 --device cpu --steps 2   # smoke test

The batch is pre-materialised and synthetic but shaped like a scene-graph batch: image heads, text
tails (captions of ``--text-tokens``), every triplet an image-text pair (so KD/ITC run), and a
1-hop subgraph with two text neighbours per entity (so G2E runs). FLOPs of one forward + backward
are counted with torch's FlopCounterMode; MFU is achieved FLOP/s over the peak, both the
datasheet's bf16 dense peak and a large bf16 matmul measured in the same run (the baseline).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from kclip.models.batch import SubgraphBatch, TripletBatch
from kclip.models.dgl_compat import import_dgl
from kclip.models.knowledge_clip import KnowledgeCLIP
from kclip.models.train import autocast_for, build_optimizer
from kclip.models.train_config import load_train_config

DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def synthetic_batch(model: KnowledgeCLIP, batch: int, text_tokens: int, relations: int) -> TripletBatch:
    g = torch.Generator().manual_seed(0)
    size = model.clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    tokens = _captions(batch, text_tokens, g)
    rows = torch.arange(batch)
    dgl = import_dgl()
    src = torch.arange(2 * batch).repeat_interleave(2)
    dst = 2 * batch + torch.arange(4 * batch)
    graph = dgl.graph((src, dst), num_nodes=6 * batch)
    graph.ndata["entity_idx"] = torch.arange(6 * batch)
    graph.ndata["batch_row"] = torch.cat([torch.arange(2 * batch), torch.full((4 * batch,), -1)])
    graph.edata["rel"] = torch.randint(0, relations, (4 * batch,), generator=g)
    return TripletBatch(
        heads=rows, rels=torch.randint(0, relations, (batch,), generator=g), tails=rows + batch,
        entity_idx=torch.arange(2 * batch),
        text_tokens=tokens, text_rows=rows + batch,
        images=torch.randn(batch, 3, size, size, generator=g), image_rows=rows,
        relation_idx=torch.arange(relations), relation_tokens=_captions(relations, 4, g),
        pair_image=rows, pair_text=rows + batch,
        subgraph=SubgraphBatch(graph, tokens.repeat(4, 1), torch.arange(2 * batch, 6 * batch),
                               torch.zeros(0, 3, size, size), torch.zeros(0, dtype=torch.long)),
    )


def _captions(n: int, length: int, g: torch.Generator) -> torch.Tensor:
    """(n, 77) CLIP token rows of ``length`` tokens: start, random words, end of text (where CLIP pools)."""
    tokens = torch.randint(1, 49406, (n, 77), generator=g)
    tokens[:, 0] = 49406
    tokens[:, length - 1] = 49407
    tokens[:, length:] = 0
    return tokens


def step(model, optimizer, batch, config, device) -> None:
    with autocast_for(config, device):
        loss = model(batch)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="vit-b-16-openai")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--text-tokens", type=int, default=24)
    parser.add_argument("--relations", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = load_train_config(args.config, {"losses.kd": 0.5, "losses.itc": 1.0})
    torch.manual_seed(0)
    model = KnowledgeCLIP(config.model, config.losses).to(device)
    optimizer = build_optimizer(model, config, device)
    batch = synthetic_batch(model, args.batch, args.text_tokens, args.relations).to(device)
    runner = torch.compile(model) if args.compile else model
    for _ in range(3):
        step(runner, optimizer, batch, config, device)
    with FlopCounterMode(display=False) as counter:
        step(model, optimizer, batch, config, device)
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(runner, optimizer, batch, config, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    achieved = flops / seconds / 1e12
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{args.config}: {params / 1e6:.1f}M trainable parameters, batch {args.batch} triplets "
          f"({2 * args.batch} entities + {4 * args.batch} neighbours), precision {config.precision}, device {device}")
    print(f"step {seconds * 1000:.1f} ms, {args.batch / seconds:,.0f} triplets/s, "
          f"{flops / 1e9:,.1f} GFLOP per step, {achieved:.2f} TFLOP/s achieved")
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
        measured = matmul_tflops(device)
        print(f"GPU {name}: peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        print(f"bf16 matmul baseline (8192^3, this run): {measured:.0f} TFLOP/s -> "
              f"{achieved / measured:.1%} of it")
        if peak:
            print(f"MFU vs datasheet bf16 dense peak {peak:.0f} TFLOP/s: {achieved / peak:.1%}   (target >= 35%)")


if __name__ == "__main__":
    main()

"""Sampler benchmark: does the live Neo4j sampler keep the trainer busy?

    .venv/bin/python bench/sampler.py [--kg wn18rr] [--config small] [--batches 30] [--workers 1]

Measured in one run, on the same batches (same epoch order):
1. the sampler alone: triplets/s and subgraphs/s streamed from Neo4j (cold caches: every text is
   tokenized for the first time);
2. training on those batches pre-materialised in memory (the baseline step rate);
3. training fed live by the sampler's DataLoader, on the same epoch again: entity rows and tokens
   cached, as for every batch once a worker has met the KG's entities (the steady state);
4. training fed live on the next epoch's first batches, mostly entities the worker has not met yet
   (rows fetched from Neo4j, texts tokenized: the first epoch's regime, a one-off per worker),
   against those batches in memory.
Target (issue 3): live >= 90% of the pre-materialised step rate.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import DEFAULT_WN18RR, ensure_kg
from kclip.models.features import featurizer_for
from kclip.models.knowledge_clip import KnowledgeCLIP
from kclip.models.sampler import TripletStream, spec_from_config
from kclip.models.train import autocast_for, build_optimizer
from kclip.models.train_config import load_train_config
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.settings import get_settings


def train_steps(model, optimizer, batches, config, device) -> tuple[int, float]:
    """Train on an iterable of batches; (steps, seconds), timing from the second step on."""
    steps, start = 0, None
    for batch in batches:
        with autocast_for(config, device):
            loss = model(batch.to(device))["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        steps += 1
        if steps == 1:
            start = time.perf_counter()  # the first step pays for lazy initialisation
    return steps - 1, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kg", default="wn18rr")
    parser.add_argument("--wn18rr", default=DEFAULT_WN18RR)
    parser.add_argument("--config", default="small")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--neighbourhoods", choices=["projection", "neo4j"], default=None,
                        help="where G2E subgraphs are sampled (default: the config's)")
    args = parser.parse_args()
    settings, device = get_settings(), torch.device(args.device)
    config = load_train_config(args.config)
    if args.neighbourhoods:
        config.data.neighbourhoods = args.neighbourhoods
    with open_graph_store(settings) as store:
        ensure_kg(store, settings, args.kg, "tsv", args.wn18rr)
    torch.manual_seed(0)
    model = KnowledgeCLIP(config.model, config.losses).to(device)
    optimizer = build_optimizer(model, config, device)
    d = config.data
    spec = spec_from_config(args.kg, config)
    stream = TripletStream(settings, spec, featurizer_for(model, settings.media_root, d.max_text_tokens))

    def live_batches(epoch: int):
        loader = stream.loader(epoch, num_workers=args.workers, pin_memory=device.type == "cuda")
        for i, batch in enumerate(loader):
            if i == args.batches:
                return
            yield batch

    start = time.perf_counter()
    cached = list(live_batches(0))
    sample_s = time.perf_counter() - start
    triplets = sum(len(b.heads) for b in cached)
    train_steps(model, optimizer, cached[:3], config, device)  # warm up kernels and allocator
    pre_steps, pre_s = train_steps(model, optimizer, cached, config, device)
    live_steps, live_s = train_steps(model, optimizer, live_batches(0), config, device)
    next_steps, next_s = train_steps(model, optimizer, live_batches(1), config, device)
    next_cached = list(live_batches(1))
    next_pre_steps, next_pre_s = train_steps(model, optimizer, next_cached, config, device)
    stream.close()
    pre_rate, live_rate = pre_steps / pre_s, live_steps / live_s
    next_pre_rate, next_rate = next_pre_steps / next_pre_s, next_steps / next_s
    print(f"KG {args.kg}, config {args.config} (batch {d.batch_size}, {d.hops}-hop fanout {d.fanout}, "
          f"neighbourhoods from {d.neighbourhoods}), {args.workers} worker(s), device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"sampler alone, cold   {triplets / sample_s:9,.0f} triplets/s  {len(cached) / sample_s:7.1f} subgraphs/s")
    print(f"trainer consumes      {pre_rate * d.batch_size:9,.0f} triplets/s  ({pre_rate:.2f} steps/s on in-memory batches)")
    print(f"trainer, live feed    {live_rate * d.batch_size:9,.0f} triplets/s  ({live_rate:.2f} steps/s)")
    print(f"trainer, unmet entities {next_rate * d.batch_size:7,.0f} triplets/s  ({next_rate:.2f} steps/s live, "
          f"{next_pre_rate:.2f} in memory)")
    print(f"cold sampler / trainer demand = {len(cached) / sample_s / pre_rate:5.2f}x")
    print(f"live / pre-materialised       = {live_rate / pre_rate:5.1%}   (target >= 90%)")
    print(f"unmet entities, live / memory = {next_rate / next_pre_rate:5.1%}   (first epoch only)")


if __name__ == "__main__":
    main()

"""Quality benchmark: what the knowledge objectives buy, measured against baselines in the same run.

    .venv/bin/python bench/quality.py wn18rr --minutes 30 --config tiny --set data.batch_size=128
    .venv/bin/python bench/quality.py scenes --steps 400 --images 600

wn18rr: train from random init within a time budget (steps calibrated on this machine first),
        then filtered test MRR / Hits@10, against the same model untrained (baseline) and the
        published TransE / RotatE numbers.
scenes: synthetic scene graphs; plain CLIP fine-tuning (image-text contrastive only) vs
        Knowledge-CLIP, same data, steps and seed: relation-swap accuracy and retrieval R@k.
entity-table: link prediction with the learned per-entity table ("auto") and without it ("off"),
        same steps and seeds, on each KG given as NAME=DIR (a tsv KG folder), for example UMLS and
        Kinships (id-only entities: "person100") from PyKEEN's wheel, and WN18RR:
    .venv/bin/python bench/quality.py entity-table --steps 600 --seeds 0,1 \
        --tsv umls=/tmp/kgs/umls --tsv kinships=/tmp/kgs/kinships --tsv wn18rr=../shared/datasets/wn18rr
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import DEFAULT_WN18RR, ensure_kg
from kclip.kg_loaders.synth_scene_graphs import generate_scene_graphs
from kclip.models.compare import compare
from kclip.models.evaluate import evaluate_and_record
from kclip.models.train import train
from kclip.models.train_config import load_train_config, parse_overrides
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.registry import Registry
from kclip.platform.settings import get_settings

PUBLISHED = {"TransE": (0.226, 0.501), "RotatE": (0.476, 0.571)}  # WN18RR test MRR, Hits@10


def run_and_eval(settings, kg: str, config, name: str, device: str, max_triplets: int | None) -> dict:
    train(settings, kg, config, run_name=name, device=device)
    return evaluate_and_record(settings, name, kg, "test", device, max_triplets)


def wn18rr(args, settings) -> None:
    config = load_train_config(args.config, parse_overrides(args.set))
    with open_graph_store(settings) as store:
        ensure_kg(store, settings, args.kg, "tsv", Path(args.wn18rr))
    stamp = time.strftime("%m%d-%H%M%S")
    calibrate = f"q-{stamp}-calibrate"
    train(settings, args.kg, config.model_copy(update={"max_steps": 30}), run_name=calibrate, device=args.device,
          progress=False)
    rates = [v for _, _, v in Registry(settings.registry).metrics(calibrate, "steps_per_s")][1:]
    steps = max(10, int(args.minutes * 60 * sum(rates) / len(rates) * 0.95))
    print(f"calibrated: {sum(rates) / len(rates):.2f} steps/s -> {steps} steps in {args.minutes} minutes")
    untrained = config.model_copy(update={"max_steps": 1, "optim": config.optim.model_copy(update={"lr": 1e-12})})
    base = run_and_eval(settings, args.kg, untrained, f"q-{stamp}-untrained", args.device, args.max_triplets)
    started = time.perf_counter()
    trained = run_and_eval(settings, args.kg, config.model_copy(update={"max_steps": steps}), f"q-{stamp}-trained",
                           args.device, args.max_triplets)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nWN18RR test (filtered, {int(trained['triplets'])} triplets, heads and tails), config {args.config}, "
          f"{steps} steps, {minutes:.1f} min train+eval on {args.device}")
    print(f"{'':12}{'MRR':>8}{'Hits@1':>8}{'Hits@10':>9}{'rel MRR':>9}")
    for label, m in (("untrained", base), ("trained", trained)):
        print(f"{label:12}{m['mrr']:8.4f}{m['hits@1']:8.4f}{m['hits@10']:9.4f}{m['relation_mrr']:9.4f}")
    for label, (mrr, hits) in PUBLISHED.items():
        print(f"{label + ' (pub.)':12}{mrr:8.3f}{'':8}{hits:9.3f}")
    print(f"trained / untrained: MRR {_ratio(trained, base, 'mrr')}, Hits@10 {_ratio(trained, base, 'hits@10')}")


def _ratio(new: dict, old: dict, key: str) -> str:
    return f"{new[key] / old[key]:.1f}x" if old[key] > 0 else f"{new[key]:.4f} vs 0"


def scenes(args, settings) -> None:
    config = load_train_config(args.config, {"max_steps": args.steps, **parse_overrides(args.set)})
    out = settings.home / "bench" / f"scenes-{args.images}"
    if not (out / "scene_graphs.json").is_file():
        generate_scene_graphs(out, images=args.images, seed=0)
    kg = f"bench-scenes-{args.images}"
    with open_graph_store(settings) as store:
        ensure_kg(store, settings, kg, "visual-genome", out)
    results = compare(settings, kg, config, f"q-{time.strftime('%m%d-%H%M%S')}", ["clip", "knowledge-clip"],
                      device=args.device)
    metrics = ("swap_accuracy", "i2t_r@1", "i2t_r@5", "t2i_r@1", "t2i_r@5", "mrr", "hits@10")
    print(f"\nsynthetic scene graphs ({args.images} images), {args.steps} steps each, config {args.config}")
    print(f"{'':16}" + "".join(f"{m:>14}" for m in metrics))
    for r in results:
        print(f"{r.variant:16}" + "".join(f"{_or_nan(r.metrics.get(m)):14.3f}" for m in metrics))
    clip, kc = results[0].metrics, results[1].metrics
    print("knowledge-clip / clip: " + ", ".join(
        f"{m} {kc[m] / clip[m]:.2f}x" for m in metrics if kc.get(m) is not None and (clip.get(m) or 0) > 0))


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value  # n/a: the variant has no head for it


def entity_table(args, settings) -> None:
    stamp = time.strftime("%m%d-%H%M%S")
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = []
    for item in args.tsv:
        kg, _, folder = item.partition("=")
        with open_graph_store(settings) as store:
            ensure_kg(store, settings, kg, "tsv", Path(folder))
            entities = store.entity_idx_range(kg)[2]
        by_mode = {}
        for mode in ("off", "auto"):
            by_mode[mode] = [run_and_eval(settings, kg, load_train_config(args.config, {
                "max_steps": args.steps, "seed": seed, "model.entity_embedding": mode, **parse_overrides(args.set)}),
                f"q-{stamp}-{kg}-{mode}-s{seed}", args.device, args.max_triplets) for seed in seeds]
        chance = sum(1 / k for k in range(1, entities + 1)) / entities  # MRR of a random ranking
        for mode, runs in by_mode.items():
            lines.append(f"{kg:10}{entities:>9,}{'on' if mode == 'auto' else 'off':>7}"
                         f"{_mean_spread([m['mrr'] for m in runs]):>17}{_mean_spread([m['hits@10'] for m in runs]):>17}"
                         f"{chance:>9.4f}")
        gain = _mean([m["mrr"] for m in by_mode["auto"]]) / max(_mean([m["mrr"] for m in by_mode["off"]]), 1e-9)
        lines.append(f"{'':10}table on / off: MRR {gain:.2f}x")
    print(f"\nlink prediction (test, filtered, realistic ties), config {args.config}, {args.steps} steps, "
          f"seeds {args.seeds}, {args.device}; mean ± sample std over seeds")
    print(f"{'KG':10}{'entities':>9}{'table':>7}{'MRR':>17}{'Hits@10':>17}{'chance':>9}")
    print("\n".join(lines))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _mean_spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    mean = _mean(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.4f} ± {std:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["wn18rr", "scenes", "entity-table"])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=30.0, help="wn18rr: training budget")
    parser.add_argument("--kg", default="wn18rr")
    parser.add_argument("--wn18rr", default=str(DEFAULT_WN18RR))
    parser.add_argument("--max-triplets", type=int, default=None, help="wn18rr: evaluate a subset")
    parser.add_argument("--steps", type=int, default=400, help="scenes, entity-table: steps per run")
    parser.add_argument("--images", type=int, default=600, help="scenes: synthetic images")
    parser.add_argument("--tsv", action="append", default=[], help="entity-table: NAME=DIR of a tsv KG")
    parser.add_argument("--seeds", default="0,1", help="entity-table: comma-separated seeds")
    args = parser.parse_args()
    parts = {"wn18rr": wn18rr, "scenes": scenes, "entity-table": entity_table}
    parts[args.part](args, get_settings())


if __name__ == "__main__":
    main()

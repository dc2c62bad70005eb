"""``kclip compare``: plain CLIP fine-tuning vs Knowledge-CLIP vs its ablations, on the same data,
step budget and seed, evaluated on the same split, in one table.

The table is also recorded in the run registry (``Registry.comparisons``), where the explorer's
Runs page shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kclip.models.evaluate import evaluate_and_record
from kclip.models.train import train
from kclip.models.train_config import TrainConfig
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.records import IMAGE_OF
from kclip.platform.registry import COMPARISON_HEADLINE, Registry
from kclip.platform.settings import Settings

# Loss weights each variant changes; everything else comes from the shared config.
VARIANTS: dict[str, dict[str, float]] = {
    "clip": {"e2e": 0.0, "e2r": 0.0, "g2e": 0.0, "kd": 0.0, "itc": 1.0},  # image-text contrastive only
    # (and trained on the KG's image-text pairs alone: see variant_config)
    "knowledge-clip": {},
    "no-g2e": {"g2e": 0.0},
    "no-e2r": {"e2r": 0.0},
    "no-kd": {"kd": 0.0},
}
HEADLINE = COMPARISON_HEADLINE


@dataclass
class VariantResult:
    variant: str
    run: str
    metrics: dict[str, float]
    note: str = ""


def variant_config(config: TrainConfig, variant: str) -> TrainConfig:
    losses = config.losses.model_copy(update=VARIANTS[variant])
    data = config.data
    if variant == "clip":  # plain CLIP fine-tuning sees image-text pairs, every batch full of them
        data = data.model_copy(update={"relations": [IMAGE_OF], "hops": 0})
    return config.model_copy(update={"losses": losses, "data": data})


def same_as_full(config: TrainConfig, variant: str) -> bool:
    """An ablation that turns off a term the full model has off anyway (KD from random init)."""
    pretrained = config.model.pretrained is not None
    full = config.losses.resolved(pretrained).enabled()
    return variant != "knowledge-clip" and variant_config(config, variant).losses.resolved(pretrained).enabled() == full


def compare(settings: Settings, kg: str, config: TrainConfig, prefix: str, variants: list[str],
            split: str = "test", device: str | None = None, max_triplets: int | None = None,
            progress: bool = True) -> list[VariantResult]:
    results = []
    with open_graph_store(settings) as store:
        has_pairs = any(r.name == IMAGE_OF for r in store.relations(kg))
    for variant in variants:
        if same_as_full(config, variant):
            results.append(VariantResult(variant, "-", {}, "same as knowledge-clip with this config"))
            continue
        if variant == "clip" and not has_pairs:
            results.append(VariantResult(variant, "-", {}, f"no '{IMAGE_OF}' pairs in this KG to fine-tune CLIP on"))
            continue
        run = train(settings, kg, variant_config(config, variant), run_name=f"{prefix}-{variant}",
                    device=device, progress=progress)
        metrics = evaluate_and_record(settings, run, kg, split, device or "cpu", max_triplets, progress)
        results.append(VariantResult(variant, run, metrics))
    Registry(settings.registry).add_comparison(prefix, kg, split, config.model_dump(mode="json"),
                                               [asdict(r) for r in results])
    return results

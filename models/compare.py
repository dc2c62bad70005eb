"""``kclip compare``: CLIP-continued vs Knowledge-CLIP vs its ablations, fairly, over several seeds.

    kclip compare --kg comp --config small --init-from comp-clip --seeds 0,1,2 --aro OUT --out cmp/

Fair means: every variant starts from the same point (the config's ``model.pretrained`` or
``model.init_from``, resolved once) and trains on exactly the same batches: same data config, seed,
steps and batch, so the same triplets and image-text pairs. The variants differ only in their
loss weights (and the entity table), never in their data:

- ``clip``: CLIP-continued, ITC (+ KD as the config resolves it: on from trained weights); it sees
  the batches' triplets but ignores them, and has no per-entity table (plain CLIP has none);
- ``knowledge-clip``: the config as it is;
- ``no-g2e``, ``no-e2r``, ``no-kd``, ``no-entity-embedding``: one part off.

Where the KG has image-text pairs but the config reserves no room for them (``data.pair_fraction``
0, no ``data.pairs_kg``), every variant gets ``pair_fraction`` = ``DEFAULT_PAIR_FRACTION`` so that
CLIP-continued has pairs in every batch. An ablation that changes nothing under the config (no-kd
from random init, where KD is 0 anyway) is reported as such and not trained.

Metrics a variant cannot have are None (n/a), never numbers: link prediction needs the E2E head,
relation prediction the E2R head, ARO's fusion scorer the E2E head (``kclip eval`` scores a model
without a head by a translation rule instead; that rule is not what the comparison measures).
Each variant x seed is a run ``{prefix}-{variant}-s{seed}``; a variant's figure is the mean over its
seeds with the sample standard deviation. Outputs: Markdown, JSON and a PNG (``write_outputs``),
and one row in the run registry (``Registry.comparisons``), which the explorer's Runs page shows.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kclip.models.downstream import evaluate_downstream_and_record
from kclip.models.evaluate import evaluate_and_record
from kclip.models.sampler import TripletStream, spec_from_config
from kclip.models.train import resolve_init_from, train
from kclip.models.train_config import TrainConfig, pairs_per_batch
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.records import CAPTION_OF, IMAGE_OF
from kclip.platform.registry import COMPARISON_HEADLINE, Registry
from kclip.platform.settings import Settings

FULL = "knowledge-clip"
# What each variant changes in the shared config: loss weights, then model fields.
LOSS_CHANGES: dict[str, dict[str, float]] = {
    "clip": {"e2e": 0.0, "e2r": 0.0, "g2e": 0.0, "itc": 1.0},
    FULL: {},
    "no-g2e": {"g2e": 0.0},
    "no-e2r": {"e2r": 0.0},
    "no-kd": {"kd": 0.0},
    "no-entity-embedding": {},
}
MODEL_CHANGES: dict[str, dict[str, Any]] = {"clip": {"entity_embedding": "off"},
                                            "no-entity-embedding": {"entity_embedding": "off"}}
VARIANTS = tuple(LOSS_CHANGES)
DEFAULT_PAIR_FRACTION = 0.25
HEADLINE = COMPARISON_HEADLINE
PAIR_RELATIONS = (IMAGE_OF, CAPTION_OF)
LINK_METRICS = ("mrr", "mean_rank", "hits@1", "hits@3", "hits@10")
NA = "n/a"


# -- the variants -------------------------------------------------------------------------------

def variant_config(config: TrainConfig, variant: str) -> TrainConfig:
    """The shared config with the variant's changes: losses and model only, never the data."""
    losses = config.losses.model_copy(update=LOSS_CHANGES[variant])
    model = config.model.model_copy(update=MODEL_CHANGES.get(variant, {}))
    return config.model_copy(update={"losses": losses, "model": model})


def trained_parts(config: TrainConfig) -> tuple[frozenset[str], bool]:
    """(the loss terms that train something, whether the per-entity table is on): two configs with
    the same parts train the same model."""
    terms = set(config.losses.resolved(config.model.starts_trained).enabled())
    if config.data.hops == 0:
        terms.discard("g2e")  # without neighbourhoods G2E has nothing to propagate
    return frozenset(terms), config.model.entity_embedding != "off"


def same_as_full(config: TrainConfig, variant: str) -> bool:
    """An ablation that turns off what the full model has off anyway (KD from random init)."""
    return variant not in ("clip", FULL) and trained_parts(variant_config(config, variant)) == trained_parts(config)


def heads_of(config: TrainConfig) -> set[str]:
    """The prediction heads a variant's model has (``e2e``, ``e2r``)."""
    return {"e2e", "e2r"} & trained_parts(config)[0]


def unavailable(metric: str, heads: set[str]) -> bool:
    """A metric the model cannot have: link ranks without E2E, relation ranks without E2R,
    ARO's fusion scorer without E2E."""
    name = metric.removeprefix("tail_").removeprefix("head_")
    if name in LINK_METRICS or metric.startswith("aro/fusion_"):
        return "e2e" not in heads
    if metric.startswith("relation_"):
        return "e2r" not in heads
    return False


# -- what a comparison holds --------------------------------------------------------------------

@dataclass
class Budget:
    """What every variant of one seed trains on (the sampler's plan, replayed)."""

    steps: int
    batch_size: int
    triplets: int  # rows seen, pairs included
    pairs: int  # image-text pair rows among them (the KG's own)


@dataclass
class VariantSummary:
    variant: str
    seeds: list[int] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    per_run: list[dict[str, float | None]] = field(default_factory=list)  # in the order of ``runs``
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)  # sample std; None with one seed or n/a
    note: str = ""

    @property
    def run(self) -> str:
        """The first seed's run; "-" when the variant was not trained (``note`` says why)."""
        return self.runs[0] if self.runs else "-"

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.mean

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass
class Comparison:
    name: str
    kg: str
    split: str
    config: str  # the shared config's name
    seeds: list[int]
    notes: list[str]
    budget: dict[int, Budget]  # by seed
    chance: dict[str, float]  # metric -> its chance level, where evaluation gives one
    variants: list[VariantSummary]

    def table_metrics(self) -> list[str]:
        """The headline metrics some variant has a value for, in headline order."""
        return [m for m in HEADLINE if any(v.mean.get(m) is not None for v in self.variants)]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kg": self.kg, "split": self.split, "config": self.config, "seeds": self.seeds,
                "notes": self.notes, "budget": {str(s): asdict(b) for s, b in self.budget.items()},
                "chance": self.chance, "metrics": self.table_metrics(),
                "variants": [{**asdict(v), "n": v.n} for v in self.variants]}


# -- running it ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Extras:
    """Downstream evaluations run on every run as well (``kclip eval --task aro|retrieval``)."""

    aro: Path | None = None
    retrieval: Path | None = None
    images: Path | None = None  # the folder the retrieval JSON's image paths are relative to


def compare(settings: Settings, kg: str, config: TrainConfig, prefix: str, variants: list[str],
            split: str = "test", device: str | None = None, max_triplets: int | None = None,
            progress: bool = True, seeds: list[int] | None = None, extras: Extras = Extras()) -> list[VariantSummary]:
    """Train and evaluate each variant x seed; recorded in the registry. ``run_comparison`` gives more."""
    return run_comparison(settings, kg, config, prefix, variants, split, device, max_triplets, progress,
                          seeds, extras).variants


def run_comparison(settings: Settings, kg: str, config: TrainConfig, prefix: str, variants: list[str],
                   split: str = "test", device: str | None = None, max_triplets: int | None = None,
                   progress: bool = True, seeds: list[int] | None = None, extras: Extras = Extras()) -> Comparison:
    seeds = seeds if seeds else [config.seed]
    with open_graph_store(settings) as store:
        store.require_kg(kg)
        has_pairs = config.data.pairs_kg is not None or any(r.name in PAIR_RELATIONS for r in store.relations(kg))
    config, notes = shared_config(settings, config, has_pairs)
    summaries = [VariantSummary(v, note=skip_reason(config, v, has_pairs)) for v in variants]
    for seed in seeds:
        for summary in summaries:
            if summary.note:
                continue
            run_config = variant_config(config, summary.variant).model_copy(update={"seed": seed})
            run = train(settings, kg, run_config, run_name=f"{prefix}-{summary.variant}-s{seed}", device=device,
                        progress=progress)
            metrics = evaluate_run(settings, run, kg, split, device, max_triplets, extras, progress)
            summary.seeds.append(seed)
            summary.runs.append(run)
            summary.per_run.append(without_missing_heads(metrics, heads_of(run_config)))
    fill_absent(summaries)
    for summary in summaries:
        summary.mean, summary.std = aggregate(summary.per_run)
    budget = {seed: data_budget(settings, kg, config.model_copy(update={"seed": seed})) for seed in seeds}
    chance = chance_levels([m for s in summaries for m in s.per_run])
    result = Comparison(prefix, kg, split, config.name or "unnamed", seeds, notes, budget, chance, summaries)
    record(settings, result, config)
    return result


def shared_config(settings: Settings, config: TrainConfig, has_pairs: bool) -> tuple[TrainConfig, list[str]]:
    """The config every variant starts from: its start resolved once, room for pairs where the KG has them."""
    notes = []
    if config.model.init_from is not None:
        config = config.model_copy(update={"model": resolve_init_from(settings, config.model)})
        step = f" (its step {config.model.init_step})" if config.model.init_step is not None else ""
        notes.append(f"every variant starts from {config.model.init_from}{step}")
    elif config.model.pretrained is not None:
        notes.append(f"every variant starts from {config.model.pretrained}")
    else:
        notes.append("every variant starts from random weights (the same ones per seed)")
    data = config.data
    if has_pairs and data.pair_fraction == 0 and data.pairs_kg is None:
        config = config.model_copy(update={"data": data.model_copy(update={"pair_fraction": DEFAULT_PAIR_FRACTION})})
        notes.append(f"data.pair_fraction set to {DEFAULT_PAIR_FRACTION} for every variant, so that "
                     "CLIP-continued has image-text pairs in every batch")
    return config, notes


def skip_reason(config: TrainConfig, variant: str, has_pairs: bool) -> str:
    """Why a variant is not trained ("" when it is)."""
    if same_as_full(config, variant):
        return f"same as {FULL} with this config"
    if variant == "clip" and not has_pairs and "kd" not in trained_parts(variant_config(config, variant))[0]:
        return f"n/a: no '{IMAGE_OF}' pairs in this KG (nor data.pairs_kg) to continue CLIP on, and no KD"
    return ""


def evaluate_run(settings: Settings, run: str, kg: str, split: str, device: str | None,
                 max_triplets: int | None, extras: Extras, progress: bool) -> dict[str, float]:
    """The run on the KG split, and on the extra files; each evaluation recorded as ``kclip eval`` records it."""
    device = device or "cpu"
    metrics = evaluate_and_record(settings, run, kg, split, device, max_triplets, progress)
    if extras.aro is not None:
        aro = evaluate_downstream_and_record(settings, run, "aro", extras.aro, device=device, progress=progress)
        metrics.update({f"aro/{k}": v for k, v in aro.items()})
    if extras.retrieval is not None:
        found = evaluate_downstream_and_record(settings, run, "retrieval", extras.retrieval, images=extras.images,
                                               device=device, progress=progress)
        metrics.update({f"retrieval/{k}": v for k, v in found.items()})
    return metrics


def without_missing_heads(metrics: dict[str, float], heads: set[str]) -> dict[str, float | None]:
    """``metrics`` with those the model cannot have (see ``unavailable``) as None."""
    return {k: None if unavailable(k, heads) else v for k, v in metrics.items()}


def fill_absent(summaries: list[VariantSummary]) -> None:
    """Every run gets every metric some run has, None where it has none (ARO leaves out the
    fusion scorer of a model without E2E): a missing metric reads n/a, never a hole."""
    names = list(dict.fromkeys(k for s in summaries for m in s.per_run for k in m))
    for s in summaries:
        s.per_run = [{name: m.get(name) for name in names} for m in s.per_run]


def aggregate(per_run: list[dict[str, float | None]]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(mean, sample std) per metric over the runs; None where a run has no value, std None with one run."""
    names = list(dict.fromkeys(k for m in per_run for k in m))
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for name in names:
        values = [m.get(name) for m in per_run]
        known = None not in values
        mean[name] = statistics.fmean(values) if known else None
        std[name] = statistics.stdev(values) if known and len(values) > 1 else None
    return mean, std


def chance_levels(per_run: list[dict[str, float | None]]) -> dict[str, float]:
    """Chance levels the evaluations report: ``{metric}_chance`` keys, and ARO's one ``chance``."""
    chance: dict[str, float] = {}
    for metrics in per_run:
        for key, value in metrics.items():
            if value is None:
                continue
            if key.endswith("_chance"):
                chance.setdefault(key.removesuffix("_chance"), value)
            elif key == "aro/chance":
                chance.update({k: value for k in metrics if k.startswith("aro/") and "accuracy" in k})
    return chance


def data_budget(settings: Settings, kg: str, config: TrainConfig) -> Budget:
    """Rows and image-text pairs the config's ``max_steps`` steps see: the sampler's plan, replayed
    (the same for every variant of a seed: their data config is the same). With ``data.pairs_kg``
    each batch has that KG's pairs beside the planned rows."""
    stream = TripletStream(settings, replace(spec_from_config(kg, config), hops=0), featurizer=None)
    accum, rows, pairs, steps, epoch = config.optim.grad_accum, 0, 0, 0, 0
    streamed = pairs_per_batch(config.data.batch_size, config.data.pair_fraction) if config.data.pairs_kg else 0
    try:
        while steps < config.max_steps:
            plan = stream.set_epoch(epoch)
            if not len(plan):
                break
            pair_rels = [r.idx for r in stream.relations if r.name in PAIR_RELATIONS]
            is_pair = np.isin(stream.triplets.rels, pair_rels)
            used = plan.batches[:(config.max_steps - steps) * accum]
            rows += sum(len(b) for b in used) + streamed * len(used)
            pairs += sum(int(is_pair[b].sum()) for b in used) + streamed * len(used)
            steps += math.ceil(len(used) / accum)
            epoch += 1
    finally:
        stream.close()
    return Budget(steps, config.data.batch_size, rows, pairs)


def record(settings: Settings, result: Comparison, config: TrainConfig) -> None:
    """One registry row: per variant its first run and means (what the Runs page shows), and its
    seeds, runs, spreads and every run's metrics."""
    rows = [{"variant": v.variant, "run": v.run, "metrics": v.mean, "note": v.note, "seeds": v.seeds,
             "runs": v.runs, "spread": v.std, "n": v.n, "per_run": dict(zip(v.runs, v.per_run))}
            for v in result.variants]
    Registry(settings.registry).add_comparison(result.name, result.kg, result.split,
                                               config.model_dump(mode="json"), rows)


# -- Markdown, JSON, PNG ------------------------------------------------------------------------

def cell(mean: float | None, std: float | None, trained: bool) -> str:
    if not trained:
        return "-"
    if mean is None:
        return NA
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def markdown(result: Comparison) -> str:
    """The table (mean ± sample std over seeds; n/a: the variant cannot have it; -: not trained), then notes."""
    metrics = result.table_metrics()
    header = [f"{m} (chance {result.chance[m]:.3f})" if m in result.chance else m for m in metrics]
    budget = result.budget[result.seeds[0]]
    lines = [f"**{result.kg}/{result.split}**, config {result.config}, {budget.steps} steps of {budget.batch_size} "
             f"each, seeds {', '.join(map(str, result.seeds))}", "",
             "| variant | seeds | " + " | ".join(header) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in metrics) + " |"]
    for v in result.variants:
        cells = [cell(v.mean.get(m), v.std.get(m), bool(v.runs)) for m in metrics]
        lines.append(f"| {v.variant} | {v.n} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {note}" for note in result.notes]
    lines += [f"- seed {s}: every variant sees {b.triplets} triplets, {b.pairs} of them image-text pairs "
              f"({b.steps} steps)" for s, b in result.budget.items()]
    lines += [f"- {v.variant}: {v.note}" for v in result.variants if v.note]
    lines.append("- mean ± sample standard deviation over seeds; n/a: the variant has no head for it "
                 "(link: E2E, relation: E2R, ARO fusion: E2E)")
    return "\n".join(lines) + "\n"


def write_outputs(result: Comparison, out: Path) -> dict[str, Path]:
    """compare.md, compare.json and compare.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"compare.{kind}" for kind in ("md", "json", "png")}
    paths["md"].write_text(markdown(result), encoding="utf-8")
    paths["json"].write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    plot(result).save(paths["png"])
    return paths


# Tableau 10, as the Runs page's charts.
COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
BAR, GAP, PLOT_H, LEFT, TOP, BOTTOM = 22, 28, 360, 60, 50, 60


def plot(result: Comparison) -> Image.Image:
    """Bars per metric (mean, error bar: sample std), one group per variant, chance as a dashed
    tick; matplotlib is not a dependency, so Pillow draws it. Metrics are on [0, 1]."""
    metrics = result.table_metrics()
    variants = [v for v in result.variants if v.runs]
    group = max(1, len(metrics)) * BAR
    width = LEFT + len(variants) * (group + GAP) + GAP + 260
    image = Image.new("RGB", (max(width, 480), TOP + PLOT_H + BOTTOM), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()

    def y_of(value: float) -> float:  # the pixel row of a value on [0, 1]
        return TOP + PLOT_H * (1 - min(max(value, 0.0), 1.0))

    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        draw.line([(LEFT, y_of(tick)), (LEFT + len(variants) * (group + GAP) + GAP, y_of(tick))], fill="#dddddd")
        draw.text((LEFT - 8, y_of(tick)), f"{tick:.2f}", fill="black", font=font, anchor="rm")
    draw.text((LEFT, TOP / 2), f"{result.kg}/{result.split}: mean ± std over seeds {result.seeds}", fill="black",
              font=font, anchor="lm")
    for i, v in enumerate(variants):
        x0 = LEFT + GAP + i * (group + GAP)
        for j, m in enumerate(metrics):
            _bar(draw, font, x0 + j * BAR, v.mean.get(m), v.std.get(m), result.chance.get(m), COLOURS[j % 10], y_of)
        draw.text((x0 + group / 2, TOP + PLOT_H + 14), f"{v.variant} (n={v.n})", fill="black", font=font, anchor="mm")
    legend_x = LEFT + len(variants) * (group + GAP) + GAP + 16
    for j, m in enumerate(metrics):
        y = TOP + 8 + j * 18
        draw.rectangle([legend_x, y - 5, legend_x + 10, y + 5], fill=COLOURS[j % 10])
        draw.text((legend_x + 16, y), m, fill="black", font=font, anchor="lm")
    draw.text((legend_x, TOP + 14 + len(metrics) * 18), "- - chance", fill="black", font=font, anchor="lm")
    return image


def _bar(draw: ImageDraw.ImageDraw, font, x: float, mean: float | None, std: float | None,
         chance: float | None, colour: str, y_of) -> None:
    if mean is None:
        draw.text((x + BAR / 2, y_of(0) - 8), NA, fill="#666666", font=font, anchor="mm")
        return
    draw.rectangle([x + 2, y_of(mean), x + BAR - 2, y_of(0)], fill=colour)
    if std is not None:
        centre = x + BAR / 2
        draw.line([(centre, y_of(mean - std)), (centre, y_of(mean + std))], fill="black", width=1)
        for end in (mean - std, mean + std):
            draw.line([(centre - 4, y_of(end)), (centre + 4, y_of(end))], fill="black", width=1)
    if chance is not None:
        for dash in range(0, BAR, 6):
            draw.line([(x + dash, y_of(chance)), (x + min(dash + 3, BAR), y_of(chance))], fill="black", width=2)

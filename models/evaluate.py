"""``kclip eval``: what a trained run knows, measured on a KG split.

- Link prediction through the E2E head, heads and tails, filtered against every split's triplets:
  ``mrr``, ``hits@1/3/10``, ``mean_rank`` (both directions pooled; ``tail_*`` / ``head_*`` apart).
- Relation prediction through the E2R head, filtered: ``relation_mrr``, ``relation_hits@1/3``.
- Where the KG has images: image-text retrieval over the split's "image of" pairs
  (``i2t_r@1/5/10``, ``t2i_r@1/5/10``), and on scene graphs the relation-swap test
  (``swap_accuracy``): the image must prefer "a S p a O" to "a O p a S" (ARO-style).

Ranks use the realistic tie rule (models/metrics.py).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from kclip.models.batching import triplet_batch
from kclip.models.inference import EntityEmbeddings, LoadedRun, embed_kg, load_run, score_batch
from kclip.models.metrics import KnownTriplets, RankEvaluator, realistic_ranks, recall_at
from kclip.platform.errors import ConfigError, KclipError
from kclip.platform.graph_store import GraphStore, RelationRow, TripletArrays
from kclip.platform.neo4j_client import open_graph_store
from kclip.platform.progress import Progress
from kclip.platform.records import IMAGE_OF, IN_IMAGE, SPLITS
from kclip.platform.registry import Registry
from kclip.platform.settings import Settings


def evaluate(run: LoadedRun, store: GraphStore, kg: str, split: str = "test", batch_size: int = 64,
             max_triplets: int | None = None, progress: bool = True) -> dict[str, float]:
    """Every metric that applies to ``kg``; see the module docstring."""
    if split not in SPLITS:
        raise ConfigError(f"no split {split!r}; splits are {', '.join(SPLITS)}")
    splits = {s: store.triplet_arrays(kg, s) for s in SPLITS}
    triplets = splits[split]
    if len(triplets) == 0:
        raise KclipError(f"KG {kg!r} has no {split!r} triplets to evaluate on")
    relations = store.relations(kg)
    embeddings = embed_kg(run, store, kg, progress=progress)
    known = KnownTriplets(*(np.concatenate([getattr(t, f) for t in splits.values()]) for f in ("heads", "rels", "tails")))
    chosen = _subsample(len(triplets), max_triplets, seed=0)
    metrics = _link_and_relation(run, kg, triplets, chosen, relations, embeddings, known, batch_size, progress)
    if (embeddings.modality == "image").any():
        metrics.update(_retrieval(triplets, relations, embeddings))
        metrics.update(_relation_swap(run, store, kg, split, embeddings))
    metrics["triplets"] = float(len(chosen))
    return metrics


def evaluate_and_record(settings: Settings, run_name: str, kg: str | None = None, split: str = "test",
                        device: str | torch.device = "cpu", max_triplets: int | None = None,
                        progress: bool = True) -> dict[str, float]:
    """Evaluate a run's latest checkpoint (on its own KG by default) and record the result in the registry."""
    run = load_run(settings, run_name, device)
    kg = kg or run.kg
    with open_graph_store(settings) as store:
        store.require_kg(kg)
        metrics = evaluate(run, store, kg, split, max_triplets=max_triplets, progress=progress)
    Registry(settings.registry).add_evaluation(run_name, kg, split, run.step, metrics)
    return metrics


def _subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _link_and_relation(run: LoadedRun, kg: str, triplets: TripletArrays, chosen: np.ndarray,
                       relations: list[RelationRow], embeddings: EntityEmbeddings, known: KnownTriplets,
                       batch_size: int, progress: bool) -> dict[str, float]:
    tail_eval, head_eval, both = RankEvaluator("tail_"), RankEvaluator("head_"), RankEvaluator()
    rel_eval = RankEvaluator("relation_", ks=(1, 3))
    rel_position = {r.idx: i for i, r in enumerate(relations)}
    with Progress(f"evaluating {kg}", total=len(chosen), unit="triplets", enabled=progress) as bar:
        for start in range(0, len(chosen), batch_size):
            pos = chosen[start:start + batch_size]
            h, r, t = triplets.heads[pos], triplets.rels[pos], triplets.tails[pos]
            rows = embeddings.entities
            batch = triplet_batch(run.featurizer, [rows[int(i)] for i in h], [rel_position[int(i)] for i in r],
                                  [rows[int(i)] for i in t], relations)
            tail_q, head_q, relation_scores = score_batch(run, batch)
            tail_ranks = _entity_ranks(tail_q, embeddings, t, [known.tails_of[(a, b)] for a, b in zip(h.tolist(), r.tolist())])
            head_ranks = _entity_ranks(head_q, embeddings, h, [known.heads_of[(b, c)] for b, c in zip(r.tolist(), t.tolist())])
            tail_eval.process(tail_ranks), head_eval.process(head_ranks)
            both.process(np.concatenate([tail_ranks, head_ranks]))
            filtered = [[rel_position[x] for x in known.rels_of[(a, c)]] for a, c in zip(h.tolist(), t.tolist())]
            rel_eval.process(realistic_ranks(relation_scores, batch.rels, filtered))
            bar.advance(len(pos))
    return {**both.finalize(), **tail_eval.finalize(), **head_eval.finalize(), **rel_eval.finalize()}


def _entity_ranks(queries: torch.Tensor, embeddings: EntityEmbeddings, answers: np.ndarray,
                  known: list[set[int]]) -> np.ndarray:
    scores = queries @ embeddings.vectors.T  # (B, N)
    filtered = [embeddings.rows(sorted(k)).tolist() for k in known]
    return realistic_ranks(scores, torch.as_tensor(embeddings.rows(answers)), filtered)


def _retrieval(triplets: TripletArrays, relations: list[RelationRow], embeddings: EntityEmbeddings) -> dict[str, float]:
    """Image-text retrieval over the split's (image, "image of", text) pairs, both ways."""
    image_of = next((r.idx for r in relations if r.name == IMAGE_OF), None)
    if image_of is None:
        return {}
    mask = triplets.rels == image_of
    images, texts = triplets.heads[mask], triplets.tails[mask]
    if len(images) < 2:
        return {}
    image_ids, image_cols = np.unique(images, return_inverse=True)
    text_ids, text_cols = np.unique(texts, return_inverse=True)
    sim = embeddings.vectors[embeddings.rows(image_ids)] @ embeddings.vectors[embeddings.rows(text_ids)].T
    texts_of, images_of = defaultdict(set), defaultdict(set)
    for i, j in zip(image_cols.tolist(), text_cols.tolist()):
        texts_of[i].add(j)
        images_of[j].add(i)
    i2t = recall_at(sim, [texts_of[i] for i in range(len(image_ids))], (1, 5, 10))
    t2i = recall_at(sim.T, [images_of[j] for j in range(len(text_ids))], (1, 5, 10))
    return {**{f"i2t_r@{k}": v for k, v in i2t.items()}, **{f"t2i_r@{k}": v for k, v in t2i.items()}}


@torch.no_grad()
def _relation_swap(run: LoadedRun, store: GraphStore, kg: str, split: str, embeddings: EntityEmbeddings) -> dict[str, float]:
    """Share of scene-graph relationships whose image prefers the true caption to the swapped one."""
    rows = store.swap_candidates(kg, split, IN_IMAGE)
    if not rows:
        return {}
    true = [f"a {r['subject']} {r['predicate']} a {r['object']}" for r in rows]
    swapped = [f"a {r['object']} {r['predicate']} a {r['subject']}" for r in rows]
    text = run.model.entity_embeddings(text_tokens=run.featurizer.tokens(true + swapped).to(run.device)).float().cpu()
    image = embeddings.vectors[embeddings.rows([r["image"] for r in rows])]
    n = len(rows)
    true_score, swapped_score = (image * text[:n]).sum(-1), (image * text[n:]).sum(-1)
    wins = (true_score > swapped_score).float() + 0.5 * (true_score == swapped_score).float()  # a tie is a coin flip
    return {"swap_accuracy": float(wins.mean()), "swap_pairs": float(n)}

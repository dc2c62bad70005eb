"""ARO's relation and attribute tests (Yuksekgonul et al., "When and why vision-language models
behave like bags-of-words"), on ARO's own files, with two scorers.

    kclip eval --run RUN --task aro --data ARO_ROOT/visual_genome_relation.json [--images ARO_ROOT/images]
    kclip eval --run RUN --task aro --data ARO_ROOT          # a folder: both files it holds

ARO's layout (``dataset_zoo/aro_datasets.py`` of mertyg/vision-language-models-are-bows): a JSON
array of ``{image_path, bbox_x, bbox_y, bbox_w, bbox_h, true_caption, false_caption}`` plus
``relation_name`` (``visual_genome_relation.json``) or ``attributes``, the two swapped ones
(``visual_genome_attribution.json``); other keys are ignored. Which test a file holds is read from
these keys. As ARO does, each image is cropped to the item's box, and the item is right when the
true caption outscores the false one (a tie counts half, a coin flip). Image paths are relative to
``--images``; by default to the ``images/`` folder beside the file when there is one (ARO's layout),
else the file's folder. A path must stay inside that folder, symlinks followed.

The two scorers, each asked "how well does this caption fit this crop":

- ``pooled``: the cosine of the crop's and the caption's pooled CLIP embeddings (plain CLIP);
- ``fusion``: Knowledge-CLIP's fusion transformer and E2E head on the triplet (crop, "image of",
  caption), the very triplets image-text pairs become in training, asked both ways: the tail query
  (crop, "image of", ?) against the caption's embedding, and the head query (?, "image of",
  caption), fused from the caption's token features, against the crop's; the score is their mean.
  Only the head query reads the caption's tokens, in order, through the fusion: it is where word
  order can matter beyond the text tower. Not chosen: parsing "the S is R the O" into (S, R, O) and
  asking E2R for R, which would score the text without ever looking at the image. A model built
  without the E2E head has no fusion score: its ``fusion_*`` metrics are absent (n/a), not 0.

Metrics, per test present (``relation`` and/or ``attribute``): ``{test}_items``, and per scorer
``{scorer}_{test}_accuracy``; for relations also ``{scorer}_relation_macro_accuracy``, the mean
of the per-relation-name accuracies (ARO's headline; ARO's notebook also drops a list of predicates
it deems symmetric, which these figures do not); ``chance``: 0.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kclip.models.batch import TripletBatch
from kclip.models.inference import LoadedRun, embed_images, embed_texts
from kclip.platform.errors import InputError
from kclip.platform.progress import Progress
from kclip.platform.records import IMAGE_OF, readable_relation

ARO_FILES = ("visual_genome_relation.json", "visual_genome_attribution.json")
CHANCE = 0.5
BATCH = 32  # items per forward pass
Test = Literal["relation", "attribute"]
# A scorer: (crops, true captions, false captions) -> (true scores (N,), false scores (N,)).
Scorer = Callable[[Sequence[Image.Image], Sequence[str], Sequence[str]], tuple[np.ndarray, np.ndarray]]


class AroItem(BaseModel):
    """One test case as ARO writes it; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    image_path: str = Field(min_length=1)
    bbox_x: float
    bbox_y: float
    bbox_w: float = Field(gt=0)
    bbox_h: float = Field(gt=0)
    true_caption: str = Field(min_length=1)
    false_caption: str = Field(min_length=1)
    relation_name: str | None = None
    attributes: list[str] | None = None


@dataclass(frozen=True)
class AroFile:
    path: Path
    test: Test
    items: list[AroItem]
    images: list[Path]  # each item's image file, resolved and checked


def evaluate_aro(run: LoadedRun, data: Path, images: Path | None = None, limit: int | None = None,
                 progress: bool = True) -> dict[str, float]:
    """ARO accuracies of a loaded run on ``data`` (one ARO file, or a folder holding them); see the module docstring."""
    return score_aro(run_scorers(run), data, images, limit, progress)


def run_scorers(run: LoadedRun) -> dict[str, Scorer]:
    """The run's scorers by name: ``pooled`` always, ``fusion`` when the model has the E2E head."""
    scorers: dict[str, Scorer] = {"pooled": lambda crops, true, false: _pooled_scores(run, crops, true, false)}
    if run.model.entity_head is not None:
        scorers["fusion"] = lambda crops, true, false: _fusion_scores(run, crops, true, false)
    return scorers


def score_aro(scorers: dict[str, Scorer], data: Path, images: Path | None = None, limit: int | None = None,
              progress: bool = True) -> dict[str, float]:
    """Every file's items scored by every scorer, as metrics (every file is read and checked first,
    so a bad one fails in a second, not after an hour of scoring)."""
    files = [read_aro_file(path, images, limit) for path in aro_files(Path(data))]
    metrics: dict[str, float] = {"chance": CHANCE}
    for f in files:
        wins = _wins(f, scorers, progress)
        metrics[f"{f.test}_items"] = float(len(f.items))
        for name, won in wins.items():
            metrics[f"{name}_{f.test}_accuracy"] = float(won.mean())
            if f.test == "relation":
                metrics[f"{name}_relation_macro_accuracy"] = _macro([i.relation_name for i in f.items], won)
    return metrics


# -- files -------------------------------------------------------------------------------------

def aro_files(data: Path) -> list[Path]:
    """``data`` itself, or the ARO files a folder holds."""
    if data.is_dir():
        found = [data / name for name in ARO_FILES if (data / name).is_file()]
        if not found:
            raise InputError(data, None, f"no ARO file here: expected {' or '.join(ARO_FILES)}")
        return found
    if not data.is_file():
        raise InputError(data, None, "not found: expected an ARO JSON file or a folder holding them")
    return [data]


def read_aro_file(path: Path, images: Path | None = None, limit: int | None = None) -> AroFile:
    """Parse and check one ARO file: its items, which test it is, and every image it names."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, f"not valid JSON ({exc.msg}); expected ARO's array of test cases") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"unreadable ({exc})") from None
    if not isinstance(raw, list) or not raw:
        raise InputError(path, None, "expected a non-empty JSON array of ARO test cases")
    items = [_item(path, n, element) for n, element in enumerate(raw[:limit])]
    test = _test_of(path, items)
    root = _image_root(path, images)
    return AroFile(path, test, items, [_image_file(path, n, root, item.image_path) for n, item in enumerate(items)])


def _item(path: Path, n: int, element: object) -> AroItem:
    try:
        return AroItem.model_validate(element)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'item'}: {e['msg']}" for e in exc.errors())
        raise InputError(path, None, f"item {n}: {problems}") from None


def _test_of(path: Path, items: list[AroItem]) -> Test:
    """``relation`` when the items name their relation, ``attribute`` when they carry two attributes."""
    kinds = {"relation": lambda i: bool(i.relation_name),
             "attribute": lambda i: i.attributes is not None and len(i.attributes) == 2}
    test = next((k for k, fits in kinds.items() if fits(items[0])), None)
    if test is None:
        raise InputError(path, None, "item 0: neither an ARO relation case (relation_name) nor an attribution "
                                     "case (attributes: [two attributes])")
    odd = next((n for n, i in enumerate(items) if not kinds[test](i)), None)
    if odd is not None:
        raise InputError(path, None, f"item {odd}: not an ARO {test} case like item 0 "
                                     f"({'relation_name' if test == 'relation' else 'attributes: [two attributes]'})")
    return test


def _image_root(path: Path, images: Path | None) -> Path:
    if images is not None:
        if not images.is_dir():
            raise InputError(images, None, "not a folder (--images: the folder ARO's image paths are relative to)")
        return images.resolve()
    beside = path.parent / "images"  # ARO's own layout: ROOT/visual_genome_*.json, ROOT/images/
    return (beside if beside.is_dir() else path.parent).resolve()


def _image_file(path: Path, n: int, root: Path, image_path: str) -> Path:
    file = (root / image_path).resolve()
    if not file.is_relative_to(root):
        raise InputError(path, None, f"item {n}: image_path {image_path!r} leaves the images folder {root}")
    if not file.is_file():
        raise InputError(path, None, f"item {n}: image {file} not found (image paths are relative to {root}; "
                                     "pass --images DIR)")
    return file


# -- scoring -----------------------------------------------------------------------------------

def _wins(f: AroFile, scorers: dict[str, Scorer], progress: bool) -> dict[str, np.ndarray]:
    """(N,) per scorer: 1 where the true caption won, 0.5 on a tie, 0 where the false one won."""
    wins: dict[str, list[np.ndarray]] = {name: [] for name in scorers}
    with Progress(f"ARO {f.path.name}", total=len(f.items), unit="items", enabled=progress) as bar:
        for start in range(0, len(f.items), BATCH):
            items, files = f.items[start:start + BATCH], f.images[start:start + BATCH]
            crops = [_crop(f.path, start + k, file, item) for k, (file, item) in enumerate(zip(files, items))]
            true, false = [i.true_caption for i in items], [i.false_caption for i in items]
            for name, scorer in scorers.items():
                t, s = (np.asarray(x, dtype=np.float64) for x in scorer(crops, true, false))
                wins[name].append((t > s) + 0.5 * (t == s))
            bar.advance(len(items))
    return {name: np.concatenate(parts) for name, parts in wins.items()}


def _crop(path: Path, n: int, file: Path, item: AroItem) -> Image.Image:
    """The item's box of its image, as ARO crops it (PIL fills any part outside the image with black)."""
    try:
        with Image.open(file) as img:
            return img.convert("RGB").crop((item.bbox_x, item.bbox_y, item.bbox_x + item.bbox_w,
                                            item.bbox_y + item.bbox_h))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(path, None, f"item {n}: image {file} unreadable ({exc})") from None


def _macro(groups: Sequence[str | None], won: np.ndarray) -> float:
    names = np.asarray(groups, dtype=object)
    return float(np.mean([won[names == g].mean() for g in dict.fromkeys(groups)]))


@torch.no_grad()
def _pooled_scores(run: LoadedRun, crops: Sequence[Image.Image], true: Sequence[str],
                   false: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    image = embed_images(run, crops)  # (N, D) unit-norm
    text = embed_texts(run, [*true, *false])  # (2N, D)
    n = len(crops)
    return (image * text[:n]).sum(-1).numpy(), (image * text[n:]).sum(-1).numpy()


@torch.no_grad()
def _fusion_scores(run: LoadedRun, crops: Sequence[Image.Image], true: Sequence[str],
                   false: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    n = len(crops)
    batch = _image_caption_batch(run, crops, [*true, *false]).to(run.device)
    asked = run.model.queries(batch)  # unit-norm tail and head queries, (2N, D) each
    pooled = run.model.entity_embeddings(text_tokens=batch.text_tokens, images=batch.images)  # texts first
    caption, image = pooled[:2 * n], pooled[2 * n:]
    tail_fit = (asked.tails * caption).sum(-1)  # (crop, image of, ?) vs the caption
    head_fit = (asked.heads * image[batch.heads - 2 * n]).sum(-1)  # (?, image of, caption) vs the crop
    scores = ((tail_fit + head_fit) / 2).float().cpu().numpy()
    return scores[:n], scores[n:]


def _image_caption_batch(run: LoadedRun, crops: Sequence[Image.Image], captions: Sequence[str]) -> TripletBatch:
    """Triplets (crop i, "image of", caption j) for j = i and j = i + N: captions are entities
    0..2N-1, crops 2N..3N-1; the single candidate relation is "image of"."""
    n, texts = len(crops), len(captions)
    crop_rows = torch.arange(texts, texts + n)
    return TripletBatch(
        heads=crop_rows.repeat(texts // n), rels=torch.zeros(texts, dtype=torch.long), tails=torch.arange(texts),
        entity_idx=torch.full((texts + n,), -1),  # not KG entities: no learned vectors
        text_tokens=run.featurizer.tokens(list(captions)), text_rows=torch.arange(texts),
        images=torch.stack([run.featurizer.preprocess(c) for c in crops]), image_rows=crop_rows,
        relation_idx=torch.zeros(1, dtype=torch.long), relation_tokens=run.featurizer.tokens([readable_relation(IMAGE_OF)]),
    )


__all__ = ["ARO_FILES", "AroItem", "Scorer", "aro_files", "evaluate_aro", "read_aro_file", "run_scorers", "score_aro"]

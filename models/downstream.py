"""Downstream evaluation on files users already have: ARO's relation/attribute tests (models/aro.py),
image-text retrieval on Karpathy-split COCO / Flickr30k JSON, zero-shot classification on an
ImageFolder. ``kclip eval --task aro|retrieval|zeroshot --data ...`` calls
``evaluate_downstream_and_record``::

    kclip eval --run RUN --task retrieval --data caption_datasets/dataset_coco.json --images coco/ [--split test]
    kclip eval --run RUN --task zeroshot --data imagenet/val [--templates templates.txt]

Retrieval reads Karpathy's caption JSON as released (``caption_datasets.zip``): ``{"images": [{"filepath":
"val2014" (COCO only), "filename", "split": "train|val|test|restval", "sentences": [{"raw", "tokens", ...},
...], "imgid", "sentids", ...}], "dataset": "coco"}``. An image is ``--images`` (default: the JSON's
folder) / filepath / filename; every caption of an image counts (COCO has a few with 6 or 7).

Zero-shot reads torchvision's ImageFolder layout, ``root/<class folder>/**/<image file>`` (hidden files
and folders skipped). A class is named by its folder, underscores read as spaces, unless the root holds
``classes.txt`` (or ``classnames.txt``): one ``<folder> <class name>`` per line, split at the first
space, or at a tab when there is one (folder names with spaces); CoOp's ImageNet ``classnames.txt``
(``n01440764 tench``) is this format. Templates: one per line with ``{}`` for the class name (blank
lines and ``#`` comments skipped), else open_clip's 80 OpenAI ImageNet templates. A class's classifier
is the normalised mean of its normalised prompt embeddings.

Ranks are realistic (models/metrics.py: a tie costs half its width) and R@k / top-k is the share of
ranks <= k, so ties never flatter a model. Each comes with its chance level, the expected value for
random scores (``i2t_r@5_chance`` ...). Every file the data names must resolve (symlinks followed)
inside its folder, and each image decodes under the pixel limit (``check_image``); a bad file is an
``InputError`` naming the data file and the entry.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from math import comb
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from torch.nn import functional as F

from kclip.models.inference import LoadedRun, embed_texts, load_run
from kclip.models.metrics import realistic_ranks
from kclip.platform.errors import InputError
from kclip.platform.media import DEFAULT_MAX_IMAGE_PIXELS, BadImage, check_image
from kclip.platform.progress import Progress
from kclip.platform.registry import Registry
from kclip.platform.settings import Settings

KS = (1, 5, 10)  # retrieval R@k
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}  # torchvision's
CLASS_NAME_FILES = ("classes.txt", "classnames.txt")
IMAGE_BATCH, TEXT_BATCH = 64, 256
RANK_ROWS = 1024  # rows ranked at once: realistic_ranks copies its rows, and COCO's is 25k x 5k
DECODERS = min(8, os.cpu_count() or 1)  # Pillow decodes without the GIL: threads overlap file reads and decoding

ImageFile = tuple[Path, str]  # (resolved path, the entry that names it, for messages)


def evaluate_downstream_and_record(settings: Settings, run_name: str, task: str, data: Path,
                                   images: Path | None = None, templates: Path | None = None, split: str = "test",
                                   device: str | torch.device = "cpu", progress: bool = True) -> dict[str, float]:
    """Run one downstream task on a run's latest checkpoint and record it in the registry
    (as an evaluation whose KG is ``task:<data file name>``)."""
    run = load_run(settings, run_name, device)
    if task == "aro":
        from kclip.models.aro import evaluate_aro

        metrics = evaluate_aro(run, data, images=images, progress=progress)
    elif task == "retrieval":
        metrics = evaluate_retrieval(run, data, images=images, split=split, progress=progress,
                                     max_pixels=settings.max_image_pixels)
    else:
        metrics = evaluate_zeroshot(run, data, templates=templates, progress=progress,
                                    max_pixels=settings.max_image_pixels)
    Registry(settings.registry).add_evaluation(run_name, f"{task}:{Path(data).name}", split, run.step, metrics)
    return metrics


# -- retrieval --

@dataclass
class CaptionedImages:
    """One split of a caption dataset: image files, captions, and which image each caption describes."""

    files: list[ImageFile]
    captions: list[str]
    image_of_caption: np.ndarray  # (T,) int64 index into files


def evaluate_retrieval(run: LoadedRun, data: Path, images: Path | None = None, split: str = "test",
                       progress: bool = True, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict[str, float]:
    """Image -> text and text -> image R@1/5/10 (cosine, realistic ranks) on one split of a Karpathy
    caption JSON, each with its chance level, plus the numbers of images and captions."""
    data = Path(data)
    split_data = read_karpathy(data, images, split)
    image_vectors = embed_image_files(run, split_data.files, data, max_pixels, progress)
    unique = list(dict.fromkeys(split_data.captions))  # COCO repeats captions: embed each once, tie exactly
    position = {caption: i for i, caption in enumerate(unique)}
    text_vectors = _embed_text_batches(run, unique, f"captions of {data.name}", progress)
    text_vectors = text_vectors[[position[c] for c in split_data.captions]]
    return retrieval_metrics(image_vectors @ text_vectors.T, split_data.image_of_caption)  # unit-norm: cosines


class _Sentence(BaseModel):
    raw: str


class _KarpathyImage(BaseModel):
    filename: str = Field(min_length=1)
    filepath: str = ""  # COCO's train2014 / val2014; Flickr30k has none
    split: str
    sentences: list[_Sentence] = Field(min_length=1)


def read_karpathy(data: Path, images: Path | None = None, split: str = "test") -> CaptionedImages:
    """The images of ``split`` (checked to exist inside the image folder) and their captions."""
    doc = _load_json(data)
    entries = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise InputError(data, None, "expected Karpathy's caption JSON: {\"images\": [{\"filename\", \"split\", "
                                     "\"sentences\": [{\"raw\": ...}, ...]}, ...], \"dataset\": ...}")
    splits = Counter(e.get("split") if isinstance(e, dict) else None for e in entries)
    if not splits[split]:
        found = ", ".join(f"{name}: {n}" for name, n in splits.items())
        raise InputError(data, None, f"no image has split {split!r} (images by split: {found or 'none'})")
    root = _folder(images if images is not None else data.parent, data)
    files, captions, owners = [], [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("split") == split:
            image = _karpathy_image(data, i, entry)
            name = str(Path(image.filepath) / image.filename)
            where = f"images[{i}] {name!r}"
            path = _inside(root, name, data, where)
            if not path.is_file():
                raise InputError(data, None, f"{where}: image file not found: {path}")
            owners.extend([len(files)] * len(image.sentences))
            files.append((path, where))
            captions.extend(s.raw.strip() for s in image.sentences)
    return CaptionedImages(files, captions, np.asarray(owners, dtype=np.int64))


def _karpathy_image(data: Path, index: int, entry: dict[str, Any]) -> _KarpathyImage:
    try:
        return _KarpathyImage.model_validate(entry)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InputError(data, None, f"images[{index}].{field}: {err['msg']}") from None


def retrieval_metrics(similarity: torch.Tensor, image_of_caption: np.ndarray) -> dict[str, float]:
    """R@k both ways and their chance levels from an (images, captions) similarity matrix."""
    n_images, n_captions = similarity.shape
    i2t, t2i = retrieval_ranks(similarity, image_of_caption)
    per_image = np.bincount(image_of_caption, minlength=n_images)
    metrics = {"images": float(n_images), "captions": float(n_captions)}
    for k in KS:
        metrics[f"i2t_r@{k}"] = float(np.mean(i2t <= k))
        metrics[f"i2t_r@{k}_chance"] = i2t_chance(per_image, k)
        metrics[f"t2i_r@{k}"] = float(np.mean(t2i <= k))
        metrics[f"t2i_r@{k}_chance"] = min(k, n_images) / n_images
    return metrics


def retrieval_ranks(similarity: torch.Tensor, image_of_caption: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image -> text ranks (I,), text -> image ranks (T,)), realistic, from an (I, T) similarity matrix.

    An image's rank is its best caption's among the other images' captions (its own others left
    out), so an image hits at k when any of its captions ranks <= k; a caption's is its image's
    among all images.
    """
    owners = torch.as_tensor(image_of_caption, dtype=torch.long)
    captions_of: list[list[int]] = [[] for _ in range(similarity.shape[0])]
    for caption, image in enumerate(owners.tolist()):
        captions_of[image].append(caption)
    if not all(captions_of):
        raise ValueError("every image needs at least one caption")
    best = torch.tensor([cols[int(similarity[i, cols].argmax())] for i, cols in enumerate(captions_of)],
                        dtype=torch.long)
    return _ranks(similarity, best, captions_of), _ranks(similarity.T, owners)


def i2t_chance(captions_per_image: Sequence[int] | np.ndarray, k: int) -> float:
    """Expected image -> text R@k of random scores: the mean over images of 1 - C(T - c, k) / C(T, k),
    the chance that k of all T captions, drawn at random, include one of the image's c."""
    total = int(np.sum(captions_per_image))
    k = min(k, total)
    hits = {c: 1 - comb(total - c, k) / comb(total, k) for c in set(map(int, captions_per_image))}
    return float(np.mean([hits[int(c)] for c in captions_per_image]))


# -- zero-shot classification --

@dataclass
class LabelledImages:
    """An ImageFolder: class names by label, image files, and each file's label."""

    classes: list[str]
    files: list[ImageFile]
    labels: np.ndarray  # (N,) int64 index into classes


def evaluate_zeroshot(run: LoadedRun, data: Path, templates: Path | None = None, progress: bool = True,
                      max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict[str, float]:
    """Zero-shot top-1 / top-5 and mean per-class accuracy on an ImageFolder, with chance levels."""
    data = Path(data)
    folder = read_image_folder(data)
    classifier = zeroshot_classifier(run, folder.classes, read_templates(templates), progress)
    image_vectors = embed_image_files(run, folder.files, data, max_pixels, progress)
    return zeroshot_metrics(image_vectors @ classifier.T, folder.labels)


def read_image_folder(root: Path) -> LabelledImages:
    """Classes (sorted by folder, as torchvision numbers them) and their image files."""
    root = _folder(root, root)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise InputError(root, None, "no class folders: expected an ImageFolder, <root>/<class>/<image files>")
    files, labels = [], []
    for label, folder in enumerate(folders):
        for path in sorted((root / folder).rglob("*")):
            relative = path.relative_to(root)
            if path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in relative.parts):
                where = repr(relative.as_posix())
                files.append((_inside(root, str(relative), root, where), where))
                labels.append(label)
    if not files:
        raise InputError(root, None, f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in any class folder")
    return LabelledImages(_class_names(root, folders), files, np.asarray(labels, dtype=np.int64))


def _class_names(root: Path, folders: list[str]) -> list[str]:
    listing = next((root / name for name in CLASS_NAME_FILES if (root / name).is_file()), None)
    if listing is None:
        return [folder.replace("_", " ") for folder in folders]
    names: dict[str, str] = {}
    for line_number, line in enumerate(_read_text(listing).splitlines(), 1):
        if not line.strip():
            continue
        folder, _, name = line.partition("\t") if "\t" in line else line.strip().partition(" ")
        if not name.strip():
            raise InputError(listing, line_number, "expected '<folder> <class name>' (a tab between them when the "
                                                   "folder name has spaces)")
        if folder in names:
            raise InputError(listing, line_number, f"folder {folder!r} is named twice")
        names[folder] = name.strip()
    unnamed = [folder for folder in folders if folder not in names]
    if unnamed:
        raise InputError(listing, None, f"no class name for {len(unnamed)} folder(s): {', '.join(unnamed[:5])}")
    return [names[folder] for folder in folders]  # lines for absent folders are fine: a subset of ImageNet, say


def read_templates(path: Path | None) -> list[Callable[[str], str]]:
    """Prompt templates, class name -> prompt: the file's lines, or open_clip's 80 OpenAI ImageNet ones."""
    if path is None:
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return list(OPENAI_IMAGENET_TEMPLATES)
    templates = []
    for line_number, line in enumerate(_read_text(path).splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if "{}" not in text:
            raise InputError(path, line_number, f"template {text!r} has no {{}} where the class name goes")
        templates.append(partial(text.replace, "{}"))
    if not templates:
        raise InputError(path, None, "no templates: expected one per line, e.g. 'a photo of a {}.'")
    return templates


def zeroshot_classifier(run: LoadedRun, classes: Sequence[str], templates: Sequence[Callable[[str], str]],
                        progress: bool = True) -> torch.Tensor:
    """(C, D) unit-norm class embeddings: each class's normalised mean of its unit-norm prompt embeddings."""
    prompts = [template(name) for name in classes for template in templates]
    embedded = _embed_text_batches(run, prompts, "class prompts", progress)  # (C * P, D)
    return F.normalize(embedded.view(len(classes), len(templates), -1).mean(dim=1), dim=-1)


def zeroshot_metrics(logits: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Top-1 / top-5 and mean per-class (top-1) accuracy, realistic ranks, from (N, C) class scores."""
    n_images, n_classes = logits.shape
    ranks = _ranks(logits, torch.as_tensor(labels, dtype=torch.long))
    top1 = ranks <= 1
    present = np.unique(labels)  # a class folder without images is a candidate, not a class to average over
    return {"top1_acc": float(top1.mean()), "top5_acc": float(np.mean(ranks <= 5)),
            "mean_per_class_acc": float(np.mean([top1[labels == c].mean() for c in present])),
            "top1_acc_chance": 1 / n_classes, "top5_acc_chance": min(5, n_classes) / n_classes,
            "images": float(n_images), "classes": float(n_classes)}


# -- shared: files, embeddings, ranks --

def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot be read: {exc}") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})") from None


def _folder(path: Path, data: Path) -> Path:
    """``path`` resolved, which must be a folder."""
    resolved = Path(path).resolve()
    if not resolved.is_dir():
        raise InputError(data, None, f"image folder {path} does not exist or is not a folder")
    return resolved


def _inside(root: Path, name: str, data: Path, where: str) -> Path:
    """``root / name`` resolved (symlinks followed); it must stay inside ``root`` (resolved), so a
    data file cannot make us read ``../../etc/passwd``, an absolute path, or a symlink pointing out."""
    try:
        path = (root / name).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL in the name
        raise InputError(data, None, f"{where}: path cannot be resolved: {exc}") from None
    if not path.is_relative_to(root):
        raise InputError(data, None, f"{where}: resolves outside the image folder {root}")
    return path


def _pixels(run: LoadedRun, path: Path, max_pixels: int) -> torch.Tensor:
    """One image file as the run's preprocessed (3, H, W) input; ``BadImage`` says what is wrong."""
    check_image(path, max_pixels)  # decodes the whole stream: a missing, truncated or huge file fails here
    side = run.featurizer.image_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit was checked above
            with Image.open(path) as img:
                if side:
                    img.draft("RGB", (side, side))  # a JPEG decodes no larger than the model's input needs
                rgb = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise BadImage(f"unreadable image {path}: {exc}") from None  # changed since the check
    return run.featurizer.preprocess(rgb)


@torch.no_grad()
def embed_image_files(run: LoadedRun, files: Sequence[ImageFile], data: Path,
                      max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, progress: bool = True) -> torch.Tensor:
    """(N, D) unit-norm embeddings of image files, decoded on threads; a bad file is an ``InputError``
    naming ``data`` and the entry."""
    def load(file: ImageFile) -> torch.Tensor:
        path, where = file
        try:
            return _pixels(run, path, max_pixels)
        except BadImage as exc:
            raise InputError(data, None, f"{where}: {exc}") from None

    vectors = [torch.zeros(0, run.model.embed_dim)]
    with Progress(f"embedding images of {Path(data).name}", total=len(files), unit="images", enabled=progress) as bar, \
            ThreadPoolExecutor(DECODERS) as pool:
        for start in range(0, len(files), IMAGE_BATCH):
            pixels = torch.stack(list(pool.map(load, files[start:start + IMAGE_BATCH])))  # (B, 3, H, W)
            vectors.append(run.model.entity_embeddings(images=pixels.to(run.device)).float().cpu())
            bar.advance(len(pixels))
    return torch.cat(vectors)


def _embed_text_batches(run: LoadedRun, texts: Sequence[str], what: str, progress: bool) -> torch.Tensor:
    vectors = [torch.zeros(0, run.model.embed_dim)]
    with Progress(f"embedding {what}", total=len(texts), unit="texts", enabled=progress) as bar:
        for start in range(0, len(texts), TEXT_BATCH):
            vectors.append(embed_texts(run, texts[start:start + TEXT_BATCH]))
            bar.advance(len(vectors[-1]))
    return torch.cat(vectors)


def _ranks(scores: torch.Tensor, true_cols: torch.Tensor,
           filtered: Sequence[Iterable[int]] | None = None) -> np.ndarray:
    """``realistic_ranks`` of every row, RANK_ROWS rows at a time; ``filtered`` defaults to none."""
    parts = [np.zeros(0)]
    for start in range(0, scores.shape[0], RANK_ROWS):
        rows = slice(start, start + RANK_ROWS)
        others = filtered[rows] if filtered is not None else [()] * len(true_cols[rows])
        parts.append(realistic_ranks(scores[rows], true_cols[rows], others))
    return np.concatenate(parts)

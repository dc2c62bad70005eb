"""Synthetic datasets in the exact file layouts of real releases, to measure loads at field scale.

    kclip synth visual-genome OUT --images 1000 --seed 0   # then: kclip load visual-genome OUT --kg vg
    kclip synth conceptnet OUT.csv.gz --lines 1000000 --seed 0   # then: kclip load conceptnet OUT.csv.gz --kg cn

Unlike ``synth_scene_graphs`` (small clean scenes a model can learn from), these copy the *shape*
of the real data, so loader and ingest costs measured on them carry over to the real thing. The
output is a pure function of the arguments: the same seed gives byte-identical files, and every
image, scene graph and ConceptNet block is drawn from its own seed, so output for N images is a
prefix of the output for more.

Visual Genome 1.4 (``generate_visual_genome``), written under OUT:

- ``VG_100K/<id>.jpg`` and ``VG_100K_2/<id>.jpg`` (3 in 5 images in the first, as in VG): JPEG
  photos-alike, 800x600 by default, quality 90: a smooth colour field, the objects drawn as
  shapes, and film-grain texture, so files weigh about what VG's do (~160 KB at 800x600);
- ``scene_graphs.json``: ``[{image_id, objects: [{object_id, x, y, w, h, names, attributes,
  synsets}], relationships: [{relationship_id, predicate, subject_id, object_id, synsets}]}]``,
  35 objects and 20 relationships per image by default; ids are global; object names, attributes
  and predicates drawn Zipf-like from vocabularies of ~300, ~100 and ~55 entries; an object has
  0-3 attributes (the key is absent when it has none, as in VG); about 1 box in 12 spills a few
  pixels past the right or bottom edge, as VG's do;
- ``image_data.json``: ``[{image_id, width, height, url, coco_id, flickr_id}]``, the url
  ``https://cs.stanford.edu/people/rak248/VG_100K[_2]/<id>.jpg`` naming the image's folder;
- ``region_descriptions.json``: ``[{id, regions: [{region_id, width, height, image_id, phrase,
  y, x}]}]``, 10 regions per image by default, phrases built from the image's relationships.

Like VG's, each JSON file is a single line (the loaders must stream it, not read it by lines).

ConceptNet 5.7 assertions (``generate_conceptnet``): one tab-separated line per assertion, ``URI,
relation, start, end, info JSON``, gzipped when OUT ends in ``.gz``. About 10% of lines have both
ends English (the real file's share; ``english_fraction``); the others mix 20 languages (with
their own scripts), cross-lingual links and ``/r/ExternalURL`` lines whose end is a URL. The 50
relations follow the real ones (``/r/RelatedTo`` the most common, a few ``/r/dbpedia/...``).
Concepts are drawn Zipf-like from a per-language vocabulary that grows with the file, so 1M
lines hold a few hundred thousand distinct concepts; some carry part-of-speech and sense suffixes
(``/c/en/dog/n/wn/animal``), which the loader folds into one entity.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

import numpy as np
from PIL import Image, ImageDraw

from kclip.kg_loaders.synth_scene_graphs import _union

# -- vocabularies --------------------------------------------------------------------------------

# Frequent VG object names first: names are drawn Zipf-like by position.
NOUNS = (
    "man window person tree building shirt wall woman sign sky ground grass table pole head light "
    "water car hand hair leg plate people clouds ear trees fence floor line eye road chair door "
    "shadow umbrella jacket boy field hat snow wheel girl street bus train pants bag leaves plane "
    "cloud giraffe shoe picture arm sidewalk elephant zebra horse glass bench rock dog cat bowl "
    "flower tail tile shelf pizza boat kite mirror roof face nose mouth bike helmet bottle cup "
    "counter motorcycle truck clock lamp leaf pillow bed book box background tower banana sand "
    "skateboard surfboard racket bird cow sheep vase sink toilet cabinet curtain bush mountain"
).split()
MODIFIERS = ("street", "tennis", "traffic", "wooden", "glass", "baseball", "stop", "side", "back", "front")
ATTRIBUTE_WORDS = (
    "white black blue green red brown yellow small large wooden gray silver metal orange tall "
    "grey long dark pink clear standing round tan glass striped parked plastic open short purple "
    "empty leafless cloudy sitting walking old young smiling bright wet closed dry concrete "
    "little big thin thick smooth rough shiny dirty clean painted stone brick colorful tiled "
    "hanging flying folded curved square calm blurry distant"
).split()
SHADES = ("light", "dark", "pale", "bright")
COLOURED = ("blue", "green", "red", "brown", "gray", "pink", "yellow", "orange", "purple", "tan")
PREDICATES = (
    "on", "has", "in", "of", "wearing", "with", "behind", "holding", "near", "on top of", "next to",
    "above", "sitting on", "under", "riding", "in front of", "standing on", "by", "at", "wears",
    "attached to", "over", "carrying", "walking on", "for", "looking at", "watching", "hanging on",
    "laying on", "eating", "belonging to", "parked on", "playing", "and", "covering", "covered in",
    "beside", "inside", "along", "against", "mounted on", "made of", "on side of", "lying on",
    "sitting in", "standing in", "part of", "says", "painted on", "hanging from", "growing on",
    "using", "across", "flying in", "playing with",
)
CASE_VARIANT_RATE = 0.02  # VG has "ON", "On" beside "on": each a relation of its own
NAME_COUNT, ATTRIBUTE_COUNT = 300, 100


def object_names(count: int = NAME_COUNT) -> tuple[str, ...]:
    """VG-like object names: plain nouns, then compounds ("street sign") up to ``count``."""
    compounds = [f"{m} {n}" for n in NOUNS for m in MODIFIERS]
    return tuple(NOUNS) + tuple(compounds[::5][: max(count - len(NOUNS), 0)])


def attribute_words(count: int = ATTRIBUTE_COUNT) -> tuple[str, ...]:
    """VG-like attributes: single words, then shaded colours ("light blue") up to ``count``."""
    shaded = [f"{s} {c}" for c in COLOURED for s in SHADES]
    return tuple(ATTRIBUTE_WORDS) + tuple(shaded[: max(count - len(ATTRIBUTE_WORDS), 0)])


NAMES, ATTRIBUTES = object_names(), attribute_words()

SYLLABLES: dict[str, tuple[str, ...]] = {
    "latin": tuple(c + v for c in "bcdfghklmnprstvz" for v in "aeiou") + ("an", "el", "is", "or", "un"),
    "cyrillic": tuple(c + v for c in "бвгдклмнпрст" for v in "аеиоу"),
    "kana": tuple(chr(c) for c in range(0x30A2, 0x30F3)),
    "han": tuple(chr(c) for c in range(0x4E00, 0x4E00 + 400)),
}


def pseudo_word(n: int, syllables: tuple[str, ...]) -> str:
    """The ``n``-th word of a bijective numbering in ``syllables``: distinct for distinct ``n``,
    and short for small ``n`` (frequent words are short, as in real vocabularies)."""
    parts = []
    base = len(syllables)
    n += 1
    while n:
        n, digit = divmod(n - 1, base)
        parts.append(syllables[digit])
    return "".join(reversed(parts))


def zipf_ranks(rng: np.random.Generator, size: int | tuple[int, ...], vocabulary: int | np.ndarray) -> np.ndarray:
    """Ranks in [0, vocabulary) with P(rank) ~ 1 / (rank + 1): a Zipf law with exponent 1.
    ``vocabulary`` may be an array of sizes broadcast against ``size`` (one per draw)."""
    return np.minimum(np.exp(rng.random(size) * np.log(vocabulary + 1)).astype(np.int64) - 1, vocabulary - 1)


def _block_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    # One generator per (seed, kind of draw, image or block): output for N items is a prefix of
    # output for more, and any item can be rebuilt alone.
    return np.random.default_rng([seed, stream, index])


class _Reporter:
    """Progress lines on stderr every few seconds, for long generations."""

    def __init__(self, what: str, total: int, unit: str, enabled: bool, every: float = 5.0):
        self.what, self.total, self.unit, self.enabled, self.every = what, total, unit, enabled, every
        self.start = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every or done == self.total):
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            print(f"{self.what}: {done:,}/{self.total:,} {self.unit} ({rate:,.0f}/s)", file=sys.stderr, flush=True)


def _write_json_array(path: Path, items: Iterable[Any]) -> None:
    # Real VG files are one line, written by json.dump with its default separators.
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for n, item in enumerate(items):
            f.write((", " if n else "") + json.dumps(item))
        f.write("]")


# -- Visual Genome -------------------------------------------------------------------------------

IMAGE_URL = "https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"
SPILL_RATE = 1 / 12  # share of boxes that cross the right or bottom edge
MAX_SPILL = 8  # pixels
JPEG_QUALITY = 90
GRAIN = 30  # amplitude of the film-grain texture; sets the JPEG size (~160 KB at 800x600)
GRAIN_SCALE = 2  # pixels per grain cell
GRAIN_MARGIN = 256  # the grain field is larger than an image; each image takes a shifted crop
_LAYOUT, _PIXELS, _BLOCK = 1, 2, 3  # draw streams of _block_rng


@dataclass(frozen=True)
class VisualGenomeShape:
    width: int = 800
    height: int = 600
    objects: int = 35
    relationships: int = 20
    regions: int = 10


@dataclass(frozen=True)
class VisualGenomeSummary:
    out: Path
    images: int
    objects: int
    relationships: int
    regions: int
    image_bytes: int


@dataclass(frozen=True)
class _Layout:
    """One image's scene graph, as arrays: boxes (x, y, w, h), label indices, relationship ends."""

    image_id: int
    boxes: np.ndarray  # (objects, 4)
    names: np.ndarray  # (objects,)
    attributes: list[list[int]]
    colours: np.ndarray  # (objects, 3), how each object is drawn
    pairs: np.ndarray  # (relationships, 2) object positions in the image
    predicates: np.ndarray  # (relationships,)
    upper_case: np.ndarray  # (relationships,) bool: "ON" instead of "on"
    regions: np.ndarray  # (regions,) relationship positions described by a region


def image_folder(image_id: int) -> str:
    """VG_100K or VG_100K_2, 3:2 as in the release (decided by the id, so prefixes are stable)."""
    return "VG_100K" if image_id % 5 < 3 else "VG_100K_2"


def generate_visual_genome(out: Path, images: int, seed: int, shape: VisualGenomeShape = VisualGenomeShape(),
                           progress: bool = True) -> VisualGenomeSummary:
    """Write a Visual Genome 1.4-layout dataset of ``images`` images under ``out`` (see the module docstring)."""
    _check_shape(images, shape)
    out = Path(out)
    for folder in ("VG_100K", "VG_100K_2"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    ids = range(1, images + 1)
    image_bytes = _write_images(out, ids, seed, shape, progress)
    # Layouts are cheap next to images: each file draws them again rather than holding them all.
    _write_json_array(out / "scene_graphs.json", (_scene_graph_json(_layout(i, seed, shape), shape) for i in ids))
    _write_json_array(out / "image_data.json", (_image_data_json(i, seed, shape) for i in ids))
    _write_json_array(out / "region_descriptions.json", (_regions_json(_layout(i, seed, shape), shape) for i in ids))
    return VisualGenomeSummary(out, images, images * shape.objects, images * shape.relationships,
                               images * shape.regions, image_bytes)


def _check_shape(images: int, shape: VisualGenomeShape) -> None:
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    if shape.width < 64 or shape.height < 64:
        raise ValueError(f"images must be at least 64x64 pixels, got {shape.width}x{shape.height}")
    if shape.objects < 2 or shape.relationships < 0 or not 0 <= shape.regions <= shape.relationships:
        raise ValueError("need at least 2 objects, and 0 <= regions <= relationships "
                         f"(got {shape.objects}, {shape.regions}, {shape.relationships})")


def _layout(image_id: int, seed: int, shape: VisualGenomeShape) -> _Layout:
    rng = _block_rng(seed, _LAYOUT, image_id)
    n, w, h = shape.objects, shape.width, shape.height
    # Log-uniform sizes: many small boxes, a few large ones, as in VG.
    sizes = np.exp(rng.uniform(np.log(12), np.log([w * 0.8, h * 0.8]), (n, 2))).astype(np.int64)
    x = (rng.random(n) * (w - sizes[:, 0])).astype(np.int64)
    y = (rng.random(n) * (h - sizes[:, 1])).astype(np.int64)
    spill = rng.random(n) < SPILL_RATE
    over = rng.integers(1, MAX_SPILL + 1, n)
    right = rng.random(n) < 0.5
    sizes[:, 0] = np.where(spill & right, w - x + over, sizes[:, 0])
    sizes[:, 1] = np.where(spill & ~right, h - y + over, sizes[:, 1])
    attribute_counts = rng.choice(4, n, p=[0.45, 0.35, 0.15, 0.05])  # ~0.8 per object, as in VG
    attribute_ids = zipf_ranks(rng, (n, 3), len(ATTRIBUTES))
    r = shape.relationships
    subjects = rng.integers(0, n, r)
    objects = (subjects + rng.integers(1, n, r)) % n  # never the subject itself
    return _Layout(image_id, np.stack([x, y, sizes[:, 0], sizes[:, 1]], axis=1), zipf_ranks(rng, n, len(NAMES)),
                   [list(dict.fromkeys(row[:k].tolist())) for row, k in zip(attribute_ids, attribute_counts)],
                   rng.integers(0, 256, (n, 3)), np.stack([subjects, objects], axis=1),
                   zipf_ranks(rng, r, len(PREDICATES)), rng.random(r) < CASE_VARIANT_RATE,
                   rng.choice(r, shape.regions, replace=False) if r else np.zeros(0, np.int64))


def _predicate(layout: _Layout, k: int) -> str:
    word = PREDICATES[layout.predicates[k]]
    return word.upper() if layout.upper_case[k] else word


def _scene_graph_json(layout: _Layout, shape: VisualGenomeShape) -> dict[str, Any]:
    first_object = (layout.image_id - 1) * shape.objects + 1  # global ids, as in VG
    objects = []
    for k, (x, y, w, h) in enumerate(layout.boxes.tolist()):
        name = NAMES[layout.names[k]]
        obj: dict[str, Any] = {"synsets": [f"{name.split()[-1]}.n.01"], "h": h, "object_id": first_object + k,
                               "names": [name], "w": w, "y": y, "x": x}
        if layout.attributes[k]:
            obj["attributes"] = [ATTRIBUTES[a] for a in layout.attributes[k]]
        objects.append(obj)
    first_relationship = (layout.image_id - 1) * shape.relationships + 1
    relationships = [{"synsets": [f"{_predicate(layout, k).lower().split()[0]}.r.01"],
                      "predicate": _predicate(layout, k), "relationship_id": first_relationship + k,
                      "subject_id": first_object + int(s), "object_id": first_object + int(o)}
                     for k, (s, o) in enumerate(layout.pairs.tolist())]
    return {"relationships": relationships, "image_id": layout.image_id, "objects": objects}


def _image_data_json(image_id: int, seed: int, shape: VisualGenomeShape) -> dict[str, Any]:
    rng = _block_rng(seed, _BLOCK, image_id)
    coco, flickr = rng.random(2)
    # About half of VG's images come from COCO; most have a Flickr id.
    return {"width": shape.width, "url": IMAGE_URL.format(folder=image_folder(image_id), image_id=image_id),
            "height": shape.height, "image_id": image_id,
            "coco_id": int(coco * 580_000) if coco < 0.5 else None,
            "flickr_id": int(flickr * 9e9) if flickr < 0.9 else None}


def _regions_json(layout: _Layout, shape: VisualGenomeShape) -> dict[str, Any]:
    first_region = (layout.image_id - 1) * shape.regions + 1
    regions = []
    for k, rel in enumerate(layout.regions.tolist()):
        s, o = layout.pairs[rel].tolist()
        x, y, w, h = _union(tuple(layout.boxes[s].tolist()), tuple(layout.boxes[o].tolist()))
        phrase = f"{_described(layout, s)} {_predicate(layout, rel).lower()} {_described(layout, o)}"
        regions.append({"region_id": first_region + k, "width": w, "height": h, "image_id": layout.image_id,
                        "phrase": phrase, "y": y, "x": x})
    return {"regions": regions, "id": layout.image_id}


def _described(layout: _Layout, k: int) -> str:
    return " ".join(["the"] + [ATTRIBUTES[a] for a in layout.attributes[k][:1]] + [NAMES[layout.names[k]]])


# -- Visual Genome images ------------------------------------------------------------------------

def _write_images(out: Path, ids: range, seed: int, shape: VisualGenomeShape, progress: bool) -> int:
    """Render and save every image; returns their total size in bytes."""
    grain = _grain_field(seed, shape)
    total = 0
    report = _Reporter("synth visual-genome images", len(ids), "images", progress)
    for done, image_id in enumerate(ids, start=1):
        layout = _layout(image_id, seed, shape)
        data = _jpeg(_render_photo(layout, seed, shape, grain))
        (out / image_folder(image_id) / f"{image_id}.jpg").write_bytes(data)
        total += len(data)
        report.update(done)
    return total


def _grain_field(seed: int, shape: VisualGenomeShape) -> np.ndarray:
    """Signed film grain, a little larger than an image: each image adds a shifted crop of it
    (drawing fresh noise per image would cost more than the JPEG encoding)."""
    rng = _block_rng(seed, _PIXELS, 0)
    cells = ((shape.height + GRAIN_MARGIN) // GRAIN_SCALE + 1, (shape.width + GRAIN_MARGIN) // GRAIN_SCALE + 1)
    noise = rng.integers(128 - GRAIN, 128 + GRAIN + 1, (*cells, 3), dtype=np.uint8)
    smooth = Image.fromarray(noise).resize((cells[1] * GRAIN_SCALE, cells[0] * GRAIN_SCALE), Image.BILINEAR)
    return np.asarray(smooth, dtype=np.int16) - 128


def _render_photo(layout: _Layout, seed: int, shape: VisualGenomeShape, grain: np.ndarray) -> Image.Image:
    rng = _block_rng(seed, _PIXELS, layout.image_id)
    # A smooth colour field (sky, walls, ground), the objects as shapes, then grain over all.
    corners = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    img = Image.fromarray(corners).resize((shape.width, shape.height), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    filled = rng.random(len(layout.boxes)) < 0.4
    for (x, y, w, h), colour, fill, ellipse in zip(layout.boxes.tolist(), layout.colours.tolist(), filled,
                                                  layout.names % 2 == 0):
        outline = tuple(colour)
        (draw.ellipse if ellipse else draw.rectangle)((x, y, x + w - 1, y + h - 1),
                                                      fill=outline if fill else None, outline=outline, width=3)
    dy, dx = rng.integers(0, GRAIN_MARGIN, 2)
    pixels = np.asarray(img, dtype=np.int16) + grain[dy:dy + shape.height, dx:dx + shape.width]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# -- ConceptNet ----------------------------------------------------------------------------------

# The 50 relations of ConceptNet 5.7 with rough relative frequencies (RelatedTo dominates).
RELATIONS: tuple[tuple[str, float], ...] = (
    ("/r/RelatedTo", 30), ("/r/Synonym", 12), ("/r/FormOf", 8), ("/r/IsA", 6), ("/r/DerivedFrom", 4),
    ("/r/EtymologicallyRelatedTo", 3), ("/r/HasContext", 3), ("/r/AtLocation", 2), ("/r/UsedFor", 2),
    ("/r/SimilarTo", 1.5), ("/r/PartOf", 1.5), ("/r/HasSubevent", 1.2), ("/r/Antonym", 1.2),
    ("/r/CapableOf", 1), ("/r/HasPrerequisite", 1), ("/r/HasProperty", 1), ("/r/MannerOf", 1),
    ("/r/Causes", 0.8), ("/r/DistinctFrom", 0.8), ("/r/HasA", 0.6), ("/r/MotivatedByGoal", 0.5),
    ("/r/ReceivesAction", 0.5), ("/r/Desires", 0.4), ("/r/CausesDesire", 0.4), ("/r/HasFirstSubevent", 0.3),
    ("/r/HasLastSubevent", 0.3), ("/r/EtymologicallyDerivedFrom", 0.3), ("/r/MadeOf", 0.2), ("/r/DefinedAs", 0.2),
    ("/r/SymbolOf", 0.1), ("/r/LocatedNear", 0.1), ("/r/ObstructedBy", 0.1), ("/r/CreatedBy", 0.1),
    ("/r/InstanceOf", 0.1), ("/r/Entails", 0.1), ("/r/NotDesires", 0.1), ("/r/NotUsedFor", 0.05),
    ("/r/NotCapableOf", 0.05), ("/r/NotHasProperty", 0.05), ("/r/dbpedia/genre", 0.1),
    ("/r/dbpedia/influencedBy", 0.05), ("/r/dbpedia/knownFor", 0.05), ("/r/dbpedia/occupation", 0.05),
    ("/r/dbpedia/language", 0.05), ("/r/dbpedia/field", 0.05), ("/r/dbpedia/product", 0.05),
    ("/r/dbpedia/capital", 0.05), ("/r/dbpedia/leader", 0.05), ("/r/dbpedia/genus", 0.05),
    ("/r/ExternalURL", 0.0),  # drawn apart: its end is a URL, and never for both-English lines
)
# Languages of the lines that are not both-English, with rough weights, and their scripts.
LANGUAGES: tuple[tuple[str, float, str], ...] = (
    ("en", 20, "latin"), ("fr", 12, "latin"), ("ja", 8, "kana"), ("de", 7, "latin"), ("it", 6, "latin"),
    ("zh", 6, "han"), ("es", 6, "latin"), ("ru", 5, "cyrillic"), ("pt", 4, "latin"), ("nl", 4, "latin"),
    ("fi", 4, "latin"), ("la", 3, "latin"), ("pl", 3, "latin"), ("sv", 2, "latin"), ("ms", 2, "latin"),
    ("cs", 2, "latin"), ("ca", 1, "latin"), ("tr", 1, "latin"), ("hu", 1, "latin"), ("eo", 1, "latin"),
)
EXTERNAL_URL_RATE = 0.2  # of the lines that are not both-English
SAME_LANGUAGE_RATE = 0.6  # a non-English line links two concepts of one language this often
POS_TAGS = ("n", "v", "a", "r")
SENSES = ("wn/animal", "wn/artifact", "wn/food", "wikt/en_1", "wikt/en_2", "wn/act")
DATASETS = ("/d/conceptnet/4/en", "/d/wiktionary/en", "/d/wiktionary/fr", "/d/wordnet/3.1", "/d/verbosity",
            "/d/opencyc", "/d/jmdict")
CONCEPTS_PER_LINE = 0.6  # per-language vocabulary size per line naming that language
CONCEPTNET_BLOCK = 10_000  # lines drawn per generator call (vectorised draws)
_EN = 0


@dataclass(frozen=True)
class ConceptNetSummary:
    out: Path
    lines: int
    english_lines: int  # both ends English (some are /r/dbpedia/..., which the loader skips)
    bytes: int


def generate_conceptnet(out: Path, lines: int, seed: int, english_fraction: float = 0.1,
                        progress: bool = True) -> ConceptNetSummary:
    """Write a ConceptNet 5.7-layout assertions file of ``lines`` lines (see the module docstring)."""
    if lines < 1:
        raise ValueError(f"lines must be at least 1, got {lines}")
    if not 0.0 <= english_fraction <= 1.0:
        raise ValueError(f"english_fraction must be in [0, 1], got {english_fraction}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    vocabulary = _vocabulary_sizes(lines, english_fraction)
    english = 0
    report = _Reporter(f"synth conceptnet {out.name}", lines, "lines", progress)
    with _text_output(out) as f:
        for start in range(0, lines, CONCEPTNET_BLOCK):
            block, n_english = _conceptnet_block(seed, start // CONCEPTNET_BLOCK, min(CONCEPTNET_BLOCK, lines - start),
                                                 english_fraction, vocabulary)
            f.write(block)
            english += n_english
            report.update(start + min(CONCEPTNET_BLOCK, lines - start))
    return ConceptNetSummary(out, lines, english, out.stat().st_size)


@contextmanager
def _text_output(out: Path) -> Iterator[TextIO]:
    with open(out, "wb") as raw:
        if out.suffix != ".gz":
            with io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as text:
                yield text
            return
        # No name and no time in the gzip header: byte-identical files for the same seed.
        # Level 6 is gzip's own default, as the published file was written with.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as packed, \
                io.TextIOWrapper(packed, encoding="utf-8", newline="\n") as text:
            yield text


def _language_weights() -> np.ndarray:
    weights = np.array([w for _, w, _ in LANGUAGES])
    return weights / weights.sum()


def _relation_weights() -> np.ndarray:
    weights = np.array([w for _, w in RELATIONS])
    return weights / weights.sum()


def _vocabulary_sizes(lines: int, english_fraction: float) -> np.ndarray:
    """Concepts per language, in proportion to the line ends expected in it (fixed by the line
    count, not the seed, so every block draws from the same vocabularies)."""
    ends = 2 * lines * (1 - english_fraction) * _language_weights()
    ends[_EN] += 2 * lines * english_fraction
    return np.maximum((ends * CONCEPTS_PER_LINE).astype(np.int64), 1000)


def _conceptnet_block(seed: int, index: int, size: int, english_fraction: float,
                      vocabulary: np.ndarray) -> tuple[str, int]:
    """``size`` lines of text drawn from their own seed, and how many have both ends English."""
    rng = _block_rng(seed, _BLOCK, index)
    both_english = rng.random(size) < english_fraction
    starts = rng.choice(len(LANGUAGES), size, p=_language_weights())
    others = rng.choice(len(LANGUAGES), size, p=_language_weights())
    same = rng.random(size) < SAME_LANGUAGE_RATE
    ends = np.where(same, starts, others)
    # A line that is not both-English must not become one by chance.
    ends = np.where(~both_english & (starts == _EN) & (ends == _EN), 1 + others % (len(LANGUAGES) - 1), ends)
    starts, ends = np.where(both_english, _EN, starts), np.where(both_english, _EN, ends)
    external = ~both_english & (rng.random(size) < EXTERNAL_URL_RATE)
    relations = rng.choice(len(RELATIONS), size, p=_relation_weights())
    ranks = zipf_ranks(rng, (size, 2), vocabulary[np.stack([starts, ends], axis=1)])
    suffixes = rng.integers(0, 100, (size, 2))
    extras = rng.integers(0, 1000, (size, 4))
    lines = [_assertion_line(int(s), int(e), int(r), bool(x), ranks[k], suffixes[k], extras[k])
             for k, (s, e, r, x) in enumerate(zip(starts, ends, relations, external))]
    return "".join(lines), int(both_english.sum())


def _assertion_line(start_lang: int, end_lang: int, relation: int, external: bool, ranks: np.ndarray,
                    suffixes: np.ndarray, extras: np.ndarray) -> str:
    start = _concept_uri(start_lang, int(ranks[0]), int(suffixes[0]))
    if external:
        rel, end = "/r/ExternalURL", f"http://dbpedia.org/resource/{_term(end_lang, int(ranks[1])).title()}"
        info = {"dataset": "/d/dbpedia/en", "license": "cc:by-sa/4.0",
                "sources": [{"contributor": "/s/resource/dbpedia/2015/en"}], "weight": 0.5}
    else:
        rel, end = RELATIONS[relation][0], _concept_uri(end_lang, int(ranks[1]), int(suffixes[1]))
        info = _edge_info(rel, start, end, extras)
    return f"/a/[{rel}/,{start}/,{end}/]\t{rel}\t{start}\t{end}\t{json.dumps(info, ensure_ascii=False)}\n"


def _edge_info(relation: str, start: str, end: str, extras: np.ndarray) -> dict[str, Any]:
    dataset = DATASETS[int(extras[0]) % len(DATASETS)]
    info: dict[str, Any] = {"dataset": dataset, "license": "cc:by/4.0"}
    if dataset == "/d/conceptnet/4/en":  # OMCS sentences: a contributor and a surface text
        info["sources"] = [{"activity": "/s/activity/omcs/omcs1_possibly_free_text",
                            "contributor": f"/s/contributor/omcs/{pseudo_word(int(extras[1]), SYLLABLES['latin'])}"}]
        info["surfaceText"] = f"[[{_words(start)}]] {relation.rsplit('/', 1)[-1].lower()} [[{_words(end)}]]"
    else:
        info["sources"] = [{"contributor": f"/s/resource{dataset[2:]}", "process": "/s/process/wikiparsec/2"}]
    info["weight"] = (1.0, 1.0, 1.0, 2.0, 0.5, 0.25, 3.464)[int(extras[2]) % 7]
    return info


def _words(concept: str) -> str:
    return concept.split("/")[3].replace("_", " ")


def _concept_uri(language: int, rank: int, suffix: int) -> str:
    """``/c/LANG/TERM``, with a part of speech one time in three, and a sense now and then."""
    uri = f"/c/{LANGUAGES[language][0]}/{_term(language, rank)}"
    if suffix < 33:
        uri += f"/{POS_TAGS[suffix % len(POS_TAGS)]}"
        if suffix < 8:
            uri += f"/{SENSES[suffix % len(SENSES)]}"
    return uri


@lru_cache(maxsize=1 << 17)
def _term(language: int, rank: int) -> str:
    """Concept ``rank`` of a language: one word mostly, two or three joined by '_' sometimes
    (the first word alone tells ranks apart, so terms are distinct)."""
    syllables = SYLLABLES[LANGUAGES[language][2]]
    words = [pseudo_word(rank, syllables)]
    shape = rank * 2654435761 % 10  # a fixed scramble of the rank: which ranks are phrases
    for extra in range(max(shape - 7, 0)):
        words.append(pseudo_word((rank * 40503 + extra) % 300, syllables))
    return "_".join(words)

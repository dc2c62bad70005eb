"""A deterministic synthetic scene-graph KG in the Visual Genome layout, to try every path offline.

    kclip synth scene-graphs OUT --images 200 --seed 0
    kclip load visual-genome OUT --kg shapes

Each image is a plain background with 2-4 flat shapes (circle, square, triangle, star, diamond),
each in a distinct cell of a 3x3 grid, so any two objects are separated by whole pixels on at
least one axis and "left of" / "above" are never borderline. Within an image every object has
its own kind and its own colour: a phrase like "red circle" names exactly one object, so swapping
subject and object of any true caption gives a false one (the relation-swap test relies on this).

Written under OUT (every JSON array one element per line, so errors can name lines):

- ``images/<image_id>.png``: the rendered images (byte-identical for the same seed);
- ``image_data.json``: ``[{image_id, width, height, url: "images/<id>.png"}]``;
- ``scene_graphs.json``: ``[{image_id, objects: [{object_id, x, y, w, h, names: [kind],
  attributes: [size, colour]}], relationships: [{relationship_id, predicate, subject_id,
  object_id}]}]``; predicates: left of, right of, above, below, bigger than, smaller than;
- ``region_descriptions.json``: ``[{id: image_id, regions: [{region_id, image_id, phrase, x, y,
  width, height}]}]``, as real VG names the box (one region per relationship, box = the union of
  its two objects, plus one whole-image region whose phrase lists the objects);
- ``captions.json``: COCO captions layout ``{images: [{id, file_name: "<id>.png"}],
  annotations: [{id, image_id, caption}]}``, ``file_name`` relative to ``images/`` as in COCO;
  per image the whole-image caption and up to four relationship captions.

Ids (image, object, relationship, region, caption) are global and count from 1, as in VG.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from math import cos, pi, sin
from pathlib import Path
from typing import Any, Iterable

from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle", "star", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220),
    "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (240, 130, 30),
}
BACKGROUNDS = ((255, 255, 255), (232, 232, 232), (245, 240, 225))
GRID = 3  # objects sit in distinct cells of a GRID x GRID layout
MARGIN = 2  # pixels kept empty at each cell edge, so boxes in different cells never touch
SIZE_FRACTION = {"small": 0.4, "large": 0.75}  # of a cell's side
MIN_IMAGE_SIZE = 48
MAX_REGION_CAPTIONS = 4  # COCO has about five captions per image: the whole-image one plus four


@dataclass(frozen=True)
class SynthObject:
    object_id: int
    kind: str
    colour: str
    size: str  # "small" or "large"
    cell: tuple[int, int]  # (column, row)
    box: tuple[int, int, int, int]  # (x, y, w, h), pixels

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind}"


@dataclass(frozen=True)
class SynthRelationship:
    relationship_id: int
    predicate: str
    subject: SynthObject
    object: SynthObject

    @property
    def phrase(self) -> str:
        return f"{self.subject.phrase} {self.predicate} {self.object.phrase}"


@dataclass
class SynthImage:
    image_id: int
    background: tuple[int, int, int]
    objects: list[SynthObject] = field(default_factory=list)
    relationships: list[SynthRelationship] = field(default_factory=list)

    @property
    def caption(self) -> str:
        phrases = [o.phrase for o in self.objects]
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]


@dataclass(frozen=True)
class SynthSummary:
    out: Path
    images: int
    objects: int
    relationships: int
    regions: int
    captions: int


class _Ids:
    """Global id counters, as VG numbers objects and relationships across the whole dataset."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def next(self, kind: str) -> int:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        return self.counters[kind]


def generate_scene_graphs(out: Path, images: int, seed: int, image_size: int = 128) -> SynthSummary:
    """Write ``images`` synthetic scene graphs under ``out`` (see the module docstring)."""
    out = _prepare_output(out, images, image_size, MIN_IMAGE_SIZE)
    rng = random.Random(seed)
    ids = _Ids()
    scenes = [_make_image(image_id, rng, ids, image_size) for image_id in range(1, images + 1)]
    for scene in scenes:
        _render(scene, image_size).save(out / "images" / f"{scene.image_id}.png", format="PNG", optimize=False)
    _write_array(out / "image_data.json", (
        {"image_id": s.image_id, "width": image_size, "height": image_size, "url": f"images/{s.image_id}.png"}
        for s in scenes))
    _write_array(out / "scene_graphs.json", (_scene_graph_json(s) for s in scenes))
    regions = [_regions_json(s, ids, image_size) for s in scenes]
    _write_array(out / "region_descriptions.json", regions)
    captions = _captions_json(scenes)
    (out / "captions.json").write_text(json.dumps(captions, indent=1) + "\n", encoding="utf-8")
    return SynthSummary(out=out, images=len(scenes), objects=sum(len(s.objects) for s in scenes),
                        relationships=sum(len(s.relationships) for s in scenes),
                        regions=sum(len(r["regions"]) for r in regions), captions=len(captions["annotations"]))


# -- layout ------------------------------------------------------------------------------------

def _make_image(image_id: int, rng: random.Random, ids: _Ids, image_size: int) -> SynthImage:
    scene = _place_objects(image_id, rng, ids, image_size, objects=(2, 4))
    scene.relationships = _relationships(scene.objects, rng, ids)
    return scene


def _prepare_output(out: Path, images: int, image_size: int, min_image_size: int) -> Path:
    """``out`` with its images/ folder made, after checking the sizes asked for."""
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    if image_size < min_image_size:
        raise ValueError(f"image_size must be at least {min_image_size} pixels, got {image_size}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    return out


def _place_objects(image_id: int, rng: random.Random, ids: _Ids, image_size: int,
                   objects: tuple[int, int]) -> SynthImage:
    """A scene of ``objects`` (min, max) shapes in distinct grid cells, kinds and colours; no relationships yet."""
    count = rng.randint(*objects)
    # Reading order (row, then column) keeps ids and the whole-image caption in a natural order.
    cells = sorted(rng.sample([(c, r) for r in range(GRID) for c in range(GRID)], count), key=lambda c: (c[1], c[0]))
    kinds = rng.sample(KINDS, count)  # distinct kinds and colours: each phrase names one object
    colours = rng.sample(sorted(COLOURS), count)
    scene = SynthImage(image_id=image_id, background=rng.choice(BACKGROUNDS))
    for cell, kind, colour in zip(cells, kinds, colours):
        size = rng.choice(("small", "large"))
        scene.objects.append(SynthObject(ids.next("object"), kind, colour, size, cell,
                                         _place(cell, size, image_size, rng)))
    return scene


def _place(cell: tuple[int, int], size: str, image_size: int, rng: random.Random) -> tuple[int, int, int, int]:
    side = image_size // GRID
    extent = round(SIZE_FRACTION[size] * side)
    room = side - 2 * MARGIN - extent  # the jitter left inside the cell
    x = cell[0] * side + MARGIN + rng.randint(0, room)
    y = cell[1] * side + MARGIN + rng.randint(0, room)
    return x, y, extent, extent


def _relationships(objects: list[SynthObject], rng: random.Random, ids: _Ids) -> list[SynthRelationship]:
    """Every true relation between each pair, stated in a random one of its two directions."""
    found: list[SynthRelationship] = []

    def state(first: SynthObject, forward: str, second: SynthObject, backward: str) -> None:
        # "first <forward> second" is true; say it either way round.
        if rng.random() < 0.5:
            found.append(SynthRelationship(ids.next("relationship"), forward, first, second))
        else:
            found.append(SynthRelationship(ids.next("relationship"), backward, second, first))

    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            if a.cell[0] != b.cell[0]:
                left, right = (a, b) if a.cell[0] < b.cell[0] else (b, a)
                state(left, "left of", right, "right of")
            if a.cell[1] != b.cell[1]:
                top, bottom = (a, b) if a.cell[1] < b.cell[1] else (b, a)
                state(top, "above", bottom, "below")
            if a.size != b.size:
                big, small = (a, b) if a.size == "large" else (b, a)
                state(big, "bigger than", small, "smaller than")
    return found


# -- rendering ---------------------------------------------------------------------------------

def _render(scene: SynthImage, image_size: int) -> Image.Image:
    img = Image.new("RGB", (image_size, image_size), scene.background)
    draw = ImageDraw.Draw(img)  # no anti-aliasing: each object is exactly its colour
    for obj in scene.objects:
        _draw_shape(draw, obj.kind, obj.box, COLOURS[obj.colour])
    return img


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int],
                fill: tuple[int, int, int]) -> None:
    x, y, w, h = box
    x1, y1 = x + w - 1, y + h - 1  # PIL's coordinates are inclusive
    cx, cy = (x + x1) // 2, (y + y1) // 2
    if kind == "circle":
        draw.ellipse((x, y, x1, y1), fill=fill)
    elif kind == "square":
        draw.rectangle((x, y, x1, y1), fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, y), (x1, y1), (x, y1)], fill=fill)
    elif kind == "diamond":
        draw.polygon([(cx, y), (x1, cy), (cx, y1), (x, cy)], fill=fill)
    elif kind == "star":
        # Outer tips and inner corners around the box's exact centre, first tip up; clamped so
        # rounding never puts a pixel outside the box the scene graph declares.
        radii, mid_x, mid_y = ((w - 1) / 2, (w - 1) / 5), x + (w - 1) / 2, y + (h - 1) / 2
        points = [(min(max(round(mid_x + radii[k % 2] * cos(-pi / 2 + k * pi / 5)), x), x1),
                   min(max(round(mid_y + radii[k % 2] * sin(-pi / 2 + k * pi / 5)), y), y1)) for k in range(10)]
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")


# -- files -------------------------------------------------------------------------------------

def _scene_graph_json(scene: SynthImage) -> dict[str, Any]:
    objects = [{"object_id": o.object_id, "x": o.box[0], "y": o.box[1], "w": o.box[2], "h": o.box[3],
                "names": [o.kind], "attributes": [o.size, o.colour]} for o in scene.objects]
    relationships = [{"relationship_id": r.relationship_id, "predicate": r.predicate,
                      "subject_id": r.subject.object_id, "object_id": r.object.object_id}
                     for r in scene.relationships]
    return {"image_id": scene.image_id, "objects": objects, "relationships": relationships}


def _regions_json(scene: SynthImage, ids: _Ids, image_size: int) -> dict[str, Any]:
    def region(phrase: str, box: tuple[int, int, int, int]) -> dict[str, Any]:
        return {"region_id": ids.next("region"), "image_id": scene.image_id, "phrase": phrase,
                "x": box[0], "y": box[1], "width": box[2], "height": box[3]}

    regions = [region(r.phrase, _union(r.subject.box, r.object.box)) for r in scene.relationships]
    regions.append(region(scene.caption, (0, 0, image_size, image_size)))
    return {"id": scene.image_id, "regions": regions}


def _captions_json(scenes: list[SynthImage]) -> dict[str, Any]:
    images = [{"id": s.image_id, "file_name": f"{s.image_id}.png"} for s in scenes]
    annotations: list[dict[str, Any]] = []
    for s in scenes:
        for caption in [s.caption] + [r.phrase for r in s.relationships[:MAX_REGION_CAPTIONS]]:
            annotations.append({"id": len(annotations) + 1, "image_id": s.image_id, "caption": caption})
    return {"images": images, "annotations": annotations}


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, x1 - x0, y1 - y0


def _write_array(path: Path, items: Iterable[dict[str, Any]]) -> None:
    # One element per line: small enough to read, and the loader's errors name useful lines.
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for n, item in enumerate(items):
            f.write((",\n" if n else "") + json.dumps(item, ensure_ascii=False))
        f.write("\n]\n")

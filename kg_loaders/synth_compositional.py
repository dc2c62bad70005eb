"""A compositional scene set that bag-of-words CLIP cannot pass, and ARO tests on its test images.

    kclip synth compositional OUT --images 300 --seed 0
    kclip load visual-genome OUT --kg comp
    kclip train --kg comp --config tiny --run comp-tiny
    kclip eval --run comp-tiny --task aro --data OUT      # both ARO files; or --data OUT/visual_genome_relation.json

Each image (JPEG, 224x224 by default) holds 3 or 4 flat shapes, each of its own kind (circle,
square, triangle, star, diamond), its own colour and a size (small or large, about 2x apart), in
distinct cells of a 3x3 grid, so "left of" / "above" are never borderline (the layout, rendering
and KG files are those of ``synth_scene_graphs``). Relationships are the spatial ones only: left of,
right of, above, below. Left out on purpose: symmetric predicates ("next to": swapping subject and
object changes nothing) and size comparisons ("bigger than": a caption that names sizes decides it
from the text alone, and ARO's own macro accuracy leaves it out as well).

Written under OUT:

- the Visual Genome layout ``kclip load visual-genome`` reads: ``images/<id>.jpg``,
  ``image_data.json``, ``scene_graphs.json`` (objects with kind, box and attributes [size, colour];
  the relationships), ``region_descriptions.json`` (per relationship "a small red circle left of a
  large blue square", and one whole-image caption "a small red circle, a large blue square and a
  small green star": the image-text pairs), and ``captions.json`` (the same captions, COCO layout);
- ARO's two test files for the test images, in ARO's layout (mertyg/vision-language-models-are-bows,
  ``dataset_zoo/aro_datasets.py``: ``image_path`` relative to the ``images/`` folder beside the
  file, the box that ARO crops to, ``true_caption``, ``false_caption``), plus ``image_id``:
  ``visual_genome_relation.json``: ``{image_id, image_path, bbox_x, bbox_y, bbox_w, bbox_h,
  relation_name, true_caption: "the red circle is left of the blue square", false_caption: "the
  blue square is left of the red circle"}``, one per relationship, the box around both objects;
  ``visual_genome_attribution.json``: ``{image_id, image_path, bbox_*, attributes: ["red", "blue"],
  true_caption: "the red circle and the blue square", false_caption: "the blue circle and the red
  square"}``, for every pair of objects, swapping their colours, and their sizes where they differ.

The test images are those the loader puts in the test split (its hashed split with its default
``split_ratios``): loaded with other ratios, the ARO files no longer match the KG's test split.
The model never trains on them: the sampler reads train triplets, and neighbourhoods only train
edges. From the text alone the true and false captions are equally plausible by construction: the
false one has the same words, and kinds, colours, sizes and places are drawn independently, so no
word order is likelier than its swap.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from kclip.kg_loaders.base import hashed_split
# The layout, rendering and VG writers of the simpler scene set, reused as they are.
from kclip.kg_loaders.synth_scene_graphs import (SynthImage, SynthObject,
                                                 SynthRelationship, _captions_json, _Ids, _place_objects, _prepare_output, _regions_json,
                                                 _render, _scene_graph_json, _union, _write_array)
from kclip.kg_loaders.visual_genome import VisualGenomeOptions

RELATION_FILE, ATTRIBUTION_FILE = "visual_genome_relation.json", "visual_genome_attribution.json"
SPATIAL = (("left of", "right of"), ("above", "below"))  # (forward, backward) on the x and y axes
PREDICATES = tuple(p for pair in SPATIAL for p in pair)
OBJECTS_PER_IMAGE = (3, 4)
MIN_IMAGE_SIZE = 96
JPEG_QUALITY = 95


@dataclass(frozen=True)
class CompositionalSummary:
    out: Path
    images: int
    test_images: int
    objects: int
    relationships: int
    relation_items: int
    attribution_items: int


def generate_compositional(out: Path, images: int, seed: int, image_size: int = 224) -> CompositionalSummary:
    """Write ``images`` compositional scenes and the ARO files of the test ones under ``out``
    (see the module docstring); the same seed gives byte-identical files."""
    out = _prepare_output(out, images, image_size, MIN_IMAGE_SIZE)
    rng, ids = random.Random(seed), _Ids()
    scenes = [_make_scene(image_id, rng, ids, image_size) for image_id in range(1, images + 1)]
    for scene in scenes:
        _render(scene, image_size).save(out / "images" / _file_name(scene), format="JPEG", quality=JPEG_QUALITY)
    _write_vg_files(out, scenes, ids, image_size)
    ratios = VisualGenomeOptions().split_ratios  # the loader's default split
    test = [s for s in scenes if hashed_split(str(s.image_id), ratios) == "test"]
    relation = [item for s in test for item in _relation_items(s)]
    attribution = [item for s in test for item in _attribution_items(s, rng)]
    _write_array(out / RELATION_FILE, relation)
    _write_array(out / ATTRIBUTION_FILE, attribution)
    return CompositionalSummary(out, len(scenes), len(test), sum(len(s.objects) for s in scenes),
                                sum(len(s.relationships) for s in scenes), len(relation), len(attribution))


def _file_name(scene: SynthImage) -> str:
    return f"{scene.image_id}.jpg"


# -- scenes ------------------------------------------------------------------------------------

def _make_scene(image_id: int, rng: random.Random, ids: _Ids, image_size: int) -> SynthImage:
    scene = _place_objects(image_id, rng, ids, image_size, objects=OBJECTS_PER_IMAGE)
    scene.relationships = _spatial_relationships(scene.objects, rng, ids)
    return scene


def _spatial_relationships(objects: list[SynthObject], rng: random.Random, ids: _Ids) -> list[SynthRelationship]:
    """For each pair and axis they differ on, the true relation, stated in a random one of its two
    directions (so neither kind nor colour is likelier as a subject of "left of")."""
    found: list[SynthRelationship] = []
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            for axis, (forward, backward) in enumerate(SPATIAL):
                if a.cell[axis] == b.cell[axis]:
                    continue
                first, second = (a, b) if a.cell[axis] < b.cell[axis] else (b, a)  # first is left / above
                if rng.random() < 0.5:
                    found.append(SynthRelationship(ids.next("relationship"), forward, first, second))
                else:
                    found.append(SynthRelationship(ids.next("relationship"), backward, second, first))
    return found


def _write_vg_files(out: Path, scenes: list[SynthImage], ids: _Ids, image_size: int) -> None:
    _write_array(out / "image_data.json", (
        {"image_id": s.image_id, "width": image_size, "height": image_size, "url": f"images/{_file_name(s)}"}
        for s in scenes))
    _write_array(out / "scene_graphs.json", (_scene_graph_json(s) for s in scenes))
    _write_array(out / "region_descriptions.json", [_regions_json(s, ids, image_size) for s in scenes])
    captions = _captions_json(scenes)
    for image in captions["images"]:
        image["file_name"] = f"{image['id']}.jpg"  # the shared writer names PNGs
    (out / "captions.json").write_text(json.dumps(captions, indent=1) + "\n", encoding="utf-8")


# -- ARO items ---------------------------------------------------------------------------------

def _named(obj: SynthObject, attribute: str | None = None) -> str:
    return f"the {attribute or obj.colour} {obj.kind}"


def _aro_item(scene: SynthImage, a: SynthObject, b: SynthObject, **fields: Any) -> dict[str, Any]:
    x, y, w, h = _union(a.box, b.box)  # ARO crops to the box around both objects
    return {"image_id": scene.image_id, "image_path": _file_name(scene), "bbox_x": x, "bbox_y": y, "bbox_w": w,
            "bbox_h": h, **fields}


def _relation_items(scene: SynthImage) -> Iterable[dict[str, Any]]:
    """One item per relationship: the false caption swaps subject and object."""
    for r in scene.relationships:
        s, o = _named(r.subject), _named(r.object)
        yield _aro_item(scene, r.subject, r.object, relation_name=r.predicate,
                        true_caption=f"{s} is {r.predicate} {o}", false_caption=f"{o} is {r.predicate} {s}")


def _attribution_items(scene: SynthImage, rng: random.Random) -> Iterable[dict[str, Any]]:
    """Per pair of objects (named in a random order), one item swapping their colours and, where
    their sizes differ, one swapping their sizes."""
    objects = scene.objects
    for i, first in enumerate(objects):
        for second in objects[i + 1:]:
            a, b = (first, second) if rng.random() < 0.5 else (second, first)
            swaps = [(a.colour, b.colour)] + ([(a.size, b.size)] if a.size != b.size else [])
            for x, y in swaps:
                yield _aro_item(scene, a, b, attributes=[x, y],
                                true_caption=f"{_named(a, x)} and {_named(b, y)}",
                                false_caption=f"{_named(a, y)} and {_named(b, x)}")


__all__ = ["ATTRIBUTION_FILE", "PREDICATES", "RELATION_FILE", "CompositionalSummary", "generate_compositional"]

"""Release-shaped synthetic data: deterministic bytes, the real layouts, and loads with the real loaders."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from PIL import Image

from kclip.kg_loaders.conceptnet import ConceptNetLoader
from kclip.kg_loaders.synth_releases import (VisualGenomeShape, generate_conceptnet, generate_visual_genome,
                                             image_folder)
from kclip.kg_loaders.visual_genome import VisualGenomeLoader
from kclip.platform.ingest import load_kg

IMAGES = 5
SHAPE = VisualGenomeShape(width=160, height=120, objects=12, relationships=6, regions=3)
LINES = 3_000


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def vg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vg") / "vg"
    generate_visual_genome(out, IMAGES, seed=3, shape=SHAPE, progress=False)
    return out


@pytest.fixture(scope="module")
def assertions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cn") / "assertions.csv.gz"
    generate_conceptnet(out, LINES, seed=3, progress=False)
    return out


# -- Visual Genome -------------------------------------------------------------------------------

def test_visual_genome_same_seed_same_bytes(vg: Path, tmp_path: Path) -> None:
    generate_visual_genome(tmp_path / "again", IMAGES, seed=3, shape=SHAPE, progress=False)
    assert _files(tmp_path / "again") == _files(vg)
    generate_visual_genome(tmp_path / "other", IMAGES, seed=4, shape=SHAPE, progress=False)
    other = _files(tmp_path / "other")
    assert other.keys() == _files(vg).keys()
    assert other["scene_graphs.json"] != _files(vg)["scene_graphs.json"]


def test_visual_genome_fewer_images_are_a_prefix(vg: Path, tmp_path: Path) -> None:
    generate_visual_genome(tmp_path / "fewer", 2, seed=3, shape=SHAPE, progress=False)
    fewer, full = _files(tmp_path / "fewer"), _files(vg)
    assert all(full[name] == data for name, data in fewer.items() if name.endswith(".jpg"))
    graphs = json.loads(fewer["scene_graphs.json"])
    assert graphs == json.loads(full["scene_graphs.json"])[:2]


def test_visual_genome_layout(vg: Path) -> None:
    graphs = json.loads((vg / "scene_graphs.json").read_text())
    image_data = json.loads((vg / "image_data.json").read_text())
    regions = json.loads((vg / "region_descriptions.json").read_text())
    # One line per file, as VG ships them.
    assert all((vg / name).read_text().count("\n") == 0 for name in ("scene_graphs.json", "image_data.json"))
    assert [g["image_id"] for g in graphs] == [d["image_id"] for d in image_data] == [r["id"] for r in regions]
    for data in image_data:
        folder = image_folder(data["image_id"])
        assert data["url"] == f"https://cs.stanford.edu/people/rak248/{folder}/{data['image_id']}.jpg"
        with Image.open(vg / folder / f"{data['image_id']}.jpg") as img:
            assert (img.format, img.size) == ("JPEG", (SHAPE.width, SHAPE.height))
    objects = [o for g in graphs for o in g["objects"]]
    assert len(objects) == IMAGES * SHAPE.objects
    assert len({o["object_id"] for o in objects}) == len(objects)  # global ids
    assert all(len(g["relationships"]) == SHAPE.relationships for g in graphs)
    assert all(len(r["regions"]) == SHAPE.regions for r in regions)
    assert all(o["x"] >= 0 and o["y"] >= 0 and o["w"] > 0 and o["h"] > 0 for o in objects)
    spilling = [o for o in objects if o["x"] + o["w"] > SHAPE.width or o["y"] + o["h"] > SHAPE.height]
    assert spilling
    assert all(o["x"] + o["w"] <= SHAPE.width + 8 and o["y"] + o["h"] <= SHAPE.height + 8 for o in spilling)


def test_visual_genome_photos_weigh_like_vg(tmp_path: Path) -> None:
    summary = generate_visual_genome(tmp_path, 3, seed=0, progress=False)  # the default 800x600
    assert 100e3 < summary.image_bytes / 3 < 250e3


def test_visual_genome_loads(vg: Path, graph_store, kg_name, media_store) -> None:
    graphs = json.loads((vg / "scene_graphs.json").read_text())
    objects = [o for g in graphs for o in g["objects"]]
    names = {o["names"][0] for o in objects}
    attributes = {a for o in objects for a in o.get("attributes", [])}
    regions = IMAGES * SHAPE.regions
    relationships = IMAGES * SHAPE.relationships
    summary = load_kg(graph_store, VisualGenomeLoader(vg, kg=kg_name), media_store, progress=False)
    assert summary.entities.rejected == summary.triplets.rejected == summary.unparsed_rows == 0
    assert summary.entities.added == IMAGES + len(objects) + len(names) + len(attributes) + regions
    attribute_triplets = sum(len(o.get("attributes", [])) for o in objects)
    expected = 2 * len(objects) + attribute_triplets + relationships + 2 * regions
    assert summary.triplets.added + summary.triplets.present == expected  # repeats of a relationship: present
    predicates = {r["predicate"] for g in graphs for r in g["relationships"]}
    assert summary.relations.added == len(predicates | {"is a", "has attribute", "in image", "image of", "caption of"})


def test_visual_genome_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="images"):
        generate_visual_genome(tmp_path, 0, seed=0)
    with pytest.raises(ValueError, match="regions"):
        generate_visual_genome(tmp_path, 1, seed=0, shape=VisualGenomeShape(relationships=2, regions=3))


# -- ConceptNet ----------------------------------------------------------------------------------

def _english_assertions(path: Path) -> list[tuple[str, str, str]]:
    """(start, relation, end) of the lines the loader keeps by default, read independently of it."""
    kept = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            uri, relation, start, end, info = line.rstrip("\n").split("\t")
            assert uri == f"/a/[{relation}/,{start}/,{end}/]" and isinstance(json.loads(info)["weight"], float)
            if start.startswith("/c/en/") and end.startswith("/c/en/") and not relation.startswith("/r/dbpedia/"):
                kept.append(("/".join(start.split("/")[:4]), relation, "/".join(end.split("/")[:4])))
    return kept


def test_conceptnet_same_seed_same_bytes(assertions: Path, tmp_path: Path) -> None:
    generate_conceptnet(tmp_path / "again.csv.gz", LINES, seed=3, progress=False)
    assert (tmp_path / "again.csv.gz").read_bytes() == assertions.read_bytes()
    generate_conceptnet(tmp_path / "plain.csv", LINES, seed=3, progress=False)
    assert (tmp_path / "plain.csv").read_bytes() == gzip.decompress(assertions.read_bytes())
    generate_conceptnet(tmp_path / "other.csv", LINES, seed=4, progress=False)
    assert (tmp_path / "other.csv").read_bytes() != (tmp_path / "plain.csv").read_bytes()


def test_conceptnet_shape(assertions: Path, tmp_path: Path) -> None:
    lines = gzip.decompress(assertions.read_bytes()).decode("utf-8").splitlines()
    assert len(lines) == LINES
    relations = {line.split("\t")[1] for line in lines}
    languages = {line.split("\t")[2].split("/")[2] for line in lines}
    assert "/r/RelatedTo" in relations and "/r/ExternalURL" in relations and len(relations) > 30
    assert {"en", "fr", "ja", "zh", "ru"} <= languages
    assert 0.07 < len(_english_assertions(assertions)) / LINES < 0.13
    everything = generate_conceptnet(tmp_path / "en.csv", 200, seed=0, english_fraction=1.0, progress=False)
    assert everything.english_lines == 200


def test_conceptnet_loads(assertions: Path, graph_store, kg_name, media_store) -> None:
    kept = _english_assertions(assertions)
    summary = load_kg(graph_store, ConceptNetLoader(assertions, kg=kg_name), media_store, progress=False)
    assert summary.unparsed_rows == summary.entities.rejected == summary.triplets.rejected == 0
    assert summary.entities.added == len({c for start, _, end in kept for c in (start, end)})
    assert summary.triplets.added == len(set(kept))
    assert summary.relations.added == len({relation for _, relation, _ in kept})


def test_conceptnet_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lines"):
        generate_conceptnet(tmp_path / "x.csv", 0, seed=0)
    with pytest.raises(ValueError, match="english_fraction"):
        generate_conceptnet(tmp_path / "x.csv", 10, seed=0, english_fraction=1.5)

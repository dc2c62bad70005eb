"""The Visual Genome loader: records from a tiny synthetic dataset, rejects naming lines, and loads
into a real Neo4j (fixtures ``graph_store``, ``media_store``, ``kg_name`` from tests/conftest.py)."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kclip.kg_loaders.synth_scene_graphs import COLOURS, generate_scene_graphs
from kclip.kg_loaders.base import hashed_split
from kclip.kg_loaders.visual_genome import VisualGenomeLoader, clip_box
from kclip.platform.errors import ConfigError, InputError, LoadRefused
from kclip.platform.ingest import load_kg
from kclip.platform.records import Entity, Reject, Relation, Triplet

IMAGES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vg") / "synth"
    generate_scene_graphs(out, images=IMAGES, seed=3)
    return out


@pytest.fixture
def copy(dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the dataset, for tests that break it."""
    return Path(shutil.copytree(dataset, tmp_path / "vg"))


def _records(path: Path, **options) -> list:
    return list(VisualGenomeLoader(path, "vg", options).records())


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def expected_counts(root: Path) -> dict[str, int]:
    """Entities, relations and triplets the mapping in the loader's docstring gives for ``root``."""
    graphs = _json(root / "scene_graphs.json")
    regions = sum(len(r["regions"]) for r in _json(root / "region_descriptions.json"))
    objects = [o for g in graphs for o in g["objects"]]
    relationships = [r for g in graphs for r in g["relationships"]]
    labels = {("name", n) for o in objects for n in o["names"]}
    labels |= {("attribute", a) for o in objects for a in o["attributes"]}
    per_object = sum(2 + len(o["attributes"]) for o in objects)  # is a, in image, has attribute
    return {
        "image": len(graphs) + len(objects),
        "text": len(labels) + regions,
        "relations": len({r["predicate"] for r in relationships}) + 3 + (2 if regions else 0),
        "triplets": per_object + len(relationships) + 2 * regions,
    }


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- records -----------------------------------------------------------------------------------

def test_counts_match_the_mapping(dataset: Path) -> None:
    records = _records(dataset)
    entities = [r for r in records if isinstance(r, Entity)]
    assert not [r for r in records if isinstance(r, Reject)]
    expected = expected_counts(dataset)
    assert Counter(e.modality for e in entities) == {"image": expected["image"], "text": expected["text"]}
    assert len({e.id for e in entities}) == len(entities)  # shared labels defined once
    assert len([r for r in records if isinstance(r, Relation)]) == expected["relations"]
    assert len([r for r in records if isinstance(r, Triplet)]) == expected["triplets"]


def test_entities_and_relations_come_before_their_triplets(dataset: Path) -> None:
    defined: set[str] = set()
    for record in _records(dataset):
        if isinstance(record, Entity):
            defined.add(record.id)
        elif isinstance(record, Relation):
            defined.add("relation " + record.name)
        elif isinstance(record, Triplet):
            assert {record.head, record.tail, "relation " + record.relation} <= defined, record


def test_object_boxes_crop_their_object(dataset: Path) -> None:
    objects = {o["object_id"]: o for g in _json(dataset / "scene_graphs.json") for o in g["objects"]}
    crops = [r for r in _records(dataset) if isinstance(r, Entity) and r.id.startswith("object:")]
    assert len(crops) == len(objects)
    for entity in crops:
        source = objects[int(entity.id.removeprefix("object:"))]
        assert entity.image.box == (source["x"], source["y"], source["w"], source["h"])
        colour = np.array(COLOURS[source["attributes"][1]])
        whole = np.asarray(Image.open(entity.image.path).convert("RGB"))
        x, y, w, h = entity.image.box
        crop = whole[y:y + h, x:x + w]
        # All of the object's pixels (its colour is unique in the image) lie inside the crop.
        assert (crop == colour).all(-1).sum() == (whole == colour).all(-1).sum() > 0
        assert entity.text == " ".join(source["attributes"] + source["names"])


def test_all_triplets_of_an_image_share_its_split(dataset: Path) -> None:
    records = _records(dataset)
    image_of = {}  # entity id -> its image id
    for t in records:
        if isinstance(t, Triplet) and t.relation in ("in image", "caption of"):
            image_of[t.head] = int(t.tail.removeprefix("image:"))
    splits = defaultdict(set)
    for t in records:
        if isinstance(t, Triplet):
            node = t.head if t.head.startswith(("object:", "caption:")) else t.tail
            splits[image_of[node]].add(t.split)
    assert set(splits) == set(range(1, IMAGES + 1))
    assert all(s == {hashed_split(str(image), (0.8, 0.1, 0.1))} for image, s in splits.items())
    everything_test = _records(dataset, split_ratios=[0, 0, 1])
    assert {t.split for t in everything_test if isinstance(t, Triplet)} == {"test"}


def test_hashed_split_is_stable_and_follows_ratios() -> None:
    splits = Counter(hashed_split(str(i), (0.5, 0.25, 0.25)) for i in range(4000))
    assert abs(splits["train"] - 2000) < 150 and abs(splits["dev"] - 1000) < 150
    assert hashed_split("42", (0.8, 0.1, 0.1)) == hashed_split("42", (0.8, 0.1, 0.1))


def test_max_images_and_bad_options(dataset: Path) -> None:
    records = _records(dataset, max_images=2)
    assert {r.id for r in records if isinstance(r, Entity) and r.id.startswith("image:")} == {"image:1", "image:2"}
    assert not [r for r in records if isinstance(r, Reject)]  # regions of other images are skipped
    with pytest.raises(ConfigError, match="split_ratios"):
        VisualGenomeLoader(dataset, "vg", {"split_ratios": [0.9, 0.9, 0.1]})


def test_boxes_spilling_over_are_clipped() -> None:
    assert clip_box((-3, 5, 10, 10), (100, 100)) == (0, 5, 7, 10)
    assert clip_box((95, 98, 10, 10), (100, 100)) == (95, 98, 5, 2)
    assert clip_box((100, 0, 10, 10), (100, 100)) is None
    assert clip_box((5, 5, 0, 10), None) is None


def test_real_vg_urls_names_and_missing_images(tmp_path: Path) -> None:
    (tmp_path / "VG_100K_2").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "VG_100K_2" / "7.jpg")
    _write_lines(tmp_path / "image_data.json", [
        '[{"image_id": 7, "width": 40, "height": 30, "url": "https://cs.stanford.edu/x/VG_100K_2/7.jpg"},',
        ' {"image_id": 8, "width": 40, "height": 30, "url": "https://cs.stanford.edu/x/VG_100K_2/8.jpg"}]'])
    _write_lines(tmp_path / "scene_graphs.json", [
        '[{"image_id": 7, "objects": [{"object_id": 1, "x": 35, "y": 2, "w": 9, "h": 9, "name": " Red  CAR "}],',
        '  "relationships": []},',
        ' {"image_id": 8, "objects": [], "relationships": []}]'])
    records = {r.id: r for r in _records(tmp_path) if isinstance(r, Entity)}
    assert records["image:7"].image.path == tmp_path / "VG_100K_2" / "7.jpg"
    assert records["object:1"].image.box == (35, 2, 5, 9)  # clipped to the 40-pixel width
    assert records["name:red car"].text == "red car"
    # A missing file is still emitted: the ingest pass reports it with the path it expected.
    assert records["image:8"].image.path == tmp_path / "VG_100K_2" / "8.jpg"


def test_symlinked_vg_100k_is_part_of_the_dataset_but_leaving_it_is_not(tmp_path: Path) -> None:
    disk = tmp_path / "disk" / "VG_100K"
    disk.mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(disk / "7.jpg")
    Image.new("RGB", (40, 30)).save(tmp_path / "disk" / "secret.jpg")
    vg = tmp_path / "vg"
    vg.mkdir()
    (vg / "VG_100K").symlink_to(disk, target_is_directory=True)
    _write_lines(vg / "image_data.json", [
        '[{"image_id": 7, "url": "https://cs.stanford.edu/x/VG_100K/7.jpg"},',
        ' {"image_id": 8, "url": "VG_100K/../secret.jpg"}]'])
    _write_lines(vg / "scene_graphs.json", ['[{"image_id": 7, "objects": []},', ' {"image_id": 8, "objects": []}]'])
    records = _records(vg)
    assert [e.image.path for e in records if isinstance(e, Entity)] == [disk / "7.jpg"]
    [reject] = [r for r in records if isinstance(r, Reject)]
    assert reject.source.line == 2 and "resolves outside the dataset" in reject.problem


# -- rejects and whole-file errors -------------------------------------------------------------

def test_bad_rows_are_rejected_with_their_line(copy: Path) -> None:
    good = json.dumps(_json(copy / "scene_graphs.json")[0])
    dot = {"object_id": 900, "x": 1, "y": 1, "w": 5, "h": 5, "names": ["dot"]}
    near = {"relationship_id": 1, "predicate": "near", "subject_id": 900, "object_id": 901}
    unknown = json.dumps({"image_id": 2, "objects": [dot], "relationships": [near]})
    degenerate = json.dumps({"image_id": 3, "objects": [{"object_id": 902, "x": 4, "y": 4, "w": 0, "h": 5}]})
    _write_lines(copy / "scene_graphs.json", ["[", good + ",", "42,", '{"objects": []},', unknown + ",",
                                              degenerate + ",", '{"image_id": 4, "objects": "no"}', "]"])
    (copy / "region_descriptions.json").unlink()
    rejects = [r for r in _records(copy) if isinstance(r, Reject)]
    found = {r.source.line: r.problem for r in rejects}
    assert sorted(found) == [3, 4, 5, 6, 7], rejects
    assert "expected a scene graph object" in found[3]
    assert "image id" in found[4]
    assert "901" in found[5] and "not an object of image 2" in found[5]
    assert "degenerate box" in found[6] and "902" in found[6]
    assert "objects must be a list" in found[7]
    assert all(r.source.file == str(copy / "scene_graphs.json") for r in rejects)


@pytest.mark.parametrize("content, line, message", [
    (b"", None, "empty file"),
    (b'{"image_id": 1}\n', 1, "expected a JSON array"),
    (b'[\n{"image_id": 1, "objects": []},\n{"image_id": 2, "objects": [}\n]\n', 3, "invalid JSON"),
    (b'[\n{"image_id": 1, "objects": []},\n{"image_id": 2, "phrase": "caf\xe9"}\n]\n', 3, "invalid UTF-8"),
])
def test_files_that_are_not_a_json_array_raise(copy: Path, content: bytes, line: int | None, message: str) -> None:
    (copy / "scene_graphs.json").write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        _records(copy)
    assert caught.value.line == line
    assert caught.value.path == str(copy / "scene_graphs.json")


def test_missing_images_directory_raises(copy: Path) -> None:
    shutil.rmtree(copy / "images")
    with pytest.raises(InputError, match="no images directory"):
        _records(copy)
    with pytest.raises(InputError, match="images_dir"):
        _records(copy, images_dir="elsewhere")


def test_regions_for_unknown_images_are_rejected(copy: Path) -> None:
    regions = _json(copy / "region_descriptions.json")
    regions[1]["id"] = 999
    _write_lines(copy / "region_descriptions.json", ["[", ",\n".join(json.dumps(r) for r in regions), "]"])
    rejects = [r for r in _records(copy) if isinstance(r, Reject)]
    assert [(r.source.line, "999" in r.problem) for r in rejects] == [(3, True)]


# -- into a real Neo4j -------------------------------------------------------------------------

def _stats(graph_store, kg: str) -> tuple:
    stats = graph_store.stats(kg)
    return dict(stats.entities), stats.relations, dict(stats.triplets)


def test_load_into_neo4j_and_again_changes_nothing(graph_store, media_store, kg_name, dataset: Path) -> None:
    summary = load_kg(graph_store, VisualGenomeLoader(dataset, kg_name), media_store, progress=False)
    expected = expected_counts(dataset)
    entities, relations, triplets = _stats(graph_store, kg_name)
    assert entities == {"image": expected["image"], "text": expected["text"]}
    assert relations == expected["relations"]
    assert sum(triplets.values()) == expected["triplets"] == summary.triplets.added
    again = load_kg(graph_store, VisualGenomeLoader(dataset, kg_name), media_store, progress=False)
    assert _stats(graph_store, kg_name) == (entities, relations, triplets)
    assert again.entities.added == again.triplets.added == 0


def test_missing_image_file_refuses_the_load(graph_store, media_store, kg_name, copy: Path) -> None:
    missing = copy / "images" / "2.png"
    missing.unlink()
    before = _stats(graph_store, kg_name)
    with pytest.raises(LoadRefused) as caught:
        load_kg(graph_store, VisualGenomeLoader(copy, kg_name), media_store, progress=False)
    assert str(missing) in str(caught.value)
    assert _stats(graph_store, kg_name) == before


def test_skip_bad_loads_the_rest_and_reports(graph_store, media_store, kg_name, copy: Path, tmp_path: Path) -> None:
    (copy / "images" / "2.png").unlink()
    report = tmp_path / "rejects.tsv"
    summary = load_kg(graph_store, VisualGenomeLoader(copy, kg_name), media_store,
                      skip_bad=True, rejects_path=report, progress=False)
    graph = next(g for g in _json(copy / "scene_graphs.json") if g["image_id"] == 2)
    regions = next(len(r["regions"]) for r in _json(copy / "region_descriptions.json") if r["id"] == 2)
    lost_triplets = sum(2 + len(o["attributes"]) for o in graph["objects"]) + len(graph["relationships"]) + 2 * regions
    expected = expected_counts(copy)
    entities, _, triplets = _stats(graph_store, kg_name)
    assert entities["image"] == expected["image"] - 1 - len(graph["objects"])
    assert sum(triplets.values()) == expected["triplets"] - lost_triplets
    assert summary.rejects_path == report and "2.png" in report.read_text(encoding="utf-8")

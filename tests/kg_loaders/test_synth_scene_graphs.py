"""The synthetic scene-graph generator: deterministic files, honest geometry, captions that name real objects."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kclip.kg_loaders.synth_scene_graphs import COLOURS, KINDS, generate_scene_graphs

IMAGES = 12


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "sg"
    generate_scene_graphs(out, images=IMAGES, seed=7)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(root: Path, name: str):
    return json.loads((root / name).read_text(encoding="utf-8"))


def test_same_seed_gives_identical_files(synth: Path, tmp_path: Path) -> None:
    generate_scene_graphs(tmp_path / "again", images=IMAGES, seed=7)
    assert _files(tmp_path / "again") == _files(synth)


def test_different_seed_gives_different_files(synth: Path, tmp_path: Path) -> None:
    generate_scene_graphs(tmp_path / "other", images=IMAGES, seed=8)
    other, first = _files(tmp_path / "other"), _files(synth)
    assert other.keys() == first.keys()
    assert other["scene_graphs.json"] != first["scene_graphs.json"]
    assert any(other[k] != first[k] for k in first if k.endswith(".png"))


def test_counts_and_layout(tmp_path: Path) -> None:
    summary = generate_scene_graphs(tmp_path, images=5, seed=1, image_size=96)
    graphs = _load(tmp_path, "scene_graphs.json")
    image_data = _load(tmp_path, "image_data.json")
    regions = _load(tmp_path, "region_descriptions.json")
    captions = _load(tmp_path, "captions.json")
    assert [g["image_id"] for g in graphs] == [d["image_id"] for d in image_data] == [1, 2, 3, 4, 5]
    assert all(2 <= len(g["objects"]) <= 4 for g in graphs)
    assert summary.images == 5
    assert summary.objects == sum(len(g["objects"]) for g in graphs)
    assert summary.relationships == sum(len(g["relationships"]) for g in graphs)
    assert summary.regions == summary.relationships + 5 == sum(len(r["regions"]) for r in regions)
    assert summary.captions == len(captions["annotations"])
    for data in image_data:
        with Image.open(tmp_path / data["url"]) as img:
            assert (img.format, img.size) == ("PNG", (96, 96)) == ("PNG", (data["width"], data["height"]))
    assert all((tmp_path / "images" / i["file_name"]).is_file() for i in captions["images"])
    ids = [o["object_id"] for g in graphs for o in g["objects"]]
    assert len(set(ids)) == len(ids)  # global ids, as in VG
    # One element per line, so a loader's errors can name the line of an image.
    assert (tmp_path / "scene_graphs.json").read_text().count("\n") == 5 + 2


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="images"):
        generate_scene_graphs(tmp_path, images=0, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        generate_scene_graphs(tmp_path, images=1, seed=0, image_size=20)


def _pixel_boxes(root: Path, graph: dict) -> dict[int, tuple[int, int, int, int, int]]:
    """Each object's drawn pixels, found by its colour (unique in the image): x0, y0, x1, y1, count."""
    pixels = np.asarray(Image.open(root / "images" / f"{graph['image_id']}.png").convert("RGB"))
    found = {}
    for obj in graph["objects"]:
        colour = next(a for a in obj["attributes"] if a in COLOURS)
        ys, xs = np.nonzero((pixels == COLOURS[colour]).all(axis=-1))
        assert len(xs) > 0, f"object {obj['object_id']} was not drawn"
        found[obj["object_id"]] = (xs.min(), ys.min(), xs.max(), ys.max(), len(xs))
    return found


def _holds(predicate: str, a: tuple, b: tuple) -> bool:
    checks = {
        "left of": a[2] < b[0], "right of": a[0] > b[2],
        "above": a[3] < b[1], "below": a[1] > b[3],
        "bigger than": a[4] > b[4], "smaller than": a[4] < b[4],
    }
    return checks[predicate]


def test_every_relationship_is_true_in_the_pixels_and_false_when_swapped(synth: Path) -> None:
    for graph in _load(synth, "scene_graphs.json"):
        boxes = _pixel_boxes(synth, graph)
        for obj in graph["objects"]:
            x0, y0, x1, y1, _ = boxes[obj["object_id"]]
            assert obj["x"] <= x0 and obj["y"] <= y0
            assert x1 < obj["x"] + obj["w"] and y1 < obj["y"] + obj["h"]  # drawn inside its box
        for rel in graph["relationships"]:
            subject, obj = boxes[rel["subject_id"]], boxes[rel["object_id"]]
            assert _holds(rel["predicate"], subject, obj), rel
            assert not _holds(rel["predicate"], obj, subject), rel


def test_captions_name_real_objects(synth: Path) -> None:
    graphs = {g["image_id"]: g for g in _load(synth, "scene_graphs.json")}
    for entry in _load(synth, "region_descriptions.json"):
        graph = graphs[entry["id"]]
        objects = {o["object_id"]: o for o in graph["objects"]}
        phrases = {i: f"a {o['attributes'][0]} {o['attributes'][1]} {o['names'][0]}" for i, o in objects.items()}
        assert len(set(phrases.values())) == len(phrases)  # each phrase names one object
        assert all(o["names"][0] in KINDS for o in objects.values())
        *by_relationship, whole = entry["regions"]
        for rel, region in zip(graph["relationships"], by_relationship, strict=True):
            expected = f"{phrases[rel['subject_id']]} {rel['predicate']} {phrases[rel['object_id']]}"
            assert region["phrase"] == expected
        assert all(p in whole["phrase"] for p in phrases.values())
        assert (whole["x"], whole["y"]) == (0, 0)
    annotations = _load(synth, "captions.json")["annotations"]
    all_phrases = {r["phrase"] for e in _load(synth, "region_descriptions.json") for r in e["regions"]}
    assert {a["caption"] for a in annotations} <= all_phrases


def test_two_hundred_images_in_a_couple_of_seconds(tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = generate_scene_graphs(tmp_path, images=200, seed=0)
    assert summary.images == 200
    assert time.perf_counter() - started < 5.0  # generous: CI cores are shared

"""Scene-graph objects are references to their source photo, not crops: loaded from Visual
Genome-shaped data (800x600 JPEGs, 35 boxed objects each, boxes spilling past the edge) into a
real Neo4j, read back as crops by the featurizer's media store and the UI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kclip.kg_loaders.synth_releases import generate_visual_genome
from kclip.kg_loaders.visual_genome import VisualGenomeLoader
from kclip.platform.errors import LoadRefused
from kclip.platform.ingest import load_kg
from kclip.platform.media import MediaStore

IMAGES = 6


@pytest.fixture(scope="module")
def vg(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vg") / "vg"
    generate_visual_genome(out, images=IMAGES, seed=0, progress=False)
    return out


def source_images(root: Path) -> list[Path]:
    return sorted(root.glob("VG_100K*/*.jpg"))


def stored_files(media: MediaStore) -> list[Path]:
    return [p for p in media.root.rglob("*") if p.is_file()] if media.root.exists() else []


def object_rows(store, kg: str):
    lo, hi, _ = store.entity_idx_range(kg)
    return [r for r in store.entity_content(kg, range(lo, hi + 1)) if r.id.startswith("object:")]


def test_objects_reference_the_source_photo_stored_once(graph_store, kg_name, media_store, vg):
    summary = load_kg(graph_store, VisualGenomeLoader(vg, kg_name), media_store, progress=False)
    sources = source_images(vg)
    stored = stored_files(media_store)
    # Each photo stored once, byte for byte: media growth is exactly the source bytes (1.0x).
    assert len(stored) == len(sources) == IMAGES
    assert sum(p.stat().st_size for p in stored) == sum(p.stat().st_size for p in sources)
    objects = object_rows(graph_store, kg_name)
    assert len(objects) == IMAGES * 35 and summary.entities.rejected == 0
    assert all(r.image_box is not None and media_store.path(r.image).is_file() for r in objects)

    # A region reads back as exactly the source's pixels in its (clipped) box.
    for row in objects[::17]:
        detail = graph_store.entity(kg_name, row.id)
        x, y, w, h = row.image_box
        assert detail.image_size == (w, h)
        image_id = next(e.other.id for e in graph_store.entity_triplets(kg_name, row.id, 100)
                        if e.relation == "in image")
        source = next(p for p in sources if p.stem == image_id.split(":")[1])
        with Image.open(source) as img:
            assert x + w <= img.width and y + h <= img.height  # boxes past the edge were clipped
            expected = np.asarray(img.convert("RGB").crop((x, y, x + w, y + h)))
        assert np.array_equal(np.asarray(media_store.entity_image(row.image, row.image_box)), expected)


def test_a_second_load_stores_nothing_new(graph_store, kg_name, media_store, vg):
    load_kg(graph_store, VisualGenomeLoader(vg, kg_name), media_store, progress=False)
    before = {p: p.stat().st_mtime_ns for p in stored_files(media_store)}
    again = load_kg(graph_store, VisualGenomeLoader(vg, kg_name), media_store, progress=False)
    assert again.entities.added == 0 and again.triplets.added == 0
    assert {p: p.stat().st_mtime_ns for p in stored_files(media_store)} == before


def test_crop_files_of_older_loads_keep_working(graph_store, kg_name, media_store, vg):
    """KGs loaded before regions were references hold a PNG crop's key and no box."""
    with Image.open(source_images(vg)[0]) as img:
        crop = img.convert("RGB").crop((10, 20, 110, 70))
    legacy = vg.parent / "legacy.png"
    crop.save(legacy)
    stored = media_store.put_file(legacy)
    graph_store.ensure_kg(kg_name)
    graph_store.write_entities(kg_name, [{"id": "object:1", "props": {
        "modality": "image", "image": stored.key, "image_width": 100, "image_height": 50}}])
    (row,) = graph_store.entity_content(kg_name, [graph_store.entity(kg_name, "object:1").entity.idx])
    assert row.image_box is None
    assert np.array_equal(np.asarray(media_store.entity_image(row.image, row.image_box)), np.asarray(crop))


def test_a_truncated_photo_is_a_bad_row_and_refusal_stores_nothing(graph_store, kg_name, tmp_path, vg):
    import shutil

    broken = tmp_path / "vg"
    shutil.copytree(vg, broken)
    # Photos of this test's own (bytes after the JPEG's end differ): the store is this test's but
    # Neo4j is shared, and a refused load keeps the files that another KG's entities reference.
    for photo in source_images(broken):
        photo.write_bytes(photo.read_bytes() + kg_name.encode())
    victim = source_images(broken)[2]
    victim.write_bytes(victim.read_bytes()[:20_000])
    media = MediaStore(tmp_path / "media")
    with pytest.raises(LoadRefused) as refused:
        load_kg(graph_store, VisualGenomeLoader(broken, kg_name), media, progress=False)
    message = str(refused.value)
    assert "scene_graphs.json:" in message and victim.name in message and "truncated" in message
    assert kg_name not in graph_store.list_kgs() and stored_files(media) == []

    summary = load_kg(graph_store, VisualGenomeLoader(broken, kg_name), media, progress=False,
                      skip_bad=True, rejects_path=tmp_path / "rejects.tsv")
    # The photo and its 35 objects are rejected; so is every triplet that uses one of them.
    assert summary.entities.rejected == 36
    assert summary.triplets.rejected > 35
    assert len(stored_files(media)) == IMAGES - 1
    ids = {r.id for r in object_rows(graph_store, kg_name)}
    assert len(ids) == (IMAGES - 1) * 35
    assert "truncated" in (tmp_path / "rejects.tsv").read_text()

"""`kclip drop` and `kclip verify` against the session's real Neo4j and a real media store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from kclip.kg_loaders.image_text import ImageTextLoader
from kclip.kg_loaders.tsv import TsvLoader
from kclip.platform import cypher
from kclip.platform.errors import KGBusy
from kclip.platform.ingest import load_kg
from kclip.platform.kg_lock import kg_write_lock
from kclip.platform.manage import drop_kg, plan_drop, verify_kg
from kclip.platform.media import MediaStore, delete_media
from test_ingest import write_tsv  # tests/platform is on sys.path (rootdir-relative imports)


@pytest.fixture
def cli(monkeypatch, neo4j_settings, media_store):
    """Run `kclip ...` in-process against the session's Neo4j and this test's media store."""
    from kclip import cli as cli_module

    settings = neo4j_settings.model_copy(update={"media_dir": media_store.root})
    monkeypatch.setattr(cli_module, "get_settings", lambda: settings)
    return lambda *args: CliRunner().invoke(cli_module.app, list(args))


def image_kg(directory: Path, names: list[str], salt: str) -> Path:
    """An image-text CSV dataset: one PNG and one caption per name. Equal names and salts give equal
    images (one media key); the salt keeps other tests' images, in the same session, apart."""
    (directory / "images").mkdir(parents=True)
    for name in names:
        colour = tuple(hashlib.sha256(f"{salt}/{name}".encode()).digest()[:3])
        Image.new("RGB", (8, 8), colour).save(directory / "images" / f"{name}.png")
    rows = "".join(f"{name}.png,a picture of {name}\n" for name in names)
    (directory / "pairs.csv").write_text("image,caption\n" + rows)
    return directory / "pairs.csv"


def media_file(store, media: MediaStore, kg: str, entity_id: str) -> Path:
    return media.path(store.entity(kg, entity_id).entity.image)


def test_drop_keeps_media_other_kgs_use_and_deletes_the_rest(graph_store, media_store, kg_name, tmp_path):
    other = kg_name + "-b"
    load_kg(graph_store, ImageTextLoader(image_kg(tmp_path / "a", ["shared", "own"], kg_name), kg_name),
            media_store, progress=False)
    load_kg(graph_store, ImageTextLoader(image_kg(tmp_path / "b", ["shared"], kg_name), other), media_store, progress=False)
    shared, own = (media_file(graph_store, media_store, kg_name, f"image:{n}.png") for n in ("shared", "own"))
    graph_store.write_embeddings(kg_name, [0], [[1.0, 0.0]])
    graph_store.ensure_vector_index(kg_name, 2)

    plan = plan_drop(graph_store, media_store, kg_name)
    assert (plan.stats.total_entities, plan.stats.total_triplets, plan.media_keys, len(plan.media_files)) == (4, 4, 2, 1)
    drop_kg(graph_store, media_store, kg_name, progress=False)

    assert kg_name not in graph_store.list_kgs() and not graph_store.has_entities(kg_name)
    assert not graph_store.run(cypher.VECTOR_INDEX_INFO, name=cypher.embedding_index(kg_name))
    assert shared.is_file() and not own.exists()
    assert graph_store.stats(other).total_triplets == 2 and verify_kg(graph_store, media_store, other, progress=False).ok


def test_drop_goes_slice_by_slice_with_progress(graph_store, media_store, kg_name, tmp_path):
    triplets = [(f"e{i}", "next", f"e{i + 1}") for i in range(30)]
    load_kg(graph_store, TsvLoader(write_tsv(tmp_path / "chain", triplets), kg=kg_name), media_store, progress=False)
    deleted: list[int] = []
    graph_store.drop_kg(kg_name, on_progress=deleted.append, slice_size=7)
    assert deleted == [7, 7, 7, 7, 3] and kg_name not in graph_store.list_kgs()


def test_drop_without_yes_refuses_and_says_what_would_go(graph_store, media_store, kg_name, tmp_path, cli):
    load_kg(graph_store, ImageTextLoader(image_kg(tmp_path / "a", ["one"], kg_name), kg_name), media_store, progress=False)
    refused = cli("drop", "--kg", kg_name)
    assert refused.exit_code == 1
    assert "2 entities, 2 relations, 2 triplets" in " ".join(refused.output.split()) and "1 media files" in refused.output
    assert graph_store.stats(kg_name).total_triplets == 2
    done = cli("drop", "--kg", kg_name, "--yes")
    assert done.exit_code == 0, done.output
    assert kg_name not in graph_store.list_kgs()


def test_drop_waits_for_the_kgs_write_lock(graph_store, media_store, kg_name, small_kg):
    load_kg(graph_store, TsvLoader(small_kg, kg=kg_name), media_store, progress=False)
    with kg_write_lock(graph_store, kg_name, command="a load", wait=0):
        with pytest.raises(KGBusy, match="a load"):
            drop_kg(graph_store, media_store, kg_name, wait=0, progress=False)
    assert graph_store.stats(kg_name).total_triplets == 4


@pytest.fixture
def small_kg(tmp_path) -> Path:
    return write_tsv(tmp_path / "small", [("a", "likes", "b"), ("b", "likes", "c"), ("c", "hates", "a")],
                     dev=[("a", "hates", "c")])


def test_a_clean_kg_verifies_with_exit_0(graph_store, media_store, kg_name, small_kg, cli):
    load_kg(graph_store, TsvLoader(small_kg, kg=kg_name), media_store, progress=False)
    result = cli("verify", "--kg", kg_name, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["triplets"] == {"train": 3, "dev": 1, "test": 0} and report["relations"] == 2
    assert all(p["count"] == 0 for p in report["problems"].values())
    assert graph_store.split_overlap(kg_name) == {"dev": 0, "test": 0}


def test_verify_finds_every_kind_of_problem(graph_store, media_store, kg_name, tmp_path, cli):
    train = [("a", "likes", "b"), ("b", "likes", "c"), ("c", "hates", "a")]
    load_kg(graph_store, TsvLoader(write_tsv(tmp_path / "kg", train, dev=[("a", "likes", "b")]), kg=kg_name),
            media_store, progress=False)
    other = kg_name + "-b"
    load_kg(graph_store, TsvLoader(write_tsv(tmp_path / "other", [("x", "likes", "y")]), kg=other), media_store,
            progress=False)
    corrupt = """
    MATCH (a:Entity {kg: $kg, id: 'a'}), (b:Entity {kg: $kg, id: 'b'}), (c:Entity {kg: $kg, id: 'c'})
    MATCH (x:Entity {kg: $other, id: 'x'})
    CREATE (b)-[:TRIPLET {rel: 0, split: 'train'}]->(c), (c)-[:TRIPLET {rel: 999, split: 'test'}]->(b),
           (a)-[:TRIPLET {rel: 0, split: 'train'}]->(x), (x)-[:TRIPLET {rel: 0, split: 'train'}]->(c)
    SET a.image = $key
    """
    graph_store.run(corrupt, kg=kg_name, other=other, key="0" * 64 + ".png")

    result = cli("verify", "--kg", kg_name, "--json")
    assert result.exit_code == 3, result.output
    problems = json.loads(result.output)["problems"]
    assert {name: p["count"] for name, p in problems.items()} == {
        "duplicates": 1, "leaked": 1, "cross_kg": 2, "unknown_relations": 1, "missing_media": 1}
    assert problems["duplicates"]["examples"] == [
        {"head": "b", "relation": "likes", "rel": 0, "tail": "c", "splits": ["train", "train"]}]
    assert problems["leaked"]["examples"][0]["splits"] == ["dev", "train"]
    assert {(e["head"], e["tail"], e["other_kg"]) for e in problems["cross_kg"]["examples"]} == {
        ("a", "x", other), ("x", "c", other)}
    assert problems["unknown_relations"]["examples"][0]["rel"] == 999
    assert graph_store.split_overlap(kg_name) == {"dev": 1, "test": 0}

    table = cli("verify", "--kg", kg_name)
    assert table.exit_code == 3 and "duplicates" in table.output and "6 problems" in table.output


def test_delete_media_touches_only_store_keys(tmp_path):
    media = MediaStore(tmp_path / "media")
    outside = tmp_path / "media" / "precious.txt"
    outside.parent.mkdir(parents=True)
    outside.write_text("keep")
    key = "ab" + "0" * 62 + ".png"
    media.path(key).parent.mkdir(parents=True)
    media.path(key).write_bytes(b"x")
    assert delete_media(media, {key, "../precious.txt", "pr" + "ecious.txt", "0" * 64 + ".png"}) == 1
    assert outside.is_file() and not media.path(key).exists()

"""MultimodalLoader on tests/data/multimodal: nodes, images, odd relation names, bad input; then Neo4j."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kclip.kg_loaders.multimodal import HAS_IMAGE, MultimodalLoader
from kclip.platform.errors import InputError, LoadRefused
from kclip.platform.ingest import load_kg
from kclip.platform.records import IMAGE_OF, Entity, Reject, Relation, Triplet

DATA = Path(__file__).parents[1] / "data" / "multimodal"
ODD_RELATIONS = {"is-a", "/film/film/genre", "同义词", 'chases `backtick` and "quotes"', "  spaced  out ",
                 "it's 'single' \\ back"}


def records(path: Path, **options) -> list:
    return list(MultimodalLoader(path, "mm", options).records())


def of(kind: type, recs: list) -> list:
    return [r for r in recs if isinstance(r, kind)]


def make_kg(tmp_path: Path, nodes, edges) -> Path:
    """A KG directory with one JSON value per line in each file, so error lines are predictable."""
    def lines(value) -> str:
        if isinstance(value, list):
            return "[\n" + ",\n".join(json.dumps(v, ensure_ascii=False) for v in value) + "\n]\n"
        if isinstance(value, dict):
            return "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()) + "\n}\n"
        return value

    (tmp_path / "nodes.json").write_text(lines(nodes), encoding="utf-8")
    (tmp_path / "edges.json").write_text(lines(edges), encoding="utf-8")
    return tmp_path


def test_fixture_nodes_images_and_edges():
    recs = records(DATA)
    assert of(Reject, recs) == []
    texts = {e.id: e.text for e in of(Entity, recs) if e.modality == "text"}
    assert texts == {"bn:cat": "cat: A small domesticated feline.", "bn:dog": "dog: A domesticated canine.",
                     "bn:animal": "A living organism that feeds on organic matter.", "bn:猫": "猫"}
    assert {e.id: e.attributes for e in of(Entity, recs)}["bn:cat"] == {"name": "cat"}
    images = {e.id: e.image.path for e in of(Entity, recs) if e.modality == "image"}
    assert images == {"image:ca/cat.png": DATA / "images/ca/cat.png", "image:do/dog.png": DATA / "images/do/dog.png",
                      "image:shared.png": DATA / "images/shared.png"}
    assert {r.name for r in of(Relation, recs)} == ODD_RELATIONS | {IMAGE_OF, HAS_IMAGE}
    triplets = of(Triplet, recs)
    assert len(triplets) == 15
    assert ("image:shared.png", IMAGE_OF, "bn:animal") in {(t.head, t.relation, t.tail) for t in triplets}
    assert ("bn:dog", HAS_IMAGE, "image:shared.png") in {(t.head, t.relation, t.tail) for t in triplets}
    splits = [t.split for t in triplets]
    assert (splits.count("train"), splits.count("dev"), splits.count("test")) == (13, 1, 1)
    assert {t.source.line for t in triplets if t.relation == "/film/film/genre"} == {4}


def test_relation_text_is_derived_and_names_kept_exactly():
    relations = {r.name: r.text for r in of(Relation, records(DATA))}
    assert relations["/film/film/genre"] == "genre"
    assert relations["  spaced  out "] == "spaced out"
    assert relations[HAS_IMAGE] == "has image"


def test_array_form_of_nodes_and_images_dir(tmp_path):
    kg = make_kg(tmp_path, [{"id": "a", "gloss": "first", "images": ["x.png", "x.png"]}, {"id": "b", "name": "second"}],
                 [{"head": "a", "relation": "r", "tail": "b"}])
    recs = records(kg, images_dir=tmp_path / "pics")
    assert [e.id for e in of(Entity, recs)] == ["a", "image:x.png", "b"]
    assert of(Entity, recs)[1].image.path == tmp_path / "pics" / "x.png"
    assert len(of(Triplet, recs)) == 3


@pytest.mark.parametrize("nodes, problem, line", [
    ([{"id": "a", "name": "A"}, {"id": "a", "name": "again"}], "node 'a' is defined again (first at", 3),
    ([{"id": "a", "name": "A"}, {"name": "no id"}], "node has no 'id'", 3),
    ([{"id": "a", "name": "A"}, {"id": "b"}], "has neither a 'name' nor a 'gloss'", 3),
    ([{"id": "a", "name": "A"}, {"id": "b", "glosses": "not a list"}], "'glosses' must be a list", 3),
    ([{"id": "a", "name": "A"}, {"id": "b", "name": "B", "images": [""]}], "'images' must be a list of non-empty", 3),
    ([{"id": "a", "name": "A"}, "b"], "a node must be a JSON object", 3),
    ({"a": {"name": "A"}, "b": {"id": "c", "name": "B"}}, "node 'b' has a different 'id' field 'c'", 3),
])
def test_bad_nodes_are_rejected_naming_file_and_line(tmp_path, nodes, problem, line):
    kg = make_kg(tmp_path, nodes, [])
    [reject] = of(Reject, records(kg))
    assert problem in reject.problem
    assert str(reject.source) == f"{kg / 'nodes.json'}:{line}"


@pytest.mark.parametrize("edge, problem", [
    ({"head": "a", "relation": "r", "tail": "nobody"}, "edge names unknown node 'nobody' (not defined in nodes.json)"),
    ({"head": "a", "tail": "a"}, "edge has no 'relation'"),
    ({"head": "a", "relation": "r", "tail": 7}, "edge has no 'tail'"),
    ({"head": "a", "relation": "bad\x07bell", "tail": "a"}, "control character"),
    ({"head": "a", "relation": "r", "tail": "a", "split": "holdout"}, "split"),
    (["a", "r", "a"], "an edge must be a JSON object"),
])
def test_bad_edges_are_rejected_naming_file_and_line(tmp_path, edge, problem):
    kg = make_kg(tmp_path, {"a": {"name": "A"}}, [{"head": "a", "relation": "ok", "tail": "a"}, edge])
    recs = records(kg)
    [reject] = of(Reject, recs)
    assert problem in reject.problem
    assert str(reject.source) == f"{kg / 'edges.json'}:3"
    assert len(of(Triplet, recs)) == 1


@pytest.mark.parametrize("nodes, edges, file, problem", [
    ("", "[]", "nodes.json", "empty file"),
    ('"nodes"', "[]", "nodes.json", "expected a JSON object or array of nodes"),
    ('{"a": {"name": "A"},}', "[]", "nodes.json", "expected a quoted member name"),
    ('{"a": {"name": "A"}}', '{"head": "a"}', "edges.json", "expected a JSON array"),
    ('{"a": {"name": "A"}}', "", "edges.json", "empty file"),
    ('[{"id": "a", "name": "caf\xe9"}]'.encode("latin-1"), "[]", "nodes.json", "invalid UTF-8"),
])
def test_misshaped_files_are_input_errors(tmp_path, nodes, edges, file, problem):
    for name, content in (("nodes.json", nodes), ("edges.json", edges)):
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=problem) as err:
        records(tmp_path)
    assert err.value.path == str(tmp_path / file)


def test_missing_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="missing nodes.json"):
        records(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        records(DATA / "nodes.json")


# -- against a real Neo4j (fixtures from tests/conftest.py) -------------------------------------

def test_load_round_trips_odd_relation_names(graph_store, media_store, kg_name):
    summary = load_kg(graph_store, MultimodalLoader(DATA, kg_name), media_store, progress=False)
    assert summary.triplets.added == 15
    stats = graph_store.stats(kg_name)
    assert (stats.entities, stats.relations) == ({"text": 4, "image": 3}, 8)
    assert stats.triplets == {"train": 13, "dev": 1, "test": 1}
    stored = {r.name: r.text for r in graph_store.relations(kg_name)}
    assert set(stored) == ODD_RELATIONS | {IMAGE_OF, HAS_IMAGE}  # byte-identical names
    assert stored["/film/film/genre"] == "genre"
    load_kg(graph_store, MultimodalLoader(DATA, kg_name), media_store, progress=False)
    assert graph_store.stats(kg_name) == stats


def test_missing_image_refuses_strict_load_and_skip_bad_loads_the_rest(graph_store, media_store, kg_name, tmp_path):
    kg = tmp_path / "kg"
    shutil.copytree(DATA, kg)
    (kg / "images" / "ca" / "cat.png").unlink()
    with pytest.raises(LoadRefused, match=f"{kg / 'nodes.json'}:2: image file not found"):
        load_kg(graph_store, MultimodalLoader(kg, kg_name), media_store, progress=False)
    assert graph_store.stats(kg_name).total_triplets == 0
    rejects = tmp_path / "rejects.tsv"
    summary = load_kg(graph_store, MultimodalLoader(kg, kg_name), media_store, skip_bad=True,
                      rejects_path=rejects, progress=False)
    assert summary.entities.rejected == 1
    assert graph_store.stats(kg_name).entities == {"text": 4, "image": 2}
    assert f"{kg / 'nodes.json'}\t2\timage file not found" in rejects.read_text(encoding="utf-8")

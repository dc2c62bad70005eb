"""ImageTextLoader on tests/data/image_text (COCO JSON and CSV): records, splits, bad input; then Neo4j."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kclip.kg_loaders import json_stream
from kclip.kg_loaders.image_text import ImageTextLoader, caption_entity_id
from kclip.kg_loaders.json_stream import iter_json_members
from kclip.platform.errors import InputError, LoadRefused
from kclip.platform.ingest import load_kg
from kclip.platform.records import CAPTION_OF, IMAGE_OF, Entity, Reject, Relation, Triplet

DATA = Path(__file__).parents[1] / "data" / "image_text"
COCO = DATA / "captions.json"
CSV = DATA / "captions.csv"


def records(path: Path, **options) -> list:
    return list(ImageTextLoader(path, "pairs", options).records())


def of(kind: type, recs: list) -> list:
    return [r for r in recs if isinstance(r, kind)]


def write_coco(tmp_path: Path, images: list, annotations: list, images_first: bool = True) -> Path:
    """A COCO file with one element per line: line 1 opens "images", its elements follow, etc."""
    members = [("images", images), ("annotations", annotations)]
    parts = [f'"{key}": [\n' + ",\n".join(json.dumps(e) for e in elements) + "\n]"
             for key, elements in (members if images_first else members[::-1])]
    path = tmp_path / "captions.json"
    path.write_text("{" + ",\n".join(parts) + "}\n", encoding="utf-8")
    return path


def test_coco_fixture_gives_image_and_caption_entities_and_both_triplets():
    recs = records(COCO)
    assert of(Reject, recs) == []
    assert [(r.name, r.text) for r in of(Relation, recs)] == [(IMAGE_OF, "image of"), (CAPTION_OF, "caption of")]
    images = {e.id: e.image.path for e in of(Entity, recs) if e.modality == "image"}
    # uncaptioned.png has no caption, so it is left out; files are found in the images/ subfolder.
    assert images == {f"image:{n}.png": DATA / "images" / f"{n}.png" for n in ("red", "green", "blue")}
    captions = {e.id: e.text for e in of(Entity, recs) if e.modality == "text"}
    pairs = [("red", "A red square."), ("red", "Something red, filling the frame."), ("green", "A green square."),
             ("blue", "A blue square."), ("blue", "Blue, and nothing else.")]
    assert captions == {caption_entity_id(f"image:{image}.png", text): text for image, text in pairs}
    triplets = {(t.head, t.relation, t.tail) for t in of(Triplet, recs)}
    assert len(of(Triplet, recs)) == 10
    frame = caption_entity_id("image:red.png", "Something red, filling the frame.")
    assert ("image:red.png", IMAGE_OF, frame) in triplets
    assert (frame, CAPTION_OF, "image:red.png") in triplets
    assert {t.split for t in of(Triplet, recs)} == {"train"}


def test_csv_fixture_allows_several_captions_per_image_and_quoted_newlines():
    recs = records(CSV)
    assert of(Reject, recs) == []
    # Each image when a caption first uses it; line breaks in a caption collapse to a space.
    expected = [("red", None), ("red", "A red square."), ("red", "Red, with a comma"), ("green", None),
                ("green", "A green square on two lines"), ("blue", None), ("blue", "A blue square.")]
    assert [(e.id, e.text) for e in of(Entity, recs)] == [
        (f"image:{image}.png", None) if text is None else (caption_entity_id(f"image:{image}.png", text), text)
        for image, text in expected]
    assert len(of(Triplet, recs)) == 8


def test_caption_ids_come_from_image_and_text_so_files_and_rows_never_collide(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("image,caption\nred.png,A cat\nred.png,  A   cat \nblue.png,A cat\n", encoding="utf-8")
    second.write_text("image,caption\nblue.png,A dog\nred.png,A cat\n", encoding="utf-8")
    ids_first = [e.id for e in of(Entity, records(first)) if e.modality == "text"]
    ids_second = [e.id for e in of(Entity, records(second)) if e.modality == "text"]
    red_cat = caption_entity_id("image:red.png", "A cat")
    # The same pair (blanks aside) is one entity; the same text of another image is another.
    assert ids_first == [red_cat, caption_entity_id("image:blue.png", "A cat")]
    assert ids_second == [caption_entity_id("image:blue.png", "A dog"), red_cat]
    assert len({*ids_first, *ids_second}) == 3
    assert red_cat.startswith("caption:") and len(red_cat) == len("caption:") + 16


def test_images_dir_and_split_options(tmp_path):
    recs = records(CSV, images_dir=tmp_path, split="test")
    paths = {e.image.path for e in of(Entity, recs) if e.image}
    assert paths == {tmp_path / f"{n}.png" for n in ("red", "green", "blue")}
    assert {t.split for t in of(Triplet, recs)} == {"test"}


def test_split_ratios_keep_an_images_captions_together():
    splits: dict[str, set[str]] = {}
    for t in of(Triplet, records(COCO, split_ratios=[0.34, 0.33, 0.33])):
        image = t.head if t.relation == IMAGE_OF else t.tail
        splits.setdefault(image, set()).add(t.split)
    assert len(splits) == 3 and all(len(s) == 1 for s in splits.values())


def test_annotations_before_images_still_pair_up(tmp_path):
    path = write_coco(tmp_path, [{"id": 7, "file_name": "a.png"}], [{"id": 1, "image_id": 7, "caption": "x"}],
                      images_first=False)
    assert len(of(Triplet, records(path))) == 2


@pytest.mark.parametrize("element, problem", [
    ({"id": 2, "image_id": 99, "caption": "x"}, "unknown image id 99"),
    ({"id": 2, "image_id": 1}, "annotation has no 'caption'"),
    ({"image_id": 1, "caption": "x"}, "annotation has no 'id'"),
    ({"id": 2, "image_id": 1, "caption": "  "}, "empty caption"),
    ([2, 1, "x"], "an annotation must be a JSON object"),
])
def test_bad_annotations_are_rejected_naming_file_and_line(tmp_path, element, problem):
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.png"}],
                      [{"id": 1, "image_id": 1, "caption": "ok"}, element])
    recs = records(path)
    [reject] = of(Reject, recs)
    assert problem in reject.problem
    assert str(reject.source) == f"{path}:6"
    assert len(of(Triplet, recs)) == 2


def test_bad_image_is_rejected(tmp_path):
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.png"}, {"id": 2}], [])
    [reject] = of(Reject, records(path))
    assert "has no 'file_name'" in reject.problem and reject.source.line == 3


@pytest.mark.parametrize("content, problem, line", [
    (b"", "empty file", None),
    (b'[{"images": []}]', "expected a JSON object", 1),
    (b'{"images": {}, "annotations": []}', "'images' must be a JSON array", 1),
    (b'{"images": []}', "no 'annotations' array", None),
    (b'{"images": [],\n "annotations": [{"id": 1,}]}', "invalid JSON", 2),
    (b'{"images": [],\n "annotations": []} []', "unexpected content after the JSON object", 2),
    (b'{"images": [],\n "annotations": [{"caption": "caf\xe9"}]}', "invalid UTF-8", 2),
])
def test_misshaped_coco_file_is_an_input_error(tmp_path, content, problem, line):
    path = tmp_path / "captions.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as err:
        records(path)
    assert (err.value.path, err.value.line) == (str(path), line)


def test_json_members_stream_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(json_stream, "_CHUNK", 3)  # every token straddles a chunk boundary
    path = tmp_path / "doc.json"
    path.write_text('{"info": {"v": 12345},\n "items": [1, {"a": "b"},\n  true, 6789],\n "empty": []}',
                    encoding="utf-8")
    members = list(iter_json_members(path, stream=("items", "empty")))
    assert members == [("info", 1, {"v": 12345}), ("items", 2, 1), ("items", 2, {"a": "b"}),
                       ("items", 3, True), ("items", 3, 6789)]


@pytest.mark.parametrize("content, problem", [
    (b"image,caption\nred.png,\nblue.png,fine\n", "empty caption"),
    (b"image,caption\n,a caption\nblue.png,fine\n", "empty image"),
    (b"caption,image,split\nshort\nfine,blue.png,x\n", "expected at least 2 columns"),
    (b"image,caption\nred.png,caf\xe9\nblue.png,fine\n", "invalid UTF-8 at byte 11 of line 2"),
])
def test_bad_csv_rows_are_rejected_naming_file_and_line(tmp_path, content, problem):
    path = tmp_path / "pairs.csv"
    path.write_bytes(content)
    recs = records(path)
    [reject] = of(Reject, recs)
    assert problem in reject.problem
    assert str(reject.source) == f"{path}:2"
    assert len(of(Triplet, recs)) == 2


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"file,text\na.png,x\n", "header must name the columns image and caption"),
])
def test_bad_csv_file_is_an_input_error(tmp_path, content, problem):
    path = tmp_path / "pairs.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem):
        records(path)


def test_csv_header_with_bom_and_other_columns(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes("\ufeffid,Caption,Image\n1,a cat,cat.png\n".encode())
    assert [e.id for e in of(Entity, records(path))] == ["image:cat.png", caption_entity_id("image:cat.png", "a cat")]


def test_other_suffix_is_an_input_error(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("image\tcaption\n")
    with pytest.raises(InputError, match="not a .json or .csv file"):
        records(path)


# -- against a real Neo4j (fixtures from tests/conftest.py) -------------------------------------

def test_load_coco_stats_and_idempotence(graph_store, media_store, kg_name):
    load_kg(graph_store, ImageTextLoader(COCO, kg_name), media_store, progress=False)
    stats = graph_store.stats(kg_name)
    assert (stats.entities, stats.relations) == ({"image": 3, "text": 5}, 2)
    assert stats.triplets == {"train": 10, "dev": 0, "test": 0}
    relations = {(r.name, r.text) for r in graph_store.relations(kg_name)}
    assert relations == {(IMAGE_OF, "image of"), (CAPTION_OF, "caption of")}
    load_kg(graph_store, ImageTextLoader(CSV, kg_name), media_store, progress=False)
    grown = graph_store.stats(kg_name)
    # The same image files, so the same ids; "A red square." and "A blue square." are COCO's captions too.
    assert grown.entities == {"image": 3, "text": 7}
    load_kg(graph_store, ImageTextLoader(CSV, kg_name), media_store, progress=False)
    assert graph_store.stats(kg_name) == grown


def test_missing_image_refuses_strict_load_and_skip_bad_loads_the_rest(graph_store, media_store, kg_name, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("image,caption\nred.png,red\nnowhere.png,lost\n", encoding="utf-8")
    images = {"images_dir": DATA / "images"}
    with pytest.raises(LoadRefused, match=f"{path}:3: image file not found"):
        load_kg(graph_store, ImageTextLoader(path, kg_name, images), media_store, progress=False)
    assert graph_store.stats(kg_name).total_entities == 0
    rejects = tmp_path / "rejects.tsv"
    load_kg(graph_store, ImageTextLoader(path, kg_name, images), media_store, skip_bad=True, rejects_path=rejects,
            progress=False)
    assert graph_store.stats(kg_name).triplets["train"] == 2
    assert f"{path}\t3\timage file not found" in rejects.read_text(encoding="utf-8")

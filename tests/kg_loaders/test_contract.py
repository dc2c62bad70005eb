"""The contract every loader in ``kclip.kg_loaders.LOADERS`` keeps, tested once for all of them.

Each format has a builder below that writes a tiny valid dataset into a temporary folder; every
case then breaks that dataset one way (missing path, empty file, invalid UTF-8, a BOM, control
characters, a file path leaving the dataset, a truncated image) and checks the loader's answer.
A loader added to ``LOADERS`` without a builder here fails ``test_every_loader_has_a_builder``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from kclip.kg_loaders import LOADERS, KGLoader
from kclip.platform.errors import ConfigError, InputError, LoadRefused
from kclip.platform.ingest import load_kg
from kclip.platform.records import Entity, Reject, Relation, SourceRef, Triplet

# A word of entity text on one known line of each dataset's main file; cases replace it.
MARK = "marked"
BOM = "\ufeff".encode()


@dataclass
class Dataset:
    """A tiny valid dataset of one format, and where the cases below break it."""

    format: str
    path: Path  # the loader's PATH
    main: Path  # the file the cases corrupt: MARK is on exactly one of its lines
    image: Path | None = None  # the image file the first image row names (None: the format names no files)
    image_row: SourceRef | None = None  # that row, which a bad image path rejects

    def loader(self, kg: str = "contract") -> KGLoader:
        return LOADERS[self.format](self.path, kg)

    def records(self) -> list:
        return list(self.loader().records())

    def mark_line(self) -> int:
        lines = self.read_main().split(b"\n")
        [line] = [n for n, text in enumerate(lines, start=1) if MARK.encode() in text]
        return line

    def read_main(self) -> bytes:
        data = self.main.read_bytes()
        return gzip.decompress(data) if self.main.suffix == ".gz" else data

    def write_main(self, data: bytes) -> None:
        self.main.write_bytes(gzip.compress(data) if self.main.suffix == ".gz" else data)

    def replace_mark(self, raw: bytes, in_json: str | None = None) -> None:
        """Put ``raw`` where MARK is; ``in_json`` instead in a JSON file (an escape, say), if given."""
        new = in_json.encode() if in_json is not None and self.main.suffix == ".json" else raw
        self.write_main(self.read_main().replace(MARK.encode(), new))


def write_jpeg(path: Path) -> Path:
    """A real 800x600 JPEG (a gradient, so it has some content to cut in half).

    Its path is in a JPEG comment, so its bytes are this test's own: Neo4j is shared by the tests,
    media stores are not, and a refused load keeps the files that another KG's entities reference.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = Image.linear_gradient("L").resize((800, 600))
    Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp.rotate(90))).save(
        path, quality=90, comment=str(path).encode())
    return path


def json_lines(values: list) -> str:
    """A JSON array with one element per line: element n is on line n + 1."""
    return "[\n" + ",\n".join(json.dumps(v, ensure_ascii=False) for v in values) + "\n]\n"


# -- one builder per format: build(root, image_name) -> Dataset -------------------------------------
# ``image_name`` is the file name the first image row uses, so cases can point it elsewhere.

def build_tsv(root: Path, image_name: str) -> Dataset:
    root.mkdir()
    (root / "entity2text.txt").write_text(f"a\tthe first\nb\tthe {MARK} second\nc\tthe third\n", encoding="utf-8")
    (root / "relation2text.txt").write_text("r\trelated to\n", encoding="utf-8")
    (root / "train.tsv").write_text("a\tr\tb\nb\tr\tc\n", encoding="utf-8")
    (root / "test.tsv").write_text("a\tr\tc\n", encoding="utf-8")
    return Dataset("tsv", root, root / "entity2text.txt")


def _assertions(root: Path, name: str) -> Path:
    root.mkdir()
    lines = [f"/a/[/r/IsA/,/c/en/{start}/,/c/en/{end}/]\t/r/IsA\t/c/en/{start}\t/c/en/{end}\t{{\"weight\": 1.0}}"
             for start, end in (("cat", "animal"), (f"{MARK}_dog", "animal"), ("cat", "pet"))]
    data = ("\n".join(lines) + "\n").encode()
    path = root / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def build_conceptnet(root: Path, image_name: str) -> Dataset:
    path = _assertions(root, "assertions.csv")
    return Dataset("conceptnet", path, path)


def build_conceptnet_gz(root: Path, image_name: str) -> Dataset:
    path = _assertions(root, "assertions.csv.gz")
    return Dataset("conceptnet", path, path)


def build_visual_genome(root: Path, image_name: str) -> Dataset:
    for image_id in (1, 2):
        write_jpeg(root / "images" / f"{image_id}.jpg")
    (root / "image_data.json").write_text(json_lines([
        {"image_id": 1, "width": 800, "height": 600, "url": image_name},
        {"image_id": 2, "width": 800, "height": 600, "url": "images/2.jpg"}]), encoding="utf-8")
    graphs = [{"image_id": 1, "objects": [{"object_id": 1, "x": 10, "y": 10, "w": 100, "h": 80, "names": ["cat"]}],
               "relationships": []},
              {"image_id": 2, "objects": [
                  {"object_id": 2, "x": 0, "y": 0, "w": 50, "h": 50, "names": [f"{MARK} dog"]},
                  {"object_id": 3, "x": 300, "y": 200, "w": 50, "h": 50, "names": ["ball"], "attributes": ["red"]}],
               "relationships": [{"relationship_id": 1, "predicate": "chases", "subject_id": 2, "object_id": 3}]}]
    (root / "scene_graphs.json").write_text(json_lines(graphs), encoding="utf-8")
    (root / "region_descriptions.json").write_text(json_lines([
        {"id": 1, "regions": [{"region_id": 1, "phrase": "a cat on the left"}]}]), encoding="utf-8")
    return Dataset("visual-genome", root, root / "scene_graphs.json", root / "images" / "1.jpg",
                   SourceRef(str(root / "scene_graphs.json"), 2))


def build_image_text_csv(root: Path, image_name: str) -> Dataset:
    write_jpeg(root / "images" / "red.jpg")
    write_jpeg(root / "images" / "blue.jpg")
    path = root / "captions.csv"
    path.write_text(f"image,caption\n{image_name},a red square\nblue.jpg,\"a {MARK}\nblue square\"\n",
                    encoding="utf-8")
    return Dataset("image-text", path, path, root / "images" / "red.jpg", SourceRef(str(path), 2))


def build_image_text_coco(root: Path, image_name: str) -> Dataset:
    write_jpeg(root / "images" / "red.jpg")
    write_jpeg(root / "images" / "blue.jpg")
    path = root / "captions.json"
    images = [{"id": 1, "file_name": image_name}, {"id": 2, "file_name": "blue.jpg"}]
    annotations = [{"id": 10, "image_id": 1, "caption": "a red square"},
                   {"id": 20, "image_id": 2, "caption": f"a {MARK} blue square"}]
    # line 1 '{"images": [', 2-3 images, 4 '],', 5 '"annotations": [', 6-7 annotations
    path.write_text('{"images": [\n' + ",\n".join(json.dumps(i) for i in images) + '\n],\n"annotations": [\n'
                    + ",\n".join(json.dumps(a) for a in annotations) + "\n]}\n", encoding="utf-8")
    return Dataset("image-text", path, path, root / "images" / "red.jpg", SourceRef(str(path), 6))


def build_multimodal(root: Path, image_name: str) -> Dataset:
    write_jpeg(root / "images" / "cat.jpg")
    write_jpeg(root / "images" / "do" / "dog.jpg")
    nodes = {"bn:cat": {"name": "cat", "gloss": "a small feline", "images": [image_name]},
             "bn:dog": {"name": "dog", "gloss": f"a {MARK} canine", "images": ["do/dog.jpg"]}}
    (root / "nodes.json").write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in nodes.items())
                                     + "\n}\n", encoding="utf-8")
    (root / "edges.json").write_text(json_lines([{"head": "bn:dog", "relation": "chases", "tail": "bn:cat"}]),
                                     encoding="utf-8")
    return Dataset("multimodal", root, root / "nodes.json", root / "images" / "cat.jpg",
                   SourceRef(str(root / "nodes.json"), 2))


Builder = Callable[[Path, str], Dataset]
# case name -> (format, builder, the file name its first image row uses; None: the format names no files)
BUILDERS: dict[str, tuple[str, Builder, str | None]] = {
    "tsv": ("tsv", build_tsv, None),
    "conceptnet": ("conceptnet", build_conceptnet, None),
    "conceptnet-gz": ("conceptnet", build_conceptnet_gz, None),
    "visual-genome": ("visual-genome", build_visual_genome, "images/1.jpg"),
    "image-text-csv": ("image-text", build_image_text_csv, "red.jpg"),
    "image-text-coco": ("image-text", build_image_text_coco, "red.jpg"),
    "multimodal": ("multimodal", build_multimodal, "cat.jpg"),
}
WITH_IMAGES = [name for name, (_, _, image) in BUILDERS.items() if image is not None]


def build(name: str, tmp_path: Path, image_name: str | None = None) -> Dataset:
    _, builder, default_image = BUILDERS[name]
    return builder(tmp_path / "data", image_name or default_image or "")


def of(kind: type, records: list) -> list:
    return [r for r in records if isinstance(r, kind)]


def test_every_loader_has_a_builder():
    assert {format for format, _, _ in BUILDERS.values()} == set(LOADERS)


# -- the cases ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILDERS)
def test_valid_dataset_yields_no_rejects_and_every_pass_the_same(name, tmp_path):
    dataset = build(name, tmp_path)
    loader = dataset.loader()
    first, second = list(loader.records()), list(loader.records())
    assert of(Reject, first) == []
    assert of(Triplet, first)
    assert first == second  # per-pass state is reset: a second pass yields everything again
    defined: set[str] = set()
    for record in first:
        if isinstance(record, Relation):
            assert record.name not in defined, f"relation {record.name!r} yielded twice in a pass"
            defined.add(record.name)
        elif isinstance(record, Triplet):
            assert record.relation in defined, f"relation {record.relation!r} used before it was yielded"


@pytest.mark.parametrize("name", BUILDERS)
def test_missing_path_is_an_error_naming_it(name, tmp_path):
    missing = tmp_path / "no-such-dataset"
    with pytest.raises((InputError, ConfigError)) as caught:
        LOADERS[BUILDERS[name][0]](missing, "contract")
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize("name", BUILDERS)
def test_empty_file_is_an_input_error(name, tmp_path):
    dataset = build(name, tmp_path)
    dataset.write_main(b"")
    with pytest.raises(InputError, match="empty file") as caught:
        dataset.records()
    assert caught.value.path == str(dataset.main)


@pytest.mark.parametrize("name", BUILDERS)
def test_invalid_utf8_names_file_and_line(name, tmp_path):
    dataset = build(name, tmp_path)
    line = dataset.mark_line()
    dataset.replace_mark(b"caf\xe9")
    try:
        records = dataset.records()
    except InputError as error:
        assert (error.path, error.line) == (str(dataset.main), line) and "invalid UTF-8" in error.problem
        return
    rejects = of(Reject, records)
    assert rejects and all(r.source == SourceRef(str(dataset.main), line) for r in rejects), rejects
    assert "invalid UTF-8" in rejects[0].problem


@pytest.mark.parametrize("name", BUILDERS)
def test_bom_loads_as_without(name, tmp_path):
    dataset = build(name, tmp_path)
    plain = dataset.records()
    for path in dataset.loader().input_files():
        if path == dataset.main:
            dataset.write_main(BOM + dataset.read_main())
        else:
            path.write_bytes(BOM + path.read_bytes())
    assert dataset.records() == plain


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x85"])
@pytest.mark.parametrize("name", BUILDERS)
def test_control_character_in_text_is_rejected(name, character, tmp_path):
    dataset = build(name, tmp_path)
    line = dataset.mark_line()
    dataset.replace_mark(character.encode(), in_json=json.dumps(character)[1:-1])
    rejects = of(Reject, dataset.records())
    assert rejects, f"{character!r} was accepted"
    assert rejects[0].source == SourceRef(str(dataset.main), line)
    assert "control character" in rejects[0].problem and f"U+{ord(character):04X}" in rejects[0].problem


def outside_image(tmp_path: Path) -> Path:
    return write_jpeg(tmp_path / "elsewhere" / "secret.jpg")


@pytest.mark.parametrize("escape", ["absolute", "dot-dot", "symlink"])
@pytest.mark.parametrize("name", WITH_IMAGES)
def test_file_path_leaving_the_dataset_is_rejected(name, escape, tmp_path):
    outside = outside_image(tmp_path)
    if escape == "symlink":
        dataset = build(name, tmp_path)
        dataset.image.unlink()
        dataset.image.symlink_to(outside)
    else:
        # Enough '..' to climb to / from any folder the name may be relative to ('/..' is '/').
        climb = "../" * len(tmp_path.parts) + str(outside).lstrip("/")
        dataset = build(name, tmp_path, str(outside) if escape == "absolute" else climb)
    records = dataset.records()
    rejects = of(Reject, records)
    assert [r.source for r in rejects] == [dataset.image_row], rejects
    assert "outside the dataset" in rejects[0].problem
    assert str(dataset.path if dataset.path.is_dir() else dataset.path.parent) in rejects[0].problem
    assert not [e for e in of(Entity, records) if e.image and e.image.path.resolve() == outside.resolve()]


@pytest.mark.parametrize("name", WITH_IMAGES)
def test_file_name_with_nul_is_rejected_not_a_crash(name, tmp_path):
    dataset = build(name, tmp_path, "red\x00.jpg")
    records = dataset.records()
    assert not [e for e in of(Entity, records) if e.image and "\x00" in str(e.image.path)]
    # Visual Genome's url is only a hint (the image is found by its id too); elsewhere the row goes.
    assert [r.source for r in of(Reject, records)] == ([] if name == "visual-genome" else [dataset.image_row])


@pytest.mark.parametrize("name", WITH_IMAGES)
def test_symlinked_images_folder_is_part_of_the_dataset(name, tmp_path):
    dataset = build(name, tmp_path)
    images = dataset.path / "images" if dataset.path.is_dir() else dataset.path.parent / "images"
    moved = shutil.move(images, tmp_path / "big-disk-images")
    images.symlink_to(moved, target_is_directory=True)
    records = dataset.records()
    assert of(Reject, records) == []
    assert Path(moved) / dataset.image.name in {e.image.path for e in of(Entity, records) if e.image}


@pytest.mark.parametrize("name", WITH_IMAGES)
def test_truncated_image_is_a_bad_row_and_nothing_is_written(name, tmp_path, graph_store, media_store, kg_name):
    dataset = build(name, tmp_path)
    data = dataset.image.read_bytes()
    dataset.image.write_bytes(data[: len(data) // 2])
    before = graph_store.stats(kg_name)
    with pytest.raises(LoadRefused) as caught:
        load_kg(graph_store, dataset.loader(kg_name), media_store, progress=False)
    assert str(dataset.image) in str(caught.value)
    assert graph_store.stats(kg_name) == before
    assert not media_store.root.exists() or not any(p.is_file() for p in media_store.root.rglob("*"))
    rejects = tmp_path / "rejects.tsv"
    summary = load_kg(graph_store, dataset.loader(kg_name), media_store, skip_bad=True, rejects_path=rejects,
                      progress=False)
    assert summary.rejects_path == rejects and str(dataset.image) in rejects.read_text(encoding="utf-8")
    assert summary.triplets.added > 0


def test_the_blank_characters_are_every_space_but_the_control_characters():
    from kclip.kg_loaders.base import _BLANK_CHARS, _BLANK_RUNS

    controls = "\x0b\x0c\x1c\x1d\x1e\x1f\x85"
    expected = "".join(c for c in map(chr, range(0x110000)) if c.isspace() and c not in controls)
    assert all(_BLANK_RUNS.fullmatch(c) for c in expected) and not any(_BLANK_RUNS.match(c) for c in controls)
    assert set(_BLANK_CHARS) == set(expected)

"""TsvLoader on tiny WN18RR-shaped folders: implied entities and relations, relation text given
twice. Bad input shared by every format (empty files, invalid UTF-8, BOM) is in test_contract.py."""

from __future__ import annotations

from pathlib import Path

from kclip.kg_loaders.tsv import TsvLoader
from kclip.platform.records import Entity, Reject, Relation, Triplet


def records(path: Path) -> list:
    return list(TsvLoader(path, "wn", {}).records())


def of(kind: type, recs: list) -> list:
    return [r for r in recs if isinstance(r, kind)]


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_without_text_files_entities_and_relations_are_implied_once_before_use(tmp_path):
    kg = write(tmp_path, {"train.tsv": "a\t_hypernym\tb\nb\t_hypernym\tc\n", "dev.tsv": "a\t_member_of\tc\n"})
    recs = records(kg)
    assert of(Reject, recs) == []
    assert [(e.id, e.text) for e in of(Entity, recs)] == [("a", "a"), ("b", "b"), ("c", "c")]
    assert [(r.name, r.text) for r in of(Relation, recs)] == [("_hypernym", "hypernym"), ("_member_of", "member of")]
    assert [r.kind for r in recs] == ["entity", "entity", "relation", "triplet", "entity", "triplet",
                                      "relation", "triplet"]
    assert [t.split for t in of(Triplet, recs)] == ["train", "train", "dev"]


def test_relation_given_again_with_other_text_is_rejected(tmp_path):
    kg = write(tmp_path, {"train.tsv": "a\tr\tb\n", "relation2text.txt": "r\trelated\nr\trelated\nr\tsomething else\n"})
    recs = records(kg)
    [reject] = of(Reject, recs)
    assert str(reject.source) == f"{kg / 'relation2text.txt'}:3"
    assert "relation 'r' is given again with other text 'something else'" in reject.problem
    assert f"first at {kg / 'relation2text.txt'}:1" in reject.problem
    assert [(r.name, r.text) for r in of(Relation, recs)] == [("r", "related")]

"""Triplet KGs in the standard TSV layout (WN18RR, FB15k-237 as published by KG-BERT).

PATH is a directory with ``train.tsv`` and optionally ``dev.tsv`` (or ``valid.tsv``) and
``test.tsv``, each line ``head<TAB>relation<TAB>tail``; ``entity2text.txt`` (``id<TAB>text``)
gives entity text and ``relation2text.txt`` (``relation<TAB>text``) relation text. Without
``entity2text.txt`` an entity's text is its id; without ``relation2text.txt`` a relation's text
is derived from its name. All entities are text: this is a language KG.

Each file may start with a UTF-8 BOM (dropped). A relation given twice in ``relation2text.txt``
with different text is rejected at its second line. The format names no other files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from kclip.kg_loaders.base import KGLoader, LoaderOptions
from kclip.platform.errors import InputError
from kclip.platform.records import Entity, Record, Reject, Triplet

SPLIT_FILES = (("train", ("train.tsv",)), ("dev", ("dev.tsv", "valid.tsv")), ("test", ("test.tsv",)))


class TsvOptions(LoaderOptions):
    entity_text_file: str = "entity2text.txt"
    relation_text_file: str = "relation2text.txt"


class TsvLoader(KGLoader):
    format = "tsv"
    summary = "triplet KG: train/dev/test.tsv + entity2text.txt + relation2text.txt (e.g. WN18RR)"
    Options = TsvOptions

    @classmethod
    def expects(cls) -> str:
        return "a directory holding train.tsv (and dev.tsv, test.tsv, entity2text.txt, relation2text.txt)"

    def split_files(self) -> list[tuple[str, Path]]:
        if not self.path.is_dir():
            raise InputError(self.path, None, f"not a directory; expected {self.expects()}")
        self.require_file("train.tsv", "train.tsv (lines of head<TAB>relation<TAB>tail)")
        found = []
        for split, names in SPLIT_FILES:
            path = next((self.path / n for n in names if (self.path / n).is_file()), None)
            if path is not None:
                found.append((split, path))
        return found

    def input_files(self) -> list[Path]:
        optional = [self.path / self.options.relation_text_file, self.path / self.options.entity_text_file]
        return [p for p in optional if p.is_file()] + [path for _, path in self.split_files()]

    def _records(self) -> Iterator[Record]:
        splits = self.split_files()
        yield from self._relations()
        has_entity_file = (self.path / self.options.entity_text_file).is_file()
        if has_entity_file:
            yield from self._entities()
        for split, path in splits:
            for item in self.read_fields(path, ("head", "relation", "tail"), expected="head<TAB>relation<TAB>tail"):
                if isinstance(item, Reject):
                    yield item
                    continue
                source, (head, relation, tail) = item
                if not has_entity_file:  # entities are implied by the triplets, their id as text
                    for entity_id in (head, tail):
                        yield from self.entity_once(source, entity_id, modality="text", text=entity_id)
                yield from self.first_use(relation, source)  # nothing when relation2text.txt defined it
                yield self.make(Triplet, source, head=head, relation=relation, tail=tail, split=split)

    def _relations(self) -> Iterator[Record]:
        path = self.path / self.options.relation_text_file
        if not path.is_file():
            return
        for item in self.read_fields(path, ("relation", "text"), exact=False, expected="relation<TAB>text"):
            if isinstance(item, Reject):
                yield item
                continue
            source, (name, text) = item
            yield from self.first_use(name, source, text)

    def _entities(self) -> Iterator[Record]:
        path = self.path / self.options.entity_text_file
        for item in self.read_fields(path, ("entity id", "text"), exact=False, expected="entity_id<TAB>text"):
            if isinstance(item, Reject):
                yield item
                continue
            source, (entity_id, text) = item
            yield self.make(Entity, source, id=entity_id, modality="text", text=text)

"""ConceptNet 5 assertions: a language KG of commonsense relations between words and phrases.

PATH is the assertions file as published (``conceptnet-assertions-5.7.0.csv`` or its ``.csv.gz``;
gzip is detected from the file's first bytes and streamed). Each line has five tab-separated
fields, no header::

    /a/[/r/IsA/,/c/en/cat/n/,/c/en/animal/]  /r/IsA  /c/en/cat/n  /c/en/animal  {"weight": 2.0, ...}

assertion URI, relation URI, start concept, end concept, and a JSON object of edge info.

Mapping:

- A concept ``/c/LANG/TERM[/POS[/SENSE...]]`` becomes the text entity ``/c/LANG/TERM`` with text
  TERM, underscores as spaces. The part-of-speech and sense suffixes are dropped, so ``/c/en/cat/n``
  and ``/c/en/cat`` are one entity: CLIP's text encoder sees only the words anyway.
- The relation keeps its exact URI as name (``/r/IsA``) with text from ``Relation.named`` ("is a").
- Each kept assertion becomes one triplet (start, relation, end). Triplets have no weight, so the
  JSON ``weight`` (1.0 when absent, ConceptNet's default) only serves the ``min_weight`` filter.
- Entities are implied by assertions: each is yielded once, just before the first triplet using it.

Skipped, not rejected (they are valid ConceptNet, just not part of this KG):

- ``/r/ExternalURL`` (its end is a web URL, not a concept) and ``/r/dbpedia/...`` relations;
- assertions whose start or end language is not in ``languages`` (their info JSON is not read);
- assertions whose weight is below ``min_weight``.

Rejected: a line without exactly five fields, an assertion URI not starting with ``/a/``, a
relation not starting with ``/r/``, a concept not of the form ``/c/LANG/TERM...``, info that is not
a JSON object or has a non-numeric weight, invalid UTF-8, and a control character in a concept.
A UTF-8 BOM at the start of the file (or of the decompressed stream) is dropped. The format names
no other files.

Splits: every triplet is ``train`` unless ``split_ratios`` (train, dev, test) is given; then the
split is drawn from a hash of the reduced triplet (head, relation, tail), so it is the same on
every run and machine, and assertions that collapse to one triplet once senses are dropped cannot
land in two splits.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable, Iterator

from pydantic import field_validator

from kclip.kg_loaders.base import KGLoader, SplitRatioOptions, hashed_split
from kclip.platform.errors import InputError
from kclip.platform.records import Record, Reject, SourceRef, Triplet

FIELDS = ("assertion URI", "relation", "start concept", "end concept", "info JSON")
SKIPPED_RELATIONS = ("/r/ExternalURL",)
SKIPPED_RELATION_PREFIXES = ("/r/dbpedia/",)


class ConceptNetOptions(SplitRatioOptions):
    languages: list[str] = ["en"]
    min_weight: float = 0.0

    @field_validator("languages", mode="before")
    @classmethod
    def _comma_separated(cls, languages: object) -> object:
        # `-o languages=en,fr` arrives as one string; a JSON list works too.
        if isinstance(languages, str):
            return [part.strip() for part in languages.split(",") if part.strip()]
        return languages


class ConceptNetLoader(KGLoader):
    format = "conceptnet"
    summary = "ConceptNet 5 assertions CSV (.csv or .csv.gz), filtered by language and weight"
    Options = ConceptNetOptions

    @classmethod
    def expects(cls) -> str:
        return "a ConceptNet 5 assertions file (tab-separated .csv, or .csv.gz)"

    def input_files(self) -> list[Path]:
        if not self.path.is_file():
            raise InputError(self.path, None, f"not a file; expected {self.expects()}")
        return [self.path]

    def _records(self) -> Iterator[Record]:
        path = self.input_files()[0]
        languages = set(self.options.languages)
        for item in self.read_fields(path, FIELDS, skip=_other_languages(languages)):
            if isinstance(item, Reject):
                yield item
                continue
            parsed = self._assertion(*item, languages)
            if parsed is None:
                continue
            if isinstance(parsed, Reject):
                yield parsed
                continue
            source, relation, concepts = parsed
            yield from self.first_use(relation, source)
            for entity_id, text in concepts:
                yield from self.entity_once(source, entity_id, modality="text", text=text)
            head, tail = concepts[0][0], concepts[1][0]
            split = "train"
            if self.options.split_ratios is not None:
                split = hashed_split(f"{head}\t{relation}\t{tail}", self.options.split_ratios)
            yield self.make(Triplet, source, head=head, relation=relation, tail=tail, split=split)

    def _assertion(self, source: SourceRef, fields: list[str], languages: set[str]
                   ) -> tuple[SourceRef, str, list[tuple[str, str]]] | Reject | None:
        """(source, relation, [(id, text) of start, end]) for a kept line; None for a skipped one."""
        uri, relation, start, end, info = fields
        if not uri.startswith("/a/"):
            return Reject(source=source, problem=f"assertion URI must start with /a/, got {uri[:80]!r}")
        if not relation.startswith("/r/") or len(relation) == 3:
            return Reject(source=source, problem=f"relation must be a /r/ URI, got {relation[:80]!r}")
        if relation in SKIPPED_RELATIONS or relation.startswith(SKIPPED_RELATION_PREFIXES):
            return None
        concepts = []
        for concept in (start, end):
            parsed = _concept(concept)
            if parsed is None:
                return Reject(source=source, problem=f"concept must be /c/LANG/TERM[/...], got {concept[:80]!r}")
            concepts.append(parsed)
        if not all(lang in languages for lang, _ in concepts):
            return None
        weight = _weight(info)
        if isinstance(weight, str):
            return Reject(source=source, problem=weight)
        if weight < self.options.min_weight:
            return None
        return source, relation, [(f"/c/{lang}/{term}", term.replace("_", " ")) for lang, term in concepts]


def _other_languages(languages: set[str]) -> Callable[[bytes], object]:
    """A test on a raw line, true for a line the full parse would skip: an assertion between two
    concepts, one outside ``languages``, or one of a skipped relation.

    Such lines are dropped unread (about 90% of the real file when keeping English); anything
    that does not look like an assertion goes through the full checks and is rejected there.
    One regular expression's ``match``, so no Python runs per line: at a million lines a Python
    test was most of the parsing time.
    """
    # Exactly five tab-separated fields: /a/... <TAB> /r/... <TAB> start <TAB> end <TAB> info.
    # Skipped: both concepts /c/LANG/TERM... as _concept accepts them (ASCII blanks before them
    # are stripped, as the full parse does), not both in ``languages``; or a skipped relation.
    # Whatever this passes gets the full parse, so it only has to be conservative.
    blank, field, filled = rb"[ \n\r]*", rb"[^\t]*\t", rb"[!-~][^\t]*"
    wanted = b"|".join(re.escape(lang.encode()) for lang in sorted(languages))
    kept = rb"/a/" + field + rb"/r/" + field + (blank + rb"/c/(?:" + wanted + rb")/" + field) * 2
    concepts = rb"/r/[!-~]" + field + (blank + rb"/c/[^/\s]+/[^/\s]" + field) * 2
    skipped = (b"|".join(re.escape(r.encode()) + rb"\t" for r in SKIPPED_RELATIONS) + b"|"
               + b"|".join(re.escape(p.encode()) + field for p in SKIPPED_RELATION_PREFIXES))
    other_relation = rb"(?:" + skipped + rb")" + (filled + rb"\t") * 2
    info = rb"[^\t]*[!-~][^\t]*\Z"
    return re.compile(rb"(?!" + kept + rb")/a/" + field + rb"(?:" + concepts + rb"|" + other_relation + rb")" + info).match


def _concept(uri: str) -> tuple[str, str] | None:
    """(language, term) of ``/c/LANG/TERM[/POS[/...]]``, or None when the URI is not a concept."""
    parts = uri.split("/")
    if len(parts) < 4 or parts[0] != "" or parts[1] != "c" or not parts[2] or not parts[3]:
        return None
    return parts[2], parts[3]


def _weight(info: str) -> float | str:
    """The assertion's weight from its info JSON, or a problem description."""
    try:
        parsed = json.loads(info)
    except json.JSONDecodeError as exc:
        return f"invalid info JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(parsed, dict):
        return f"info must be a JSON object, got {type(parsed).__name__}"
    weight = parsed.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        return f"info weight must be a number, got {weight!r}"
    return float(weight)

"""The canonical knowledge-graph records every loader yields and the graph store writes.

A KG is entities (text or image), relations (always text) and triplets (head, relation, tail)
tagged with a split. Records are pydantic models validated at the loader boundary; ``source``
remembers the file and line a record came from so later checks can name them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, Union

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StringConstraints,
                      field_validator, model_validator)

Modality = Literal["text", "image"]
Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
SPLIT_ALIASES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "test": "test"}

# These checks are regular expressions that pydantic-core runs in Rust: records are validated by
# the hundred thousand per second, so no Python runs per field. base.KGLoader.make turns a failed
# pattern into a sentence.
KG_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
# Any Unicode is fine in names (spaces, '/film/film/genre', CJK); control characters (category
# Cc, exactly this class) are not: they cannot survive TSV files, terminals or the UI.
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
NO_CONTROL_CHARS = f"^[^{CONTROL_CHARS}]*$"
# Free text (entity and relation text, attribute values) may also hold tab, newline and carriage
# return, the line breaks of captions and glosses; NUL and the other controls are refused.
TEXT_CONTROL_CHARS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
NO_TEXT_CONTROL_CHARS = f"^[^{TEXT_CONTROL_CHARS}]*$"
PATTERN_PROBLEMS = {
    KG_NAME_PATTERN: "a KG name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    NO_CONTROL_CHARS: "contains a control character",
    NO_TEXT_CONTROL_CHARS: "contains a control character (text may hold tab, newline and carriage return, no other)",
}
_CONTROL_CHAR_CLASSES = {NO_CONTROL_CHARS: re.compile(f"[{CONTROL_CHARS}]"),
                         NO_TEXT_CONTROL_CHARS: re.compile(f"[{TEXT_CONTROL_CHARS}]")}
KGName = Annotated[str, StringConstraints(pattern=KG_NAME_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NO_CONTROL_CHARS)]
Text = Annotated[str, StringConstraints(pattern=NO_TEXT_CONTROL_CHARS)]
# Strict numbers: in lax mode pydantic would turn the refused string "1\x0b" into the integer 1.
AttributeValue = Union[Text, StrictInt, StrictFloat, StrictBool]


def pattern_problem(pattern: str, value: object) -> str | None:
    """A sentence for ``value`` failing ``pattern`` (one of ``PATTERN_PROBLEMS``), naming the first
    control character and where it is; None for other patterns."""
    problem = PATTERN_PROBLEMS.get(pattern)
    control = _CONTROL_CHAR_CLASSES.get(pattern)
    found = control.search(value) if control is not None and isinstance(value, str) else None
    if problem is not None and found is not None:
        problem += f": U+{ord(found.group()):04X} at character {found.start() + 1}"
    return problem


class SourceRef(NamedTuple):
    """Where a record came from: the file and the 1-based line (or item number for JSON)."""

    file: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    source: SourceRef | None = Field(default=None, exclude=True, repr=False)


class ImageSource(BaseModel):
    """An image file on disk as a loader found it, optionally cut to a box (x, y, w, h) in pixels."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: Path
    box: tuple[int, int, int, int] | None = None

    @field_validator("box")
    @classmethod
    def _positive_box(cls, box):
        if box is not None and (box[2] <= 0 or box[3] <= 0 or box[0] < 0 or box[1] < 0):
            raise ValueError(f"box (x, y, w, h) must have x, y >= 0 and w, h > 0, got {box}")
        return box


class Entity(_Record):
    """A node of a KG. Text entities carry text; image entities carry an image (and may carry a gloss)."""

    kind: Literal["entity"] = "entity"
    kg: KGName
    id: Name
    modality: Modality
    text: Text | None = None
    image: ImageSource | None = None
    attributes: dict[Name, AttributeValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _content_matches_modality(self):
        if self.modality == "text" and not self.text:
            raise ValueError(f"text entity {self.id!r} has no text")
        if self.modality == "image" and self.image is None:
            raise ValueError(f"image entity {self.id!r} has no image")
        return self


class Relation(_Record):
    """A relation of a KG: its exact name and the readable text the text encoder sees."""

    kind: Literal["relation"] = "relation"
    kg: KGName
    name: Name
    text: Text

    @classmethod
    def named(cls, kg: str, name: str, source: SourceRef | None = None) -> "Relation":
        """A relation whose text is derived from its name: '_member_of' -> 'member of', '/r/IsA' -> 'is a'."""
        return cls(kg=kg, name=name, text=readable_relation(name), source=source)


class Triplet(_Record):
    """(head, relation, tail) by entity id and relation name, with the split it belongs to."""

    kind: Literal["triplet"] = "triplet"
    kg: KGName
    head: Name
    relation: Name
    tail: Name
    split: Split = "train"

    @field_validator("split", mode="before")
    @classmethod
    def _split_alias(cls, split):
        if isinstance(split, str) and split.lower() in SPLIT_ALIASES:
            return SPLIT_ALIASES[split.lower()]
        return split


class Reject(BaseModel):
    """A row a loader could not turn into a record, and why."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["reject"] = "reject"
    source: SourceRef
    problem: str


Record = Union[Entity, Relation, Triplet, Reject]

# The trainer finds image-text pairs by these relation names: (image, IMAGE_OF, text), (text, CAPTION_OF, image).
IMAGE_OF = "image of"
CAPTION_OF = "caption of"
# Scene graphs tie each object to its image by this relation; the relation-swap test follows it.
IN_IMAGE = "in image"


def readable_relation(name: str) -> str:
    """Text for a relation name: last path segment, CamelCase and underscores split, lower-cased."""
    last = name.rstrip("/").rsplit("/", 1)[-1] or name
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", last).replace("_", " ").replace(".", " ")
    return " ".join(spaced.split()).lower() or name

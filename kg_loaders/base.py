"""The interface every loader implements, and helpers for reading source files strictly.

A loader reads one source format and yields canonical records (``kclip.platform.records``):
relations and entities before the triplets that use them, ``Reject`` for rows it cannot parse.
It streams: it never holds a whole file in memory. It writes nothing: ``platform/ingest.py``
validates, stores images and writes to Neo4j.
"""

from __future__ import annotations

import hashlib
import gzip
import json
import re
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generator, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from kclip.platform.errors import ConfigError, InputError
from kclip.platform.records import (KG_NAME_PATTERN, PATTERN_PROBLEMS, SPLITS, Entity, Record, Reject, Relation,
                                    SourceRef, Split, Triplet, readable_relation)

GZIP_MAGIC = b"\x1f\x8b"
RecordT = TypeVar("RecordT", Entity, Relation, Triplet)


class LoaderOptions(BaseModel):
    """Options a format takes (``kclip load FORMAT PATH -o key=value``); subclasses add fields."""

    model_config = ConfigDict(extra="forbid")


class SplitRatioOptions(LoaderOptions):
    """For loaders that draw splits from a hash (``hashed_split``): ``split_ratios`` is the
    (train, dev, test) fractions summing to 1; None puts everything in train. A subclass may
    redeclare the field with another default (the validator still applies)."""

    split_ratios: tuple[float, float, float] | None = None

    @field_validator("split_ratios")
    @classmethod
    def _ratios(cls, ratios: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if ratios is not None and (min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6)):
            raise ValueError(f"split_ratios are (train, dev, test) fractions >= 0 summing to 1, got {list(ratios)}")
        return ratios


def hashed_split(key: str, ratios: tuple[float, float, float]) -> Split:
    """The split of ``key``: a uniform draw from its hash, so the same on every run and machine."""
    # Python's hash() is salted per process; sha256 is not.
    draw = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    bound = 0.0
    for split, ratio in zip(SPLITS, ratios):
        bound += ratio
        if draw < bound:
            return split
    # A draw within rounding of 1.0: the last split that takes anything.
    return next(split for split, ratio in reversed(list(zip(SPLITS, ratios))) if ratio > 0)


class KGLoader(ABC):
    format: ClassVar[str]  # the FORMAT of `kclip load FORMAT PATH`
    summary: ClassVar[str]  # one line for `kclip load --help`
    Options: ClassVar[type[LoaderOptions]] = LoaderOptions

    def __init__(self, path: str | Path, kg: str, options: dict[str, Any] | LoaderOptions | None = None):
        self.path = Path(path)
        if not re.match(KG_NAME_PATTERN, kg):
            raise ConfigError(f"--kg {kg!r}: {PATTERN_PROBLEMS[KG_NAME_PATTERN]}")
        self.kg = kg
        try:
            self.options = self.Options.model_validate(options or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"bad option for the {self.format} loader: {problems}") from None
        if not self.path.exists():
            raise InputError(self.path, None, f"not found (the {self.format} loader expects {self.expects()})")
        self.bytes_read = 0
        self.relations_used: set[str] = set()  # names ``first_use`` has yielded

    @classmethod
    def expects(cls) -> str:
        """What PATH should be, for error messages; override in subclasses."""
        return "a file or directory"

    @abstractmethod
    def input_files(self) -> list[Path]:
        """The files ``records`` will read (their total size drives the progress bar)."""

    @abstractmethod
    def records(self) -> Iterator[Record]:
        """Yield records; raise ``InputError`` for problems that spoil a whole file."""

    # -- helpers for subclasses ----------------------------------------------------------------

    def count_bytes(self, n: int) -> None:
        """Add ``n`` bytes read to ``bytes_read`` (the progress bar's count); the ``on_bytes``
        callback of ``json_stream``."""
        self.bytes_read += n

    def first_use(self, name: str, source: SourceRef, text: str | None = None, *,
                  reject_each_use: bool = False) -> Generator[Relation | Reject, None, bool]:
        """Yield relation ``name`` the first time it is used, so it precedes its triplets; nothing after.

        ``text`` defaults to ``readable_relation(name)``. An invalid name yields a ``Reject`` once, or,
        with ``reject_each_use``, at every use (so each row using it is rejected). Returns False when
        it has just yielded a ``Reject``. Loaders clear ``relations_used`` when ``records`` starts,
        so every pass yields its relations.
        """
        if name in self.relations_used:
            return True
        relation = self.make(Relation, source, name=name, text=readable_relation(name) if text is None else text)
        valid = isinstance(relation, Relation)
        if valid or not reject_each_use:
            self.relations_used.add(name)
        yield relation
        return valid

    def read_fields(self, path: Path, names: tuple[str, ...], exact: bool = True,
                    expected: str | None = None) -> Iterator[tuple[SourceRef, list[str]] | Reject]:
        """``read_lines`` then ``split_fields``: each line's fields, or a ``Reject`` for a bad line.

        ``expected`` describes a line for the empty-file error; default: ``names`` joined by " <TAB> ".
        """
        for item in self.read_lines(path, " <TAB> ".join(names) if expected is None else expected):
            if isinstance(item, Reject):
                yield item
                continue
            source, line = item
            fields = split_fields(source, line, names, exact)
            yield fields if isinstance(fields, Reject) else (source, fields)

    def read_lines(self, path: Path, expected: str) -> Iterator[tuple[SourceRef, str] | Reject]:
        """Lines of a UTF-8 text file (gzipped or not) without their line ends and blank lines;
        invalid UTF-8 becomes a ``Reject``.

        ``expected`` describes a line's format, for the error raised when the file is empty.
        ``bytes_read`` counts bytes on disk (compressed ones for gzip), as the progress total does.
        """
        number = 0
        seen_content = False
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
            counted = 0
            try:
                for number, data in enumerate(stream, start=1):
                    position = raw.tell()
                    self.bytes_read += position - counted
                    counted = position
                    source = SourceRef(str(path), number)
                    try:
                        line = data.decode("utf-8").rstrip("\r\n")
                    except UnicodeDecodeError as exc:
                        yield Reject(source=source, problem=f"invalid UTF-8 at byte {exc.start} of the line")
                        continue
                    if line.strip():
                        seen_content = True
                        yield source, line
            except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; truncation is EOFError
                raise InputError(path, number + 1, f"corrupt gzip data: {exc}") from None
        if not seen_content:
            raise InputError(path, None, f"empty file; expected lines of {expected}")

    def read_json(self, path: Path) -> Any:
        """A whole JSON document (for formats that are one JSON value), with clear errors."""
        raw = path.read_bytes()
        self.bytes_read += len(raw)
        if not raw.strip():
            raise InputError(path, None, "empty file; expected a JSON document")
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise InputError(path, line, f"invalid UTF-8 at byte {exc.start}") from None
        except json.JSONDecodeError as exc:
            raise InputError(path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None

    def make(self, cls: type[RecordT], source: SourceRef, **fields: Any) -> RecordT | Reject:
        """Build and validate a record of this KG; invalid content becomes a ``Reject`` naming the field."""
        try:
            return cls(kg=self.kg, source=source, **fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = PATTERN_PROBLEMS.get((err.get("ctx") or {}).get("pattern"), err["msg"])
            return Reject(source=source, problem=f"{where}: {msg}" if where else msg)

    def require_file(self, name: str, what: str) -> Path:
        path = self.path / name
        if not path.is_file():
            raise InputError(path, None, f"missing {what}")
        return path


def split_fields(source: SourceRef, line: str, names: tuple[str, ...], exact: bool = True) -> list[str] | Reject:
    """Split a tab-separated line into ``len(names)`` non-empty fields.

    ``exact=False`` lets the last field keep further tabs (free text); otherwise extra fields are an error.
    """
    fields = line.split("\t") if exact else line.split("\t", len(names) - 1)
    if len(fields) != len(names):
        shown = " <TAB> ".join(names)
        return Reject(source=source, problem=f"expected {len(names)} tab-separated fields ({shown}), got {len(fields)}")
    fields = [f.strip() for f in fields]
    for name, value in zip(names, fields):
        if not value:
            return Reject(source=source, problem=f"empty {name}")
    return fields

"""The interface every loader implements, and helpers for reading source files strictly.

A loader reads one source format and yields canonical records (``kclip.platform.records``):
relations and entities before the triplets that use them, ``Reject`` for rows it cannot parse.
It streams: it never holds a whole file in memory. It writes nothing: ``platform/ingest.py``
validates, stores images and writes to Neo4j.

What every loader gets from ``KGLoader`` rather than doing itself:

- passes: ``records()`` resets the per-pass state (``reset_pass``) then runs the subclass's
  ``_records()``, so every pass yields everything again;
- relations through ``first_use`` and shared entities through ``entity_once``, each yielded the
  first time a pass uses them;
- files a dataset names through ``dataset_file``: they must resolve, symlinks followed, inside the
  dataset directory or one of the loader's ``image_dirs()``, or the row is rejected;
- text files read by ``read_lines`` / ``read_json`` (and ``json_stream``): UTF-8, a leading BOM
  dropped, errors naming the file and line.
"""

from __future__ import annotations

import codecs
import hashlib
import gzip
import json
import re
import math
from abc import ABC, abstractmethod
from itertools import compress, count
from operator import not_
from pathlib import Path
from typing import Any, BinaryIO, Callable, ClassVar, Generator, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from kclip.platform.errors import ConfigError, InputError
from kclip.platform.records import (KG_NAME_PATTERN, PATTERN_PROBLEMS, SPLITS, Entity, Record, Reject, Relation,
                                    SourceRef, Split, Triplet, pattern_problem, readable_relation)

GZIP_MAGIC = b"\x1f\x8b"
READ_BLOCK = 1 << 20  # bytes read (decompressed) at a time by raw_lines
# Blanks free text may carry: what str.isspace() calls space except the control characters among
# it (\x0b \x0c \x1c-\x1f \x85), which record validation refuses rather than this hides
# (test_contract checks the set over all of Unicode). Spelled out as characters for str.strip,
# ~100x faster than an anchored regex on long fields (a regex tries ``X+$`` at every position).
_BLANK_CHARS = "\t\n\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_BLANK_RUNS = re.compile(f"[{re.escape(_BLANK_CHARS)}]+")
UTF8_BOM = codecs.BOM_UTF8  # spreadsheets and Windows editors start UTF-8 files with it
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
        self.reset_pass()

    @classmethod
    def expects(cls) -> str:
        """What PATH should be, for error messages; override in subclasses."""
        return "a file or directory"

    @abstractmethod
    def input_files(self) -> list[Path]:
        """The files ``records`` will read (their total size drives the progress bar)."""

    def records(self) -> Iterator[Record]:
        """Yield the KG's records, one whole pass over the input; each call starts afresh.

        Raises ``InputError`` for problems that spoil a whole file.
        """
        self.reset_pass()
        yield from self._records()

    @abstractmethod
    def _records(self) -> Iterator[Record]:
        """One pass over the input (``records`` has reset the per-pass state): relations and
        entities before the triplets that use them, ``Reject`` for rows that cannot be used."""

    def reset_pass(self) -> None:
        """Forget what the last pass yielded. Subclasses with per-pass state of their own extend
        this (calling ``super().reset_pass()``) instead of resetting it in ``_records``."""
        self.bytes_read = 0
        self.relations_used: dict[str, tuple[str, SourceRef]] = {}  # name -> text, where ``first_use`` met it
        self._entities_yielded: set[str] = set()  # ids ``entity_once`` has yielded
        self._allowed_roots: list[Path] | None = None  # for ``dataset_file``, computed on first use
        self._resolved: dict[Path, Path | str] = {}  # file -> its resolved path, or why it could not be

    def image_dirs(self) -> list[Path]:
        """The image folders this loader reads from (an explicit ``images_dir`` or the ones found by
        convention). Files inside them count as part of the dataset even when a folder is a symlink
        to elsewhere, as a symlinked ``VG_100K/`` often is; see ``dataset_file``."""
        return []

    def dataset_dir(self) -> Path:
        """The dataset's folder: PATH when it is a directory, else the directory holding PATH."""
        return self.path if self.path.is_dir() else self.path.parent

    # -- helpers for subclasses ----------------------------------------------------------------

    def count_bytes(self, n: int) -> None:
        """Add ``n`` bytes read to ``bytes_read`` (the progress bar's count); the ``on_bytes``
        callback of ``json_stream``."""
        self.bytes_read += n

    def first_use(self, name: str, source: SourceRef, text: str | None = None, *,
                  reject_each_use: bool = False) -> Generator[Relation | Reject, None, bool]:
        """Yield relation ``name`` the first time this pass uses it, so it precedes its triplets;
        nothing after. The only way loaders yield relations.

        ``text`` defaults to ``readable_relation(name)``; a later use giving another ``text``
        explicitly (a relation file defining it twice) yields a ``Reject``. An invalid name yields a
        ``Reject`` once, or, with ``reject_each_use``, at every use (so each row using it is
        rejected). Returns False when it has just yielded a ``Reject``.
        """
        if name in self.relations_used:
            first_text, first_source = self.relations_used[name]
            if text is None or text == first_text:
                return True
            yield Reject(source=source, problem=f"relation {name!r} is given again with other text {text!r} "
                                                f"(first at {first_source}: {first_text!r})")
            return False
        readable = readable_relation(name) if text is None else text
        relation = self.make(Relation, source, name=name, text=readable)
        valid = isinstance(relation, Relation)
        if valid or not reject_each_use:
            self.relations_used[name] = (readable, source)
        yield relation
        return valid

    def entity_once(self, source: SourceRef, id: str, **fields: Any) -> Iterator[Entity | Reject]:
        """Yield entity ``id`` (built from ``fields``, as ``make`` does) the first time this pass asks
        for it, nothing after: for entities many rows share (images, concepts, labels)."""
        if id not in self._entities_yielded:
            self._entities_yielded.add(id)
            yield self.make(Entity, source, id=id, **fields)

    def dataset_file(self, name: str | Path, source: SourceRef, *, under: Path | None = None,
                     what: str = "image path") -> Path | Reject:
        """The file ``name`` that the row at ``source`` names, resolved (symlinks followed), or a
        ``Reject`` when it resolves outside the dataset.

        ``name`` is relative to ``under`` (default: ``dataset_dir()``) unless absolute. It must
        resolve inside ``dataset_dir()`` or one of ``image_dirs()`` (themselves resolved), so data
        cannot make a load read ``../../etc/passwd``, an absolute path elsewhere, or a file through
        a symlink pointing out. ``what`` names the field in the message. Whether the file exists is
        not checked here (the ingest pass reports missing files).
        """
        path = (self.dataset_dir() if under is None else under) / name
        resolved = self._resolved.get(path)
        if resolved is None:
            resolved = self._resolved[path] = _resolve(path)
        if isinstance(resolved, str):
            return Reject(source=source, problem=f"{what} {str(name)!r}: {resolved}")
        roots = self._dataset_roots()
        if any(resolved.is_relative_to(root) for root in roots):
            return resolved
        shown = ", ".join(map(str, roots))
        return Reject(source=source, problem=f"{what} {str(name)!r} resolves outside the dataset ({shown})")

    def _dataset_roots(self) -> list[Path]:
        """The folders ``dataset_file`` accepts, resolved once per pass."""
        if self._allowed_roots is None:
            roots = [_resolve(d) for d in [self.dataset_dir(), *self.image_dirs()]]
            self._allowed_roots = list(dict.fromkeys(r for r in roots if isinstance(r, Path)))
        return self._allowed_roots

    def read_fields(self, path: Path, names: tuple[str, ...], exact: bool = True,
                    expected: str | None = None, skip: Callable[[bytes], object] | None = None,
                    ) -> Iterator[tuple[SourceRef, list[str]] | Reject]:
        """``read_lines`` then ``split_fields``: each line's fields, or a ``Reject`` for a bad line.

        ``expected`` describes a line for the empty-file error; default: ``names`` joined by " <TAB> ".
        """
        for item in self.read_lines(path, " <TAB> ".join(names) if expected is None else expected, skip):
            if isinstance(item, Reject):
                yield item
                continue
            source, line = item
            fields = split_fields(source, line, names, exact)
            yield fields if isinstance(fields, Reject) else (source, fields)

    def read_lines(self, path: Path, expected: str, skip: Callable[[bytes], object] | None = None,
                   ) -> Iterator[tuple[SourceRef, str] | Reject]:
        """Lines of a UTF-8 text file (gzipped or not) without their line ends, blank lines and a
        leading BOM; invalid UTF-8 becomes a ``Reject``.

        ``expected`` describes a line's format, for the error raised when the file is empty.
        ``skip`` is a cheap test (a truthy answer skips) of the raw bytes for lines a loader's filter
        drops anyway (most of ConceptNet is in languages not asked for): they are passed over
        before decoding.
        """
        seen_content, name = False, str(path)
        for first, lines in self.raw_blocks(path):
            numbered: Iterator[tuple[int, bytes]] = zip(count(first), lines)
            if skip is not None:
                # The test runs over the whole block in C (map, compress): no Python bytecode per
                # skipped line (ConceptNet skips 90% of its lines when keeping one language).
                keep = list(map(not_, map(skip, lines)))
                if not all(keep):
                    seen_content = True
                numbered = compress(numbered, keep)
            for number, data in numbered:
                source = SourceRef(name, number)
                try:
                    line = data.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    yield Reject(source=source, problem=f"invalid UTF-8 at byte {exc.start} of the line")
                    continue
                if line.strip():
                    seen_content = True
                    yield source, line
        if not seen_content:
            raise InputError(path, None, f"empty file; expected lines of {expected}")

    def raw_lines(self, path: Path) -> Iterator[tuple[int, bytes]]:
        """(line number, bytes with the line end) for each line of a file, gzipped or not, without
        a leading UTF-8 BOM; see ``raw_blocks``."""
        for first, lines in self.raw_blocks(path):
            yield from zip(count(first), lines)

    def raw_blocks(self, path: Path) -> Iterator[tuple[int, list[bytes]]]:
        """The lines of a file (bytes with their line ends), gzipped or not, without a leading UTF-8
        BOM, a block at a time: (number of the block's first line, its lines). ``bytes_read`` counts
        bytes on disk (compressed ones for gzip), as the progress total does."""
        number = 0
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
            counted = 0
            try:
                for lines in _line_blocks(stream):
                    position = raw.tell()
                    self.bytes_read += position - counted
                    counted = position
                    if number == 0 and lines:
                        lines[0] = lines[0].removeprefix(UTF8_BOM)
                    yield number + 1, lines
                    number += len(lines)
            except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; truncation is EOFError
                raise InputError(path, number + 1, f"corrupt gzip data: {exc}") from None

    def read_json(self, path: Path) -> Any:
        """A whole JSON document (for formats that are one JSON value), with clear errors."""
        raw = path.read_bytes()
        self.bytes_read += len(raw)
        raw = raw.removeprefix(UTF8_BOM)
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
            # The field, and the key for a dict such as attributes; deeper parts name union members.
            where = ".".join(str(p) for p in err["loc"][:2])
            msg = pattern_problem((err.get("ctx") or {}).get("pattern", ""), err["input"]) or err["msg"]
            return Reject(source=source, problem=f"{where}: {msg}" if where else msg)

    def require_file(self, name: str, what: str) -> Path:
        path = self.path / name
        if not path.is_file():
            raise InputError(path, None, f"missing {what}")
        return path


def _line_blocks(stream: BinaryIO, block_size: int = READ_BLOCK) -> Iterator[list[bytes]]:
    """The lines of a binary stream (split at b"\\n" only, ends kept), a block's worth at a time.

    Reading blocks and splitting them in C is ~4x faster than iterating a GzipFile line by line;
    a line longer than a block is carried over in parts, so it costs no quadratic copying.
    """
    carried: list[bytes] = []
    while block := stream.read(block_size):
        cut = block.rfind(b"\n") + 1
        if cut == 0:  # no line ends here: all of it belongs to a longer line
            carried.append(block)
            continue
        head = b"".join([*carried, block[:cut]]) if carried else block[:cut]
        carried = [block[cut:]] if cut < len(block) else []
        yield head.splitlines(keepends=True) if b"\r" not in head else _split_at_newlines(head)
    if carried:
        yield [b"".join(carried)]


def _split_at_newlines(data: bytes) -> list[bytes]:
    """Lines ending in b"\\n" (a bare b"\\r" stays inside its line, as file iteration has it)."""
    lines = data.split(b"\n")
    last = lines.pop()
    return [line + b"\n" for line in lines] + ([last] if last else [])


def collapse_blanks(text: str) -> str:
    """Free text trimmed, each run of spaces, tabs, line breaks or Unicode spaces made one space;
    control characters stay, for validation to refuse."""
    return _BLANK_RUNS.sub(" ", text).strip(" ")


def strip_blanks(text: str) -> str:
    """``text`` without the blanks (as in ``collapse_blanks``) at its ends."""
    return text.strip(_BLANK_CHARS)


def _resolve(path: Path) -> Path | str:
    """``path`` with symlinks and '..' resolved, or why that failed (a symlink loop, say)."""
    try:
        return path.resolve()
    # RuntimeError: a symlink loop before Python 3.13; ValueError: a NUL or a lone surrogate in the name
    except (OSError, RuntimeError, ValueError) as exc:
        return f"cannot be resolved: {exc}"


def split_fields(source: SourceRef, line: str, names: tuple[str, ...], exact: bool = True) -> list[str] | Reject:
    """Split a tab-separated line into ``len(names)`` non-empty fields.

    ``exact=False`` lets the last field keep further tabs (free text); otherwise extra fields are an error.
    """
    fields = line.split("\t") if exact else line.split("\t", len(names) - 1)
    if len(fields) != len(names):
        shown = " <TAB> ".join(names)
        return Reject(source=source, problem=f"expected {len(names)} tab-separated fields ({shown}), got {len(fields)}")
    fields = [strip_blanks(f) for f in fields]
    for name, value in zip(names, fields):
        if not value:
            return Reject(source=source, problem=f"empty {name}")
    return fields

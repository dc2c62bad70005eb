"""Streaming a JSON file that is one array (``iter_json_array``) or one object (``iter_json_members``),
so multi-gigabyte files (Visual Genome's scene_graphs.json, COCO's captions) never sit in memory
whole. Errors carry the line where the bad element starts. A UTF-8 BOM at the start is dropped."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

from kclip.platform.errors import InputError

_CHUNK = 1 << 20
_WHITESPACE = " \t\r\n"


class _Reader:
    """Decoded text of a file, read in chunks, with the line number of any position."""

    def __init__(self, path: Path, on_bytes: Callable[[int], None]):
        self.path = path
        self.file = open(path, "rb")
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()  # drops a leading BOM, even split across chunks
        self.on_bytes = on_bytes
        self.text = ""
        self.pos = 0
        self.line = 1  # line number at self.pos
        self.eof = False

    def more(self) -> bool:
        """Append the next chunk; False at end of file."""
        if self.eof:
            return False
        raw = self.file.read(_CHUNK)
        self.on_bytes(len(raw))
        try:
            chunk = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            line = self.line + self.text.count("\n", self.pos) + raw[: exc.start].count(b"\n")
            raise InputError(self.path, line, "invalid UTF-8") from None
        # Drop what was consumed so the buffer holds only the element being parsed.
        self.text = self.text[self.pos:] + chunk
        self.pos = 0
        self.eof = not raw
        return True

    def skip_whitespace(self) -> str:
        """The next non-blank character ('' at end of file), leaving pos on it."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                if self.text[self.pos] == "\n":
                    self.line += 1
                self.pos += 1
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance_to(self, end: int) -> None:
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def close(self) -> None:
        self.file.close()


def iter_json_array(path: Path, on_bytes: Callable[[int], None] = lambda n: None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, element)`` for each element of the JSON array that is the whole file."""
    reader = _Reader(path, on_bytes)
    try:
        _open_document(reader, "[", "a JSON array")
        yield from _array_elements(reader, json.JSONDecoder(), "the JSON array")
    finally:
        reader.close()


def iter_json_members(path: Path, on_bytes: Callable[[int], None] = lambda n: None,
                      stream: Collection[str] = ()) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(key, line, value)`` for each member of the JSON object that is the whole file.

    Members named in ``stream`` are required and must be arrays; their elements are yielded one at
    a time as ``(key, line, element)``, so a huge array never sits in memory whole. ``line`` is
    where the member or element starts.
    """
    reader = _Reader(path, on_bytes)
    decoder = json.JSONDecoder()
    missing = set(stream)
    try:
        _open_document(reader, "{", "a JSON object")
        for key, line in _object_keys(reader, decoder):
            if key in stream:
                missing.discard(key)
                if reader.skip_whitespace() != "[":
                    raise InputError(path, reader.line, f"{key!r} must be a JSON array")
                reader.advance_to(reader.pos + 1)
                for element_line, element in _array_elements(reader, decoder, f"the {key!r} array"):
                    yield key, element_line, element
            else:
                value, end = _decode_one(reader, decoder, reader.line)
                reader.advance_to(end)
                yield key, line, value
        if reader.skip_whitespace() != "":
            raise InputError(path, reader.line, "unexpected content after the JSON object")
    finally:
        reader.close()
    if missing:
        raise InputError(path, None, f"no {sorted(missing)[0]!r} array in the JSON object")


def _open_document(reader: _Reader, opener: str, what: str) -> None:
    """Read the '[' or '{' that starts the file, or raise naming ``what`` the file should be."""
    first = reader.skip_whitespace()
    if first == "":
        raise InputError(reader.path, None, f"empty file; expected {what}")
    if first != opener:
        raise InputError(reader.path, reader.line, f"expected {what} starting with {opener!r}, found {first!r}")
    reader.advance_to(reader.pos + 1)


def _array_elements(reader: _Reader, decoder: json.JSONDecoder, what: str) -> Iterator[tuple[int, Any]]:
    """``(line, element)`` for each element of the array whose '[' was just read; ``what`` names it
    in errors. Leaves the reader past its ']'."""
    first = True
    while True:
        char = reader.skip_whitespace()
        if char == "]" and first:
            reader.advance_to(reader.pos + 1)
            return
        if char == "":
            raise InputError(reader.path, reader.line, f"unexpected end of file inside {what}")
        first = False
        line = reader.line
        value, end = _decode_one(reader, decoder, line)
        reader.advance_to(end)
        yield line, value
        separator = reader.skip_whitespace()
        if separator == "]":
            reader.advance_to(reader.pos + 1)
            return
        if separator != ",":
            raise InputError(reader.path, reader.line, f"expected ',' or ']' in {what}, found {separator!r}")
        reader.advance_to(reader.pos + 1)


def _object_keys(reader: _Reader, decoder: json.JSONDecoder) -> Iterator[tuple[str, int]]:
    """Each member name of the object being read, leaving the reader on its value for the caller."""
    first = True
    while True:
        char = reader.skip_whitespace()
        if char == "}" and first:
            reader.advance_to(reader.pos + 1)
            return
        if char != '"':
            found = f"found {char!r}" if char else "found the end of the file"
            raise InputError(reader.path, reader.line, f"expected a quoted member name, {found}")
        first = False
        line = reader.line
        key, end = _decode_one(reader, decoder, line)
        reader.advance_to(end)
        if reader.skip_whitespace() != ":":
            raise InputError(reader.path, reader.line, f"expected ':' after member name {key!r}")
        reader.advance_to(reader.pos + 1)
        if reader.skip_whitespace() == "":
            raise InputError(reader.path, reader.line, f"unexpected end of file: member {key!r} has no value")
        yield key, line
        separator = reader.skip_whitespace()
        if separator == "}":
            reader.advance_to(reader.pos + 1)
            return
        if separator != ",":
            raise InputError(reader.path, reader.line,
                             f"expected ',' or '}}' after member {key!r}, found {separator!r}")
        reader.advance_to(reader.pos + 1)


def _decode_one(reader: _Reader, decoder: json.JSONDecoder, line: int) -> tuple[Any, int]:
    while True:
        try:
            value, end = decoder.raw_decode(reader.text, reader.pos)
        except json.JSONDecodeError as exc:
            # Maybe the element continues in the next chunk; only at end of file is it an error.
            if reader.more():
                continue
            raise InputError(reader.path, exc.lineno - 1 + line if exc.lineno else line,
                             f"invalid JSON: {exc.msg}") from None
        if end == len(reader.text) and not reader.eof and isinstance(value, (int, float)):
            # A number cut at the chunk boundary would decode short; read on to be sure.
            if reader.more():
                continue
        return value, end

"""Image-text pairs (COCO Captions, or a simple CSV) as a KG of images and their captions.

PATH is one file, told apart by its suffix:

- ``*.json``: COCO Captions (``captions_train2017.json``), a JSON object with
  ``"images": [{"id": 397133, "file_name": "000000397133.jpg", ...}, ...]`` and
  ``"annotations": [{"id": 1768, "image_id": 397133, "caption": "A man ..."}, ...]``; other members
  (``info``, ``licenses``) are ignored. The file is streamed; the image table (id -> file name) is
  kept in memory, and annotations are held back only in the rare file that lists them first.
- ``*.csv``: a header row naming the columns ``image`` and ``caption`` (any order; other columns
  ignored), then one row per caption; an image may have several rows. Quoting as in RFC 4180.

Either may start with a UTF-8 BOM (dropped).

Image files are looked up in ``images_dir`` (default: the directory holding PATH, or its
``images/`` subfolder when the file is there and not beside PATH). A file name must resolve
(symlinks followed) inside the directory holding PATH, ``images/`` there, or the ``images_dir``
given: anything else (``../``, an absolute path elsewhere, a symlink pointing out) rejects the row
as "outside the dataset". ``images/`` or ``images_dir`` may itself be a symlink to elsewhere. A
missing or unreadable image is reported by the ingest pass, which names the row that used it.

Mapping: an image is the image entity ``image:<file_name>`` (COCO) or ``image:<image column>``
(CSV), yielded once, when a caption first uses it (images without captions are left out). A
caption is the text entity ``caption:<h>``, ``h`` the first 16 hex digits of the SHA-256 of the
image entity id, a NUL and the caption text (``caption_entity_id``): so the same caption of the same
image is one entity across rows, files and reloads (a second file never overwrites another's
captions), and different ones never collide. The caption text is stored normalised (Unicode NFC,
runs of blanks, tabs and line breaks as one space), as it is hashed. COCO's annotation ids are not
kept: COCO holds a few identical captions of one image under two ids, which are one entity here.
Each pair gives two triplets, (image, ``image of``, caption) and (caption, ``caption of``, image):
the trainer finds image-text pairs by these exact relation names (``IMAGE_OF``, ``CAPTION_OF``).

Splits: ``split`` (default ``train``) for all, or ``split_ratios`` (train, dev, test) drawn per
image from a hash of its entity id, so all captions of an image share its split.

Rejected: an image or annotation that is not an object or lacks a field, an empty caption, an
annotation naming an image id not in ``images``, a CSV row with an empty field, invalid UTF-8
in a CSV row, an image path outside the dataset, a caption with a control character other than
tab, newline or carriage return. A file of the wrong shape (no ``images``/``annotations`` array, bad CSV header,
invalid JSON) stops the load with an ``InputError``.
"""

from __future__ import annotations

import csv
import hashlib
import unicodedata
from pathlib import Path
from typing import Any, Iterator

from kclip.kg_loaders.base import KGLoader, SplitRatioOptions, collapse_blanks, hashed_split, strip_blanks
from kclip.kg_loaders.json_stream import iter_json_members
from kclip.platform.errors import InputError
from kclip.platform.records import CAPTION_OF, IMAGE_OF, ImageSource, Record, Reject, SourceRef, Split, Triplet

CSV_COLUMNS = ("image", "caption")

# (source, image entity id, image file name, caption) for one image-caption row
Pair = tuple[SourceRef, str, str, str]


class ImageTextOptions(SplitRatioOptions):
    images_dir: Path | None = None
    split: Split = "train"


class ImageTextLoader(KGLoader):
    format = "image-text"
    summary = "image-caption pairs: COCO Captions .json or a .csv with columns image,caption"
    Options = ImageTextOptions

    @classmethod
    def expects(cls) -> str:
        return "a COCO Captions .json file or a .csv file with columns image,caption"

    def input_files(self) -> list[Path]:
        if not self.path.is_file() or self.path.suffix.lower() not in (".json", ".csv"):
            raise InputError(self.path, None, f"not a .json or .csv file; expected {self.expects()}")
        return [self.path]

    def image_dirs(self) -> list[Path]:
        if self.options.images_dir is not None:
            return [self.options.images_dir]
        nested = self.path.parent / "images"
        return [nested] if nested.is_dir() else []

    def _records(self) -> Iterator[Record]:
        path = self.input_files()[0]
        pairs = self._coco_pairs(path) if path.suffix.lower() == ".json" else self._csv_pairs(path)
        for pair in pairs:
            if isinstance(pair, Reject):
                yield pair
            else:
                yield from self._pair_records(*pair)

    def _pair_records(self, source: SourceRef, image_id: str, image_file: str, caption: str) -> Iterator[Record]:
        image_path = self.dataset_file(image_file, source, under=self._images_folder(image_file))
        if isinstance(image_path, Reject):
            yield image_path
            return
        caption = normalise_caption(caption)
        caption_id = caption_entity_id(image_id, caption)
        yield from self.first_use(IMAGE_OF, source)
        yield from self.first_use(CAPTION_OF, source)
        yield from self.entity_once(source, image_id, modality="image", image=ImageSource(path=image_path))
        yield from self.entity_once(source, caption_id, modality="text", text=caption)
        split = self.options.split
        if self.options.split_ratios is not None:
            split = hashed_split(image_id, self.options.split_ratios)
        yield self.make(Triplet, source, head=image_id, relation=IMAGE_OF, tail=caption_id, split=split)
        yield self.make(Triplet, source, head=caption_id, relation=CAPTION_OF, tail=image_id, split=split)

    def _images_folder(self, name: str) -> Path:
        """The folder ``name`` is relative to: ``images_dir``, else beside PATH, else ``images/``."""
        if self.options.images_dir is not None:
            return self.options.images_dir
        beside, nested = self.path.parent, self.path.parent / "images"
        return nested if not (beside / name).exists() and (nested / name).exists() else beside

    # -- COCO Captions -------------------------------------------------------------------------

    def _coco_pairs(self, path: Path) -> Iterator[Pair | Reject]:
        files: dict[int | str, str] = {}  # image id -> file name
        held: list[tuple[SourceRef, Any]] = []  # annotations met before any image
        for key, line, value in iter_json_members(path, self.count_bytes, stream=("images", "annotations")):
            source = SourceRef(str(path), line)
            if key == "images":
                problem = _coco_image(value, files)
                if problem:
                    yield Reject(source=source, problem=problem)
            elif key == "annotations":
                if files:
                    yield _coco_annotation(source, value, files)
                else:
                    held.append((source, value))
        for source, value in held:
            yield _coco_annotation(source, value, files)

    # -- CSV -----------------------------------------------------------------------------------

    def _csv_pairs(self, path: Path) -> Iterator[Pair | Reject]:
        bad_lines: dict[int, int] = {}  # line -> offset of its first invalid UTF-8 byte
        reader = csv.reader(self._csv_lines(path, bad_lines))
        image_col, caption_col = _csv_header(path, next(reader, None))
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader, None)
            except csv.Error as exc:
                yield Reject(source=SourceRef(str(path), start), problem=f"malformed CSV row: {exc}")
                start = reader.line_num + 1
                continue
            if row is None:
                return
            source = SourceRef(str(path), start)
            bad = next((n for n in range(start, reader.line_num + 1) if n in bad_lines), None)
            start = reader.line_num + 1
            if bad is not None:
                yield Reject(source=source, problem=f"invalid UTF-8 at byte {bad_lines[bad]} of line {bad}")
            elif any(field.strip() for field in row):  # blank lines are skipped
                yield _csv_pair(source, row, image_col, caption_col)

    def _csv_lines(self, path: Path, bad_lines: dict[int, int]) -> Iterator[str]:
        """Decoded lines (BOM dropped) for the csv module; undecodable ones are noted, so their row
        is rejected."""
        for number, raw in self.raw_lines(path):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad_lines[number] = exc.start
                yield raw.decode("utf-8", "replace")


def _coco_image(image: Any, files: dict[int | str, str]) -> str | None:
    """Record one element of ``images`` in ``files``; a problem description when it is bad."""
    if not isinstance(image, dict):
        return f"an image must be a JSON object, got {type(image).__name__}"
    image_id, name = image.get("id"), image.get("file_name")
    if not _is_id(image_id):
        return f"image has no usable 'id' (an integer or string), got {image_id!r}"
    if not isinstance(name, str) or not name.strip():
        return f"image {image_id!r} has no 'file_name'"
    if files.get(image_id, name) != name:
        return f"image id {image_id!r} is listed again with another file_name {name!r}"
    files[image_id] = name
    return None


def _coco_annotation(source: SourceRef, annotation: Any, files: dict[int | str, str]) -> Pair | Reject:
    if not isinstance(annotation, dict):
        return Reject(source=source, problem=f"an annotation must be a JSON object, got {type(annotation).__name__}")
    for field in ("id", "image_id", "caption"):
        if field not in annotation:
            return Reject(source=source, problem=f"annotation has no {field!r}")
    ann_id, image_id, caption = annotation["id"], annotation["image_id"], annotation["caption"]
    if not _is_id(ann_id):
        return Reject(source=source, problem=f"annotation 'id' must be an integer or string, got {ann_id!r}")
    if not isinstance(caption, str) or not caption.strip():
        return Reject(source=source, problem=f"annotation {ann_id!r} has an empty caption")
    if not _is_id(image_id) or image_id not in files:
        return Reject(source=source,
                      problem=f"annotation {ann_id!r} names unknown image id {image_id!r} (not in 'images')")
    name = files[image_id]
    return source, f"image:{name}", name, caption


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool) and str(value) != ""


def _csv_header(path: Path, header: list[str] | None) -> tuple[int, int]:
    """Column positions of image and caption; a bad header spoils the whole file."""
    if header is None:
        raise InputError(path, None, "empty file; expected a header row naming the columns image,caption")
    columns = [c.strip().lower() for c in header]
    if not all(c in columns for c in CSV_COLUMNS):
        raise InputError(path, 1, f"the header must name the columns image and caption, got {header!r}")
    return columns.index("image"), columns.index("caption")


def _csv_pair(source: SourceRef, row: list[str], image_col: int, caption_col: int) -> Pair | Reject:
    if len(row) <= max(image_col, caption_col):
        needed = max(image_col, caption_col) + 1
        return Reject(source=source, problem=f"expected at least {needed} columns, got {len(row)}")
    image, caption = strip_blanks(row[image_col]), row[caption_col]
    if not image:
        return Reject(source=source, problem="empty image")
    if not caption.strip():
        return Reject(source=source, problem="empty caption")
    return source, f"image:{image}", image, caption


def normalise_caption(caption: str) -> str:
    """A caption as stored and hashed: Unicode NFC, blanks, tabs and line breaks collapsed to one space."""
    return collapse_blanks(unicodedata.normalize("NFC", caption))


def caption_entity_id(image_id: str, caption: str) -> str:
    """``caption:`` and 16 hex digits of the SHA-256 of the image id, a NUL and the (normalised)
    caption: the same for the same pair in any file or load, distinct for distinct pairs."""
    digest = hashlib.sha256(f"{image_id}\0{caption}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"caption:{digest[:16]}"


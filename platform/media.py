"""The content-addressed media store: image files named by the SHA-256 of their bytes.

Neo4j nodes hold only the key (``<sha256>.<ext>``) and the image's size; the bytes live here,
under ``<root>/<first two hex digits>/<key>``. Storing the same image twice is a no-op. An
entity that is a region of a larger image (a scene-graph object) gets the cropped region as its
own PNG, so training reads exactly the pixels the entity stands for.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from kclip.platform.records import ImageSource

_FORMAT_EXT = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


class BadImage(ValueError):
    """An image that is missing, unreadable, or whose box falls outside it."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int


@dataclass(frozen=True)
class StoredImage:
    key: str
    width: int
    height: int


def inspect_image(src: ImageSource) -> ImageInfo:
    """Check that the image (and its box) can be used; returns the size the entity will have."""
    if not src.path.is_file():
        raise BadImage(f"image file not found: {src.path}")
    try:
        with Image.open(src.path) as img:
            img.verify()  # reads the whole file: catches truncated or corrupt data
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise BadImage(f"unreadable image {src.path}: {exc}") from None
    return region_size(src, ImageInfo(width, height))


def region_size(src: ImageSource, whole: ImageInfo) -> ImageInfo:
    """The size of ``src``'s box (or of the whole image) once checked against the image's size."""
    if src.box is None:
        return whole
    x, y, w, h = src.box
    if x + w > whole.width or y + h > whole.height:
        raise BadImage(f"box {src.box} (x, y, w, h) lies outside the {whole.width}x{whole.height} image {src.path}")
    return ImageInfo(w, h)


class MediaStore:
    """Safe to use from several threads (loads store images from their writer threads)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        # The last few decoded source images: a scene graph cuts dozens of objects out of one
        # image, and its objects arrive together, so each image is decoded once, not per object.
        self._decoded: OrderedDict[Path, Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def put(self, src: ImageSource) -> StoredImage:
        """Store the image (or its box region) and return its key and size."""
        try:
            if src.box is None:
                data = src.path.read_bytes()
                with Image.open(io.BytesIO(data)) as img:
                    ext, (width, height) = _FORMAT_EXT.get(img.format or "", "img"), img.size
            else:
                data, width, height = _png(self._source(src.path).crop(_corners(src.box)))
                ext = "png"
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise BadImage(f"unreadable image {src.path}: {exc}") from None
        key = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        target = self.path(key)
        if not target.exists():
            _write_atomically(target, data)
        return StoredImage(key, width, height)

    def open(self, key: str) -> Image.Image:
        return Image.open(self.path(key))

    def _source(self, path: Path, keep: int = 4) -> Image.Image:
        with self._lock:
            if path in self._decoded:
                self._decoded.move_to_end(path)
                return self._decoded[path]
        with Image.open(path) as img:
            decoded = img.convert("RGB")  # convert() loads the pixels; the file can close
        with self._lock:
            self._decoded[path] = decoded
            while len(self._decoded) > keep:
                self._decoded.popitem(last=False)
        return decoded


def _corners(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return x, y, x + w, y + h


def _png(region: Image.Image) -> tuple[bytes, int, int]:
    buf = io.BytesIO()
    region.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), region.width, region.height


def _write_atomically(target: Path, data: bytes) -> None:
    # A crash mid-write must never leave a truncated file under a content hash.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

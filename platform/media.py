"""The content-addressed media store: image files named by the SHA-256 of their bytes.

Neo4j nodes hold only the key (``<sha256>.<ext>``) and the image's size; the bytes live here,
under ``<root>/<first two hex digits>/<key>``. Storing the same image twice is a no-op.

A region of a larger image (a scene-graph object, any boxed region) is a *reference*: its node
holds the source image's key and its box (``image_box``: x, y, w, h), and the source file is
stored once, as it was. The crop is made when the entity is read (``MediaStore.entity_image``):
by the trainer's featurizer and by the UI, each with its own cache. KGs loaded before regions
were references hold a PNG crop's key and no box; they read as whole images and keep working.

Images are checked before anything is stored (``check_image``): the whole compressed stream is
decoded, so a truncated or corrupt JPEG/PNG is a bad row at validation rather than a crash
later, and images over a pixel limit (decompression bombs) are refused from their header alone.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image, UnidentifiedImageError

from kclip.platform.records import ImageSource

_FORMAT_EXT = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}
# Pillow's own decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS, 1024 * 1024 * 1024 // 4 // 3):
# the default limit of ``check_image``, configurable with KCLIP_MAX_IMAGE_PIXELS.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
Box = tuple[int, int, int, int]  # x, y, w, h in pixels


class BadImage(ValueError):
    """An image that is missing, unreadable, too large, or whose box falls outside it."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str | None = None


@dataclass(frozen=True)
class StoredImage:
    key: str
    width: int
    height: int
    created: bool = field(default=False, compare=False)  # this call wrote the file (not in the store before)


def check_image(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ImageInfo:
    """Decode the whole image file once; its size and format, or ``BadImage`` saying what is wrong.

    JPEGs decode with DCT scaling (``draft``): every byte of the entropy-coded stream is still
    decoded, so truncation and corrupt data are caught, at about half the cost of full size.
    """
    if not path.is_file():
        raise BadImage(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            # Our own limit decides below; Pillow's warning (or its error at twice its limit,
            # caught as DecompressionBombError) must not reach the user as noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height, fmt = img.width, img.height, img.format
                if width * height > max_pixels:
                    raise BadImage(f"image {path} has {width}x{height} = {width * height:,} pixels, over the limit "
                                   f"of {max_pixels:,} (KCLIP_MAX_IMAGE_PIXELS): refused as a possible "
                                   "decompression bomb")
                if fmt == "JPEG":
                    img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                img.load()
    except BadImage:
        raise  # our own pixel limit, raised above (a ValueError too)
    except Image.DecompressionBombError as exc:
        raise BadImage(f"image {path} refused as a decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"unreadable image {path}: {exc}") from None
    return ImageInfo(width, height, fmt)


def region_size(src: ImageSource, whole: ImageInfo) -> ImageInfo:
    """The size of ``src``'s box (or of the whole image) once checked against the image's size."""
    if src.box is None:
        return whole
    x, y, w, h = src.box
    if x + w > whole.width or y + h > whole.height:
        raise BadImage(f"box {src.box} (x, y, w, h) lies outside the {whole.width}x{whole.height} image {src.path}")
    return ImageInfo(w, h, whole.format)


class MediaStore:
    """Safe to use from several threads (loads store images from their writer threads).

    ``max_image_pixels`` is the limit loads check images against (``check_image``).
    ``decoded_cache_bytes`` bounds the decoded source images kept for cutting regions: objects of
    one image tend to be read together (a UI page, an evaluation), and a decode costs far more
    than a crop.
    """

    def __init__(self, root: Path, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 decoded_cache_bytes: int = 256 << 20):
        self.root = Path(root)
        self.max_image_pixels = max_image_pixels
        self._decoded: OrderedDict[tuple[str, int], Image.Image] = OrderedDict()
        self._decoded_bytes = 0
        self._decoded_limit = decoded_cache_bytes
        self._sizes: dict[str, tuple[int, int]] = {}  # keys are content hashes: a size never changes
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def put_file(self, path: Path, info: ImageInfo | None = None) -> StoredImage:
        """Store an image file as it is (no re-encoding); ``info`` from ``check_image`` saves a header read."""
        try:
            data = path.read_bytes()
            if info is None:
                with Image.open(io.BytesIO(data)) as img:
                    info = ImageInfo(img.width, img.height, img.format)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise BadImage(f"unreadable image {path}: {exc}") from None
        key = f"{hashlib.sha256(data).hexdigest()}.{_FORMAT_EXT.get(info.format or '', 'img')}"
        target = self.path(key)
        created = not target.exists()
        if created:
            _write_atomically(target, data)
        return StoredImage(key, info.width, info.height, created)

    def entity_image(self, key: str, box: Sequence[int] | None = None, min_side: int | None = None) -> Image.Image:
        """An image entity's pixels as RGB: the stored image, or the ``box`` (x, y, w, h) cut from it.

        ``min_side`` (the model's input size) lets a JPEG decode at 1/2, 1/4 or 1/8 scale when the
        entity would still be at least that many pixels on its short side: the result is resized
        to the model's input anyway, and a reduced decode costs a fraction of a full one.
        """
        full = self._size(key)
        x, y, w, h = (int(v) for v in box) if box is not None else (0, 0, *full)
        scale = _reduction(min(w, h), min_side) if key.endswith(".jpg") else 1
        source = self._decoded_source(key, scale)
        if box is None:
            return source.copy()  # callers may modify it; the cached one must not change
        fx, fy = source.width / full[0], source.height / full[1]
        left, top = round(x * fx), round(y * fy)
        return source.crop((left, top, max(round((x + w) * fx), left + 1), max(round((y + h) * fy), top + 1)))

    def _size(self, key: str) -> tuple[int, int]:
        with self._lock:
            known = self._sizes.get(key)
        if known is None:
            with Image.open(self.path(key)) as img:  # the header only
                known = img.size
            with self._lock:
                self._sizes[key] = known
        return known

    def _decoded_source(self, key: str, scale: int) -> Image.Image:
        cache_key = (key, scale)
        with self._lock:
            if cache_key in self._decoded:
                self._decoded.move_to_end(cache_key)
                return self._decoded[cache_key]
        with Image.open(self.path(key)) as img:
            if scale > 1:
                img.draft("RGB", (-(-img.width // scale), -(-img.height // scale)))
            decoded = img.convert("RGB")  # convert() loads the pixels; the file can close
        size = decoded.width * decoded.height * 3
        with self._lock:
            if size <= self._decoded_limit and cache_key not in self._decoded:
                self._decoded[cache_key] = decoded
                self._decoded_bytes += size
                while self._decoded_bytes > self._decoded_limit:
                    _, old = self._decoded.popitem(last=False)
                    self._decoded_bytes -= old.width * old.height * 3
        return decoded


def _reduction(short_side: int, min_side: int | None) -> int:
    """The largest JPEG DCT reduction (1, 2, 4, 8) keeping ``short_side`` at least ``min_side``."""
    if not min_side:
        return 1
    return next((r for r in (8, 4, 2) if short_side // r >= min_side), 1)


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


def delete_media(media: MediaStore, keys: set[str]) -> int:
    """Delete the files of ``keys``, which no KG references any more (``kclip drop``); returns how
    many there were. Only names shaped like the store's keys (``<sha256>.<ext>``) are touched: keys
    come from Neo4j, which others can edit, and must never name a path outside the store."""
    deleted = 0
    for key in keys:
        digest, dot, ext = key.partition(".")
        if len(digest) != 64 or digest.strip("0123456789abcdef") or not dot or not ext.isalnum():
            continue
        try:
            media.path(key).unlink()
            deleted += 1
        except FileNotFoundError:
            pass
    return deleted

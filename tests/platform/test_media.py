"""The media store and image checks, on real JPEG and PNG files (photo-sized, not thumbnails)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kclip.platform.media import DEFAULT_MAX_IMAGE_PIXELS, BadImage, MediaStore, check_image


def photo(path: Path, size: tuple[int, int] = (800, 600), seed: int = 0, fmt: str = "JPEG") -> Path:
    """A textured 'photo' (noise over gradients) so the JPEG has a realistic size and entropy."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 37 + c) * 60 + np.cos(y / 23 - c) * 60 + 128 for c in range(3)], axis=-1)
    pixels = (base + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` pixels in a few bytes: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_whole_photo_passes_with_its_size_and_format(tmp_path):
    info = check_image(photo(tmp_path / "a.jpg"))
    assert (info.width, info.height, info.format) == (800, 600, "JPEG")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images_are_bad(tmp_path, fmt):
    path = photo(tmp_path / f"a.{fmt.lower()}", fmt=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="truncated|unreadable"):
        check_image(path)


def test_corrupt_bytes_and_non_images_are_bad(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "y.png").write_text("hello")
    for name in ("x.jpg", "y.png"):
        with pytest.raises(BadImage, match="unreadable"):
            check_image(tmp_path / name)
    with pytest.raises(BadImage, match="not found"):
        check_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize("side", [10_000, 30_000])  # over the limit, and over twice it (Pillow's own error)
def test_decompression_bombs_are_refused_from_the_header(tmp_path, side):
    path = png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(BadImage, match="decompression bomb"):
        check_image(path)
    assert side * side > DEFAULT_MAX_IMAGE_PIXELS


def test_the_pixel_limit_is_configurable(tmp_path):
    path = photo(tmp_path / "a.jpg", size=(200, 100))
    assert check_image(path, max_pixels=20_000).width == 200
    with pytest.raises(BadImage, match="20,000 pixels, over the limit of 19,999"):
        check_image(path, max_pixels=19_999)


def test_files_are_stored_once_as_they_are(tmp_path):
    media = MediaStore(tmp_path / "media")
    source = photo(tmp_path / "a.jpg")
    first, again = media.put_file(source), media.put_file(source, check_image(source))
    assert first == again and first.key.endswith(".jpg") and (first.width, first.height) == (800, 600)
    assert first.created and not again.created  # a refused load removes only the files it added
    assert media.path(first.key).read_bytes() == source.read_bytes()
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == [media.path(first.key)]


def test_regions_are_cut_when_read(tmp_path):
    media = MediaStore(tmp_path / "media")
    source = photo(tmp_path / "a.jpg", seed=3)
    key = media.put_file(source).key
    box = (700, 10, 100, 50)
    with Image.open(source) as img:
        expected = np.asarray(img.convert("RGB").crop((700, 10, 800, 60)))
    region = media.entity_image(key, box)
    assert region.size == (100, 50) and np.array_equal(np.asarray(region), expected)
    assert media.entity_image(key, None).size == (800, 600)  # a whole image, or a pre-reference crop file


def test_regions_decode_at_a_reduced_scale_when_the_model_needs_fewer_pixels(tmp_path):
    media = MediaStore(tmp_path / "media")
    key = media.put_file(photo(tmp_path / "a.jpg", seed=4)).key
    box = (100, 100, 400, 320)
    reduced = media.entity_image(key, box, min_side=80)  # 320 // 4 >= 80: a quarter-scale decode
    assert reduced.size == (100, 80)
    full = media.entity_image(key, box).resize(reduced.size, Image.BILINEAR)
    assert np.abs(np.asarray(reduced, dtype=float) - np.asarray(full, dtype=float)).mean() < 12
    assert media.entity_image(key, box, min_side=200).size == (400, 320)  # 320 // 2 < 200: full scale


def test_the_settings_default_pixel_limit_is_the_media_stores():
    from kclip.platform.settings import Settings

    assert Settings.model_fields["max_image_pixels"].default == DEFAULT_MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS

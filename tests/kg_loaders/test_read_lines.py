"""KGLoader.raw_lines reads blocks and splits them: the lines must be exactly a file iteration's."""

from __future__ import annotations

import gzip
import io
import random

import pytest

from kclip.kg_loaders.base import UTF8_BOM, _line_blocks
from kclip.kg_loaders.tsv import TsvLoader


def _random_bytes(rng: random.Random, n: int) -> bytes:
    # Mostly text, with line ends of every kind, long lines and a lone \r now and then.
    alphabet = [b"a", b"b", b" ", b"\t", b"\n", b"\r\n", b"\r", b"\xc3\xa9", b"x" * 50]
    return b"".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("block_size", [1, 7, 64, 1 << 20])
def test_line_blocks_split_like_file_iteration(seed, block_size):
    data = _random_bytes(random.Random(seed), 400)
    lines = [line for block in _line_blocks(io.BytesIO(data), block_size) for line in block]
    assert lines == list(io.BytesIO(data))


def test_a_line_longer_than_many_blocks_arrives_whole():
    data = b"x" * 10_000 + b"\nshort\n" + b"y" * 5_000
    lines = [line for block in _line_blocks(io.BytesIO(data), 100) for line in block]
    assert lines == [b"x" * 10_000 + b"\n", b"short\n", b"y" * 5_000]


@pytest.mark.parametrize("compress", [False, True])
def test_raw_lines_number_lines_drop_the_bom_and_count_bytes(tmp_path, compress):
    text = UTF8_BOM + b"".join(b"h%d\tr\tt%d\r\n" % (i, i) for i in range(50_000))
    path = tmp_path / ("kg.tsv.gz" if compress else "kg.tsv")
    path.write_bytes(gzip.compress(text) if compress else text)
    (tmp_path / "train.tsv").write_bytes(b"a\tr\tb\n")
    loader = TsvLoader(tmp_path, "kg")
    lines = list(loader.raw_lines(path))
    assert [n for n, _ in lines] == list(range(1, 50_001))
    assert lines[0][1] == b"h0\tr\tt0\r\n" and lines[-1][1] == b"h49999\tr\tt49999\r\n"
    assert loader.bytes_read == path.stat().st_size

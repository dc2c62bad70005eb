"""The Rust-backed CLIP tokenizer gives exactly open_clip's token ids."""

from __future__ import annotations

import random

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from kclip.models.tokenizer import FastCLIPTokenizer, fast_tokenizer

HARD = [
    "", "  ", "Don't STOP", "IT'S ſ's 'S 'ſ", "&amp;lt;b&amp;gt; &quot;q&quot;", "a &amp;amp;amp; b", "naïve café",
    "日本語のテキスト", "emoji 😀👍🏽 ok", "a" * 300, "word " * 100, "x1234.56 7e-3", "has <end_of_text> inside",
    "<start_of_text>x", "\t tabs\nnew  lines \r\n", "\x1b[31mred\x1b[0m", "nul\x00x\x07", "e\u0301", "Ǆemal",
    "İstanbul", "ﬁne", "a\u200db", "ÀÉÎÕÜ ß ẞ", "ΑΒΓ δεζ", "Привет мир", "مرحبا", "한국어", "—–‐", "$%^&*()",
    "‘quoted’ “double”", "mÃ©tier", "\u0345 x", "/film/film/genre", "Tom_Hanks (actor)",
]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Strings over ASCII (controls included), Latin/Greek/Cyrillic, CJK, emoji, Arabic and punctuation blocks."""
    rng = random.Random(seed)
    blocks = [(0, 127), (32, 127), (160, 1024), (0x4E00, 0x4E80), (0x1F300, 0x1F650), (0x0600, 0x06FF), (0x2000, 0x2070)]
    return ["".join(chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def pair() -> tuple[SimpleTokenizer, FastCLIPTokenizer]:
    return SimpleTokenizer(), FastCLIPTokenizer(SimpleTokenizer())


@pytest.mark.parametrize("context_length", [77, 16, 3])
def test_same_ids_as_open_clip(pair, context_length):
    slow, fast = pair
    texts = HARD + random_texts(3000)
    expected, got = slow(texts, context_length=context_length), fast(texts, context_length=context_length)
    assert got.dtype == torch.long and got.shape == expected.shape
    differing = [t for t, a, b in zip(texts, expected, got) if not torch.equal(a, b)]
    assert differing == []


def test_same_ids_on_wn18rr_entity_texts(pair, wn18rr_dir):
    slow, fast = pair
    lines = (wn18rr_dir / "entity2text.txt").read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t", 1)[1] for line in lines[::8]]
    assert torch.equal(fast(texts), slow(texts))
    assert fast.decode(fast.encode("a dog chasing a ball")) == slow.decode(slow.encode("a dog chasing a ball"))


def test_other_tokenizers_are_left_as_they_are():
    canonical = SimpleTokenizer(clean="canonicalize")
    assert fast_tokenizer(canonical) is canonical
    assert isinstance(fast_tokenizer(SimpleTokenizer()), FastCLIPTokenizer)

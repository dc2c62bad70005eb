"""CLIP's tokenizer with its BPE merges in Rust: the same token ids as open_clip's, 3.6x faster cold.

open_clip's ``SimpleTokenizer`` merges BPE pairs in pure Python, and a KG's first pass over its
entity texts (training's first epoch, every evaluation's candidate set, ``kclip embed``) spent
most of its time there. ``FastCLIPTokenizer`` keeps open_clip's cleaning and its word pattern
(the same ``regex`` object) and asks Hugging Face ``tokenizers``' BPE model, built from
open_clip's own vocabulary and merge list, for each word it has not met before. The test suite
checks the ids are identical. Other tokenizers (other cleaning, SigLIP's, HF towers') are
returned unchanged by ``fast_tokenizer``.

A Hugging Face text tower tokenises with its own tokenizer, read from the model's folder
(``hf_tokenizer``): open_clip's ``HFTokenizer``, padding with that tokenizer's pad id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from kclip.models.open_clip_lazy import HFTokenizer, SimpleTokenizer

# Printable ASCII and ordinary whitespace, no HTML entity: ftfy and unescaping leave such text as
# it is, so its cleaning is whitespace and case alone (most KG text; ftfy costs ~15 us a text).
_PLAIN = frozenset(map(chr, range(0x20, 0x7F))) - {"&"} | {"\t", "\n", "\r"}


class FastCLIPTokenizer:
    """Drop-in for an open_clip ``SimpleTokenizer`` with 'lower' cleaning: ``(texts, context_length) -> (N, L)``."""

    def __init__(self, slow: SimpleTokenizer):
        from tokenizers import models

        self.slow = slow
        self.context_length = slow.context_length
        self.sot, self.eot = slow.sot_token_id, slow.eot_token_id
        merges = sorted(slow.bpe_ranks, key=slow.bpe_ranks.__getitem__)
        self.bpe = models.BPE(vocab=dict(slow.encoder), merges=merges, end_of_word_suffix="</w>")
        # Each word's ids, as open_clip caches each word's merges; special tokens are words of their own.
        self.words: dict[str, list[int]] = {slow.decoder[i]: [i] for i in slow.all_special_ids}

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        length = context_length or self.context_length
        result = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot, *self.encode(text)[: length - 2], self.eot]  # truncated, it still ends in end-of-text
            result[row, : len(tokens)] = tokens
        return torch.from_numpy(result)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in self.slow.pat.findall(self._clean(text)):
            known = self.words.get(word)
            if known is None:
                known = self.words[word] = self._merge(word)
            ids += known
        return ids

    def decode(self, tokens: Sequence[int]) -> str:
        return self.slow.decode(tokens)

    def _clean(self, text: str) -> str:
        if text.isascii() and _PLAIN.issuperset(text):
            return " ".join(text.split()).lower()  # what open_clip's cleaning makes of it
        return self.slow.clean_fn(text)

    def _merge(self, word: str) -> list[int]:
        # CLIP's byte-to-unicode map leaves printable ASCII as it is, and words hold no spaces.
        mapped = word if word.isascii() and word.isprintable() else "".join(self.slow.byte_encoder[b] for b in word.encode())
        return [t.id for t in self.bpe.tokenize(mapped)]


def fast_tokenizer(tokenizer):
    """``tokenizer`` with its BPE in Rust where it is open_clip's plain CLIP tokenizer; else unchanged."""
    plain = (type(tokenizer) is SimpleTokenizer and tokenizer.reduction_fn is None
             and getattr(tokenizer.clean_fn, "__name__", "") == "_clean_lower")
    return FastCLIPTokenizer(tokenizer) if plain else tokenizer


def hf_tokenizer(folder: Path, context_length: int) -> HFTokenizer:
    """A Hugging Face model's own tokenizer from its local folder, through open_clip's wrapper:
    ``(texts, context_length) -> (N, L)`` ids padded with its pad id, truncated keeping the closing
    special token ([SEP] for BERT). Only local files: nothing is downloaded."""
    return HFTokenizer(str(folder), context_length=context_length, local_files_only=True)


def pad_id(tokenizer) -> int:
    """The id ``tokenizer`` pads with: its Hugging Face tokenizer's pad token, else 0 (CLIP's BPE)."""
    hf = getattr(tokenizer, "tokenizer", None)
    pad = getattr(hf, "pad_token_id", None)
    return 0 if pad is None else int(pad)

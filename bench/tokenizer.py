"""Tokenizer benchmark: kclip's Rust-backed CLIP tokenizer vs open_clip's, on a KG's entity texts.

    .venv/bin/python bench/tokenizer.py [--wn18rr ../shared/datasets/wn18rr]

Both start cold (no word seen yet), as at a run's first epoch or an evaluation's candidate set;
the ids are checked to be identical.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from open_clip.tokenizer import SimpleTokenizer

from common import DEFAULT_WN18RR, rate
from kclip.models.tokenizer import FastCLIPTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wn18rr", type=Path, default=DEFAULT_WN18RR)
    args = parser.parse_args()
    lines = (args.wn18rr / "entity2text.txt").read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t", 1)[1] for line in lines]
    out = {}

    def run(name: str, tokenizer) -> int:
        out[name] = tokenizer(texts)
        return len(texts)

    slow_rate, slow_s = rate(lambda: run("open_clip", SimpleTokenizer()))
    fast_rate, fast_s = rate(lambda: run("kclip", FastCLIPTokenizer(SimpleTokenizer())))
    assert torch.equal(out["open_clip"], out["kclip"]), "token ids differ"
    print(f"{len(texts):,} WN18RR entity texts, cold caches, identical ids")
    print(f"open_clip SimpleTokenizer {slow_rate:9,.0f} texts/s ({slow_s:.2f} s)")
    print(f"kclip FastCLIPTokenizer   {fast_rate:9,.0f} texts/s ({fast_s:.2f} s)")
    print(f"kclip / open_clip = {fast_rate / slow_rate:.1f}x")


if __name__ == "__main__":
    main()

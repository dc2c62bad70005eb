"""HF text tower benchmark: kclip-minilm (all-MiniLM-L6-v2) vs kclip-small's CLIP text tower, on CPU.

    .venv/bin/python bench/hf_text.py [--wn18rr ../shared/datasets/wn18rr] [--threads 2]

Reports the model's build time (imports done beforehand), parameters per tower, and per batch of
64 entity texts (WN18RR's, cut to 32 tokens as minilm.yaml does): tokenizing, encoding without
gradients (inference, evaluation) and forward + backward (training), the median of several batches.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from common import DEFAULT_WN18RR
from kclip.models.clip_factory import create_clip
from kclip.models.encoders import encode_text_tokens

BATCH, TOKENS, REPEATS = 64, 32, 5


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(name: str, texts: list[str]) -> None:
    built = time.perf_counter()
    model, _, _, tokenizer = create_clip(name)
    built = time.perf_counter() - built
    count = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
    # The text tower is all but the image tower (CLIP keeps its token embeddings outside `transformer`).
    params = {"text": count(model) - count(model.visual), "image": count(model.visual), "all": count(model)}
    batches = [texts[i * BATCH:(i + 1) * BATCH] for i in range(REPEATS)]
    tokenize = [seconds(lambda b=b: tokenizer(b, context_length=TOKENS)) for b in batches]
    ids = [tokenizer(b, context_length=TOKENS) for b in batches]
    model.eval()
    with torch.no_grad():
        encode_text_tokens(model, ids[0])  # warm-up
        encode = [seconds(lambda x=x: encode_text_tokens(model, x)) for x in ids]
    model.train()
    train = [seconds(lambda x=x: encode_text_tokens(model, x).pooled.sum().backward()) for x in ids]
    ms = lambda values: f"{1000 * statistics.median(values):.0f} ms"  # noqa: E731
    print(f"{name}: built in {built:.1f} s; parameters (M) " + ", ".join(f"{k} {v:.1f}" for k, v in params.items())
          + f"; per {BATCH} texts: tokenize {ms(tokenize)}, encode {ms(encode)}, forward+backward {ms(train)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wn18rr", type=Path, default=DEFAULT_WN18RR)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = (args.wn18rr / "entity2text.txt").read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t", 1)[1] for line in lines[: BATCH * REPEATS]]
    print(f"{torch.get_num_threads()} CPU threads, {BATCH} WN18RR entity texts per batch, {TOKENS} tokens at most")
    for name in ("kclip-minilm", "kclip-small"):
        bench(name, texts)


if __name__ == "__main__":
    main()

"""Small KGs on disk for tests that need a real KG in Neo4j."""

from __future__ import annotations

from pathlib import Path

# A ring a0 -> a1 -> ... -> a9 -> a0 ("next"), plus hub edges h -> a_i ("has").
RING = [(f"a{i}", "next", f"a{(i + 1) % 10}") for i in range(10)]
HUB = [("h", "has", f"a{i}") for i in range(10)]


def write_tsv_kg(directory: Path, train, dev=(), test=()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        if rows:
            (directory / name).write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))
    entities = sorted({e for rows in (train, dev, test) for h, _, t in rows for e in (h, t)})
    (directory / "entity2text.txt").write_text("".join(f"{e}\tthe entity {e}\n" for e in entities))
    return directory

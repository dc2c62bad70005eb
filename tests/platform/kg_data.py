"""Generated tsv KGs and duplicate checks for the platform tests.

    from kg_data import write_dataset, triplet_counts      # tests/platform is on sys.path under pytest
"""

from __future__ import annotations

import random
from pathlib import Path


def write_dataset(directory: Path, entities: int, triplets: int, seed: int = 0) -> Path:
    """A tsv KG (train split only) of ``triplets`` distinct random triplets over ``entities`` entities."""
    rng = random.Random(seed)
    names = [f"e{i}" for i in range(entities)]
    rows: set[tuple[str, str, str]] = set()
    while len(rows) < triplets:
        rows.add((rng.choice(names), f"r{rng.randrange(11)}", rng.choice(names)))
    directory.mkdir(parents=True)
    (directory / "train.tsv").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in sorted(rows)))
    (directory / "entity2text.txt").write_text("".join(f"{e}\ttext of {e}\n" for e in names))
    return directory


def triplet_counts(store, kg: str) -> tuple[int, int]:
    """(triplets, distinct (head, relation, tail, split)) of a KG: equal when nothing is doubled."""
    r = store.run("MATCH (h:Entity {kg: $kg})-[t:TRIPLET]->(x:Entity) "
                  "RETURN count(t) AS n, count(DISTINCT [h.id, t.rel, x.id, t.split]) AS d", kg=kg)[0]
    return r["n"], r["d"]


def write_entities_only(store, kg: str, names: list[str]) -> None:
    """The worst state for two loads: entities but no triplets (a load stopped between the two)."""
    store.ensure_kg(kg)
    for start in range(0, len(names), 5000):
        rows = [{"id": e, "props": {"modality": "text", "text": f"text of {e}"}} for e in names[start:start + 5000]]
        store.write_entities(kg, rows, fresh=True)
    assert store.has_entities(kg) and not store.has_triplets(kg)

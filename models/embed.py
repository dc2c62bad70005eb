"""``kclip embed``: write each entity's embedding from a trained run onto its Neo4j node, with a
vector index, so the UI (and any Cypher user) can ask for an entity's multimodal neighbours."""

from __future__ import annotations

from dataclasses import dataclass

from kclip.models.inference import LoadedRun, embed_kg
from kclip.platform.graph_store import GraphStore
from kclip.platform.kg_lock import DEFAULT_WAIT_S, kg_write_lock
from kclip.platform.progress import Progress


@dataclass(frozen=True)
class EmbedSummary:
    kg: str
    run: str
    entities: int
    dimensions: int


def write_embeddings(run: LoadedRun, store: GraphStore, kg: str, batch_size: int = 2000,
                     progress: bool = True, wait: float = DEFAULT_WAIT_S) -> EmbedSummary:
    """Embed the KG's entities, then write them holding the KG's write lock (waiting up to ``wait`` s)."""
    embeddings = embed_kg(run, store, kg, progress=progress)
    vectors = embeddings.vectors.numpy()
    with (kg_write_lock(store, kg, wait=wait),
          Progress(f"writing {kg} embeddings", total=len(vectors), unit="entities", enabled=progress) as bar):
        for start in range(0, len(vectors), batch_size):
            store.write_embeddings(kg, embeddings.idx[start:start + batch_size], vectors[start:start + batch_size])
            bar.advance(min(batch_size, len(vectors) - start))
        store.ensure_vector_index(kg, vectors.shape[1])
    return EmbedSummary(kg, run.name, len(vectors), int(vectors.shape[1]))

"""``kclip embed``: write each entity's embedding from a trained run onto its Neo4j node, with a
vector index, so the UI (and any Cypher user) can ask for an entity's multimodal neighbours.

The KG node records which run and checkpoint step wrote them (``GraphStore.embedding_origin``):
Predict then reads the vectors back instead of encoding every entity, and Neighbours embeds a
free-text or image query with that same run."""

from __future__ import annotations

from dataclasses import dataclass

from kclip.models.inference import LoadedRun, embed_kg
from kclip.platform.graph_store import EmbeddingOrigin, GraphStore
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
    # Read before encoding: a load that lands meanwhile changes the version, so the record goes
    # stale (Predict encodes for itself) rather than vouching for entities it never saw.
    content_version = store.content_version(kg)
    embeddings = embed_kg(run, store, kg, progress=progress)
    vectors = embeddings.vectors.numpy()
    with (kg_write_lock(store, kg, wait=wait),
          Progress(f"writing {kg} embeddings", total=len(vectors), unit="entities", enabled=progress) as bar):
        store.clear_embedding_origin(kg)  # until the last batch is in, no run vouches for the vectors
        for start in range(0, len(vectors), batch_size):
            store.write_embeddings(kg, embeddings.idx[start:start + batch_size], vectors[start:start + batch_size])
            bar.advance(min(batch_size, len(vectors) - start))
        store.ensure_vector_index(kg, vectors.shape[1])
        store.record_embedding_origin(kg, EmbeddingOrigin(run.name, run.step, int(vectors.shape[1]), content_version))
    return EmbedSummary(kg, run.name, len(vectors), int(vectors.shape[1]))

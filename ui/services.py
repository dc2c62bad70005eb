"""Everything the explorer reads, as typed functions over kclip's platform and models.

Pages call these and nothing else: no Cypher, no drivers, no registry sessions in a page. The Neo4j
driver, the run registry and each loaded predictor are cached as resources (one per settings, one
per run); read results are cached as data with a short TTL, so a KG loaded while the app runs
shows up within a minute (or at once after "Clear cache" in Streamlit's menu).

Cache keys: every cached read takes the settings' ``key`` first, so two configurations (say,
two test sessions in one process) never share results.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import streamlit as st
from PIL import Image

from kclip.platform.errors import InputError, KclipError, NotFoundError
from kclip.platform.graph_store import (Edge, EdgeCount, EmbeddingOrigin, EntityDetail, EntityRow, Expansion,
                                        GraphStore, KGStats, RelationRow, SearchPage)
from kclip.platform.media import MediaStore
from kclip.platform.neo4j_client import connect
from kclip.platform.registry import Comparison, Registry, Run
from kclip.platform.settings import Settings, load_settings

if TYPE_CHECKING:  # torch is imported only when a page predicts
    from kclip.models.predict import Predictor, RelationPrediction, TailPrediction

DATA_TTL = 60  # seconds a read result is reused
RUNS_TTL = 10  # the registry changes while training runs

class NoEmbeddings(KclipError):
    """The KG (or this entity) has no embedding yet: ``kclip embed`` has not been run for it."""


@dataclass(frozen=True)
class RunInfo:
    name: str
    kg: str
    status: str
    step: int
    created_at: dt.datetime


@dataclass(frozen=True)
class EdgeGroup:
    """The triplets of one entity that share a relation and a direction."""

    outgoing: bool
    relation: str
    edges: tuple[Edge, ...]


# -- resources ---------------------------------------------------------------------------------

def settings() -> Settings:
    # Read on every script run, not lru-cached: cheap, and KCLIP_* may change between runs (tests).
    return load_settings()


def _key(s: Settings) -> str:
    return "|".join(map(str, (s.bolt_uri, s.neo4j_user, s.neo4j_database, s.home, s.media_root, s.registry)))


def store() -> GraphStore:
    s = settings()
    return _store(_key(s), s)


@st.cache_resource(show_spinner="Connecting to Neo4j…")
def _store(key: str, _settings: Settings) -> GraphStore:
    # One verified driver per configuration, shared by all sessions; the driver reconnects by itself.
    # Read-only: every query runs in a read-access transaction, so Neo4j refuses any write.
    return GraphStore(connect(_settings), _settings.neo4j_database, read_only=True)


@st.cache_resource(show_spinner=False)
def _registry(url: str) -> Registry:
    return Registry(url)


# -- knowledge graphs --------------------------------------------------------------------------

def list_kgs() -> list[str]:
    return _list_kgs(_key(settings()))


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _list_kgs(key: str) -> list[str]:
    return sorted(store().list_kgs())


def kg_stats(kg: str) -> KGStats:
    return _kg_stats(_key(settings()), kg)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _kg_stats(key: str, kg: str) -> KGStats:
    return store().stats(kg)


def relations(kg: str) -> list[RelationRow]:
    return _relations(_key(settings()), kg)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _relations(key: str, kg: str) -> list[RelationRow]:
    return sorted(store().relations(kg), key=lambda r: r.name)


# -- entities ----------------------------------------------------------------------------------

def search_entities(kg: str, text: str, limit: int = 20) -> list[tuple[EntityRow, float]]:
    """The first ``limit`` matches of ``search_page``, best first; an empty query finds nothing."""
    return search_page(kg, text, 0, limit).hits


def sample_entities(kg: str, limit: int = 12) -> list[EntityRow]:
    return _sample(_key(settings()), kg, limit)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _sample(key: str, kg: str, limit: int) -> list[EntityRow]:
    return store().sample_entities(kg, ("text", "image"), limit)


def entity(kg: str, entity_id: str) -> EntityDetail:
    """One entity; raises ``NotFoundError`` (a ``KclipError``) when the KG has no such id."""
    return _entity(_key(settings()), kg, entity_id)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _entity(key: str, kg: str, entity_id: str) -> EntityDetail:
    return store().entity(kg, entity_id)


def entity_triplets(kg: str, entity_id: str, limit: int = 300) -> list[Edge]:
    return _triplets(_key(settings()), kg, entity_id, limit)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _triplets(key: str, kg: str, entity_id: str, limit: int) -> list[Edge]:
    return store().entity_triplets(kg, entity_id, limit)


def group_edges(edges: list[Edge]) -> list[EdgeGroup]:
    """Edges grouped by (direction, relation): outgoing first, relations alphabetical."""
    groups: dict[tuple[bool, str], list[Edge]] = {}
    for edge in edges:
        groups.setdefault((edge.outgoing, edge.relation), []).append(edge)
    ordered = sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))
    return [EdgeGroup(out, rel, tuple(sorted(es, key=lambda e: e.other.idx))) for (out, rel), es in ordered]


def image_path(key: str | None) -> Path | None:
    """The media-store file for an image key, or None when there is none on this machine."""
    if not key:
        return None
    path = MediaStore(settings().media_root).path(key)
    return path if path.is_file() else None


def entity_image(row: EntityRow) -> str | bytes | None:
    """What ``st.image`` shows for an image entity: its stored file, or its region cut from the
    source image (PNG bytes, cached); None when the file is not in this machine's media store."""
    path = image_path(row.image)
    if path is None or row.image_box is None:
        return str(path) if path is not None else None
    return _region_png(str(settings().media_root), row.image, row.image_box)


@st.cache_data(max_entries=1024, show_spinner=False)
def _region_png(media_root: str, key: str, box: tuple[int, int, int, int]) -> bytes:
    region = _media(media_root).entity_image(key, box)
    buffer = io.BytesIO()
    region.save(buffer, format="PNG")
    return buffer.getvalue()


@st.cache_resource(show_spinner=False)
def _media(media_root: str) -> MediaStore:
    # One store per root, so its decoded-source cache serves every object of a scene on a page.
    return MediaStore(Path(media_root))


# -- runs and predictions ----------------------------------------------------------------------

def runs_for_kg(kg: str) -> list[RunInfo]:
    """Registered runs trained on ``kg``, newest first."""
    return [r for r in _runs(_key(settings())) if r.kg == kg]


@st.cache_data(ttl=RUNS_TTL, show_spinner=False)
def _runs(key: str) -> list[RunInfo]:
    runs = _registry(settings().registry).list_runs()
    return [RunInfo(r.name, r.kg, r.status, r.step, r.created_at) for r in runs]


def predictor(run_name: str) -> "Predictor":
    s = settings()
    return _predictor(_key(s), run_name)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _predictor(key: str, run_name: str) -> "Predictor":
    try:
        from kclip.models.predict import Predictor
    except ImportError as exc:
        raise KclipError(f"prediction is not available in this installation ({exc})") from None
    return Predictor.from_run(settings(), run_name, store(), device="cpu")


def predict_tails(run: str, kg: str, head_id: str, relation: str, k: int = 10) -> list["TailPrediction"]:
    return _predict(_key(settings()), run, "tails", kg, head_id, relation, k)


def predict_heads(run: str, kg: str, relation: str, tail_id: str, k: int = 10) -> list["TailPrediction"]:
    return _predict(_key(settings()), run, "heads", kg, relation, tail_id, k)


def predict_relations(run: str, kg: str, head_id: str, tail_id: str, k: int = 10) -> list["RelationPrediction"]:
    return _predict(_key(settings()), run, "relations", kg, head_id, tail_id, k)


@st.cache_data(ttl=DATA_TTL, show_spinner="Predicting…")
def _predict(key: str, run: str, what: str, *args: Any) -> list[Any]:
    # A checkpoint never changes, so (run, question) fixes the answer; the TTL bounds memory.
    return getattr(predictor(run), what)(*args)


# -- predict and neighbours: embeddings read back, searched by entity, text or image -----------

# The space looks collapsed when the mean cosine of a fixed sample of entity pairs is above this.
# Unrelated entities should sit apart: random directions average ~0, a trained CLIP ~0.2-0.5. When
# every vector points the same way (an untrained or collapsed tower, one vector written for all)
# the mean nears 1 and any neighbour list is arbitrary. A narrow top-k alone is no such sign:
# near-duplicates (one object in ten photos) are rightly within 0.01 of each other.
COLLAPSED_MEAN_COSINE = 0.95
COLLAPSE_SAMPLE = 200  # entities; 19,900 pairs


class NoQueryModel(KclipError):
    """The KG's embeddings name no run, so nothing can embed a free-text or image query into their space."""


def embedding_origin(kg: str) -> EmbeddingOrigin | None:
    """The run (and checkpoint step) whose ``kclip embed`` wrote the KG's embeddings, if recorded."""
    return _embedding_origin(_key(settings()), kg)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _embedding_origin(key: str, kg: str) -> EmbeddingOrigin | None:
    return store().embedding_origin(kg)


def nearest_to_entity(kg: str, entity_id: str, k: int = 10, modality: str | None = None) -> list[tuple[EntityRow, float]]:
    """The entity's nearest neighbours (cosine, best first), only ``modality`` ones when given;
    ``NoEmbeddings`` when the KG has no vector index or the entity no embedding."""
    return _nearest_to_entity(_key(settings()), kg, entity_id, k, modality)


@st.cache_data(ttl=DATA_TTL, show_spinner="Searching the vector index…")
def _nearest_to_entity(key: str, kg: str, entity_id: str, k: int, modality: str | None) -> list[tuple[EntityRow, float]]:
    vector = store().entity_embedding(kg, entity_id)
    if vector is None:
        raise NoEmbeddings(f"entity {entity_id!r} of KG {kg!r} has no embedding yet")
    return _nearest(kg, vector, k, modality, exclude=(entity_id,))


def nearest_to_text(kg: str, text: str, k: int = 10, modality: str | None = None) -> list[tuple[EntityRow, float]]:
    """Entities nearest to a free text embedded by the run that embedded the KG (``NoQueryModel`` if none is recorded)."""
    return _nearest_to_text(_key(settings()), kg, text.strip(), k, modality)


@st.cache_data(ttl=DATA_TTL, show_spinner="Embedding the text and searching…")
def _nearest_to_text(key: str, kg: str, text: str, k: int, modality: str | None) -> list[tuple[EntityRow, float]]:
    return _nearest(kg, _query_predictor(kg).text_query(kg, text), k, modality)


def nearest_to_image(kg: str, data: bytes, k: int = 10, modality: str | None = None,
                     name: str = "the uploaded image") -> list[tuple[EntityRow, float]]:
    """Entities nearest to an image (a file's bytes) embedded by the run that embedded the KG."""
    return _nearest_to_image(_key(settings()), kg, data, k, modality, name)


@st.cache_data(ttl=DATA_TTL, max_entries=64, show_spinner="Embedding the image and searching…")
def _nearest_to_image(key: str, kg: str, data: bytes, k: int, modality: str | None,
                      name: str) -> list[tuple[EntityRow, float]]:
    return _nearest(kg, _query_predictor(kg).image_query(kg, _decode_image(data, name)), k, modality)


def _query_predictor(kg: str) -> "Predictor":
    origin = store().embedding_origin(kg)
    if origin is None:
        raise NoQueryModel(f"KG {kg!r} has no record of the run that embedded it (embedded by an older kclip, "
                           f"or not at all), so a query cannot be embedded into its space; embed it again: "
                           f"`kclip embed --run RUN --kg {kg}`")
    return predictor(origin.run)


def _nearest(kg: str, vector: np.ndarray, k: int, modality: str | None,
             exclude: tuple[str, ...] = ()) -> list[tuple[EntityRow, float]]:
    try:
        return store().nearest_by_vector(kg, vector, k, modality, exclude)
    except NotFoundError as exc:  # the KG's vector index is missing (never built, or dropped)
        raise NoEmbeddings(str(exc)) from None


def _decode_image(data: bytes, name: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > settings().max_image_pixels:
                raise InputError(name, None, f"{image.width}x{image.height} pixels is over the limit of "
                                             f"{settings().max_image_pixels:,} (KCLIP_MAX_IMAGE_PIXELS)")
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise InputError(name, None, f"not an image Pillow can read ({exc})") from None


def mean_pair_cosine(kg: str) -> float | None:
    """Mean cosine similarity of the pairs in a fixed sample of the KG's embeddings (None: fewer than 2)."""
    return _mean_pair_cosine(_key(settings()), kg)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _mean_pair_cosine(key: str, kg: str) -> float | None:
    vectors = store().embedding_sample(kg, COLLAPSE_SAMPLE)
    n = len(vectors)
    if n < 2:
        return None
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T  # (n, n)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def candidate_source(run: str, kg: str) -> str:
    """Where the run's candidate embeddings for ``kg`` came from: "neo4j" (``kclip embed``'s vectors,
    written by this run at this step) or "encoded" (by the run itself, on first use)."""
    return predictor(run).embeddings(kg).source


def thumbnail_url(row: EntityRow, side: int = 64) -> str | None:
    """A small PNG of an image entity as a ``data:`` URL (table image columns take those); None for
    a text entity, or an image whose file is not in this machine's media store."""
    if row.modality != "image" or image_path(row.image) is None:
        return None
    return _thumbnail_url(str(settings().media_root), row.image, row.image_box, side)


@st.cache_data(max_entries=4096, show_spinner=False)
def _thumbnail_url(media_root: str, key: str, box: tuple[int, int, int, int] | None, side: int) -> str:
    image = _media(media_root).entity_image(key, box, min_side=side)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# -- runs page: the registry's runs, curves, evaluations and comparisons; runs and embeddings per KG --

@dataclass(frozen=True)
class RunSummary:
    """One registered run as the Runs page lists it (times in UTC)."""

    name: str
    kg: str
    status: str
    config_name: str | None  # the bundled config or file it came from; None for runs older than that record
    step: int
    max_steps: int | None
    started: dt.datetime
    last_update: dt.datetime
    parent: str | None  # the run or weights file it started from (``--init-from``, ``pretrained``)
    config: dict[str, Any]

    @property
    def duration(self) -> dt.timedelta:
        """Start to the last registry write: the whole run once it ended, the time so far while it runs."""
        return self.last_update - self.started


@dataclass(frozen=True)
class EvaluationRecord:
    kg: str
    split: str
    step: int
    created_at: dt.datetime
    metrics: dict[str, float]


@dataclass(frozen=True)
class VariantRecord:
    variant: str
    run: str  # "-" when the variant was not trained (``note`` says why)
    metrics: dict[str, float]
    note: str
    seeds: tuple[int, ...] = ()  # one run per seed; ``metrics`` are their means


@dataclass(frozen=True)
class ComparisonRecord:
    """One ``kclip compare``: the shared config and each variant's run and metrics, in the order compared."""

    name: str
    kg: str
    split: str
    created_at: dt.datetime
    config: dict[str, Any]
    variants: tuple[VariantRecord, ...]


@dataclass(frozen=True)
class KGEmbeddings:
    """A KG's vector index: its dimension, and the run whose ``kclip embed`` wrote it when recorded."""

    dimensions: int
    origin: EmbeddingOrigin | None
    stale: bool  # the KG was loaded again after the embeddings were written


def all_runs() -> list[RunSummary]:
    """Every registered run, newest first."""
    return _run_summaries(_key(settings()))


@st.cache_data(ttl=RUNS_TTL, show_spinner=False)
def _run_summaries(key: str) -> list[RunSummary]:
    return [_run_summary(r) for r in _registry(settings().registry).list_runs()]


def _run_summary(run: Run) -> RunSummary:
    return RunSummary(run.name, run.kg, run.status, run.config.get("name"), run.step, run.config.get("max_steps"),
                      _utc(run.created_at), _utc(run.updated_at), run.parent, run.config)


def _utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes (the UTC the registry wrote); other databases aware ones.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def run_counts() -> dict[str, int]:
    """How many registered runs trained on each KG."""
    counts: dict[str, int] = {}
    for run in all_runs():
        counts[run.kg] = counts.get(run.kg, 0) + 1
    return counts


def run_metrics(name: str) -> list[tuple[int, str, float]]:
    """Everything the run logged, as (step, metric, value) by step: ``train/<term>`` losses, ``lr``, speed."""
    return _run_metrics(_key(settings()), name)


@st.cache_data(ttl=RUNS_TTL, show_spinner=False)
def _run_metrics(key: str, name: str) -> list[tuple[int, str, float]]:
    return _registry(settings().registry).metrics(name)


def run_evaluations(name: str) -> list[EvaluationRecord]:
    """The run's evaluations (``kclip eval``, ``eval_split``, ``kclip compare``), newest first."""
    return _run_evaluations(_key(settings()), name)


@st.cache_data(ttl=RUNS_TTL, show_spinner=False)
def _run_evaluations(key: str, name: str) -> list[EvaluationRecord]:
    found = _registry(settings().registry).evaluations(name)
    return [EvaluationRecord(e.kg, e.split, e.step, _utc(e.created_at), dict(e.metrics)) for e in reversed(found)]


def comparisons(kg: str | None = None) -> list[ComparisonRecord]:
    """Recorded ``kclip compare`` results, newest first; only those on ``kg`` when given."""
    return _comparisons(_key(settings()), kg)


@st.cache_data(ttl=RUNS_TTL, show_spinner=False)
def _comparisons(key: str, kg: str | None) -> list[ComparisonRecord]:
    return [_comparison_record(c) for c in _registry(settings().registry).comparisons(kg)]


def _comparison_record(c: Comparison) -> ComparisonRecord:
    variants = tuple(VariantRecord(v["variant"], v["run"], dict(v["metrics"]), v.get("note", ""),
                                   tuple(v.get("seeds", ()))) for v in c.results)
    return ComparisonRecord(c.name, c.kg, c.split, _utc(c.created_at), c.config, variants)


def kg_embeddings(kg: str) -> KGEmbeddings | None:
    """The KG's vector index and who wrote it; None when ``kclip embed`` never ran for the KG."""
    return _kg_embeddings(_key(settings()), kg)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _kg_embeddings(key: str, kg: str) -> KGEmbeddings | None:
    dimensions = store().vector_index_dimensions(kg)  # one SHOW VECTOR INDEXES: no vectors read
    if dimensions is None:
        return None
    origin = embedding_origin(kg)
    stale = bool(origin and origin.content_version and origin.content_version != store().content_version(kg))
    return KGEmbeddings(dimensions, origin, stale)


# -- entity graph: true triplet counts, pages of one group, canvas expansion (Explore) ---------

def edge_counts(kg: str, entity_id: str) -> list[EdgeCount]:
    """The entity's triplets counted by (direction, relation), however many: outgoing first."""
    return _edge_counts(_key(settings()), kg, entity_id)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _edge_counts(key: str, kg: str, entity_id: str) -> list[EdgeCount]:
    return store().entity_edge_counts(kg, entity_id)


def edge_page(kg: str, entity_id: str, relation: str, outgoing: bool, skip: int, limit: int) -> list[Edge]:
    """Triplets ``skip .. skip + limit`` of one (direction, relation) group, neighbours in idx order."""
    return _edge_page(_key(settings()), kg, entity_id, relation, outgoing, skip, limit)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _edge_page(key: str, kg: str, entity_id: str, relation: str, outgoing: bool, skip: int, limit: int) -> list[Edge]:
    return store().entity_edges(kg, entity_id, relation, outgoing, skip, limit)


def expand(kg: str, entity_ids: Sequence[str], relations: Sequence[str] | None = None, skip: int = 0,
           limit: int = 100) -> list[Expansion]:
    """Up to ``limit`` triplets of each entity after its first ``skip``, of ``relations`` only
    (None: all), with each entity's total: one Neo4j round trip however many ids."""
    wanted = None if relations is None else tuple(sorted(relations))
    return _expand(_key(settings()), kg, tuple(entity_ids), wanted, skip, limit)


@st.cache_data(ttl=DATA_TTL, max_entries=512, show_spinner=False)
def _expand(key: str, kg: str, entity_ids: tuple[str, ...], relations: tuple[str, ...] | None, skip: int,
            limit: int) -> list[Expansion]:
    return store().expand(kg, entity_ids, relations, skip=skip, limit=limit)


# -- entity search: every match of the KG, paged; the last word as a prefix (issue 9) --------------

def search_page(kg: str, text: str, skip: int = 0, limit: int = 25) -> SearchPage:
    """Matches ``skip .. skip + limit`` of the KG's entities for ``text`` and how many match in all
    (``GraphStore.search_entities``: every word must match, the last one as a prefix too)."""
    return _search_page(_key(settings()), kg, " ".join(text.split()), skip, limit)


@st.cache_data(ttl=DATA_TTL, max_entries=512, show_spinner=False)
def _search_page(key: str, kg: str, text: str, skip: int, limit: int) -> SearchPage:
    return store().search_entities(kg, text, limit=limit, skip=skip)

"""Everything the explorer reads, as typed functions over kclip's platform and models.

Pages call these and nothing else: no Cypher, no drivers, no registry sessions in a page. The Neo4j
driver, the run registry and each loaded predictor are cached as resources (one per settings, one
per run); read results are cached as data with a short TTL, so a KG loaded while the app runs
shows up within a minute (or at once after "Clear cache" in Streamlit's menu).

Cache keys: every cached read takes the settings' ``key`` first, so two configurations (say,
two test sessions in one process) never share results.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from kclip.platform.errors import KclipError, NotFoundError
from kclip.platform.graph_store import Edge, EntityDetail, EntityRow, GraphStore, KGStats, RelationRow
from kclip.platform.media import MediaStore
from kclip.platform.neo4j_client import connect
from kclip.platform.registry import Registry
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
    return GraphStore(connect(_settings), _settings.neo4j_database)


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
    """Full-text matches, best first; an empty query finds nothing."""
    if not text.strip():
        return []
    return _search(_key(settings()), kg, text.strip(), limit)


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _search(key: str, kg: str, text: str, limit: int) -> list[tuple[EntityRow, float]]:
    return store().search_entities(kg, text, limit)


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


# -- embeddings --------------------------------------------------------------------------------

def similar_entities(kg: str, entity_id: str, k: int = 10) -> list[tuple[EntityRow, float]]:
    """Nearest entities by embedding; raises ``NoEmbeddings`` when ``kclip embed`` has not been run."""
    found = _similar(_key(settings()), kg, entity_id, k)
    if not found:
        # The query only reaches the index for an embedded entity: no rows means no embedding.
        raise NoEmbeddings(f"entity {entity_id!r} of KG {kg!r} has no embedding yet")
    return found


@st.cache_data(ttl=DATA_TTL, show_spinner=False)
def _similar(key: str, kg: str, entity_id: str, k: int) -> list[tuple[EntityRow, float]]:
    try:
        return store().similar_entities(kg, entity_id, k)
    except NotFoundError as exc:  # the KG's vector index is missing (never built, or dropped)
        raise NoEmbeddings(str(exc)) from None


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

"""Streamlit pieces the pages share: the current KG, error display, entity labels, cards and pickers.

Data comes from ``services`` only; nothing here queries anything itself.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

import streamlit as st
from neo4j.exceptions import ServiceUnavailable, SessionExpired

from kclip.platform.errors import KclipError
from kclip.ui import services
from kclip.ui.services import EntityRow

KG_STATE = "kg"  # session-state key of the current KG (the URL's ?kg= wins when present)
PAGES = {  # page files, relative to app.py, for st.page_link / st.switch_page
    "kgs": "views/knowledge_graphs.py",
    "explore": "views/explore.py",
    "predict": "views/predict.py",
    "neighbours": "views/neighbours.py",
    "runs": "views/runs.py",
}
ICON = {  # Material icons (bundled with Streamlit, so they render without emoji fonts)
    "kgs": ":material/hub:",
    "explore": ":material/search:",
    "predict": ":material/model_training:",
    "neighbours": ":material/scatter_plot:",
    "runs": ":material/monitoring:",
}
# Markdown (buttons, headers, captions) gets Streamlit's bundled Material icons; plain-text places
# (selectbox options, tables) cannot show those and get emoji.
MD_ICON = {"text": ":material/notes:", "image": ":material/image:"}
PLAIN_ICON = {"text": "📝", "image": "🖼️"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|:<>~$])")


@contextmanager
def user_errors() -> Iterator[None]:
    """Show kclip's own errors as a message and end the page there: users never see a traceback."""
    try:
        yield
    except KclipError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()
    except (ServiceUnavailable, SessionExpired) as exc:  # Neo4j went away after we connected
        st.error(f"Neo4j stopped answering ({exc}). Is it running? `kclip neo4j status` tells; "
                 "reload this page once it is back.", icon=":material/error:")
        st.stop()


def page_link(page: str, label: str, **query: str) -> None:
    """A link to one of the app's pages (a key of ``PAGES``), carrying ``query`` in its URL."""
    st.page_link(PAGES[page], label=label, icon=ICON[page], query_params=query or None)


def remember_kg(kg: str) -> None:
    st.session_state[KG_STATE] = kg
    st.query_params["kg"] = kg  # so the address bar names the KG: links and reloads keep it


def current_kg() -> str:
    """The KG this page works on: ?kg= in the URL, else this session's pick, else the first KG.

    Stops the page with a hint when Neo4j holds no KG at all.
    """
    kgs = services.list_kgs()
    if not kgs:
        no_kgs_hint()
        st.stop()
    wanted = st.query_params.get("kg") or st.session_state.get(KG_STATE)
    kg = wanted if wanted in kgs else kgs[0]
    if wanted and wanted != kg:  # a stale link, or a KG dropped since
        st.warning(f"Neo4j has no KG named {md_code(wanted)}; showing {md_code(kg)} instead.",
                   icon=":material/warning:")
    remember_kg(kg)
    return kg


def no_kgs_hint() -> None:
    st.info("No KGs yet. Run `kclip demo` for a ready-made one, or load your own with "
            "`kclip load FORMAT PATH --kg NAME` (see `kclip load --help`).", icon=":material/inbox:")


def kg_caption(kg: str) -> None:
    st.caption(f"Knowledge graph **{md(kg)}** · change it on the Knowledge graphs page")


def md(text: str) -> str:
    """``text`` shown literally in Streamlit markdown: an id like "attribute:small" would otherwise
    lose ":small" to Streamlit's text directives, and "*" or "_" would turn into emphasis."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(text: str) -> str:
    # A code span shows its text as is; double backticks when the text holds one.
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def entity_label(row: EntityRow, max_chars: int = 60, markdown: bool = True) -> str:
    """One line naming an entity: modality icon, its text (or id), and the id when it differs.

    ``markdown=False`` gives plain text, for selectbox options and table cells.
    """
    text = (row.text or row.id).replace("\n", " ")
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    if not markdown:
        return f"{PLAIN_ICON.get(row.modality, '•')} {text}" + (f"  ·  {row.id}" if row.text else "")
    shown = md(text) if row.text else md_code(text)
    return f"{MD_ICON.get(row.modality, '•')} {shown}" + (f" · {md_code(row.id)}" if row.text else "")


def thumbnail(row: EntityRow, width: int = 96) -> None:
    """The entity's image at thumbnail size, or nothing for a text entity."""
    image = services.entity_image(row)
    if image is not None:
        st.image(image, width=width)
    elif row.modality == "image":
        st.caption("(image file not in this machine's media store)")


PICKER_MATCHES = 25  # the best matches an entity picker offers


def entity_picker(kg: str, label: str, key: str) -> EntityRow | None:
    """A text box, then a choice among the best matches (``services.search_page``: every word must
    match, the last one as the start of a word too, ids included). The box commits on Enter, not
    as the user types: each pick may start a prediction."""
    query = st.text_input(label, key=f"{key}_q", placeholder="words or their start, e.g. circ, then Enter",
                          help="Every word must match an entity's text or id; the last one may be its start.")
    if not query.strip():
        return None
    found = services.search_page(kg, query, limit=PICKER_MATCHES)
    if not found.hits:
        st.caption(f"No entity matches “{md(query.strip())}”.")
        return None
    picked = st.selectbox(f"{label}: matches", [row for row, _ in found.hits], key=f"{key}_pick",
                          label_visibility="collapsed", format_func=lambda row: entity_label(row, markdown=False))
    if found.total > len(found.hits):
        st.caption(f"the best {len(found.hits)} of {found.total:,} matches: more words narrow them")
    return picked


def relation_picker(kg: str, label: str, key: str) -> str | None:
    names = [r.name for r in services.relations(kg)]
    if not names:
        st.caption("This KG has no relations.")
        return None
    return st.selectbox(label, names, key=key)

"""Loaders: one module per source format, each turning files on disk into canonical records.

Every loader subclasses ``base.KGLoader`` (format name, options model, ``_records()``) and is
listed in ``LOADERS`` below; ``kclip load FORMAT PATH --kg NAME`` finds it there. Loaders hold
no Cypher and write nothing: ``kclip.platform.ingest`` validates what they yield and stores it.
"""

from __future__ import annotations

from kclip.kg_loaders.base import KGLoader, LoaderOptions
from kclip.kg_loaders.conceptnet import ConceptNetLoader
from kclip.kg_loaders.image_text import ImageTextLoader
from kclip.kg_loaders.multimodal import MultimodalLoader
from kclip.kg_loaders.tsv import TsvLoader
from kclip.kg_loaders.visual_genome import VisualGenomeLoader
from kclip.platform.errors import NotFoundError

LOADERS: dict[str, type[KGLoader]] = {
    cls.format: cls for cls in (TsvLoader, ConceptNetLoader, VisualGenomeLoader, ImageTextLoader, MultimodalLoader)
}


def get_loader(format: str) -> type[KGLoader]:
    try:
        return LOADERS[format]
    except KeyError:
        raise NotFoundError(f"no loader for format {format!r}; known formats: {', '.join(sorted(LOADERS))}") from None


__all__ = ["KGLoader", "LoaderOptions", "LOADERS", "get_loader"]

"""kclip: knowledge graphs in Neo4j, Knowledge-CLIP training fed live from them, and a UI to explore.

The package's parts are the repository's top-level folders:

- ``kclip.platform`` (``platform/``): settings, errors, canonical records, Neo4j connection and
  schema, all Cypher (``cypher.py``), the graph store, the media store, ingestion, the local Neo4j
  service and the run registry. ``platform/`` has no ``__init__.py`` on purpose: with one,
  ``python -c "import platform"`` run from the repository root would shadow the standard library.
- ``kclip.kg_loaders`` (``kg_loaders/``): one module per source format, yielding canonical records.
- ``kclip.models`` (``models/``): Knowledge-CLIP, its losses, the Neo4j sampler, trainer, evaluation.
- ``kclip.ui`` (``ui/``): the Streamlit explorer.
"""

__version__ = "0.1.0"

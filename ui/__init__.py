"""The Streamlit explorer of KGs and trained runs (``kclip ui``).

- ``app.py``: the entry point, only page config and ``st.navigation`` over the pages;
- ``views/``: one file per page (Knowledge graphs, Explore, Predict, Neighbours, Runs);
- ``services.py``: the only place the UI gets data: the cached Neo4j store, registry and
  predictors, and typed read functions (no Cypher anywhere in ``ui/``);
- ``widgets.py``: Streamlit pieces the pages share (current KG, error display, entity pickers);
- ``launch.py``: ``run_ui`` / ``serve_ui`` / ``start_detached`` start ``streamlit run app.py``; ``stop_all`` stops them.
"""

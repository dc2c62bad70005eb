"""The kclip explorer's entry point: page config and the router over ``views/``, nothing else.

    kclip ui                                  # or:
    streamlit run ui/app.py --server.address 127.0.0.1 --server.port 8501

Settings (which Neo4j, media store and run registry) come from the ``KCLIP_*`` environment.
"""

from pathlib import Path

import streamlit as st

from kclip.ui.widgets import ICON

# Not "pages/": Streamlit would treat that folder as a legacy multipage app before the router runs.
PAGES = Path(__file__).parent / "views"

st.set_page_config(page_title="kclip explorer", page_icon=ICON["kgs"], layout="wide")
st.navigation([
    st.Page(PAGES / "knowledge_graphs.py", title="Knowledge graphs", icon=ICON["kgs"], default=True),
    st.Page(PAGES / "explore.py", title="Explore", icon=ICON["explore"]),
    st.Page(PAGES / "predict.py", title="Predict", icon=ICON["predict"]),
    st.Page(PAGES / "neighbours.py", title="Neighbours", icon=ICON["neighbours"]),
    st.Page(PAGES / "runs.py", title="Runs", icon=ICON["runs"]),
]).run()

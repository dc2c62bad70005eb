"""Import DGL the one way that works on every machine we run on.

PyPI's DGL 2.x loads GraphBolt at import, a native library built for a handful of torch versions
(2.0.0-2.2.1 for dgl 2.1.0), and fails on any other torch (dmlc/dgl#7247, #7822). kclip needs
nothing from GraphBolt, so when the library for the running torch is missing we register an empty
placeholder module before ``import dgl``. DGL 1.1.x (our Python 3.11 pin) has no GraphBolt at all.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path


def _graphbolt_library_missing() -> bool:
    spec = importlib.util.find_spec("dgl")
    if spec is None or not spec.submodule_search_locations:
        return False
    graphbolt_dir = Path(next(iter(spec.submodule_search_locations))) / "graphbolt"
    if not graphbolt_dir.is_dir():
        return False  # dgl 1.x
    import torch

    torch_version = torch.__version__.split("+")[0]
    return not (graphbolt_dir / f"libgraphbolt_pytorch_{torch_version}.so").exists()


def import_dgl() -> types.ModuleType:
    """``import dgl`` with the PyTorch backend, skipping GraphBolt where it cannot load."""
    if "dgl" in sys.modules:
        return sys.modules["dgl"]
    os.environ.setdefault("DGLBACKEND", "pytorch")
    if _graphbolt_library_missing():
        sys.modules["dgl.graphbolt"] = types.ModuleType("dgl.graphbolt")
    import dgl

    return dgl

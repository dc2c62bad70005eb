"""``kclip demo``: every part of kclip once, on data generated here (plus WN18RR when given).

Starts Neo4j (the local service unless KCLIP_NEO4J_URI is set), generates and loads the synthetic
scene-graph KG, loads WN18RR when a path is given, prints stats, trains the tiny config briefly on
the scene graphs, evaluates and embeds that run, and serves the UI. Every step is idempotent: a
second demo reuses the data already loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from kclip.platform.settings import Settings

SCENES_KG = "scenes"
WN18RR_KG = "wn18rr"


def run_demo(settings: Settings, say: Callable[[str], None], wn18rr: Path | None = None, steps: int = 150,
             images: int = 300, ui: bool = True, ui_port: int = 8501) -> dict:
    """Run the demo; returns what it made (run name, metrics, UI address)."""
    from kclip.kg_loaders import get_loader
    from kclip.kg_loaders.synth_scene_graphs import generate_scene_graphs
    from kclip.platform.ingest import load_kg
    from kclip.platform.media import MediaStore
    from kclip.platform.neo4j_client import open_graph_store

    if settings.uses_local_service:
        from kclip.platform import local_neo4j

        say("starting the local Neo4j")
        local_neo4j.start(settings)
    scenes_dir = settings.home / "demo" / "scenes"
    if not (scenes_dir / "scene_graphs.json").is_file():
        say(f"generating {images} synthetic scene graphs in {scenes_dir}")
        generate_scene_graphs(scenes_dir, images=images, seed=0)
    media = MediaStore(settings.media_root, max_image_pixels=settings.max_image_pixels)
    with open_graph_store(settings) as store:
        say("loading the scene-graph KG")
        load_kg(store, get_loader("visual-genome")(scenes_dir, kg=SCENES_KG), media)
        if wn18rr is not None:
            say(f"loading WN18RR from {wn18rr}")
            load_kg(store, get_loader("tsv")(wn18rr, kg=WN18RR_KG), media)
        stats = [store.stats(kg) for kg in store.list_kgs()]
    return {"stats": stats, **_train_and_explore(settings, say, steps, ui, ui_port)}


def _train_and_explore(settings: Settings, say: Callable[[str], None], steps: int, ui: bool, ui_port: int) -> dict:
    from kclip.models.embed import write_embeddings
    from kclip.models.evaluate import evaluate_and_record
    from kclip.models.inference import load_run
    from kclip.models.train import train
    from kclip.models.train_config import load_train_config
    from kclip.platform.neo4j_client import open_graph_store

    say(f"training Knowledge-CLIP (tiny config) on {SCENES_KG} for {steps} steps")
    run = train(settings, SCENES_KG, load_train_config("tiny", {"max_steps": steps}))
    say("evaluating on the test split")
    metrics = evaluate_and_record(settings, run, SCENES_KG, "test")
    with open_graph_store(settings) as store:
        say("writing entity embeddings and the vector index")
        write_embeddings(load_run(settings, run), store, SCENES_KG)
    address = None
    if ui:
        from kclip.ui.launch import start_detached

        say("starting the explorer")
        start_detached(settings.home, port=ui_port)
        address = f"http://127.0.0.1:{ui_port}"
    return {"run": run, "metrics": metrics, "ui": address}

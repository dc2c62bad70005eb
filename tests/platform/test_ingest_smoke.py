from kclip.kg_loaders import get_loader
from kclip.platform.ingest import load_kg


def test_wn18rr_loads(graph_store, media_store, kg_name, wn18rr_dir):
    loader = get_loader("tsv")(wn18rr_dir, kg=kg_name)
    summary = load_kg(graph_store, loader, media_store, progress=False)
    print(summary.as_dict())
    stats = graph_store.stats(kg_name)
    assert stats.entities == {"text": 40943}
    assert stats.triplets == {"train": 86835, "dev": 3034, "test": 3134}

"""Knowledge-CLIP: the model, the Neo4j sampler that feeds it, training, evaluation and inference.

- ``knowledge_clip.py``: the model (open_clip towers via ``clip_factory.py`` and ``encoders.py``, the
  fusion transformer ``fusion.py``, the relational GNN ``gnn.py``); one module per loss in ``losses/``.
- ``batch.py``: ``TripletBatch``, what the sampler hands the model; ``batching.py`` builds one from
  entities read from Neo4j; ``features.py`` turns text and images into tensors, with the CLIP
  tokenizer of ``tokenizer.py`` (open_clip's ids, BPE merges in Rust).
- ``sampler.py``: triplets and k-hop subgraphs streamed live from Neo4j behind a torch DataLoader;
  ``neighbourhood.py`` samples the subgraphs (from a per-epoch projection, or Cypher).
- ``train.py`` / ``train_config.py``: ``kclip train`` (DDP, bf16, checkpoints, resume); bundled
  configs and open_clip architectures live in ``configs/``.
- ``evaluate.py`` + ``metrics.py``: ``kclip eval``; ``compare.py``: ``kclip compare``;
  ``inference.py``, ``predict.py``, ``embed.py``: using a trained run.
- ``dgl_compat.py``: the one way DGL is imported.
"""

"""Entity content to tensors: text through the model's tokenizer, images through its preprocessing.

The tokenizer is the one ``create_clip`` made for the model's text tower: CLIP's BPE (ids in Rust,
models/tokenizer.py) or a Hugging Face tower's own, padding with its pad id.

Each DataLoader worker keeps its own caches: token rows for every text entity it has seen
(small: 77 ints each), preprocessed images in an LRU bounded by bytes (large: 3xHxW floats),
and decoded source images that regions (scene-graph objects) are cut from, in the media store's
own LRU (see ``platform/media.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from kclip.platform.errors import InputError
from kclip.platform.graph_store import EntityRow
from kclip.platform.media import Box, MediaStore

Tokenizer = Callable[[list[str]], torch.Tensor]  # texts -> (N, L) long
Preprocess = Callable[[Image.Image], torch.Tensor]  # PIL image -> (3, H, W) float


class Featurizer:
    def __init__(self, tokenizer: Tokenizer, preprocess: Preprocess, media_root: Path,
                 image_cache_bytes: int = 512 << 20, context_length: int | None = None,
                 image_size: int | None = None):
        self.tokenizer = tokenizer
        # Shorter than the model's 77 positions when entity texts are long and compute is short;
        # open_clip's tokenizers truncate keeping the end-of-text token, which CLIP pools at.
        self.context = context_length
        self.preprocess = preprocess
        self.image_size = image_size  # the model's input side: JPEGs decode no larger than needed
        self.media = MediaStore(media_root, decoded_cache_bytes=128 << 20)
        self.image_cache_bytes = image_cache_bytes
        self._tokens: dict[str, torch.Tensor] = {}
        self._images: OrderedDict[tuple[str, Box | None], torch.Tensor] = OrderedDict()
        self._image_bytes = 0

    def tokens(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, L) long token ids, tokenizing only texts not seen before."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._tokens))
        if missing:
            rows = self.tokenizer(missing, context_length=self.context) if self.context else self.tokenizer(missing)
            for text, row in zip(missing, rows):
                self._tokens[text] = row
        if not texts:
            return torch.zeros(0, self.context_length(), dtype=torch.long)
        return torch.stack([self._tokens[t] for t in texts])

    def context_length(self) -> int:
        return self.context or int(self.tokenizer([""]).shape[1])

    def images(self, refs: Sequence[tuple[str, Box | None]]) -> torch.Tensor:
        """(N, 3, H, W) preprocessed images from the media store, by (key, region box or None)."""
        if not refs:
            return torch.zeros(0, 3, 1, 1)
        return torch.stack([self._image(ref) for ref in refs])

    def _image(self, ref: tuple[str, Box | None]) -> torch.Tensor:
        cached = self._images.get(ref)
        if cached is not None:
            self._images.move_to_end(ref)
            return cached
        key, box = ref
        try:
            tensor = self.preprocess(self.media.entity_image(key, box, self.image_size))
        except OSError as exc:
            raise InputError(self.media.path(key), None, f"media store image unreadable ({exc}); reload the KG") from None
        self._remember(ref, tensor)
        return tensor

    def _remember(self, key: tuple[str, Box | None], tensor: torch.Tensor) -> None:
        size = tensor.element_size() * tensor.numel()
        if size > self.image_cache_bytes:
            return
        self._images[key] = tensor
        self._image_bytes += size
        while self._image_bytes > self.image_cache_bytes:
            _, old = self._images.popitem(last=False)
            self._image_bytes -= old.element_size() * old.numel()

    def entity_tensors(self, rows: Sequence[EntityRow]) -> tuple[torch.Tensor, list[int], torch.Tensor, list[int]]:
        """(text tokens, their row positions, images, their row positions) for a list of entities."""
        text_pos = [i for i, r in enumerate(rows) if r.modality == "text"]
        image_pos = [i for i, r in enumerate(rows) if r.modality == "image"]
        tokens = self.tokens([rows[i].text or "" for i in text_pos])
        images = self.images([(rows[i].image, rows[i].image_box) for i in image_pos])
        return tokens, text_pos, images, image_pos


def featurizer_for(model, media_root: Path, max_text_tokens: int = 77) -> Featurizer:
    """The featurizer a KnowledgeCLIP is trained and evaluated with: its tokenizer and eval preprocessing.

    Deterministic preprocessing on purpose: a resumed run must see exactly the tensors it would have.
    Text is cut to ``max_text_tokens``, or to the tokenizer's own context when shorter (77 for CLIP;
    an HF tower's is at most its position count).
    """
    full = int(getattr(model.tokenizer, "context_length", None) or 77)
    return Featurizer(model.tokenizer, model.preprocess_val, media_root,
                      context_length=max_text_tokens if max_text_tokens < full else None,
                      image_size=_input_side(model.clip.visual.image_size))


def _input_side(size: int | Sequence[int]) -> int:
    # open_clip's ViTs keep (h, w); its ResNets keep one int.
    return int(size) if isinstance(size, int) else min(int(s) for s in size)

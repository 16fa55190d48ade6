"""What the stages of one run share: its configuration, folder, manifest and progress output."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from noiseal_ray.config import RunConfig
from noiseal_ray.progress import Progress
from noiseal_ray.ray_session import cluster_has_gpus
from noiseal_ray.rundir import Manifest


@dataclass(frozen=True)
class RunContext:
    """One run: ``config``, the run folder ``out``, its ``manifest`` and ``progress`` printer.

    Rounds are numbered 0 (warm-up), 1..config.rounds (score, partition + annotate, train) and
    ``last_round`` = config.rounds + 1 (score and partition + annotate only, for the final labels).
    """

    config: RunConfig
    out: Path
    manifest: Manifest
    progress: Progress

    @property
    def last_round(self) -> int:
        return self.config.rounds + 1

    def round_dir(self, round_no: int) -> Path:
        """``rounds/r{n}``: the tables and model of round ``round_no``."""
        return self.out / "rounds" / f"r{round_no}"

    @property
    def base_table(self) -> Path:
        """The ingested corpus: round 1 scores it."""
        return self.round_dir(0) / "table"

    def input_table(self, round_no: int) -> Path:
        """The table round ``round_no`` scores: the previous round's partition + annotator labels."""
        return self.round_dir(round_no - 1) / "table" if round_no > 1 else self.base_table

    def tag(self, round_no: int) -> str:
        """The progress-line prefix of a round: "[round r/R]", or "[final]" past the last trained one."""
        return f"[round {round_no}/{self.config.rounds}]" if round_no <= self.config.rounds else "[final]"


@dataclass(frozen=True)
class Cluster:
    """What the connected Ray cluster gives a run: GPUs for training, actors per Ray Data stage."""

    use_gpu: bool
    actors: int

    @classmethod
    def detect(cls, config: RunConfig) -> "Cluster":
        """``config.use_gpu`` when set, else whether the cluster has a GPU; ``config.score_actors``
        actors when set, else one per train worker. Needs a connected Ray."""
        use_gpu = config.use_gpu if config.use_gpu is not None else cluster_has_gpus()
        return cls(use_gpu=use_gpu, actors=config.score_actors or max(1, config.workers))

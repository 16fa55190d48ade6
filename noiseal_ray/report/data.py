"""A finished run, read and aggregated into one object: what every part of the report draws from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from noiseal_ray.report.limits import HEATMAP_MAX, MAX_ROUND_PLOTS, TABLE_MAX
from noiseal_ray.report.read import open_run, read_config, read_json
from noiseal_ray.report.stats import LabelStats, RoundHist, label_stats, round_hist


@dataclass
class RunData:
    """The run's files as read (``config``, ``manifest``, ``metrics``) plus their aggregates.

    ``rounds``/``final``: metrics.json's per-round entries and final block; ``last``: the round
    number of the final partition (rounds + 1); ``labels``: the labels.parquet pass;
    ``hists``: confidence histograms of the rounds shown; ``missing_tables``: partition rounds
    without a rounds/r{n}/table/; ``notes``: what the report leaves out of a large run, as sentences.
    """

    run: Path
    config: dict
    manifest: dict
    metrics: dict
    names: list[str]
    labels: LabelStats
    has_clean: bool
    hists: list[RoundHist]
    missing_tables: list[int]
    notes: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> list[dict]:
        """metrics.json's per-round entries (warm-up 0, rounds 1..R, final R + 1)."""
        return self.metrics.get("rounds", [])

    @property
    def final(self) -> dict:
        """metrics.json's final block ({} when absent)."""
        return self.metrics.get("final", {})

    @property
    def n_rounds(self) -> int:
        """The configured number of NoiseAL rounds (config.yaml ``rounds``)."""
        return int(self.config.get("rounds") or 0)

    @property
    def last(self) -> int:
        """The round number of the final partition: n_rounds + 1."""
        return self.n_rounds + 1

    @property
    def c(self) -> int:
        """The number of classes C."""
        return len(self.names)

    @property
    def n(self) -> int:
        """The number of samples: metrics.json's ``rows``, else the rows labels.parquet holds."""
        return int(self.metrics.get("rows") or self.labels.rows or 0)

    @property
    def part_rounds(self) -> list[int]:
        """Rounds of metrics.json that hold a partition (R/P/H sizes)."""
        return [e["round"] for e in self.rounds if "sizes" in e]


def load_run(*, run_dir: str | Path) -> RunData:
    """Read and aggregate the run in ``run_dir``; InputError for a missing or unfinished run."""
    run = open_run(run_dir)
    config = read_config(run)
    manifest = read_json(run / "manifest.json")
    metrics = read_json(run / "metrics.json")
    names = [str(n) for n in (metrics.get("label_names") or manifest.get("label_names") or [])]
    final = metrics.get("final", {})
    thr_final = final.get("thresholds") or {k: manifest.get("thresholds", {}).get(k) for k in ("strong", "weak")}
    labels = label_stats(path=run / "labels.parquet", names=names, tau=thr_final)
    data = RunData(run=run, config=config, manifest=manifest, metrics=metrics, names=names, labels=labels,
                   has_clean=labels.has_clean and bool(manifest.get("has_clean", True)), hists=[],
                   missing_tables=[])
    data.missing_tables = [r for r in data.part_rounds if not _table_dir(run, r).is_dir()]
    shown = _rounds_shown(data)
    history = (manifest.get("thresholds") or {}).get("history") or []
    by_round = {e["round"]: e for e in data.rounds}
    for r in shown:
        # The manifest's history holds the thresholds each round used; older runs kept them per round.
        thr = history[r - 1] if 0 < r <= len(history) else by_round.get(r, {}).get("thresholds")
        data.hists.append(round_hist(table=_table_dir(run, r), round_no=r, thresholds=thr))
    if data.c > TABLE_MAX:
        data.notes.append(f"the per-class table lists the {TABLE_MAX} largest of {data.c:,} classes")
    if data.c > HEATMAP_MAX:
        data.notes.append(f"the transition heatmap and the noise plot show the {HEATMAP_MAX} largest of "
                          f"{data.c:,} classes; the rest are merged into “other”")
    return data


def _table_dir(run: Path, round_no: int) -> Path:
    return run / "rounds" / f"r{round_no}" / "table"


def _rounds_shown(data: RunData) -> list[int]:
    """The rounds that get confidence histograms: all with a table, or MAX_ROUND_PLOTS spread evenly
    over them (then a note says which)."""
    available = [r for r in data.part_rounds if r not in data.missing_tables]
    if len(available) <= MAX_ROUND_PLOTS:
        return available
    pick = np.unique(np.linspace(0, len(available) - 1, MAX_ROUND_PLOTS).round().astype(int))
    shown = [available[i] for i in pick]
    data.notes.append(f"confidence histograms are shown for {len(shown)} of {len(available)} rounds "
                      f"({', '.join(map(str, shown))})")
    return shown

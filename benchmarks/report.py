"""Render a grid's records into RESULTS.md, results/quality-<grid>.csv and results/results-<grid>.json.

Every table is a pivot of a tidy frame from ``benchmarks.tables``, printed by pandas
(``DataFrame.to_markdown``, which needs tabulate); every verdict is a boolean column there. What
the numbers mean is said once, in the README, from these tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from benchmarks import tables as T
from benchmarks.speed_report import speed_markdown

if TYPE_CHECKING:
    import pandas as pd

    from benchmarks.grid import Grid

NOTES = """\
- The `full` grid (`benchmarks/RESULTS-full.md`, defined in `benchmarks/grid.py`: every dataset and noise
  setting, three seeds, every method) has not been run: on a 2-core CPU machine it needs days. It resumes
  from its records after an interruption.
- The `trec` grid (`benchmarks/RESULTS.md`) holds the issue's TREC claims ({trec_cells} cells of 10-20 minutes
  on 2 cores); `smoke` (`RESULTS-smoke.md`) checks the plumbing in minutes on a 1,000-row subsample; `real`
  (`RESULTS-real.md`) runs the same budget on Hausa headlines with real rule-based noise; `breadth`
  (`RESULTS-breadth.md`) on NoisyAG-News (real human noise) and SST-2, subsampled, one seed: a first look.
- Wall times were measured on a shared machine while other jobs ran (see the load averages); speed ratios
  measured one after another measure the load as much as the code: rerun them on an idle machine before
  quoting them.
- Records are reused when their cell specification is unchanged; `--fresh` reruns everything; cells can run
  in parallel processes sharing `--out` (`--cells KEY[,KEY]`); `--only report` re-renders from the records
  (from `benchmarks/results/results-<grid>.json` when the work folder is gone).
"""
QUALITY_TEXT = (
    "Test accuracy of the strong model on the clean test split; \"best\" = best of the warm-up fit and every "
    "round, \"last\" = after the last round. Every method trains the same epochs on the same encoder. Detection: "
    "flagged = in P or H (NoiseAL) or a cleanlab label issue; \"changed\" scores NoiseAL's label changes as the "
    "detector; \"fixed\" = share of wrong given labels made right, \"broken\" = share of right labels made wrong.")


def fmt(mean: float | None, sd: float | None = None, *, scale: float = 1.0, decimals: int = 3) -> str:
    """``mean ± sd`` scaled and rounded; ``-`` for no value."""
    if mean is None or mean != mean:
        return "-"
    s = f"{mean * scale:.{decimals}f}"
    if sd is not None and sd == sd:
        s += f" ± {sd * scale:.{decimals}f}"
    return s


def _flag(v: Any) -> str:
    return "" if v is None or v != v else str(bool(v))


def markdown(df: pd.DataFrame) -> str:
    """A frame of preformatted strings as a Markdown table (numbers are not reparsed)."""
    if df.empty:
        return "(no records)"
    return df.to_markdown(index=False, disable_numparse=True)


def quality_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean ± s.d. over seeds per (dataset, noise, method)."""
    out = summary[["dataset", "setting", "method", "seeds", "n"]].rename(columns={"setting": "noise"}).astype(str)
    for title, path, scale, dec in T.QUALITY_COLUMNS:
        out[title] = [fmt(m, s, scale=scale, decimals=dec) for m, s in zip(summary[f"{path}_mean"], summary[f"{path}_sd"])]
    return out


def per_seed_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Every cell's own numbers, and what the epochs after the warm-up fit did to test accuracy."""
    out = cells[["dataset", "setting", "method", "seed"]].rename(columns={"setting": "noise"}).astype(str)
    for title, path, scale, dec in T.QUALITY_COLUMNS[:2] + T.QUALITY_COLUMNS[4:5] + T.QUALITY_COLUMNS[7:10]:
        out[title] = [fmt(v, scale=scale, decimals=dec) for v in cells[path]]
    for title, col in (("after warm-up (%)", "acc_first"), ("gain after warm-up (points)", "gain"),
                       ("given labels right (%)", "given_accuracy"), ("refit labels right (%)", "refit_label_accuracy")):
        out[title] = [fmt(v, scale=100.0, decimals=1) for v in cells[col]]
    return out


def _pivot(df: pd.DataFrame, *, index: list[str], columns: str, values: str) -> pd.DataFrame:
    """Mean over seeds (``mean_sd``) of ``values`` by ``index`` x ``columns``, rows in ``df``'s order."""
    wide = df.pivot_table(index=index, columns=columns, values=values, aggfunc=lambda v: T.mean_sd(list(v))[0])
    return wide.reindex(list(dict.fromkeys(map(tuple, df[index].itertuples(index=False)))))


def paired_table(paired: pd.DataFrame) -> pd.DataFrame:
    """Δ test acc last (points) per seed: the method minus the baseline on the same seed."""
    wide = _pivot(paired, index=[*T.KEYS, "versus"], columns="seed", values="d_last")
    out = wide.map(lambda d: fmt(d, scale=100.0, decimals=1)).reset_index()
    return out.rename(columns={"setting": "noise", **{s: f"seed {s}" for s in wide.columns}})


def margins_table(margins: pd.DataFrame) -> pd.DataFrame:
    """Δ over the paired seeds, and the verdicts as booleans."""
    m = margins
    return m[[*T.KEYS, "versus", "seeds"]].rename(columns={"setting": "noise"}).assign(**{
        "Δ last (points)": [fmt(a, b, scale=100.0, decimals=1) for a, b in zip(m["d_last_mean"], m["d_last_sd"])],
        "Δ best (points)": [fmt(a, b, scale=100.0, decimals=1) for a, b in zip(m["d_best_mean"], m["d_best_sd"])],
        "ahead (seeds)": [f"{a} of {n}" for a, n in zip(m["ahead"], m["paired"])],
        "clear margin": [_flag(v) if vs != "clean" else "" for v, vs in zip(m["clear_margin"], m["versus"])],
        "F1 flagged / changed / vs": [f"{fmt(a)} / {fmt(b)} / {fmt(c)}" if c is not None and c == c else "-"
                                      for a, b, c in zip(m["f1"], m["f1_changed"], m["f1_versus"])],
        "flagged F1 beats": [_flag(v) for v in m["flagged_beats"]],
        "changed F1 beats": [_flag(v) for v in m["changed_beats"]],
        f"within {T.CLEAN_GAP_POINTS:g} of clean (mean)": [_flag(v) for v in m["within_bar"]],
        f"within {T.CLEAN_GAP_POINTS:g} of clean (every seed)": [_flag(v) for v in m["within_bar_every_seed"]]})


def rounds_table(rounds: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy after each fit, mean over seeds, and the mean gain from warm-up to last round."""
    wide = _pivot(rounds, index=T.KEYS, columns="fit", values="acc")
    out = wide.map(lambda a: fmt(a, scale=100.0, decimals=1)).reset_index()
    out = out.rename(columns={"setting": "noise", **{i: "after warm-up" if i == 0 else f"round {i}" for i in wide.columns}})
    gain = {tuple(r[k] for k in T.KEYS): fmt(r["gain_mean"], r["gain_sd"], scale=100.0, decimals=1)
            for _, r in summary.iterrows()}
    out["gain (points)"] = [gain.get(k, "-") for k in wide.index]
    return out


def stages_table(stages: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Wall time per stage (mean over seeds), with the rows used, the cell's wall time and the load."""
    wide = _pivot(stages, index=T.KEYS, columns="stage", values="seconds")
    wide = wide.reindex(columns=sorted(wide.columns)).reindex(
        [tuple(r) for r in summary[T.KEYS].itertuples(index=False)])
    out = wide.map(lambda s: fmt(s, decimals=0)).reset_index()
    out = out.rename(columns={"setting": "noise", **{s: f"{s} (s)" for s in wide.columns}})
    out.insert(3, "train rows used", [fmt(v, decimals=0) for v in summary["train_rows_used_mean"]])
    out["wall (s)"] = [fmt(v, decimals=0) for v in summary["wall_seconds_mean"]]
    out["1-min load avg at end"] = [fmt(v, decimals=0) for v in summary["load_avg_after_mean"]]
    return out


def _strings(df: pd.DataFrame, decimals: dict[str, int]) -> pd.DataFrame:
    """Every column as text: numbers with their column's decimals (3 unless named), counts as integers."""
    out = df.copy().astype(object)
    for c in df.columns:
        if c in decimals or df[c].dtype.kind == "f":
            out[c] = [fmt(v, decimals=decimals.get(c, 3)) for v in df[c]]
        else:
            out[c] = ["-" if v is None or v != v else str(v) for v in df[c]]
    return out


def anatomy_tables(anatomy: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run, and the mean per (dataset, setting, method)."""
    if anatomy.empty:
        return anatomy, anatomy
    shares = [c for c in anatomy.columns if c not in (*T.KEYS, "run", "wrong labels")]
    means = anatomy.groupby(T.KEYS, sort=False)[shares].agg(lambda v: T.mean_sd(list(v))[0]).reset_index()
    means.insert(3, "runs", anatomy.groupby(T.KEYS, sort=False).size().to_numpy())
    return (_strings(anatomy.drop(columns=T.KEYS), {"wrong labels": 0}),
            _strings(means.rename(columns={"setting": "noise"}), {"runs": 0}))


def _header(grid: Grid, *, command: dict, out_rel: str, run_info: dict) -> list[str]:
    import pandas as pd

    lines = [f"# noiseal-ray benchmarks: `{grid.name}` grid", "",
             f"Rendered by `benchmarks/report.py` from the records in `{out_rel}/records/` and `{out_rel}/speed/` "
             "(copied into `benchmarks/results/results-<grid>.json`). Regenerate (reuses records whose "
             "specification is unchanged; `--fresh` reruns everything):", "", f"    {command['regenerate']}", "",
             f"This file was rendered by `{command['rendered_by']}`.", "", f"Grid: {grid.description}.", ""]
    env = run_info.get("env", {})
    if env:
        items = list(env.items()) + [
            (f"last `{part}` invocation: wall, load average (1/5/15 min) at start / end",
             f"{inf['seconds'] / 60:.1f} min; " + " / ".join(", ".join(f"{x:.1f}" for x in inf.get(k, []))
                                                         for k in ("load_avg_start", "load_avg_end")))
            for part, inf in sorted(run_info.get("parts", {}).items())]
        lines += ["## Machine and versions", "", markdown(pd.DataFrame(items, columns=["item", "value"])), ""]
    return lines


def _quality_sections(records: list[dict]) -> list[str]:
    if not T.ok_quality(records):
        return ["## Denoising quality", "", "No cell has a successful record yet.", ""]
    cells = T.cells(records)
    summary = T.summary(cells)
    paired = T.paired(records)
    margins = T.margins(paired)
    per_run, per_setting = anatomy_tables(T.anatomy(records))
    note = T.test_point_note(records)
    return [
        "## Denoising quality", "", QUALITY_TEXT + " Mean ± sample s.d. over seeds where more than one ran.", "",
        markdown(quality_table(summary)), "", "### Each cell", "", markdown(per_seed_table(cells)), "",
        "### Paired by seed: Δ test accuracy at the last round", "",
        "Δ = the method minus the baseline on the same seed (same noisy labels, encoder and epochs), in points"
        + (f"; {note}." if note else "."), "", markdown(paired_table(paired)), "",
        "### Verdicts", "",
        f"clear margin = ahead in every seed, at least two seeds, mean Δ more than one s.d. above zero; F1 beats = "
        f"NoiseAL's detection F1 above the baseline's; within {T.CLEAN_GAP_POINTS:g} of clean = at most "
        f"{T.CLEAN_GAP_POINTS:g} points below the clean upper bound at 20% noise.", "",
        markdown(margins_table(margins)) if len(margins) else "No method shares a seed with a baseline yet.", "",
        "### Test accuracy per fit (mean over seeds)", "", markdown(rounds_table(T.rounds(records), summary)), "",
        "### NoiseAL per round (each run)", "",
        markdown(_strings(T.noiseal_rounds(records), {"R": 0, "P": 0, "H": 0, "round": 0})), "",
        "### Where the wrong labels end (NoiseAL, final partition)", "",
        "Of the wrong given labels, the share ending in R (kept, and used as demonstrations), P (relabelled) or H; "
        "how much of R is wrong and of P right; what the annotator did in P, and how often it agrees with the "
        "strong model. From each run's labels.parquet.", "", markdown(per_run), "", markdown(per_setting), "",
        "### Right labels changed vs wrong labels fixed (P, each run)", "",
        "Medians of the strong and weak model's probability of the given label and of the annotator's vote share.",
        "", markdown(_strings(T.separability(records), {"n": 0, "vote_share": 2})), "",
        "### Wall time per stage (mean over seeds)", "", markdown(stages_table(T.stages(records), summary)), ""]


def _not_tabled(grid: Grid, quality: list[dict], stale: list[dict], current: dict[str, str]) -> list[str]:
    failed = [r for r in quality if r.get("status") != "ok"]
    have = {r["key"] for r in quality if r.get("status") == "ok"}
    listed = {r["key"] for r in failed + stale}
    lines = [f"- `{r['key']}` failed: `{r.get('error')}`" for r in failed]
    lines += [f"- `{r['key']}`: made for an earlier specification of the cell (spec hash `{r['spec_hash']}`, now "
              f"`{current[r['key']]}`); rerun the command to replace it" for r in stale]
    lines += [f"- `{c.key}` has no record yet" for c in sorted(grid.cells, key=lambda c: c.key)
              if c.key not in have | listed]
    reused = [r for r in quality if r.get("status") == "ok" and r.get("cv_folds_reused")]
    out = [f"Resumed: `{r['key']}` reused fold models {r['cv_folds_reused']} (its wall time and `cv_train` exclude "
           "their training)." for r in reused]
    return (out + [""] if out else []) + (["### Not in the table", "", *lines, ""] if lines else [])


def write_all(*, records: list[dict], grid: Grid, results: Path, csv_json_dir: Path, command: dict | str,
              run_info: dict, out_rel: str) -> None:
    """Write the grid's Markdown report to ``results`` and its CSV and JSON to ``csv_json_dir``."""
    from benchmarks.grid import trec

    if isinstance(command, str):
        command = {"regenerate": command, "rendered_by": command}
    # A record made for another specification of its cell is not this grid's result: listed, never tabled.
    current = {c.key: c.spec_hash() for c in grid.cells}
    stale = [r for r in records if r.get("kind") == "quality" and r.get("key") in current
             and "spec_hash" in r and current[r["key"]] != r["spec_hash"]]
    records = [r for r in records if not any(r is x for x in stale)]
    quality = [r for r in records if r.get("kind") == "quality"]
    speed = (speed_markdown(records, spec=grid.speed) if grid.speed is not None else
             "This grid has no speed part: speed measures the machine and the code, not the data (see the `trec` "
             "grid's RESULTS.md).")
    lines = _header(grid, command=command, out_rel=out_rel, run_info=run_info) + _quality_sections(records)
    lines += _not_tabled(grid, quality, stale, current) + ["## Speed", "", speed, ""]
    lines += ["## Notes", "", NOTES.format(trec_cells=len(trec().cells)), ""]
    if run_info.get("notes"):
        lines += [run_info["notes"], ""]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(lines))
    summary = T.summary(T.cells(records))
    csv_json_dir.mkdir(parents=True, exist_ok=True)
    (csv_json_dir / f"quality-{grid.name}.csv").write_text(quality_csv(summary))
    rows = json.loads(summary.to_json(orient="records"))
    (csv_json_dir / f"results-{grid.name}.json").write_text(json.dumps(
        {"grid": grid.name, "command": command, "rows": rows, "records": records, "run_info": run_info},
        indent=2, default=float))


def quality_csv(summary: pd.DataFrame) -> str:
    """The quality summary as CSV: dataset, setting, method, seeds, n, then mean and s.d. of each metric."""
    cols = [f"{c[1]}_{s}" for c in T.QUALITY_COLUMNS for s in ("mean", "sd")]
    if summary.empty:
        return ",".join(["dataset", "setting", "method", "seeds", "n", *cols]) + "\n"
    return summary[["dataset", "setting", "method", "seeds", "n", *cols]].to_csv(index=False, lineterminator="\r\n")


def required_modules(methods: Sequence[str]) -> list[str]:
    """Modules a grid of these methods needs beyond the runtime (the 'bench' extra); the report's
    tables need tabulate in every case."""
    return ["tabulate"] + (["cleanlab", "sklearn"] if "cleanlab" in methods else [])

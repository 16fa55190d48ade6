"""The report's speed section: one table per speed record (``benchmarks.speed``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from benchmarks.speed import included

if TYPE_CHECKING:
    from benchmarks.grid import SpeedSpec

# name -> (title, the measurement's key that orders partial parts, columns: (title, value of a measurement))
TABLES: dict[str, tuple[str, str, list[tuple[str, Callable[[dict], str]]]]] = {
    "scoring": ("**(1) Scoring throughput**", "rows", [
        ("path", lambda m: m["label"]), ("rows", lambda m: str(m["rows"])),
        ("wall (s)", lambda m: f"{m['seconds']:.1f}"), ("rows/s", lambda m: f"{m['rows'] / m['seconds']:.1f}")]),
    "round_scaling": ("**(3) Wall time of one NoiseAL round as the corpus grows**", "rows", [
        ("rows", lambda m: str(m["rows"])), ("score (s)", lambda m: f"{m['score']:.1f}"),
        ("thresholds (s)", lambda m: f"{m['thresholds']:.1f}"),
        ("partition + annotate (s)", lambda m: f"{m['annotate']:.1f}"), ("train (s)", lambda m: f"{m['train']:.1f}"),
        ("round total (s)", lambda m: f"{m['total']:.1f}"), ("rows/s", lambda m: f"{m['rows'] / m['total']:.0f}")]),
    "ddp": ("**(4) One training epoch, 1 worker vs 2 DDP workers**", "workers", [
        ("workers", lambda m: str(m["workers"])), ("threads per worker", lambda m: str(m["threads"])),
        ("fit wall incl. start-up (s)", lambda m: f"{m['fit_seconds']:.1f}"),
        ("epoch (s, rank 0)", lambda m: f"{m['epoch_seconds']:.1f}"),
        ("rows/s (epoch)", lambda m: f"{m['rows'] / m['epoch_seconds']:.1f}")]),
}
RELABEL = ("**(2) Relabeling throughput, many requests in flight vs one at a time vs vLLM's offline batch**: "
           "measured separately by `benchmarks/llm_throughput.py` (256 queries a mode, idle machine); see "
           "[results/llm_throughput.md](results/llm_throughput.md) (not rerun here).\n")
SCORING_SCALE = ("\nThe same comparison at 1k, 20k and 100k rows, where Ray's fixed costs stop mattering: "
                 "`benchmarks/scoring_scale.py`, [results/scoring_scale.md](results/scoring_scale.md) "
                 "(not rerun here).\n")


def _table(measurements: list[dict], columns: list[tuple[str, Callable[[dict], str]]]) -> str:
    import pandas as pd

    df = pd.DataFrame([[f(m) for _, f in columns] for m in measurements], columns=[t for t, _ in columns])
    return df.to_markdown(index=False, disable_numparse=True)


def _partial(records: list[dict], name: str, order: str) -> dict | None:
    """A stand-in record from the finished parts of a measurement that did not finish."""
    parts = sorted((r for r in records if r.get("kind") == "speed_part" and r["name"] == name), key=lambda r: r[order])
    if not parts:
        return None
    rec = {"status": "ok", "measurements": parts, "what": "PARTIAL: only the settings below finished."}
    if name == "ddp" and len(parts) == 2:
        rec["speedup"] = parts[0]["epoch_seconds"] / parts[1]["epoch_seconds"]
    return rec


def _section(name: str, rec: dict) -> str:
    title, _, columns = TABLES[name]
    text = f"{title}, {rec['what']}\n\n{_table(rec['measurements'], columns)}\n"
    text += "".join(f"\nNot measured: {f['rows']} rows (`{f['error'][:160]}`).\n" for f in rec.get("failed_sizes", []))
    if name == "scoring":
        text += (f"\nRay Data stage / plain loop throughput ratio: **{rec['ratio']:.2f}** (the Ray Data figure includes "
                 f"actor start-up, model loading and parquet I/O; the plain loop's excludes its "
                 f"{rec['plain_load_seconds']:.1f} s model load).\n") + SCORING_SCALE
    if name == "ddp" and "speedup" in rec:
        text += f"\nSpeed-up of 2 workers over 1 (epoch time): **{rec['speedup']:.2f}x**.\n"
    return text


def speed_markdown(records: list[dict], *, spec: SpeedSpec | None = None) -> str:
    """The speed section from the speed records; ``spec`` (the grid's SpeedSpec) says which
    measurements the grid leaves out (``benchmarks.speed.included``)."""
    def left_out(name: str) -> bool:
        return spec is not None and not included(spec=spec, name=name)

    by = {r["name"]: r for r in records if r.get("kind") == "speed" and not left_out(r["name"])}
    parts = []
    for name, (title, order, _) in TABLES.items():
        if name == "round_scaling":
            parts.append(RELABEL)
        if left_out(name):
            parts.append(f"{title}: not in this grid (see the `trec` grid's RESULTS.md).\n")
            continue
        rec = by.get(name)
        if not (rec and rec.get("status") == "ok") and name != "scoring":
            rec = _partial(records, name, order)
        if rec and rec.get("status") == "ok":
            parts.append(_section(name, rec))
    has_parts = {p["name"] for p in records if p.get("kind") == "speed_part"}
    parts += [f"Speed benchmark `{r['name']}` failed: `{r.get('error')}`.\n" for r in by.values()
              if r.get("status") != "ok" and r["name"] not in has_parts]
    return "\n".join(parts)

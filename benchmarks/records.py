"""Benchmark records: the JSON files a grid's cells and speed measurements write, and how to read them.

A grid keeps one record per finished cell in ``<out>/records/`` and one per speed measurement in
``<out>/speed/``; the rendered report copies them into ``results-<grid>.json``, which is what the
repository commits, so a report re-renders from there when the work folder is gone.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_record(path: Path) -> dict:
    """A record file's content; an unreadable one (a write cut short, e.g. by a full disk, before
    records were written atomically) reads as missing, so its cell or measurement runs again."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        print(f"{path}: unreadable record, treated as missing", flush=True)
        return {}
    return rec if isinstance(rec, dict) else {}


def load_records(out: Path) -> list[dict]:
    """Every record under ``out``: cells, speed measurements, and the finished sizes of a speed
    measurement whose other sizes did not finish (kind ``speed_part``)."""
    recs = [rec for sub in ("records", "speed") for p in sorted((Path(out) / sub).glob("*.json"))
            if (rec := read_record(p))]
    for p in sorted((Path(out) / "speed" / "parts").glob("*.json")):
        if rec := read_record(p):
            recs.append({"kind": "speed_part", "name": p.name.split("-", 1)[0], "file": p.name, **rec})
    return recs


def committed(results_json: Path) -> tuple[list[dict], dict]:
    """The records and run information a rendered report saved (``results-<grid>.json``); empty
    when there is none."""
    saved = read_record(results_json) if Path(results_json).is_file() else {}
    return list(saved.get("records") or []), dict(saved.get("run_info") or {})


def write_markdown(*, lines: list[str], out: str, repo: Path) -> None:
    """Write a standalone benchmark's Markdown report to ``out`` (relative to ``repo`` unless
    absolute) atomically, and print it."""
    from noiseal_ray.rundir import atomic_write_text

    text = "\n".join(lines)
    atomic_write_text(repo / out if not Path(out).is_absolute() else Path(out), text)
    print(text)

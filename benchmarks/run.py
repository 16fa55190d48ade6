"""Run a benchmark grid and write the results table.

    .venv/bin/python -m benchmarks.run --grid smoke            # same as: noiseal-ray bench --grid smoke

Each finished cell writes ``<out>/records/<cell>.json`` (with a hash of its specification); a
rerun reuses records whose hash matches and runs only what is missing (``--fresh`` reruns all).
The report (``--results`` Markdown, plus CSV and JSON beside it in ``benchmarks/results/``) is
rendered only from those records.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from benchmarks.grid import Cell, Grid

REPO = Path(__file__).resolve().parent.parent


def _rel(p: Path) -> str:
    try:
        return os.path.relpath(p, REPO)
    except ValueError:
        return str(p)


@contextmanager
def own_ray(*, workers: int):
    """A private local Ray for the whole grid (``address="local"``: never join a cluster another
    job started on this machine), sized like ``noiseal_ray.ray_session.ray_session``."""
    import logging

    import ray

    from noiseal_ray.ray_session import local_num_cpus

    for name in ("ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ray.init(address="local", num_cpus=local_num_cpus(workers=workers), include_dashboard=False,
             log_to_driver=bool(os.environ.get("NOISEAL_VERBOSE")), logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def environment() -> dict:
    """Machine and versions, recorded with the run."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {"CPU": f"{cpu}, {os.cpu_count()} logical cores", "GPU": "none used (use_gpu False)",
           "OS": platform.platform(), "Python": platform.python_version()}
    for pkg in ("torch", "ray", "transformers", "cleanlab", "scikit-learn", "numpy", "noiseal-ray"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = "not installed"
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        env["git commit"] = rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def work_dir(out: Path, *, key: str, spec_hash: str) -> Path:
    """A cell's work folder, named by its specification so a rerun of the same spec finds it."""
    return out / "work" / f"{key}-{spec_hash}"


def prune_work(work: Path, *, keep: tuple[str, ...] = ()) -> int:
    """Delete a finished cell's weights: Ray Train checkpoints and ``*.safetensors`` (2.5-4 GB a
    TREC cell; a grid kept them all and filled the disk). The record already holds every figure,
    and labels.parquet, metrics.json and the manifests stay; so do the top-level folders named in
    ``keep`` (a base cell's warm-up, which paired cells adopt). Returns the bytes freed."""
    freed = 0
    for p in list(work.rglob("*")):
        rel = p.relative_to(work).parts
        if rel[0] in keep:
            continue
        if p.is_file() and not p.is_symlink() and (p.suffix == ".safetensors" or "checkpoints" in rel):
            freed += p.stat().st_size
            p.unlink()
    for d in list(work.rglob("checkpoints")):  # now only empty folders
        shutil.rmtree(d, ignore_errors=True)
    return freed


PRUNED = ".pruned"  # marks a finished cell's work folder whose weights prune_work deleted


def start_work(work: Path, *, fresh: bool) -> Path:
    """The work folder a cell runs in. Kept as is when it holds an interrupted run of the same
    specification (methods resume from its pieces); emptied when ``fresh`` (rerun everything) or
    when it holds a finished, pruned run, whose pieces look reusable but lack their weights."""
    if work.exists() and (fresh or (work / PRUNED).exists()):
        shutil.rmtree(work)
    return work


def _cached(cell: Cell, record: Path) -> dict | None:
    """The cell's finished record at ``record`` when it was made for the cell's current specification."""
    from benchmarks.records import read_record

    if not record.is_file():
        return None
    rec = read_record(record)
    return rec if rec.get("spec_hash") == cell.spec_hash() and rec.get("status") == "ok" else None


def run_quality(grid: Grid, *, out: Path, data_root: Path, fresh: bool, only_keys: set[str] | None = None,
                keep_models: bool = False) -> list[dict]:
    """Run the grid's cells (or those in ``only_keys``) that have no record for their current
    specification; each under a lock, so parallel processes sharing ``out`` never run one twice."""
    from noiseal_ray.rundir import hold_run_dir
    from noiseal_ray.errors import OutputError

    rec_dir = out / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i, cell in enumerate(grid.cells):
        if only_keys and cell.key not in only_keys:
            continue
        path = rec_dir / f"{cell.key}.json"
        rec = None if fresh else _cached(cell, path)
        if rec is not None:
            print(f"[{i + 1}/{len(grid.cells)}] {cell.key}: cached record", flush=True)
            records.append(rec)
            continue
        lock = out / "locks" / cell.key
        lock.mkdir(parents=True, exist_ok=True)
        try:
            with hold_run_dir(lock):
                rec = _run_cell(cell, label=f"[{i + 1}/{len(grid.cells)}]", out=out, data_root=data_root,
                                fresh=fresh, keep_models=keep_models, record=path)
        except OutputError as exc:  # a second launch of the same cell must not wreck the first
            print(f"[{i + 1}/{len(grid.cells)}] {cell.key}: skipped, {exc}", flush=True)
            continue
        records.append(rec)
    return records


def _run_cell(cell: Cell, *, label: str, out: Path, data_root: Path, fresh: bool, keep_models: bool,
              record: Path) -> dict:
    """Run one cell in its work folder and write its record to ``record``; the caller holds the cell."""
    from benchmarks.grid import prepare_data
    from benchmarks.methods import run_method
    from noiseal_ray.rundir import atomic_write_text

    rec = None if fresh else _cached(cell, record)  # again, now that this process holds the cell
    if rec is not None:
        print(f"{label} {cell.key}: cached record", flush=True)
        return rec
    print(f"{label} {cell.key} ...", flush=True)
    meta = prepare_data(cell, data_root=data_root, work=out)
    work = start_work(work_dir(out, key=cell.key, spec_hash=cell.spec_hash()), fresh=fresh)
    # The work folder is named by the cell's spec hash, so a partial run found there is of the same
    # spec: methods reuse its finished pieces (NoiseAL's stages, cleanlab's fold models).
    t0 = time.time()
    rec = {"kind": "quality", "key": cell.key, "spec": cell.spec(), "spec_hash": cell.spec_hash(),
           "dataset": cell.dataset, "setting": cell.setting, "seed": cell.seed, "method": cell.method,
           "train_rows": meta["train_rows"], "test_rows": meta["test_rows"],
           "realised_noise": meta["realised_noise"]}
    try:
        rec.update(run_method(cell=cell, meta=meta, work=work))
        rec["status"] = "ok"
    except Exception as exc:  # one failed cell must not lose the others
        traceback.print_exc()
        rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    rec["wall_seconds"] = time.time() - t0
    rec["load_avg_after"] = os.getloadavg()[0]
    atomic_write_text(record, json.dumps(rec, indent=2, default=float))
    if rec["status"] == "ok" and not keep_models:
        # A failed cell keeps its pieces: the rerun resumes from them.
        from benchmarks.methods import WARMUP_DIR

        keep = (WARMUP_DIR,) if cell.method == "base" and cell.training.paired else ()
        print(f"    pruned {prune_work(work, keep=keep) / 2**30:.1f} GiB of model weights from {_rel(work)}", flush=True)
        (work / PRUNED).touch()
    accs = rec.get("test_accuracy_rounds") or []
    print(f"{label} {cell.key}: {rec['status']} in {rec['wall_seconds']:.0f}s"
          + (f", test accuracy per round {[round(a, 4) for a in accs]}" if accs else ""), flush=True)
    return rec


def backfill_from_labels(out: Path) -> int:
    """Add what later versions compute from a run's labels.parquet (``benchmarks.anatomy.FROM_LABELS``:
    label-change detection, where the wrong labels end, broken vs fixed) to NoiseAL records made
    before they existed, from their work folder; no cell is rerun. Returns how many records it completed."""
    from benchmarks.anatomy import FROM_LABELS as derived
    from benchmarks.records import read_record
    from noiseal_ray.rundir import atomic_write_text

    done = 0
    for path in sorted((out / "records").glob("*.json")):
        rec = read_record(path)
        lacking = [k for k in derived if k not in rec]
        if rec.get("status") != "ok" or not str(rec.get("method", "")).startswith("noiseal") or not lacking:
            continue
        labels = work_dir(out, key=rec["key"], spec_hash=rec["spec_hash"]) / "run" / "labels.parquet"
        if not labels.exists():  # a folder of parts, as the pipeline writes it
            continue
        for k in lacking:
            rec[k] = derived[k](labels)
        atomic_write_text(path, json.dumps(rec, indent=2, default=float))
        done += 1
    return done


def run_speed(grid: Grid, *, out: Path, data_root: Path, fresh: bool, names: set[str] | None = None) -> list[dict]:
    """The grid's speed measurements (``benchmarks.speed``); none when the grid has no speed part."""
    from benchmarks import speed

    if grid.speed is None:
        print(f"grid {grid.name} has no speed part", flush=True)
        return []
    return speed.run_all(grid.speed, out=out, data_root=data_root, fresh=fresh, names=names)


def parser(*, prog: str | None = None) -> argparse.ArgumentParser:
    """The bench command line, shared by ``python -m benchmarks.run`` and ``noiseal-ray bench``."""
    from benchmarks.grid import GRIDS

    def grid_name(name: str) -> str:
        if name not in GRIDS:
            raise argparse.ArgumentTypeError(f"--grid must be one of {', '.join(sorted(GRIDS))}")
        return name

    p = argparse.ArgumentParser(prog=prog, description="noiseal-ray benchmarks: quality grid + speed, then RESULTS.md")
    p.add_argument("--grid", default="smoke", type=grid_name,
                   help="smoke (plumbing and a first look, under 15 minutes) | trec (the headline claims, about 9 hours "
                        "on 2 cores) | real (real rule-based noise, Hausa, about an hour) | breadth (NoisyAG-News and "
                        "SST-2, about 70 minutes) | full (days)")
    p.add_argument("--out", default=None, help="work folder for records and runs [default: benchmarks/out/GRID]")
    p.add_argument("--results", default=None, help="Markdown to write, CSV and JSON go to results/ beside it "
                   "[default: benchmarks/RESULTS.md for trec, benchmarks/RESULTS-GRID.md otherwise]")
    p.add_argument("--data-root", default=None, help="datasets folder [default: <repo>/../shared/data]")
    p.add_argument("--only", choices=["quality", "speed", "report"], default=None,
                   help="run one part only (report: render from existing records)")
    p.add_argument("--fresh", action="store_true", help="ignore existing records and rerun everything")
    p.add_argument("--cells", default=None,
                   help="comma-separated cell keys to run (e.g. to run cells in parallel processes sharing --out)")
    p.add_argument("--speed", default=None, help="comma-separated speed benchmarks to run: scoring,round_scaling,ddp")
    p.add_argument("--keep-models", action="store_true",
                   help="keep each finished cell's checkpoints and weights (GBs a cell) instead of deleting them")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m benchmarks.run") -> int:
    """Parse the bench command line and run it; ``prog`` names the command in the rendered report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog=prog).parse_args(argv)
    return bench(grid=args.grid, out=args.out, results=args.results, data_root=args.data_root, only=args.only,
                 fresh=args.fresh, keep_models=args.keep_models, cells=set(args.cells.split(",")) if args.cells else None,
                 speed_names=set(args.speed.split(",")) if args.speed else None,
                 command=f"{prog} " + " ".join(argv))


def check_dependencies(*, methods: set[str], only: str | None) -> None:
    """Stop before any cell runs, in one line, when the grid or the report lacks a package of the
    'bench' extra."""
    import importlib.util

    from benchmarks.report import required_modules
    from noiseal_ray.errors import ConfigError

    needed = required_modules(sorted(methods) if only != "report" else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"noiseal-ray bench needs {', '.join(missing)} (the 'bench' extra): run scripts/setup.sh, "
                          "or pip install 'noiseal-ray[bench]'")


def _canonical(*, grid: str, out: str | None, results: str | None, data_root: str | None) -> str:
    """The command that regenerates a grid's report (no --only/--cells)."""
    opts = (("--out", out), ("--results", results), ("--data-root", data_root))
    return " ".join([f"noiseal-ray bench --grid {grid}", *(f"{k} {v}" for k, v in opts if v)])


def bench(*, grid: str = "smoke", out: str | None = None, results: str | None = None, data_root: str | None = None,
          only: str | None = None, fresh: bool = False, keep_models: bool = False, cells: set[str] | None = None,
          speed_names: set[str] | None = None, command: str | None = None) -> int:
    """Run a grid's parts (all, or ``only`` one) and render its report from the records."""
    from benchmarks.grid import DEFAULT_DATA_ROOT, HEADLINE, get_grid

    g = get_grid(grid)
    check_dependencies(methods={c.method for c in g.cells}, only=only)
    out_p = Path(out) if out else REPO / "benchmarks" / "out" / grid
    if not out_p.is_absolute():
        out_p = Path.cwd() / out_p
    results_p = Path(results) if results else REPO / "benchmarks" / ("RESULTS.md" if grid == HEADLINE else f"RESULTS-{grid}.md")
    # CSV and JSON beside the Markdown: a --results elsewhere must not overwrite the committed ones.
    csv_json_dir = results_p.parent / "results"
    info = {} if only == "report" else run_parts(g, out=out_p, data_root=Path(data_root) if data_root else DEFAULT_DATA_ROOT,
                                                 only=only, fresh=fresh, keep_models=keep_models, cells=cells,
                                                 speed_names=speed_names)
    from benchmarks import records as R, report

    if out_p.is_dir():
        backfill_from_labels(out_p)
    recs = R.load_records(out_p)
    if not recs and only == "report":  # the work folder is gone: the records the last report saved
        saved = csv_json_dir / f"results-{grid}.json"
        recs, info = R.committed(saved if saved.is_file() else REPO / "benchmarks" / "results" / saved.name)
    elif out_p.joinpath("run_info.json").is_file():
        info = json.loads(out_p.joinpath("run_info.json").read_text())
    cmd = {"regenerate": _canonical(grid=grid, out=out, results=results, data_root=data_root),
           "rendered_by": command or f"python -m benchmarks.run --grid {grid}"}
    report.write_all(records=recs, grid=g, results=results_p, csv_json_dir=csv_json_dir, command=cmd,
                     run_info=info, out_rel=_rel(out_p))
    print(f"wrote {_rel(results_p)}", flush=True)
    return 0


def run_parts(g: Grid, *, out: Path, data_root: Path, only: str | None, fresh: bool, keep_models: bool,
              cells: set[str] | None, speed_names: set[str] | None) -> dict:
    """Run the grid's quality cells and speed measurements in one private Ray; returns the run information."""
    from noiseal_ray.rundir import atomic_write_text
    from noiseal_ray.pipeline import configure_data_context

    out.mkdir(parents=True, exist_ok=True)
    run_info_path = out / "run_info.json"
    info = json.loads(run_info_path.read_text()) if run_info_path.is_file() else {}
    info.setdefault("parts", {})
    info["env"] = environment()
    # Recorded before any cell runs: a grid stopped half-way still says where it ran.
    atomic_write_text(run_info_path, json.dumps(info, indent=2))
    with own_ray(workers=2):  # one Ray for the whole grid: run_pipeline and fit join it
        configure_data_context()
        if only in (None, "quality"):
            t0, load0 = time.time(), os.getloadavg()
            run_quality(g, out=out, data_root=data_root, fresh=fresh, only_keys=cells, keep_models=keep_models)
            info["parts"]["quality"] = {"seconds": time.time() - t0, "load_avg_start": load0,
                                        "load_avg_end": os.getloadavg()}
        if only in (None, "speed"):
            t1, load1 = time.time(), os.getloadavg()
            run_speed(g, out=out, data_root=data_root, fresh=fresh, names=speed_names)
            info["parts"]["speed"] = {"seconds": time.time() - t1, "load_avg_start": load1,
                                      "load_avg_end": os.getloadavg()}
    # Another part may have run concurrently into the same folder: merge, do not overwrite.
    latest = json.loads(run_info_path.read_text()) if run_info_path.is_file() else {}
    latest.setdefault("parts", {}).update(info["parts"])
    latest["env"] = info["env"]
    atomic_write_text(run_info_path, json.dumps(latest, indent=2))
    return latest


if __name__ == "__main__":
    sys.exit(main())

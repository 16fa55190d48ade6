"""The run folder: its path rules, lock, atomic writes, leftover sweep and ``manifest.json``.

Every file a run writes goes through a temporary name in the same folder and a rename, so a
killed run leaves either the old file, the new one, or debris that ``sweep_debris`` recognises
by its name. ``manifest.json`` records each completed stage; a rerun skips those.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from noiseal_ray.errors import ConfigError, OutputError

# ---------------------------------------------------------------------------------------------
# where a run folder may be
# ---------------------------------------------------------------------------------------------


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` other than ``file://``."""
    return "://" in path and not path.startswith("file://")


# pathlib folds "s3://bucket/key" into "s3:/bucket/key": a --out handed in as a Path would otherwise
# pass as a relative local folder "s3:".
_FOLDED_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:/(?!/)")


def check_run_dir_path(out: str | Path) -> None:
    """Raise ConfigError unless ``out`` can be a run directory: a local or mounted POSIX path.

    Ray Data tasks on every node write the round tables into it and the driver writes the manifest
    and metrics with plain file I/O, so an object-store URI cannot work; it has to be one path that
    every node sees (NFS, EFS, Filestore, a ReadWriteMany volume). The deployment files' tests apply
    this same rule to every documented ``noiseal-ray run --out``.
    """
    text = str(out)
    folded = _FOLDED_URI.match(text) and not text.startswith("file:")
    if is_uri(text) or folded:
        raise ConfigError(f"--out {out}: the run directory must be a local or mounted path (e.g. NFS); "
                          "give object-store URIs to --storage-path (Ray Train checkpoints) instead")


def check_writable(path: str | Path) -> None:
    """Raise OutputError unless a file can be created in directory ``path`` (created if absent)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"output directory {p} is not writable: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON (numpy scalars and arrays as plain numbers and lists), atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default))


def fresh_tmp_dir(*, final: str | Path) -> Path:
    """An empty ``.<name>.tmp`` folder beside ``final``, to fill and then ``replace_dir`` into place
    (a killed fill is swept as debris by the next run)."""
    final = Path(final)
    tmp = final.parent / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Move a fully written directory ``tmp`` into place at ``final`` (replacing any old one)."""
    final = Path(final)
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)


def copy_dir(*, src: Path) -> Path:
    """A copy of folder ``src`` at ``.<name>.copy`` beside it, for ``replace_dir`` to move elsewhere."""
    tmp = src.parent / f".{src.name}.copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    return tmp


def parquet_rows(folder: str | Path) -> int:
    """Rows in the parquet files of ``folder``, from their footers (no data read)."""
    import pyarrow.parquet as pq  # deferred: only table folders need it, config writes do not

    return sum(pq.ParquetFile(f).metadata.num_rows for f in Path(folder).glob("*.parquet"))


# ---------------------------------------------------------------------------------------------
# leftovers of killed writes, and one process per folder
# ---------------------------------------------------------------------------------------------

# What our own writers leave behind when killed mid-write: atomic_write_bytes' ".<name>.<rand>.tmp",
# the stage writers' ".<name>.tmp", save_bundle's ".<name>.tmp-<rand>", replace_dir's
# ".<name>.old-<hex8>" and check_writable's probe. Only dot-names of exactly these shapes match.
_DEBRIS = re.compile(r"^\.(?:.+\.tmp|.+\.tmp-[A-Za-z0-9_]+|.+\.old-[0-9a-f]{8}|write-probe-[0-9a-f]{8})$")


def sweep_debris(root: str | Path, *, skip: Sequence[str] = ()) -> list[Path]:
    """Delete the leftovers of killed writes under ``root`` (see ``_DEBRIS``); return what went.

    Never descends into the top-level folders named in ``skip`` (e.g. Ray Train's storage).
    Call it only while no other writer works in ``root``.
    """
    root = Path(root)
    gone: list[Path] = []
    if not root.is_dir():
        return gone
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in list(dirnames):
            if _DEBRIS.match(name):
                shutil.rmtree(here / name, ignore_errors=True)
                dirnames.remove(name)
                gone.append(here / name)
        for name in filenames:
            if _DEBRIS.match(name):
                (here / name).unlink(missing_ok=True)
                gone.append(here / name)
    return gone


RUN_LOCK = ".noiseal.lock"  # held (OS file lock) by the process running in a folder
RUN_LOCK_OWNER = ".noiseal.lock.owner"  # who holds it, for the message a second process gets


@contextmanager
def hold_run_dir(path: str | Path) -> Iterator[None]:
    """Hold ``path`` (an existing directory) for this process while the block runs.

    Raises OutputError at once, naming the holder's pid, host and start time, when another process
    holds it: two runs in one folder would sweep each other's temp files (``sweep_debris``) and
    interleave their manifest writes. The lock is the kernel's (``filelock``: flock), so it goes
    with its process, even one killed by SIGKILL: a killed run never leaves a stale lock behind.
    """
    from filelock import FileLock, Timeout  # deferred: only runs take the lock

    p = Path(path)
    lock = FileLock(str(p / RUN_LOCK), timeout=0, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = (p / RUN_LOCK_OWNER).read_text().strip()
        except OSError:
            holder = "unknown"
        raise OutputError(f"{p} is in use by another noiseal-ray process ({holder}); wait for it to finish, "
                          "or use another output folder") from None
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        atomic_write_text(p / RUN_LOCK_OWNER, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------------
# manifest.json: what a rerun may skip
# ---------------------------------------------------------------------------------------------

# Stage names in manifest["stages"]; per-round ones are "r{n}/<step>" (``round_stage``).
INGEST, INIT, LABELS, MODEL = "ingest", "init", "labels", "model"
SCORE, THRESHOLDS, ANNOTATE, TRAIN = "score", "thresholds", "annotate", "train"


def round_stage(*, round_no: int, step: str) -> str:
    """The manifest name of ``step`` (SCORE, THRESHOLDS, ANNOTATE or TRAIN) in round ``round_no``."""
    return f"r{round_no}/{step}"


def train_key(*, round_no: int) -> str:
    """Key of a round's fit summary (losses, test accuracy) in manifest["rounds"]."""
    return f"train{round_no}"


def partition_key(*, round_no: int) -> str:
    """Key of a round's partition summary (sizes, annotator counts, thresholds) in manifest["rounds"]."""
    return f"part{round_no}"


@dataclass
class Manifest:
    """``manifest.json``: the completed stages in order, the corpus facts (``label_names``,
    ``n_rows``, ``has_clean``, ``class_counts``), the threshold state, per-round summaries under
    ``rounds`` and the accumulated ``metrics.stage_seconds``. Saved atomically on every ``mark``."""

    path: Path
    data: dict = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> "Manifest":
        """The manifest of run folder ``out`` (an empty one when there is none yet)."""
        p = out / "manifest.json"
        data = json.loads(p.read_text()) if p.is_file() else {"stages": [], "rounds": {}}
        return cls(p, data)

    def done(self, stage: str) -> bool:
        """True when ``stage`` completed in this or an earlier invocation."""
        return stage in self.data["stages"]

    def mark(self, stage: str, **updates: Any) -> None:
        """Record ``stage`` as completed, with top-level ``updates``, and save."""
        self.data.update(updates)
        if stage not in self.data["stages"]:
            self.data["stages"].append(stage)
        self.save()

    def mark_round(self, stage: str, *, key: str, entry: dict) -> None:
        """Store ``entry`` as ``rounds[key]`` (``train_key``/``partition_key``), then ``mark(stage)``."""
        self.data["rounds"][key] = entry
        self.mark(stage)

    def round_entry(self, key: str) -> dict:
        """``rounds[key]``, or an empty dict when that round has not recorded it."""
        return self.data["rounds"].get(key, {})

    def add_seconds(self, kind: str, seconds: float) -> None:
        """Add to ``metrics.stage_seconds[kind]`` (saved with the next ``mark``)."""
        stage_s = self.data["metrics"]["stage_seconds"]
        stage_s[kind] = stage_s.get(kind, 0.0) + seconds

    @property
    def label_names(self) -> list[str]:
        return self.data["label_names"]

    @property
    def n_rows(self) -> int:
        return self.data["n_rows"]

    def save(self) -> None:
        """Write the manifest atomically."""
        atomic_write_json(self.path, self.data)

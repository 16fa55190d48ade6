"""Persistent cache of LLM answers: append-only parquet parts under ``<run_dir>/llm_cache/``.

A rerun (or a resumed run) asks the LLM only about prompts it has not answered yet. Each
``AnswerCache.add`` writes one new part file: written under a temporary name in the same folder,
then renamed, so a reader never sees half a part, and part names are unique (time, pid, random),
so several Ray actors can write into the same folder at once. Only successful answers are
stored: a failed request is retried by the next run.

Key: sha256 over the prompt version, the model identity, the exact chat messages (system text with
the label list, demonstrations with their labels, the query text) and the allowed choices.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

_PART_PREFIX = "part-"


@dataclass(frozen=True)
class CachedAnswer:
    """A successful answer: label id, the exact choice string and its log-probability (or None)."""

    label: int
    choice: str
    logprob: float | None


def answer_key(
    *, model: str, messages: Sequence[dict[str, str]], choices: Sequence[str], prompt_version: int
) -> str:
    """Hex sha256 identifying one request's answer (canonical JSON of everything that shapes it)."""
    payload = json.dumps(
        {"v": prompt_version, "model": model, "messages": list(messages), "choices": list(choices)},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """In-memory view of the parts in ``directory`` (None: a cache that stores nothing).

    Loads every complete part at construction. Not shared live between processes: answers
    another actor adds later are seen by the next ``AnswerCache`` built on the folder.
    """

    def __init__(self, *, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._entries: dict[str, CachedAnswer] = {}
        if self.directory is not None and self.directory.is_dir():
            self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer for ``key`` (see ``answer_key``), or None."""
        return self._entries.get(key)

    def _load(self) -> None:
        import pyarrow.parquet as pq

        assert self.directory is not None
        for part in sorted(self.directory.glob(f"{_PART_PREFIX}*.parquet")):
            try:
                table = pq.read_table(part, columns=["key", "label", "choice", "logprob"])
            except Exception as exc:  # a foreign or damaged file must not stop a run
                log.warning("skipping unreadable LLM cache part %s: %s", part.name, exc)
                continue
            cols = table.to_pydict()
            for key, label, choice, logprob in zip(cols["key"], cols["label"], cols["choice"], cols["logprob"]):
                self._entries[key] = CachedAnswer(label=int(label), choice=str(choice), logprob=logprob)

    def add(self, entries: Iterable[tuple[str, CachedAnswer]], *, model: str) -> Path | None:
        """Store new answers in memory and, with a directory, as one new part file (atomic).

        Returns the part's path, or None when nothing was written (no entries or no directory).
        """
        rows = [(k, a) for k, a in entries if k not in self._entries]
        for k, a in rows:
            self._entries[k] = a
        if not rows or self.directory is None:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        data: dict[str, list[Any]] = {
            "key": [k for k, _ in rows],
            "label": [a.label for _, a in rows],
            "choice": [a.choice for _, a in rows],
            "logprob": [a.logprob for _, a in rows],
            "model": [model] * len(rows),
            "created": [now] * len(rows),
        }
        schema = pa.schema(
            [
                ("key", pa.string()),
                ("label", pa.int64()),
                ("choice", pa.string()),
                ("logprob", pa.float64()),
                ("model", pa.string()),
                ("created", pa.float64()),
            ]
        )
        table = pa.table(data, schema=schema)
        name = f"{_PART_PREFIX}{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        final = self.directory / name
        tmp = self.directory / f".tmp-{name}"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

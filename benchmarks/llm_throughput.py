"""Relabeling throughput through the product's own path (issue 18): one request at a time vs many
in flight through the same Ray Serve vLLM deployment, against vLLM's offline batch API on the same
prompts in one process (the ceiling).

    .venv/bin/python -m benchmarks.llm_throughput              # 256 queries per mode
    .venv/bin/python -m benchmarks.llm_throughput --n 64 --out /tmp/llm_throughput.md

Queries are what the annotate stage sends for P rows: a TREC question whose given label is wrong
(seeded 40% symmetric flip) with its 10 most similar questions (all-MiniLM-L6-v2 cosine, among up
to ``--pool`` others) and their labels as demonstrations, greedy and constrained to the label
names (``noiseal_ray.annotate.prompt``). Three disjoint query sets of ``--n``, so that vLLM's prefix
cache never sees a prompt twice within one engine:

1. offline: set A through ``vllm.LLM.chat`` in a child process (a fresh engine with the served
   engine's settings), all at once: the most this engine does on this machine;
2. served, many in flight: set A through ``LLMAnnotator`` (the annotate stage's client) with
   ``--concurrency`` requests in flight, to a fresh ``deploy_llm_app`` deployment (what a run
   starts); the same prompts as (1), so the answers can be compared too;
3. served, one at a time: set B, ``LLMAnnotator`` with concurrency 1, same deployment.

Both engines answer one warm-up request first (the constrained-decoding path compiles on first
use). Prompt tokens per set are counted with the model's tokenizer and chat template (set A's count
agrees with what the offline engine reports). "Mean in flight" for the served modes is the sum of the client's request
latencies over the wall time (Little's law): how many requests the server held on average.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The benchmark's options; ``argv`` defaults to the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=256, help="queries per mode")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (a run's llm_concurrency)")
    p.add_argument("--trec", default="../shared/data/trec/train.jsonl", help="relative to the repo root")
    p.add_argument("--pool", type=int, default=3000)
    p.add_argument("--llm-model", default=None, help="default: the packaged SmolLM2-135M-Instruct")
    p.add_argument("--out", default="benchmarks/results/llm_throughput.md")
    p.add_argument("--offline-child", default=None, help=argparse.SUPPRESS)  # internal: queries file
    return p.parse_args(argv)


def build_queries(args: argparse.Namespace) -> tuple[list[list[Any]], list[str], dict[str, str]]:
    """Two disjoint sets (A, B) of ``args.n`` queries with 10 demonstrations, the label names and
    the readable names the LLM is shown."""
    import numpy as np

    from benchmarks.llm_relabel import TREC_DESCRIPTIONS, load_jsonl, prepare_dataset
    from noiseal_ray.annotate.base import Demo, Query

    texts, raw = load_jsonl(REPO / args.trec if not Path(args.trec).is_absolute() else Path(args.trec))
    names = sorted(set(raw))
    y = np.array([names.index(v) for v in raw])
    prep = argparse.Namespace(noise=0.4, seed=0, n=2 * args.n, pool=args.pool)
    ds = prepare_dataset(name="TREC", texts=texts, y_clean=y, label_names=names, args=prep)
    queries = [Query(id=str(i), text=t, given=int(ds["given"][i]),
                     demos=tuple(Demo(*d) for d in ds["neighbours"][i])) for i, t in enumerate(ds["texts"])]
    if len(queries) < 2 * args.n:
        raise SystemExit(f"only {len(queries)} noisy TREC questions; lower --n")
    return [queries[:args.n], queries[args.n:2 * args.n]], names, dict(TREC_DESCRIPTIONS)


def request_bodies(queries: list[Any], *, names: list[str], descriptions: dict[str, str]) -> list[dict]:
    """The chat messages, choices and token limit the annotator sends for each query."""
    from noiseal_ray.annotate.prompt import build_messages, build_request, display_names

    shown = display_names(label_names=names, label_descriptions=descriptions)
    out = []
    for q in queries:
        messages = build_messages(text=q.text, demos=q.demos, label_names=names, label_descriptions=descriptions)
        body = build_request(model="offline", messages=messages, choices=shown)
        out.append({"messages": messages, "choices": shown, "max_tokens": body["max_tokens"]})
    return out


def offline_child(path: str, source: str) -> None:
    """Child process: the requests in ``path`` through ``vllm.LLM.chat`` at once; prints one JSON line."""
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from noiseal_ray.annotate.service import cpu_engine_dtype

    reqs = json.loads(Path(path).read_text())
    t0 = time.monotonic()
    dtype = cpu_engine_dtype() or "auto"  # what the served engine runs in, for a like-for-like ceiling
    llm = LLM(model=source, max_model_len=4096, enable_prefix_caching=True, enforce_eager=True, seed=0, dtype=dtype)

    def params(r: dict) -> SamplingParams:
        return SamplingParams(temperature=0.0, max_tokens=r["max_tokens"], logprobs=1,
                              structured_outputs=StructuredOutputsParams(choice=r["choices"]))

    llm.chat([[{"role": "user", "content": "Say yes or no."}]],
             params({"choices": ["yes", "no"], "max_tokens": 7}), use_tqdm=False)
    start_s = time.monotonic() - t0
    t0 = time.monotonic()
    outs = llm.chat([r["messages"] for r in reqs], [params(r) for r in reqs], use_tqdm=False)
    wall = time.monotonic() - t0
    print("RESULT " + json.dumps({
        "seconds": wall, "start_seconds": start_s, "answers": [o.outputs[0].text.strip() for o in outs],
        "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs),
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs)}), flush=True)


def run_offline(bodies: list[dict], *, source: str, work: Path) -> dict:
    """Run ``offline_child`` in a fresh process (its own engine); its result."""
    path = work / "offline.json"
    path.write_text(json.dumps(bodies))
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.llm_throughput", "--offline-child", str(path),
                           "--llm-model", source], env=env, cwd=REPO, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"offline vLLM failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def run_served(queries: list[Any], *, options: dict, concurrency: int, names: list[str]) -> dict:
    """``queries`` through ``LLMAnnotator`` at ``concurrency``: seconds, answers, mean in flight."""
    import threading

    from noiseal_ray.annotate.llm import LLMAnnotator

    spans: list[float] = []
    lock = threading.Lock()

    class Timed(LLMAnnotator):  # the product's client, each HTTP attempt timed
        def _post_once(self, body, timeout_s=None):
            t = time.monotonic()
            try:
                return super()._post_once(body, timeout_s)
            finally:
                with lock:
                    spans.append(time.monotonic() - t)

    ann = Timed(**{**options, "concurrency": concurrency, "cache_dir": None})
    t0 = time.monotonic()
    answers = ann.annotate(queries=queries, label_names=names)
    wall = time.monotonic() - t0
    ann.close()
    return {"seconds": wall, "answers": [a.label for a in answers], "failed": sum(a.label is None for a in answers),
            "requests": ann.http_requests, "in_flight": sum(spans) / wall}


def main(argv: Sequence[str] | None = None) -> None:
    """All three modes, then the report."""
    args = parse_args(argv)
    from noiseal_ray.annotate.llm_model import resolve_llm_model

    source = resolve_llm_model(args.llm_model)
    if args.offline_child:
        offline_child(args.offline_child, source)
        return
    command = " ".join(["python -m benchmarks.llm_throughput", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    load_start = os.getloadavg()
    (set_a, set_b), names, desc = build_queries(args)
    bodies = request_bodies(set_a, names=names, descriptions=desc)
    tokens = {"A": prompt_tokens(bodies, source=source),
              "B": prompt_tokens(request_bodies(set_b, names=names, descriptions=desc), source=source)}
    with tempfile.TemporaryDirectory(prefix="noiseal-llm-tp-") as tmp:
        offline = run_offline(bodies, source=source, work=Path(tmp))
    print(f"offline: {args.n / offline['seconds']:.2f} prompts/s", flush=True)
    served = serve_modes(args=args, source=source, sets=(set_a, set_b), names=names, desc=desc)
    shown = [desc.get(n, n) for n in names]
    same = sum(a is not None and shown[a] == o for a, o in zip(served["many"]["answers"], offline["answers"]))
    write_report(args=args, command=command, offline=offline, served=served, same=same, tokens=tokens,
                 source=source, load=(load_start, os.getloadavg()))


def serve_modes(*, args: argparse.Namespace, source: str, sets, names: list[str], desc: dict) -> dict:
    """Deploy once; set A with many in flight, then set B one at a time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from benchmarks.llm_relabel import local_llm

    with local_llm(source) as (dep, deploy_s):
        options = {"base_url": dep.base_url, "model": dep.model_id, "timeout_s": 600.0, "retries": 0,
                   "label_descriptions": desc}
        many = run_served(sets[0], options=options, concurrency=args.concurrency, names=names)
        print(f"served, {args.concurrency} in flight: {args.n / many['seconds']:.2f} prompts/s", flush=True)
        one = run_served(sets[1], options=options, concurrency=1, names=names)
        print(f"served, one at a time: {args.n / one['seconds']:.2f} prompts/s", flush=True)
    return {"many": many, "one": one, "deploy_seconds": deploy_s}


def prompt_tokens(bodies: list[dict], *, source: str) -> int:
    """Prompt tokens of these requests: the model's chat template with the generation prompt."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    return sum(len(tok.apply_chat_template(b["messages"], tokenize=True, add_generation_prompt=True,
                                           return_dict=True)["input_ids"]) for b in bodies)


def write_report(*, args: argparse.Namespace, command: str, offline: dict, served: dict, same: int, tokens: dict,
                 source: str, load) -> None:
    """The Markdown report at ``args.out`` (atomically), also printed."""
    from benchmarks.records import write_markdown

    n = args.n
    tok = {"A": tokens["A"] / n, "B": tokens["B"] / n}
    rate = {"offline": n / offline["seconds"], "many": n / served["many"]["seconds"],
            "one": n / served["one"]["seconds"]}
    rows = [
        ("vLLM offline batch (`LLM.chat`, all at once), set A", offline["seconds"], rate["offline"], tok["A"], "-", 0),
        (f"served, up to {args.concurrency} in flight (`LLMAnnotator`), set A", served["many"]["seconds"],
         rate["many"], tok["A"], f"{served['many']['in_flight']:.1f}", served["many"]["failed"]),
        ("served, one at a time (`LLMAnnotator`, concurrency 1), set B", served["one"]["seconds"], rate["one"],
         tok["B"], f"{served['one']['in_flight']:.1f}", served["one"]["failed"]),
    ]
    from noiseal_ray.annotate.service import cpu_engine_dtype

    lines = [
        "# Relabeling throughput: served vs offline",
        "",
        "Produced by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"What: `benchmarks/llm_throughput.py` (its docstring says what each mode includes). {n} TREC queries per "
        f"mode with 10 demonstrations each, {tok['A']:.0f} (set A) and {tok['B']:.0f} (set B) prompt tokens per query on "
        f"average (the offline engine counted {offline['prompt_tokens'] / n:.0f} for set A; "
        f"{offline['output_tokens'] / n:.1f} generated); model `{Path(source).name}` on vLLM's CPU build "
        f"(weights in {cpu_engine_dtype() or 'their own dtype'}), "
        f"{os.cpu_count()} cores; Serve deployment + warm-up {served['deploy_seconds']:.0f} s, offline engine "
        f"start + warm-up {offline['start_seconds']:.0f} s (neither in the rates). Load average (1/5/15 min) at "
        f"start {', '.join(f'{x:.1f}' for x in load[0])}, at end {', '.join(f'{x:.1f}' for x in load[1])}.",
        "",
        "| mode | seconds | prompts/s | prompt tokens/s | mean in flight | failed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, sec, r, t, fl, failed in rows:
        lines.append(f"| {label} | {sec:.1f} | {r:.2f} | {r * t:.0f} | {fl} | {failed} |")
    lines += [
        "",
        f"Many in flight / one at a time: **{rate['many'] / rate['one']:.2f}x**. "
        f"Served (many in flight) / offline batch: **{rate['many'] / rate['offline']:.2f}x**. "
        f"Served and offline gave the same answer on {same} of {n} queries of set A.",
        "",
    ]
    write_markdown(lines=lines, out=args.out, repo=REPO)


if __name__ == "__main__":
    main()

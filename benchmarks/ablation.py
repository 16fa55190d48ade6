"""Single-process NoiseAL loop (no Ray, one model replica) for quick ablations of method choices.

Not the product path: it re-implements the round loop with the package's own pieces (models,
noise, thresholds, partition, losses, kNN over R) so that a choice (learning-rate decay, loss
weights) can be compared in minutes instead of a full Ray run. Used to choose the default
``lr_schedule``; the benchmark grid (``noiseal-ray bench``) is what reports results.

    .venv/bin/python benchmarks/ablation.py --noise asym --rate 0.4 --decay 1            # NoiseAL
    .venv/bin/python benchmarks/ablation.py --noise asym --rate 0.4 --decay 1 --method base
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The ablation's options; ``argv`` defaults to the command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="trec", choices=["trec", "ag"])
    ap.add_argument("--n", type=int, default=0, help="seeded training subsample (0: all)")
    ap.add_argument("--noise", default="asym")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--method", default="noiseal", help="base | noiseal")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    # Only the pipeline's EMA class-mean thresholds exist here: "gmm" used to be accepted and silently
    # trained plain cross-entropy (no partition at all), so it is refused rather than mislabelled.
    ap.add_argument("--thr", default="mean", choices=["mean"],
                    help="partition thresholds: mean (EMA of per-class mean probabilities); a GMM split is not implemented")
    ap.add_argument("--pol", default="knn", help="annotator for P: knn | knn_agree (disagreeing with the model -> H)")
    ap.add_argument("--maxlen", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--decay", type=int, default=0, help="1: linear learning-rate decay over all epochs")
    ap.add_argument("--w", default="1,1,1", help="loss weights")
    return ap.parse_args(argv)


def load(a: argparse.Namespace) -> dict[str, Any]:
    """Train texts with true and noisy class ids, the test split, and the label names."""
    import pandas as pd

    from benchmarks.grid import DEFAULT_DATA_ROOT
    from noiseal_ray.data.noise import inject_noise

    folder = DEFAULT_DATA_ROOT / {"trec": "trec", "ag": "ag-news"}[a.data]
    tr = pd.read_json(folder / ("train.jsonl" if a.data == "trec" else "train_subset_10k.jsonl"), lines=True)
    te = pd.read_json(folder / "test.jsonl", lines=True)
    if a.n:
        tr = tr.sample(n=a.n, random_state=0)
    names = sorted(set(map(str, tr.label)))
    index = {k: i for i, k in enumerate(names)}
    clean = np.array([index[str(x)] for x in tr.label])
    given = inject_noise(clean, num_classes=len(names), kind=a.noise, rate=a.rate, seed=0)
    print("noise", (given != clean).mean(), flush=True)
    return {"names": names, "texts": list(map(str, tr.text)), "clean": clean, "given": given,
            "ttest": list(map(str, te.text)), "ytest": np.array([index[str(x)] for x in te.label])}


class Loop:
    """Both models, their optimizers and the training rows: score, train an epoch, measure."""

    def __init__(self, a: argparse.Namespace, data: dict[str, Any]) -> None:
        import torch

        from noiseal_ray.models.bundle import new_bundle

        self.a, self.d, self.C, self.N = a, data, len(data["names"]), len(data["texts"])
        b = new_bundle(strong_model=None, label_names=data["names"], max_length=a.maxlen, weak_embed_dim=128,
                       weak_hidden=128, seed=0)
        self.S, self.W, self.tok = b.strong, b.weak, b.tokenizer
        self.opt_s = torch.optim.AdamW(self.S.parameters(), lr=a.lr)
        self.opt_w = torch.optim.AdamW(self.W.parameters(), lr=1e-3)
        self.rng = np.random.default_rng(0)
        self.epochs_done = 0

    def score(self, models: list, txts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """Softmax probabilities of each model, and the strong model's normalised embeddings."""
        import torch

        from noiseal_ray.models.bundle import encode

        order = np.argsort([len(t) for t in txts])  # length bucketing: padding dominates on CPU
        res = [np.zeros((len(txts), self.C), np.float32) for _ in models]
        emb = np.zeros((len(txts), self.S.emb_dim), np.float32)
        with torch.inference_mode():
            for s in range(0, len(txts), 64):
                idx = order[s:s + 64]
                ids, mask, _ = encode(self.tok, [txts[i] for i in idx], max_length=self.a.maxlen)
                for j, mdl in enumerate(models):
                    mdl.eval()
                    lg, e = mdl(ids, mask)
                    res[j][idx] = torch.softmax(lg, -1).numpy()
                    if mdl is self.S:
                        emb[idx] = torch.nn.functional.normalize(e, dim=-1).numpy()
        return res, emb

    def test_acc(self) -> float:
        """The strong model's accuracy on the clean test split."""
        (p,), _ = self.score([self.S], self.d["ttest"])
        return float((p.argmax(1) == self.d["ytest"]).mean())

    def epoch(self, part: np.ndarray, llm: np.ndarray) -> float:
        """One epoch of NoiseAL's loss on both models (plain cross-entropy when every row is in R); seconds."""
        import torch

        from noiseal_ray.losses import noiseal_loss
        from noiseal_ray.models.bundle import encode

        a, given = self.a, self.d["given"]
        self.S.train()
        self.W.train()
        if a.decay:
            left = 1 - self.epochs_done / (a.warmup + a.rounds)
            for g in self.opt_s.param_groups:
                g["lr"] = a.lr * left
            for g in self.opt_w.param_groups:
                g["lr"] = 1e-3 * left
        self.epochs_done += 1
        perm, t0 = self.rng.permutation(self.N), time.time()
        weights = tuple(float(x) for x in a.w.split(","))
        for s in range(0, self.N, 32):
            idx = perm[s:s + 32]
            ids, mask, _ = encode(self.tok, [self.d["texts"][i] for i in idx], max_length=a.maxlen)
            lab, pt = torch.as_tensor(given[idx]), torch.as_tensor(part[idx].astype(np.int64))
            ll = torch.as_tensor(llm[idx])
            for mdl, opt in ((self.S, self.opt_s), (self.W, self.opt_w)):
                lg, e = mdl(ids, mask)
                loss = noiseal_loss(emb=e, logits=lg, head=mdl.head, labels=lab, llm_labels=ll, part=pt,
                                    num_classes=self.C, weights=weights)
                opt.zero_grad()
                loss.total.backward()
                opt.step()
        return time.time() - t0


def knn_relabel(*, part: np.ndarray, given: np.ndarray, emb: np.ndarray, texts: list[str], C: int) -> np.ndarray:
    """The similarity-weighted vote of the 10 nearest R rows for every P row; -1 elsewhere."""
    from noiseal_ray.annotate.demos import DemoPool

    R = part == 0
    pool = DemoPool(texts=np.array(texts, object)[R], labels=given[R], embeddings=emb[R])
    newl = -np.ones(len(part), np.int64)
    qi = np.flatnonzero(part == 1)
    if len(qi):
        idx, sims = pool.nearest(emb[qi], k=10)
        for j, q in enumerate(qi):
            v = np.zeros(C)
            np.add.at(v, pool.labels[idx[j]], np.maximum(sims[j], 0) + 1e-6)
            newl[q] = v.argmax()
    return newl


def noiseal_round(loop: Loop, *, r: int, state: Any) -> tuple[np.ndarray, np.ndarray]:
    """Score, partition (EMA class-mean thresholds) and relabel P by kNN; prints what the round did.
    Returns the partition (0 R, 1 P, 2 H) and the annotator labels (-1 outside P)."""
    from noiseal_ray.partition import class_means, partition

    given, clean, C = loop.d["given"], loop.d["clean"], loop.C
    (ps, pw), emb = loop.score([loop.S, loop.W], loop.d["texts"])
    rows = np.arange(loop.N)
    p_s, p_w = ps[rows, given], pw[rows, given]
    state.update(mean_strong=class_means(p_s, given, num_classes=C), mean_weak=class_means(p_w, given, num_classes=C))
    part = partition(p_strong=p_s, p_weak=p_w, labels=given, tau_strong=state.strong, tau_weak=state.weak)
    wrong, flag, pp = given != clean, part != 0, part == 1
    prec, rec = (flag & wrong).sum() / max(flag.sum(), 1), (flag & wrong).sum() / wrong.sum()
    ppr = (pp & wrong).sum() / max(pp.sum(), 1)
    newl = knn_relabel(part=part, given=given, emb=emb, texts=loop.d["texts"], C=C)
    if loop.a.pol == "knn_agree":
        dis = pp & (newl != ps.argmax(1))
        part[dis] = 2
        newl[dis] = -1
    llm = np.where(part == 1, newl, -1)
    kacc = (llm[part == 1] == clean[part == 1]).mean() if (part == 1).any() else float("nan")
    final = given.copy()
    final[part == 1] = llm[part == 1]
    final[part == 2] = ps.argmax(1)[part == 2]
    print(f"round {r+1}: R {(part == 0).sum()} P {(part==1).sum()} H {(part==2).sum()} detP {prec:.3f} detR {rec:.3f} "
          f"Pprec {ppr:.3f} knn_acc {kacc:.3f} labelacc {(final==clean).mean():.3f} weak_acc "
          f"{(pw.argmax(1)==clean).mean():.3f} strong_train_acc {(ps.argmax(1)==clean).mean():.3f}", flush=True)
    return part, llm


def main(argv: list[str] | None = None) -> None:
    """Warm-up epochs, then ``--rounds`` NoiseAL rounds (or plain epochs for ``--method base``);
    prints the test accuracy after each epoch and a final ``RESULT`` JSON line."""
    import torch

    from noiseal_ray.partition import ThresholdState

    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    loop = Loop(a, load(a))
    part, llm = np.zeros(loop.N, np.int8), -np.ones(loop.N, np.int64)
    state = ThresholdState(beta=0.9, per_class=True)
    hist = []
    for ep in range(a.warmup):
        dt = loop.epoch(part, llm)
        hist.append(loop.test_acc())
        print(f"warmup {ep} acc {hist[-1]:.3f} ({dt:.0f}s)", flush=True)
    for r in range(a.rounds):
        if a.method != "base":
            part, llm = noiseal_round(loop, r=r, state=state)
        dt = loop.epoch(part, llm)
        hist.append(loop.test_acc())
        print(f"base ep acc {hist[-1]:.3f}" if a.method == "base" else f"round {r+1} acc {hist[-1]:.3f} ({dt:.0f}s)",
              flush=True)
    print("RESULT", json.dumps({**vars(a), "hist": hist}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this checkout's packages
    main()

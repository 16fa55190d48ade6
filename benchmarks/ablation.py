"""Single-process NoiseAL loop (no Ray, one model replica) for quick ablations of method choices.

Not the product path: it re-implements the round loop in ~100 lines with the package's own pieces
(models, noise, thresholds, partition, losses, kNN over R) so that a choice (learning-rate decay,
loss weights) can be compared in minutes instead of a full Ray run. Used to choose the default
``lr_schedule``; the benchmark grid (``noiseal-ray bench``) is what reports results.

    .venv/bin/python benchmarks/ablation.py --noise asym --rate 0.4 --decay 1            # NoiseAL
    .venv/bin/python benchmarks/ablation.py --noise asym --rate 0.4 --decay 1 --method base
"""
import argparse, json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.grid import DEFAULT_DATA_ROOT
from noiseal_ray.models.bundle import new_bundle, encode
from noiseal_ray.data.noise import inject_noise
from noiseal_ray.partition import ThresholdState, class_means, partition
from noiseal_ray.losses import noiseal_loss
from noiseal_ray.annotate.demos import DemoPool

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="trec")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--noise", default="asym"); ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--method", default="noiseal")  # base | noiseal
    ap.add_argument("--warmup", type=int, default=1); ap.add_argument("--rounds", type=int, default=3)
    # Only the pipeline's EMA class-mean thresholds exist here: "gmm" used to be accepted and silently
    # trained plain cross-entropy (no partition at all), so it is refused rather than mislabelled.
    ap.add_argument("--thr", default="mean", choices=["mean"],
                    help="partition thresholds: mean (EMA of per-class mean probabilities); a GMM split is not implemented")
    ap.add_argument("--pol", default="knn")  # annotator for P
    ap.add_argument("--maxlen", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--decay", type=int, default=0)
    ap.add_argument("--w", default="1,1,1")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    path = {"trec": "trec", "ag": "ag-news"}[a.data]
    import pandas as pd
    tr = pd.read_json(DEFAULT_DATA_ROOT / path / ("train.jsonl" if a.data == "trec" else "train_subset_10k.jsonl"), lines=True)
    te = pd.read_json(DEFAULT_DATA_ROOT / path / "test.jsonl", lines=True)
    if a.n:
        tr = tr.sample(n=a.n, random_state=0)
    names = sorted(set(map(str, tr.label)))
    C = len(names); m = {k: i for i, k in enumerate(names)}
    clean = np.array([m[str(x)] for x in tr.label]); texts = list(map(str, tr.text))
    ytest = np.array([m[str(x)] for x in te.label]); ttest = list(map(str, te.text))
    given = inject_noise(clean, num_classes=C, kind=a.noise, rate=a.rate, seed=0)
    print("noise", (given != clean).mean(), flush=True)
    b = new_bundle(strong_model=None, label_names=names, max_length=a.maxlen, weak_embed_dim=128, weak_hidden=128, seed=0)
    S, W, tok = b.strong, b.weak, b.tokenizer
    os_ = torch.optim.AdamW(S.parameters(), lr=a.lr); ow = torch.optim.AdamW(W.parameters(), lr=1e-3)
    N = len(texts); rng = np.random.default_rng(0)

    def score(model_list, txts):
        outs = [[] for _ in model_list]; embs = []
        order = np.argsort([len(t) for t in txts])
        with torch.inference_mode():
            res = [np.zeros((len(txts), C), np.float32) for _ in model_list]; E = np.zeros((len(txts), S.emb_dim), np.float32)
            for s in range(0, len(txts), 64):
                idx = order[s:s+64]
                ids, mask, _ = encode(tok, [txts[i] for i in idx], max_length=a.maxlen)
                for j, mdl in enumerate(model_list):
                    mdl.eval(); lg, e = mdl(ids, mask)
                    res[j][idx] = torch.softmax(lg, -1).numpy()
                    if mdl is S: E[idx] = torch.nn.functional.normalize(e, dim=-1).numpy()
        return res, E

    def test_acc():
        (p,), _ = score([S], ttest); return float((p.argmax(1) == ytest).mean())

    EP = [0]
    def epoch(part, llm):
        S.train(); W.train()
        if a.decay:
            total_ep = a.warmup + a.rounds
            for g in os_.param_groups: g["lr"] = a.lr * (1 - EP[0] / total_ep)
            for g in ow.param_groups: g["lr"] = 1e-3 * (1 - EP[0] / total_ep)
        EP[0] += 1
        perm = rng.permutation(N); t0 = time.time()
        for s in range(0, N, 32):
            idx = perm[s:s+32]
            ids, mask, _ = encode(tok, [texts[i] for i in idx], max_length=a.maxlen)
            lab = torch.as_tensor(given[idx]); pt = torch.as_tensor(part[idx].astype(np.int64)); ll = torch.as_tensor(llm[idx])
            for mdl, opt in ((S, os_), (W, ow)):
                lg, e = mdl(ids, mask)
                L = noiseal_loss(emb=e, logits=lg, head=mdl.head, labels=lab, llm_labels=ll, part=pt, num_classes=C, weights=tuple(float(x) for x in a.w.split(",")))
                opt.zero_grad(); L.total.backward(); opt.step()
        return time.time() - t0

    part = np.zeros(N, np.int8); llm = -np.ones(N, np.int64)
    state = ThresholdState(beta=0.9, per_class=True)
    hist = []
    for ep in range(a.warmup):
        dt = epoch(part, llm); acc = test_acc(); hist.append(acc); print(f"warmup {ep} acc {acc:.3f} ({dt:.0f}s)", flush=True)
    total = a.warmup + a.rounds
    for r in range(a.rounds):
        if a.method == "base":
            dt = epoch(part, llm); acc = test_acc(); hist.append(acc); print(f"base ep acc {acc:.3f}", flush=True); continue
        (ps, pw), E = score([S, W], texts)
        rows = np.arange(N)
        p_s, p_w = ps[rows, given], pw[rows, given]
        if a.thr == "mean":
            state.update(mean_strong=class_means(p_s, given, num_classes=C), mean_weak=class_means(p_w, given, num_classes=C))
            part = partition(p_strong=p_s, p_weak=p_w, labels=given, tau_strong=state.strong, tau_weak=state.weak)
        wrong = given != clean
        flag = part != 0
        prec = (flag & wrong).sum() / max(flag.sum(), 1); rec = (flag & wrong).sum() / wrong.sum()
        pp = part == 1; ppr = (pp & wrong).sum() / max(pp.sum(), 1)
        # annotate P by kNN over R
        R = part == 0
        pool = DemoPool(texts=np.array(texts, object)[R], labels=given[R], embeddings=E[R])
        newl = -np.ones(N, np.int64)
        qi = np.flatnonzero(pp)
        if len(qi):
            idx, sims = pool.nearest(E[qi], k=10)
            for j, q in enumerate(qi):
                v = np.zeros(C)
                np.add.at(v, pool.labels[idx[j]], np.maximum(sims[j], 0) + 1e-6)
                newl[q] = v.argmax()
        if a.pol == "knn_agree":
            pred = ps.argmax(1)
            dis = pp & (newl != pred)
            part[dis] = 2; newl[dis] = -1
        llm = np.where(part == 1, newl, -1)
        kacc = (llm[part == 1] == clean[part == 1]).mean() if (part == 1).any() else float("nan")
        final = given.copy(); final[part == 1] = llm[part == 1]; final[part == 2] = ps.argmax(1)[part == 2]
        print(f"round {r+1}: R {R.sum()} P {(part==1).sum()} H {(part==2).sum()} detP {prec:.3f} detR {rec:.3f} Pprec {ppr:.3f} knn_acc {kacc:.3f} labelacc {(final==clean).mean():.3f} weak_acc {(pw.argmax(1)==clean).mean():.3f} strong_train_acc {(ps.argmax(1)==clean).mean():.3f}", flush=True)
        dt = epoch(part, llm); acc = test_acc(); hist.append(acc); print(f"round {r+1} acc {acc:.3f} ({dt:.0f}s)", flush=True)
    print("RESULT", json.dumps({**vars(a), "hist": hist}))


if __name__ == "__main__":
    main()

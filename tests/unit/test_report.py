"""The HTML report on synthetic run directories (no Ray): key numbers, embedded PNGs, escaping,
edge cases (no clean labels, no test data, annotator none, one round, 1000 classes), CLI."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from noiseal_ray.config import RunConfig, save_config
from noiseal_ray.finalize import batch_stats, final_labels, summarise
from noiseal_ray.partition import ThresholdState, partition
from noiseal_ray.pipeline import Manifest, build_metrics

XSS = "<script>alert(1)</script>"


def make_run(out: Path, *, n: int = 240, classes: int = 6, rounds: int = 2, clean: bool = True, test: bool = True,
             annotator: str = "knn", hard_policy: str = "strong", seed: int = 0, xss: bool = True) -> Path:
    """A run directory as `noiseal-ray run` leaves it: config.yaml, manifest.json, metrics.json,
    labels.parquet/ and rounds/r{n}/table/, built with the pipeline's own partition and metrics code."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"class_{i}" for i in range(classes)]
    if xss:
        names[-1] = "<b>bold</b>&co"
    truth = rng.integers(0, classes, n)
    noisy = rng.random(n) < 0.3
    given = np.where(noisy, (truth + rng.integers(1, max(classes, 2), n)) % classes, truth)
    texts = [f"sample {i} about {names[truth[i]]}" for i in range(n)]
    if xss:
        texts[0] = f"evil {XSS} & <img src=x onerror=alert(2)>"
        given[0] = (truth[0] + 1) % classes  # a corrected row: shows up in the review tables
        noisy[0] = True
    ids = [f"id-{i:05d}" for i in range(n)]
    cfg = RunConfig(data="/data/corpus.csv", label_col="noisy_label", clean_label_col="label" if clean else None,
                    test_data="/data/test.csv" if test else None, rounds=rounds, annotator=annotator,
                    hard_policy=hard_policy, strong_model="tiny-encoder", report=False)
    save_config(cfg, out / "config.yaml")
    state = ThresholdState(beta=0.9, per_class=True)
    manifest = Manifest(out / "manifest.json", {"stages": [], "rounds": {}, "label_names": names, "n_rows": n,
                                                 "has_clean": clean, "class_counts":
                                                     np.bincount(given, minlength=classes).tolist(),
                                                 "metrics": {"rounds": [], "stage_seconds": {}}})
    llm = np.full(n, -1)
    logprob = np.full(n, np.nan)
    llm_round = np.full(n, -1)
    for r in range(0, rounds + 1):
        manifest.data["rounds"][f"train{r}"] = {"round": r, "train": {"loss_strong": 1.5 / (r + 1), "loss_weak": 1.7 / (r + 1)},
                                                **({"test_accuracy": 0.5 + 0.1 * r} if test else {})}
    for r in range(1, rounds + 2):
        sharp = 0.15 * r
        p_strong = np.clip(np.where(noisy, rng.beta(2, 5, n), rng.beta(5, 2, n)) * (1 - sharp) + sharp * ~noisy, 0, 1)
        p_weak = np.clip(np.where(noisy, rng.beta(2, 4, n), rng.beta(4, 2, n)), 0, 1)
        state.update(mean_strong=np.array([p_strong[given == c].mean() if (given == c).any() else np.nan
                                           for c in range(classes)]),
                     mean_weak=np.array([p_weak[given == c].mean() if (given == c).any() else np.nan
                                         for c in range(classes)]))
        part = partition(p_strong=p_strong, p_weak=p_weak, labels=given, tau_strong=state.strong, tau_weak=state.weak)
        if xss:
            part[0] = 1
        pred = np.where(rng.random(n) < 0.8, truth, rng.integers(0, classes, n))
        pred_prob = rng.uniform(0.3, 1.0, n)
        if annotator != "none":
            need = (part == 1) & (llm < 0)
            llm[need] = np.where(rng.random(need.sum()) < 0.85, truth[need], rng.integers(0, classes, need.sum()))
            logprob[need] = np.log(rng.uniform(0.2, 1.0, need.sum()))
            llm_round[need] = r
            if xss:
                llm[0], logprob[0] = truth[0], 0.0
        err = [""] * n
        table = pa.table({
            "id": ids, "text": texts, "label": given.astype(np.int64),
            "clean_label": (truth if clean else np.full(n, -1)).astype(np.int64), "part": part.astype(np.int8),
            "llm_label": llm.astype(np.int64), "llm_logprob": logprob.copy(), "llm_error": err,
            "llm_round": llm_round.astype(np.int64), "llm_cached": np.zeros(n, bool),
            "p_strong": p_strong.astype(np.float32), "p_weak": p_weak.astype(np.float32),
            "pred": pred.astype(np.int64), "pred_prob": pred_prob.astype(np.float32), "truncated": np.zeros(n, bool)})
        tdir = out / "rounds" / f"r{r}" / "table"
        tdir.mkdir(parents=True, exist_ok=True)
        half = n // 2
        pq.write_table(table.slice(0, half), tdir / "part-0.parquet")
        pq.write_table(table.slice(half), tdir / "part-1.parquet")
        arrays = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}
        counts = {k: int(v[0]) for k, v in batch_stats(arrays, round_no=r, hard_policy=hard_policy).items()}
        summary = summarise(counts)
        summary["thresholds"] = {"strong": state.strong.tolist(), "weak": state.weak.tolist()}
        manifest.data["rounds"][f"part{r}"] = summary
    manifest.data["thresholds"] = state.to_dict()
    manifest.data["metrics"]["stage_seconds"] = {"train": 61.5, "score": 12.25, "partition": 3.0, "annotate": 8.0}
    manifest.save()
    # labels.parquet, as write_labels does it, from the final round table
    final = final_labels(part=part.astype(np.int64), given=given, llm=llm, pred=pred, hard_policy=hard_policy)
    nm = np.array(names, dtype=object)
    cols = {"id": ids, "text": texts, "given_label": nm[given].tolist(), "final_label": nm[final].tolist(),
            "partition": np.array(["R", "P", "H"], dtype=object)[part.astype(np.int64)].tolist(),
            "llm_label": [nm[v] if v >= 0 else None for v in llm], "llm_logprob": logprob,
            "llm_error": pa.array([None] * n, pa.string()), "p_strong": p_strong, "p_weak": p_weak,
            "pred_label": nm[pred].tolist(), "pred_prob": pred_prob, "changed": final != given,
            "truncated": np.zeros(n, bool)}
    if clean:
        cols["clean_label"] = nm[truth].tolist()
    ldir = out / "labels.parquet"
    ldir.mkdir(exist_ok=True)
    pq.write_table(pa.table(cols), ldir / "part-0.parquet")
    metrics = build_metrics(manifest=manifest, config=cfg, wall=93.0)
    (out / "metrics.json").write_text(json.dumps(metrics, default=float))
    return out


def images(doc: str) -> list[bytes]:
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", doc)
    assert len(srcs) == len(re.findall(r"<img\b", doc))
    out = []
    for s in srcs:
        assert s.startswith("data:image/png;base64,"), s[:60]
        raw = base64.b64decode(s.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(raw)
    return out


def no_external_refs(doc: str) -> None:
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", doc)
    assert "<link" not in doc and "@import" not in doc and "url(" not in doc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from noiseal_ray.report import write_report

    run = make_run(tmp_path_factory.mktemp("run") / "out")
    path = write_report(run_dir=run)
    return run, path.read_text()


def pct(x: float) -> str:
    """The report's percentage format, written out here (not imported) so a wrong one fails."""
    return f"{100 * x:.1f}%"


class ReportDoc(HTMLParser):
    """The report as a reader sees it, for checks that cannot match base64 image data by chance.

    ``text``: the visible text (no <script>/<style>; <img> data lives in attributes, never here);
    ``cards``: {key: value} of the summary cards; ``kv``: {row header: cell} of every key/value
    table; ``tables``: {class: [table, ...]} of the other tables, each table a list of rows, each
    row a list of cell texts (header row first); ``headings``: the h2/h3 texts. Entities are decoded (``&lt;`` -> ``<``)."""

    def __init__(self, doc: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text_parts: list[str] = []
        self.cards: dict[str, str] = {}
        self.kv: dict[str, str] = {}
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.headings: list[str] = []
        self._skip = 0
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self._card_part: str | None = None
        self._buf: list[str] = []
        self._card: dict[str, str] = {}
        self.feed(doc)
        self.close()
        self.text = " ".join(" ".join(self.text_parts).split())

    @staticmethod
    def _clean(parts: list[str]) -> str:
        return " ".join("".join(parts).split())

    def handle_starttag(self, tag, attrs):
        cls = (dict(attrs).get("class") or "").split()
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "table":
            self._table = cls[0] if cls else ""
            if self._table != "kv":
                self.tables.setdefault(self._table, []).append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in ("h2", "h3"):
            self._heading = []
        elif tag == "div" and ("v" in cls or "k" in cls):
            self._card_part, self._buf = cls[0], []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append(self._clean(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._table == "kv":
                assert len(self._row) == 2, self._row
                assert self._row[0] not in self.kv, f"key/value row {self._row[0]!r} twice"
                self.kv[self._row[0]] = self._row[1]
            elif self._table is not None:
                self.tables[self._table][-1].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag in ("h2", "h3") and self._heading is not None:
            self.headings.append(self._clean(self._heading))
            self._heading = None
        elif tag == "div" and self._card_part is not None:
            self._card[self._card_part] = self._clean(self._buf)
            self._card_part = None
            if "k" in self._card:  # the key closes a card (value first)
                assert self._card["k"] not in self.cards, f"card {self._card['k']!r} twice"
                self.cards[self._card["k"]] = self._card.pop("v")
                self._card = {}

    def handle_data(self, data):
        if self._skip:
            return
        self.text_parts.append(data)
        for buf in (self._cell, self._heading, self._buf if self._card_part else None):
            if buf is not None:
                buf.append(data)

    def card(self, prefix: str) -> tuple[str, str]:
        """(key, value) of the one card whose key starts with ``prefix``."""
        hits = [(k, v) for k, v in self.cards.items() if k.startswith(prefix)]
        assert len(hits) == 1, (prefix, self.cards)
        return hits[0]

    def rows(self, cls: str) -> tuple[list[str], list[list[str]]]:
        """(headers, body rows) of the one table of class ``cls``."""
        assert len(self.tables.get(cls, [])) == 1, (cls, sorted(self.tables))
        head, *body = self.tables[cls][0]
        return head, body


def test_report_parser_sees_no_image_data(full_run):
    """The parsed text holds none of the base64 PNG data that made substring checks vacuous."""
    _, doc = full_run
    rd = ReportDoc(doc)
    assert len(re.findall(r"[A-Za-z0-9+/]{200,}", doc)) >= 7  # the data is in the document ...
    assert not re.search(r"[A-Za-z0-9+/]{60,}", rd.text)  # ... and not in what the checks read
    assert "window.addEventListener" not in rd.text and "border-collapse" not in rd.text


def test_report_has_key_numbers(full_run):
    run, doc = full_run
    assert (run / "report.html").is_file()
    m = json.loads((run / "metrics.json").read_text())
    rd = ReportDoc(doc)
    labels = pq.read_table(run / "labels.parquet").to_pandas()
    n = len(labels)

    # Summary cards: sizes of the final partition, test accuracy, detection F1, changed labels.
    assert rd.cards["samples"] == f"{n:,}" == f"{m['rows']:,}"
    final_sizes = m["final"]["sizes"]
    assert sum(final_sizes.values()) == n
    assert final_sizes == labels["partition"].value_counts().to_dict()  # the fixture is consistent
    for p, full in (("R", "clean (R)"), ("P", "purified (P)"), ("H", "hard (H)")):
        key, value = rd.card(full)
        assert value == f"{final_sizes[p]:,}", (p, value)
        assert key == f"{full} · {pct(final_sizes[p] / n)}", key
    assert rd.cards["labels changed"] == f"{int(labels['changed'].sum()):,}"
    assert 0 < labels["changed"].sum() < n
    acc = m["final"]["test_accuracy_last"]
    best = m["final"]["test_accuracy_best"]
    assert rd.cards[f"test accuracy (best {pct(best)})"] == pct(acc)
    assert rd.kv["test accuracy (last / best)"] == f"{pct(acc)} / {pct(best)}"
    det = m["final"]["detection"]
    assert rd.cards["noise detection F1"] == pct(det["f1"])
    assert rd.kv["detection precision / recall / F1"].startswith(
        f"{pct(det['precision'])} / {pct(det['recall'])} / {pct(det['f1'])} ")
    corr = m["final"]["correction"]
    assert rd.kv["changed labels as a detector: precision / recall / F1"].startswith(
        f"{pct(corr['precision'])} / {pct(corr['recall'])} / {pct(corr['f1'])} ")
    rec = m["final"]["recovery"]
    assert rd.kv["label accuracy given → final"] == f"{pct(rec['given_accuracy'])} → {pct(rec['final_accuracy'])}"

    # Rounds table: one row per metrics round, with its R/P/H sizes, losses, test accuracy, det. F1.
    head, body = rd.rows("rounds")
    assert head[:10] == ["round", "R", "P", "H", "new annotations", "failed", "changed", "loss strong", "loss weak",
                         "test acc."] and head[12] == "det. F1"
    last = len(m["rounds"]) - 1
    assert [r[0] for r in body] == ["warm-up" if e["round"] == 0 else "final" if e["round"] == last else str(e["round"])
                                    for e in m["rounds"]]
    assert sum("sizes" in e for e in m["rounds"]) == 3  # 2 rounds + the final partition
    for e, row in zip(m["rounds"], body):
        cells = dict(zip(head, row))
        for p in ("R", "P", "H"):
            want = f"{e['sizes'][p]:,}" if "sizes" in e else "–"
            assert cells[p] == want, (e["round"], p, cells[p], want)
        if "sizes" in e:
            assert cells["changed"] == f"{e['changed']:,}"
            assert cells["det. F1"] == pct(e["detection"]["f1"])
        assert cells["loss strong"] == (f"{e['train']['loss_strong']:.3f}" if "train" in e else "–")
        assert cells["loss weak"] == (f"{e['train']['loss_weak']:.3f}" if "train" in e else "–")
        assert cells["test acc."] == (pct(e["test_accuracy"]) if "test_accuracy" in e else "–")
    assert body[-1][1:4] == [f"{final_sizes[p]:,}" for p in ("R", "P", "H")]

    # Per-class table: samples and changed labels per given class, counted here from labels.parquet.
    head, body = rd.rows("classes")
    assert head[:2] == ["given label", "samples"] and head[6] == "changed"
    by_class = {r[0]: r for r in body}
    names = m["label_names"]
    assert sorted(by_class) == sorted(names)  # names decoded from their escaped form
    for name, g in labels.groupby("given_label"):
        assert by_class[name][1] == f"{len(g):,}", name
        assert by_class[name][6] == f"{int(g['changed'].sum()):,}", name
        assert by_class[name][2] == pct((g["partition"] == "R").sum() / len(g)), name

    assert "Most confident corrections" in rd.headings and "Most doubtful samples" in rd.headings
    # thresholds are per class: the report says how they are shown (the default split rule's
    # per-class mixture, with the class-mean EMA rule for the classes it cannot fit)
    assert rd.kv["thresholds"].startswith("split rule gmm|class-mean-strong/weak-mean, refit every round")
    assert "class-mean EMA fallback" in rd.kv["thresholds"]
    assert "Thresholds are per class" in rd.text


def test_report_images_are_embedded_pngs(full_run):
    _, doc = full_run
    pngs = images(doc)
    # sizes, quality, 3 rounds x confidence, transition, noise
    assert len(pngs) == 7
    no_external_refs(doc)


def test_report_escapes_untrusted_text(full_run):
    _, doc = full_run
    assert XSS not in doc and "<img src=x" not in doc and "<b>bold</b>" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert "&lt;b&gt;bold&lt;/b&gt;&amp;co" in doc
    # the only script is the report's own image check
    assert doc.count("<script>") == 1


def test_report_escapes_config_values(tmp_path):
    """Paths and model names from config.yaml are text too: quotes, ampersands and tags come out escaped."""
    import yaml

    from noiseal_ray.report import build_report

    run = make_run(tmp_path / "r", n=60, rounds=0, xss=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.update(data='/d/"x" & <script>y</script>.csv', strong_model="<i>m</i>&'q'", annotator="llm",
               llm_model="<b>llm</b>")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("data", None)  # the report prefers metrics.json's data path; this one has none
    (run / "metrics.json").write_text(json.dumps(metrics))
    doc = build_report(run_dir=run)
    assert "<script>y" not in doc and "<i>m</i>" not in doc and "<b>llm</b>" not in doc
    assert "&lt;script&gt;y&lt;/script&gt;" in doc and "&lt;i&gt;m&lt;/i&gt;&amp;" in doc
    rd = ReportDoc(doc)
    assert rd.kv["data"] == '/d/"x" & <script>y</script>.csv'
    assert rd.kv["strong model"] == "<i>m</i>&'q'"
    assert rd.kv["annotator"] == "llm (<b>llm</b>)"


def test_escaping_checks_fail_without_autoescape(tmp_path, monkeypatch):
    """The escaping checks above bite: the same report rendered with autoescape off lets the markup through."""
    from noiseal_ray.report import build_report, render

    env = render.environment()
    assert env.autoescape is True
    unescaped = env.overlay(autoescape=False)
    monkeypatch.setattr(render, "environment", lambda: unescaped)
    doc = build_report(run_dir=make_run(tmp_path / "r", n=60, rounds=0))
    assert XSS in doc and "<b>bold</b>&co" in doc


def test_templates_are_flat_and_never_trust_markup():
    """pyproject ships ``noiseal_ray/templates/*`` (no subfolders), and no template marks a value |safe."""
    root = Path(__file__).resolve().parents[2] / "noiseal_ray" / "templates"
    files = list(root.iterdir())
    assert files and all(f.is_file() for f in files), files
    for f in files:
        code = re.sub(r"\{#.*?#\}", "", f.read_text(), flags=re.S)  # comments may say why there is no |safe
        assert not re.search(r"\|\s*safe\b|autoescape\s+false", code), f.name


def test_number_formats():
    from noiseal_ray.report.fmt import duration, num, pct

    assert (pct(0.1234), pct(None), pct(float("nan")), pct(1.0)) == ("12.3%", "–", "–", "100.0%")
    assert (num(0.5), num(np.int64(1234)), num(2.0), num(None), num("x")) == ("0.500", "1,234", "2.000", "–", "x")
    assert (duration(59.94), duration(61), duration(3725), duration(None)) == ("59.9 s", "1 min 1 s", "1 h 2 min", "–")


def test_report_without_clean_labels_test_data_or_annotator(tmp_path):
    from noiseal_ray.report import build_report

    run = make_run(tmp_path / "r", clean=False, test=False, annotator="none", rounds=1, hard_policy="given")
    doc = build_report(run_dir=run)
    images(doc)
    assert "true noise" not in doc.lower().replace("true noise is unknown", "")
    assert "no test accuracy" in doc
    assert "det. F1" not in doc
    m = json.loads((run / "metrics.json").read_text())
    assert f"{m['final']['sizes']['P']:,}" in doc
    rd = ReportDoc(doc)
    assert rd.kv["test data"] == "none (no test accuracy)"
    assert rd.card("purified (P)")[1] == f"{m['final']['sizes']['P']:,}"
    assert m["final"]["sizes"]["P"] > 0  # annotator none: P takes the strong model's prediction
    assert not any(k.startswith("test accuracy") or k == "noise detection F1" for k in rd.cards)
    head, body = rd.rows("rounds")
    assert "det. F1" not in head and "label acc." not in head
    parts = [e for e in m["rounds"] if "sizes" in e]
    assert [r[1:4] for r in body if r[1] != "–"] == [[f"{e['sizes'][p]:,}" for p in ("R", "P", "H")] for e in parts]
    assert all(r[head.index("test acc.")] == "–" for r in body)


def test_report_single_round_and_no_rounds_dir(tmp_path):
    import shutil

    from noiseal_ray.report import build_report

    run = make_run(tmp_path / "r", rounds=0, xss=False)
    doc = build_report(run_dir=run)
    assert len(images(doc)) == 5  # sizes, quality, one confidence figure, transition, noise
    shutil.rmtree(run / "rounds")
    doc = build_report(run_dir=run)
    assert "No round table" in doc
    images(doc)


def test_report_caps_1000_classes(tmp_path):
    from noiseal_ray.report import HEATMAP_MAX, TABLE_MAX, build_report

    run = make_run(tmp_path / "r", n=3000, classes=1000, rounds=1, xss=False)
    doc = build_report(run_dir=run)
    images(doc)
    assert f"the {TABLE_MAX} largest of 1,000 classes" in doc
    assert f"show the {HEATMAP_MAX} largest of 1,000" in doc
    table = doc.split('<table class="classes">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == TABLE_MAX + 1
    assert len(doc) < 3_000_000


def test_report_errors(tmp_path):
    from noiseal_ray.errors import InputError
    from noiseal_ray.report import write_report

    with pytest.raises(InputError, match="does not exist"):
        write_report(run_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a noiseal-ray run directory"):
        write_report(run_dir=tmp_path / "empty")
    run = make_run(tmp_path / "r", n=60, rounds=0, xss=False)
    (run / "metrics.json").unlink()
    with pytest.raises(InputError, match="has not finished"):
        write_report(run_dir=run)


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from noiseal_ray.errors import InputError

    run = make_run(tmp_path / "r", n=60, rounds=0, xss=False)
    out = tmp_path / "x" / "rep.html"
    res = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and str(out) in res.output
    assert not (run / "report.html").exists()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert bad.exit_code != 0 and isinstance(bad.exception, InputError) and bad.exception.exit_code == 2
    assert "does not exist" in str(bad.exception)


def test_command_module_imports_are_cheap():
    import subprocess
    import sys

    code = ("import sys, noiseal_ray.commands.report, noiseal_ray.commands.export; "
            "bad = [m for m in ('ray', 'torch', 'matplotlib', 'pandas', 'pyarrow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_label_changes_are_scored_as_a_detector_of_wrong_labels():
    from noiseal_ray.metrics import detection

    rng = np.random.default_rng(3)
    n, c = 500, 4
    clean = rng.integers(0, c, n)
    clean[:20] = -1  # unknown truth: left out
    given = np.where(rng.random(n) < 0.3, rng.integers(0, c, n), np.maximum(clean, 0))
    batch = {"part": rng.integers(0, 3, n), "label": given, "llm_label": rng.integers(-1, c, n),
             "pred": rng.integers(0, c, n), "clean_label": clean, "llm_round": np.ones(n, np.int64),
             "llm_error": [""] * n, "llm_cached": np.zeros(n, bool), "truncated": np.zeros(n, bool)}
    counts = {k: int(v[0]) for k, v in batch_stats(batch, round_no=1, hard_policy="strong").items()}
    final = final_labels(part=batch["part"], given=given, llm=batch["llm_label"], pred=batch["pred"],
                         hard_policy="strong")
    want = detection(flagged=final != given, given=given, clean=clean)
    got = summarise(counts)["correction"]
    assert got["precision"] == pytest.approx(want["precision"]) and got["recall"] == pytest.approx(want["recall"])
    assert got["f1"] == pytest.approx(want["f1"]) and 0 < got["f1"] < 1
    # a summary stored by a version without these counts still renders, without the block
    old = {k: v for k, v in counts.items() if k not in ("changed_known", "changed_wrong")}
    assert "correction" not in summarise(old) and "detection" in summarise(old)

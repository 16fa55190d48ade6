"""The benchmark grid: datasets, noise settings, methods, seeds; "smoke" and "full".

Nothing here is specific to one dataset beyond its file names and columns: every dataset goes
through the same preparation (seeded subsample, optional synthetic noise via
``noiseal_ray.corrupt``) and the same methods. Data paths are relative to the data root, which
defaults to ``<repo>/../shared/data`` and can be overridden (``--data-root``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = REPO / ".." / "shared" / "data"


@dataclass(frozen=True)
class Dataset:
    name: str
    train: str  # relative to the data root
    test: str
    text_col: str = "text"
    label_col: str = "label"
    clean_label_col: str | None = None  # real noise: the true label of each training row
    test_label_col: str = "label"


DATASETS = {
    d.name: d
    for d in (
        Dataset("trec", "trec/train.jsonl", "trec/test.jsonl"),
        Dataset("sst2", "sst2/train.jsonl", "sst2/test.jsonl"),
        Dataset("agnews", "ag-news/train_subset_10k.jsonl", "ag-news/test.jsonl"),
        Dataset("noisyagnews", "noisyag-news/train_10k_human_mid.csv", "ag-news/test.jsonl",
                clean_label_col="clean_label"),
        Dataset("hausa", "hausa-newsclass/train_real_noise.csv", "hausa-newsclass/test.csv",
                clean_label_col="clean_label"),
    )
}

# The split rule the offline study (benchmarks/results/split_rules.md) favours; the paired grid
# measures it against the reconstructed rule before it may become the default.
CANDIDATE_SPLIT = "gmm|class-mean-strong/weak-mean"

# What every NoiseAL variant starts from: the reconstructed method as it was before the product's
# defaults moved (split, loss_norm and the test-precision gate). Pinned so that a variant, and the
# records made of it, keep their meaning whatever the defaults become.
RECONSTRUCTED: dict = {"split": "class-mean", "loss_norm": "subset", "hard_loss": "embmix",
                       "change_min_test_precision": 0.0}

# NoiseAL variants: the RunConfig options each sets over RECONSTRUCTED (everything else at the defaults).
NOISEAL_OPTIONS: dict[str, dict] = {
    "noiseal-none": {"annotator": "none"},
    "noiseal-knn": {"annotator": "knn"},
    "noiseal-llm": {"annotator": "llm"},
    "noiseal-knn-split": {"annotator": "knn", "split": CANDIDATE_SPLIT},
    "noiseal-knn-rows": {"annotator": "knn", "loss_norm": "rows"},
    "noiseal-knn-split-rows": {"annotator": "knn", "split": CANDIDATE_SPLIT, "loss_norm": "rows"},
    "noiseal-knn-split-rows-hgiven": {"annotator": "knn", "split": CANDIDATE_SPLIT, "loss_norm": "rows",
                                      "hard_loss": "given"},
    # Living labels (issue 15, item 4): the kNN vote of every P row re-cast each round.
    "noiseal-knn-split-rows-live": {"annotator": "knn", "split": CANDIDATE_SPLIT, "loss_norm": "rows",
                                    "knn_recast": True},
    # The change gate calibrated on the clean test data (issue 15, item 6): no move into a class the
    # model predicts there with precision < 0.5, in the rounds nor in the final labels.
    "noiseal-knn-tp": {"annotator": "knn", "change_min_test_precision": 0.5},
    # The same gate judging a move g -> f by f's test precision against g alone (change_precision_scope
    # move): is f more likely right than the label it replaces.
    "noiseal-knn-tpm": {"annotator": "knn", "change_min_test_precision": 0.5, "change_precision_scope": "move"},
    # The candidate default: the candidate split and row-weighted losses (ahead on TREC asym40 and
    # NoisyAG-News) with that gate (which kept Hausa's labels from harm).
    "noiseal-knn-split-rows-tp": {"annotator": "knn", "split": CANDIDATE_SPLIT, "loss_norm": "rows",
                                  "change_min_test_precision": 0.5},
    # And H trained on its given labels instead of the model's own pseudo-labels: where the gate finds
    # the model no better than the labels (Hausa), the rounds then train much as base does.
    "noiseal-knn-split-rows-tp-hgiven": {"annotator": "knn", "split": CANDIDATE_SPLIT, "loss_norm": "rows",
                                         "change_min_test_precision": 0.5, "hard_loss": "given"},
    # The gate weighing the noise too (change_precision_scope transition): a row labelled g moves to f
    # only where, given how often rows labelled g are f, it is more likely f than g.
    "noiseal-knn-split-rows-tpt": {"annotator": "knn", "split": CANDIDATE_SPLIT, "loss_norm": "rows",
                                   "change_min_test_precision": 0.5, "change_precision_scope": "transition"},
}

# "noiseal-knn-refit": base's schedule on the final labels of the same seed's noiseal-knn cell.
METHODS = ("clean", "base", "cleanlab", *NOISEAL_OPTIONS, "noiseal-knn-refit")


# Part of every cell's specification: raised when what the same settings mean changes, so that no
# record made under the old meaning is reused. 2: batch_size is rows per step over all workers.
SEMANTICS = 2


@dataclass(frozen=True)
class Training:
    """Training budget shared by every method of a grid (equal epochs for all)."""

    warmup_epochs: int = 2
    rounds: int = 4  # NoiseAL rounds of one epoch; baselines train warmup_epochs + rounds epochs
    max_length: int = 64
    workers: int = 2
    batch_size: int = 32  # rows per optimizer step over all workers (RunConfig.batch_size)
    cleanlab_folds: int = 2
    cleanlab_cv_epochs: int | None = None  # None: warmup_epochs
    lr_schedule: str = "linear"  # RunConfig.lr_schedule, for every method alike
    # NoiseAL cells adopt the same seed's base warm-up fit (RunConfig.warmup_from) instead of
    # training their own: the methods then differ only by what they do after the warm-up.
    paired: bool = False


@dataclass(frozen=True)
class Cell:
    """One benchmark run: a dataset, a noise setting, a seed and a method."""

    dataset: str
    noise: str  # "sym" | "asym" | "idn" | "real" (the dataset's own labels) | "none" (its true labels)
    rate: float  # injected rate (0 for real noise)
    seed: int
    method: str
    train_rows: int | None  # seeded subsample of the training split; None: all
    test_rows: int | None
    training: Training = field(default_factory=Training)

    @property
    def setting(self) -> str:
        if self.noise in ("real", "none"):
            return self.noise
        return f"{self.noise}{int(round(self.rate * 100))}"

    @property
    def key(self) -> str:
        return f"{self.dataset}-{self.setting}-s{self.seed}-{self.method}"

    @property
    def data_key(self) -> str:
        """Cells sharing this key train on the very same prepared files."""
        return f"{self.dataset}-{self.setting}-s{self.seed}-n{self.train_rows}-t{self.test_rows}"

    def spec(self) -> dict:
        d = {**asdict(self), "semantics": SEMANTICS}
        if not self.training.paired:  # specs (and records) from before pairing existed stay valid
            d["training"].pop("paired")
        return d

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SpeedSpec:
    score_rows: int = 1000  # scoring throughput: Ray Data stage vs a plain loop
    round_rows: tuple[int, ...] = (1000, 4000, 16000)  # one round's wall time, tiny encoder; () skips it
    ddp_rows: int = 1000  # one epoch, 1 vs 2 workers (MiniLM); 0 skips it
    max_length: int = 32


@dataclass(frozen=True)
class Grid:
    name: str
    cells: tuple[Cell, ...]
    speed: SpeedSpec | None  # None: no speed part (it measures the machine, not the data: see `trec`)
    description: str


def _cells(datasets_settings, *, seeds, methods, train_rows, test_rows, training) -> tuple[Cell, ...]:
    out = []
    for dataset, noise, rate in datasets_settings:
        n = train_rows.get(dataset) if isinstance(train_rows, dict) else train_rows
        for seed in seeds:
            for method in methods:
                out.append(Cell(dataset, noise, rate, seed, method, n, test_rows, training))
    return tuple(out)


def _clean_cells(datasets, *, seeds, train_rows, test_rows, training) -> tuple[Cell, ...]:
    """The clean upper bound, once per dataset and seed: it trains on the true labels, so it does not
    depend on the injected noise and every noisy setting of the dataset is compared with it."""
    return _cells([(d, "none", 0.0) for d in datasets], seeds=seeds, methods=("clean",), train_rows=train_rows,
                  test_rows=test_rows, training=training)


def smoke() -> Grid:
    """The plumbing and a first look: 1,000 TREC rows at 40% asymmetric noise, one seed, three methods."""
    training = Training(warmup_epochs=1, rounds=2, max_length=32, workers=2, cleanlab_folds=2)
    # Sized to finish in under 15 minutes on 2 cores from nothing (the cells take about 13.5): round
    # scaling (5.5 minutes) and the DDP epoch (1.5) are left to the trec grid. Fewer rows would save
    # little and say less: at 600 rows the warm-up model is too weak to partition anything (NoiseAL
    # fell below base), at 1,000 the first look already shows the method working.
    cells = _cells([("trec", "asym", 0.4)], seeds=(0,), methods=("base", "cleanlab", "noiseal-knn"),
                   train_rows=1000, test_rows=None, training=training)
    return Grid("smoke", cells, SpeedSpec(score_rows=1000, round_rows=(), ddp_rows=0),
                "TREC, 1,000-row seeded train subsample, full 500-row clean test split; asymmetric 40% noise; "
                "seed 0; base / cleanlab / NoiseAL-kNN; 1 warm-up epoch + 2 rounds (3 epochs for every method); "
                "max_length 32; 2 Ray Train workers. Speed: scoring 1,000 rows (round scaling and the DDP epoch "
                "are in the trec and full grids)")


def full() -> Grid:
    """Every dataset and noise setting, three seeds, every method: days on a 2-core machine."""
    training = Training(warmup_epochs=2, rounds=4, max_length=64, workers=2, cleanlab_folds=3)
    settings = [("trec", k, r) for k in ("sym", "asym", "idn") for r in (0.2, 0.4)]
    settings += [("sst2", "asym", 0.4), ("agnews", "asym", 0.4), ("noisyagnews", "real", 0.0),
                 ("hausa", "real", 0.0)]
    seeds = (0, 1, 2)
    noisy = tuple(m for m in METHODS if m != "clean")
    cells = _clean_cells(("trec", "sst2", "agnews", "noisyagnews", "hausa"), seeds=seeds, train_rows=None,
                         test_rows=None, training=training)
    cells += _cells(settings, seeds=seeds, methods=noisy, train_rows=None, test_rows=None, training=training)
    return Grid("full", cells, SpeedSpec(score_rows=4000, round_rows=(1000, 4000, 16000), ddp_rows=4000),
                "TREC sym/asym/idn at 20% and 40%, SST-2 and AG News (10k subset) asym 40%, NoisyAG-News and "
                "Hausa (real noise); full training splits; seeds 0, 1, 2; every method (clean once per dataset "
                "and seed); 2 warm-up epochs + 4 rounds (6 epochs for every method); max_length 64; 2 workers")


def trec() -> Grid:
    """The issue's TREC claims at a cost one 2-core machine can pay in an afternoon: the full TREC
    training split at 40% asymmetric and 40% symmetric noise (base vs confident learning vs
    NoiseAL-kNN), and at 20% symmetric, asymmetric and instance-dependent noise (base, NoiseAL-kNN)
    against the clean upper bound; 1 warm-up epoch + 3 rounds (4 epochs for every method)."""
    training = Training(warmup_epochs=1, rounds=3, max_length=32, workers=2, cleanlab_folds=2)
    seeds = (0, 1)
    cells = _cells([("trec", "asym", 0.4), ("trec", "sym", 0.4)], seeds=seeds,
                   methods=("base", "cleanlab", "noiseal-knn"), train_rows=None, test_rows=None, training=training)
    cells += _clean_cells(("trec",), seeds=seeds, train_rows=None, test_rows=None, training=training)
    cells += _cells([("trec", k, 0.2) for k in ("sym", "asym", "idn")], seeds=seeds, methods=("base", "noiseal-knn"),
                    train_rows=None, test_rows=None, training=training)
    # Last, so that the grid's other cells come first: base's schedule on NoiseAL's final labels.
    cells += _cells([("trec", k, r) for k, r in (("sym", 0.4), ("asym", 0.2), ("sym", 0.2), ("idn", 0.2), ("asym", 0.4))],
                    seeds=seeds, methods=("noiseal-knn-refit",), train_rows=None, test_rows=None, training=training)
    return Grid("trec", cells, SpeedSpec(score_rows=1000, round_rows=(1000, 4000, 16000), ddp_rows=500),
                "TREC, full 5,452-row train split, full 500-row clean test split; asymmetric 40% and symmetric 40% "
                "noise with base / cleanlab / NoiseAL-kNN, and symmetric, asymmetric and instance-dependent 20% noise "
                "with base and NoiseAL-kNN against the clean upper bound (trained once per seed on the true labels); "
                "NoiseAL-kNN's final labels refit with base's schedule (noiseal-knn-refit) at every noise setting; seeds 0 "
                "and 1; 1 warm-up epoch + 3 rounds (4 epochs for every method, the same linearly decaying learning "
                "rate); max_length 32; 2 Ray Train workers. Speed: scoring 1,000 rows; one round at 1k, 4k and 16k "
                "rows; DDP epoch on 500 rows")


def real() -> Grid:
    """Real (not injected) label noise at a cost one 2-core machine pays in under an hour: Hausa news
    headlines, whose noisy labels come from keyword rules (about 50% wrong, skewed towards one class)
    and whose gold labels are known, with the same budget and methods as the `trec` grid's 40% cells
    and the clean upper bound. NoisyAG-News (10k rows, longer texts) is in the `full` grid."""
    training = Training(warmup_epochs=1, rounds=3, max_length=32, workers=2, cleanlab_folds=2)
    seeds = (0,)
    cells = _clean_cells(("hausa",), seeds=seeds, train_rows=None, test_rows=None, training=training)
    cells += _cells([("hausa", "real", 0.0)], seeds=seeds, methods=("base", "cleanlab", "noiseal-knn"),
                    train_rows=None, test_rows=None, training=training)
    return Grid("real", cells, None,
                "Hausa news headlines, full 2,045-row train split with its real rule-based noisy labels (gold labels "
                "known), full 582-row clean test split; clean upper bound / base / cleanlab / NoiseAL-kNN; seed 0; "
                "1 warm-up epoch + 3 rounds (4 epochs for every method); max_length 32; 2 Ray Train workers; no "
                "speed part (see the trec grid)")


def breadth() -> Grid:
    """The issue's other datasets at a cost one 2-core machine pays in about an hour: NoisyAG-News
    (news, real human label noise from crowd majority votes, about 20% wrong; gold labels known) and
    SST-2 (binary sentiment, 40% asymmetric noise, which for two classes flips each class's labels at
    the same rate), each on a seeded subsample with the trec grid's budget: clean upper bound / base /
    cleanlab / NoiseAL-kNN, seed 0. A first look beyond TREC, not a verdict: one seed, subsampled rows;
    the full splits and three seeds are in the `full` grid."""
    training = Training(warmup_epochs=1, rounds=3, max_length=32, workers=2, cleanlab_folds=2)
    seeds = (0,)
    # NoisyAG-News texts are 3-4 times longer than SST-2's (every row fills max_length): fewer rows keep
    # the two datasets' cells at about the same cost.
    rows = {"noisyagnews": 1500, "sst2": 2000}
    cells = _clean_cells(("noisyagnews", "sst2"), seeds=seeds, train_rows=rows, test_rows=1000, training=training)
    cells += _cells([("noisyagnews", "real", 0.0), ("sst2", "asym", 0.4)], seeds=seeds,
                    methods=("base", "cleanlab", "noiseal-knn"), train_rows=rows, test_rows=1000, training=training)
    return Grid("breadth", cells, None,
                "NoisyAG-News (real human label noise, 1,500-row seeded subsample of its 10k training pool, gold labels "
                "known) and SST-2 (40% asymmetric noise, 2,000-row seeded subsample of its training split); 1,000-row "
                "seeded subsample of each clean test split; clean upper bound / base / cleanlab / NoiseAL-kNN; seed 0; "
                "1 warm-up epoch + 3 rounds (4 epochs for every method); max_length 32; 2 Ray Train workers; no "
                "speed part (see the trec grid)")


# The paired grids' shared budget: a change to it changes both, so their cells stay comparable.
PAIRED_TRAINING = Training(warmup_epochs=1, rounds=3, max_length=32, workers=2, cleanlab_folds=2, paired=True)


def paired() -> Grid:
    """Issue 15's ablation at a cost one 2-core machine pays in about an hour per noise setting:
    every NoiseAL variant starts from the same seed's base warm-up fit (the same weights, the same
    data order), so per-seed differences are differences between the variants."""
    training = PAIRED_TRAINING
    seeds = (0, 1, 2)
    methods = ("base", "noiseal-knn", "noiseal-knn-split", "noiseal-knn-rows", "noiseal-knn-split-rows",
               "noiseal-knn-split-rows-hgiven", "noiseal-knn-split-rows-live", "noiseal-knn-tp",
               "noiseal-knn-split-rows-tp", "noiseal-knn-tpm", "noiseal-knn-split-rows-tp-hgiven",
               "noiseal-knn-split-rows-tpt")
    cells = _cells([("trec", "sym", 0.2), ("trec", "asym", 0.4)], seeds=seeds, methods=methods, train_rows=2000,
                   test_rows=None, training=training)
    return Grid("paired", cells, None,
                "TREC, 2,000-row seeded train subsample, full 500-row clean test split; symmetric 20% and asymmetric "
                "40% noise; seeds 0, 1, 2; base, NoiseAL-kNN as reconstructed, with the candidate split "
                f"({CANDIDATE_SPLIT}), with row-weighted losses, with both, and with both and H trained on its given "
                "labels (hard_loss given), with both and the kNN vote re-cast every round (knn_recast), and with the "
                "change gate calibrated on the clean test data (change_min_test_precision 0.5) alone and with both "
                "(noiseal-knn-tp, noiseal-knn-split-rows-tp), and the gate judging each move against the label it "
                "replaces (change_precision_scope move, noiseal-knn-tpm), with both and that gate and H trained on its "
                "given labels (noiseal-knn-split-rows-tp-hgiven), and with both and the gate weighing the noise "
                "(change_precision_scope transition, noiseal-knn-split-rows-tpt); every NoiseAL variant adopts the same "
                "seed's base warm-up "
                "(1 epoch) and trains "
                "3 rounds (4 epochs for every method); max_length 32; 2 Ray Train workers; no speed part")


def paired_real() -> Grid:
    """Issue 15's paired comparison beyond TREC: real human noise (NoisyAG-News), real rule-based
    noise (Hausa, about half the labels wrong) and a task the model is far from perfect at (SST-2,
    20% symmetric noise), 3 seeds, each NoiseAL variant from its seed's base warm-up. Whatever
    becomes the default must hold here too; about five hours on 2 cores (`--cells` runs a part)."""
    training = PAIRED_TRAINING
    methods = ("base", "noiseal-knn", "noiseal-knn-split-rows", "noiseal-knn-tp", "noiseal-knn-split-rows-tp",
               "noiseal-knn-tpm", "noiseal-knn-split-rows-tp-hgiven", "noiseal-knn-split-rows-tpt")
    rows = {"noisyagnews": 2000, "hausa": None, "sst2": 2000}
    cells = _cells([("noisyagnews", "real", 0.0), ("hausa", "real", 0.0), ("sst2", "sym", 0.2)], seeds=(0, 1, 2),
                   methods=methods, train_rows=rows, test_rows=None, training=training)
    return Grid("paired-real", cells, None,
                "NoisyAG-News (real human noise, 2,000-row seeded subsample of its 10k pool), Hausa headlines (real "
                "rule-based noise, the full 2,045-row split) and SST-2 (20% symmetric noise, 2,000-row seeded "
                "subsample); full clean test splits; seeds 0, 1, 2; base, NoiseAL-kNN as reconstructed, with the "
                f"candidate split ({CANDIDATE_SPLIT}) and row-weighted losses, and with the change gate calibrated "
                "on the clean test data (change_min_test_precision 0.5) alone and with both (noiseal-knn-tp, "
                "noiseal-knn-split-rows-tp), and that gate judging each move against the label it replaces "
                "(change_precision_scope move, noiseal-knn-tpm), with both and that gate and H trained on its given "
                "labels (noiseal-knn-split-rows-tp-hgiven), and with both and the gate weighing the noise "
                "(change_precision_scope transition, noiseal-knn-split-rows-tpt); every NoiseAL variant adopts "
                "the same seed's base warm-up (1 epoch) and trains 3 rounds (4 epochs for every method); max_length 32; "
                "2 Ray Train workers; no speed part")


GRIDS = {"smoke": smoke, "trec": trec, "real": real, "breadth": breadth, "full": full,
         "paired": paired, "paired-real": paired_real}
HEADLINE = "trec"  # the grid whose report is benchmarks/RESULTS.md


def get_grid(name: str) -> Grid:
    """The grid named ``name`` (one of ``GRIDS``)."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[name]()


# ---------------------------------------------------------------------------------------------
# data preparation (shared by every method of a cell)
# ---------------------------------------------------------------------------------------------

def _subsample(table: pa.Table, *, n: int | None, seed: int) -> pa.Table:
    """``n`` rows of ``table`` drawn without replacement (in their original order); all when ``n`` is None."""
    import numpy as np
    import pyarrow as pa

    if n is None or n >= table.num_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=n, replace=False))
    return table.take(pa.array(idx))


def _as_str(table: pa.Table, cols: dict[str, str]) -> pa.Table:
    """The columns ``cols`` (new name -> old name) as strings: labels are written as their names."""
    import pyarrow as pa

    return pa.table({new: pa.array([str(v) for v in table.column(old).to_pylist()], pa.string())
                     if new != "text" else table.column(old).cast(pa.string()) for new, old in cols.items()})


def _write_train(cell: Cell, *, train: pa.Table, has_clean: bool, d: Path) -> tuple[dict, list, list]:
    """Write ``d/train.parquet`` with the cell's noise; the column roles, given and true labels."""
    from noiseal_ray.corrupt import corrupt_file
    from noiseal_ray.data.io import read_table, write_table

    if cell.noise in ("real", "none") and has_clean:
        write_table(train, d / "train.parquet")
        # "none" trains on the dataset's own true labels.
        roles = {"label_col": "label" if cell.noise == "real" else "clean_label", "clean_label_col": "clean_label"}
        return roles, train.column(roles["label_col"]).to_pylist(), train.column("clean_label").to_pylist()
    if cell.noise == "real":
        raise ValueError(f"{cell.dataset} has no clean labels: real-noise cells need them")
    if cell.noise == "none":
        write_table(train, d / "train.parquet")
        given = train.column("label").to_pylist()
        return {"label_col": "label", "clean_label_col": "label"}, given, given
    write_table(train, d / "clean.parquet")
    corrupt_file(data=str(d / "clean.parquet"), out=str(d / "train.parquet"), kind=cell.noise, rate=cell.rate,
                 seed=cell.seed, text_col="text", label_col="label", noisy_col="noisy_label")
    t = read_table(str(d / "train.parquet"))
    return ({"label_col": "noisy_label", "clean_label_col": "label"}, t.column("noisy_label").to_pylist(),
            t.column("label").to_pylist())


def prepare_data(cell: Cell, *, data_root: Path, work: Path) -> dict:
    """Write ``train.parquet`` (text, label[, noisy_label]) and ``test.parquet`` for ``cell``.

    Labels are written as strings. Synthetic noise goes through ``noiseal_ray.corrupt`` (the
    ``noiseal-ray corrupt`` code path) and adds ``noisy_label``, keeping ``label`` as the truth.
    Returns the column roles for RunConfig / the baselines, plus the realised noise rate.
    """
    import numpy as np

    from noiseal_ray.data.io import read_table, write_table

    ds = DATASETS[cell.dataset]
    d = work / "data" / cell.data_key
    meta_path = d / "meta.json"
    if meta_path.is_file():
        # The files sit beside meta.json: resolve them from here, so a moved or renamed --out still works
        # (meta.json keeps the absolute paths of wherever it was first written).
        meta = json.loads(meta_path.read_text())
        return {**meta, "train": str(d / "train.parquet"), "test": str(d / "test.parquet")}
    d.mkdir(parents=True, exist_ok=True)
    cols = {"text": ds.text_col, "label": ds.label_col} | ({"clean_label": ds.clean_label_col} if ds.clean_label_col
                                                          else {})
    train = _as_str(_subsample(read_table(str(data_root / ds.train)), n=cell.train_rows, seed=1000 + cell.seed), cols)
    test = _as_str(_subsample(read_table(str(data_root / ds.test)), n=cell.test_rows, seed=2000 + cell.seed),
                   {"text": ds.text_col, "label": ds.test_label_col})
    write_table(test, d / "test.parquet")
    roles, given, truth = _write_train(cell, train=train, has_clean=bool(ds.clean_label_col), d=d)
    meta = {"train": str(d / "train.parquet"), "test": str(d / "test.parquet"), "text_col": "text",
            "test_label_col": "label", **roles, "train_rows": len(given),
            "test_rows": test.num_rows,
            "realised_noise": float(np.mean([a != b for a, b in zip(given, truth)]))}
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta

"""The split rules by name: how each decides (``RuleSpec``) and what it does (``RULES``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleSpec:
    """How a rule decides. ``strong``: the strong model's accept test: ``mean`` (class mean of p),
    ``gmm``/``gmmlog`` (mixture on loss / log-loss, ``gmm_cutoffs``), ``budget`` (reject the
    ``noise`` share of the class's highest losses, ``budget_cutoffs``), ``none`` (accept all).
    ``noise``: the share a budget uses: ``gmm``/``gmmlog`` (the mixture's weight), ``disagree``
    (share of rows whose strong argmax is another class), ``max`` (max of gmmlog and disagree).
    ``fallback``: for a class where the mixture's noise estimate is below ``fallback_ratio`` (1.0)
    times its argmax-disagreement share (the mixture missed rows the strong model itself assigns
    to another class, as when the model has half learned a systematic flip): ``"mean"``
    = the strong model's class mean replaces the mixture's threshold; ``"class-mean"`` = today's
    rule (both models at their class means, both-accept/both-reject frame) decides that class's
    rows; ``""`` = no fallback. ``argmax``: R also needs the strong argmax to be the given label. ``ph``: P vs H among
    the rejected rows: ``both`` (today's frame, the weak model judged by the same kind of test),
    ``weak-mean``/``weak-gmm`` (P if the weak model rejects at its class mean / its own mixture),
    ``argmax`` (P if the strong argmax is another class), ``weak-mean+argmax`` (both)."""

    strong: str
    ph: str
    noise: str = "gmmlog"
    fallback: str = ""
    argmax: bool = False
    fallback_ratio: float = 1.0


CLASS_MEAN = "class-mean"
"""The reconstructed rule (the default): each model accepts at its class's EMA mean of p."""

SPECS: dict[str, RuleSpec] = {
    CLASS_MEAN: RuleSpec("mean", "both"),
    "gmm-both": RuleSpec("gmm", "both", "gmm"),
    "gmmlog-both": RuleSpec("gmmlog", "both"),
    "gmm-strong/weak-gmm": RuleSpec("gmm", "weak-gmm", "gmm"),
    "gmmlog-strong/weak-gmm": RuleSpec("gmmlog", "weak-gmm"),
    "gmm-strong/weak-mean": RuleSpec("gmm", "weak-mean", "gmm"),
    "gmmlog-strong/weak-mean": RuleSpec("gmmlog", "weak-mean"),
    "mean-strong/weak-mean": RuleSpec("mean", "weak-mean"),
    "budget-strong/weak-mean": RuleSpec("budget", "weak-mean", "gmm"),
    "budgetlog-strong/weak-mean": RuleSpec("budget", "weak-mean", "gmmlog"),
    "budgetdis-strong/weak-mean": RuleSpec("budget", "weak-mean", "disagree"),
    "budgetmax-strong/weak-mean": RuleSpec("budget", "weak-mean", "max"),
    "gmm|mean-strong/weak-mean": RuleSpec("gmm", "weak-mean", "gmm", fallback="mean"),
    "gmm|class-mean-strong/weak-mean": RuleSpec("gmm", "weak-mean", "gmm", fallback="class-mean"),
    "gmm|class-mean-strong/argmax": RuleSpec("gmm", "argmax", "gmm", fallback="class-mean"),
    "gmmlog|mean-strong/weak-mean": RuleSpec("gmmlog", "weak-mean", fallback="mean"),
    "argmax/weak-mean": RuleSpec("none", "weak-mean", argmax=True),
    "argmax/argmax": RuleSpec("none", "argmax", argmax=True),
    "gmmlog+argmax/weak-mean": RuleSpec("gmmlog", "weak-mean", argmax=True),
    "gmmlog+argmax/argmax": RuleSpec("gmmlog", "argmax", argmax=True),
    "gmmlog+argmax/weak-mean+argmax": RuleSpec("gmmlog", "weak-mean+argmax", argmax=True),
}

RULES: dict[str, str] = {
    "class-mean": "today: class-mean tau for both models; R both accept, P both reject, H otherwise",
    "gmm-both": "GMM (fit on the loss) tau for both models in today's both-accept/both-reject frame",
    "gmmlog-both": "as gmm-both, the mixtures fit on log(loss)",
    "gmm-strong/weak-gmm": "R = strong's GMM accepts; of the rest P if the weak's GMM rejects too, else H",
    "gmmlog-strong/weak-gmm": "as gmm-strong/weak-gmm, the mixtures fit on log(loss)",
    "gmm-strong/weak-mean": "R = strong's GMM accepts; of the rest P if the weak rejects at its class mean, else H",
    "gmmlog-strong/weak-mean": "as gmm-strong/weak-mean, the mixture fit on log(loss)",
    "mean-strong/weak-mean": "R = strong accepts at its class mean; of the rest P if the weak rejects at its mean",
    "budget-strong/weak-mean": "R = all but the strong's est. noise share (loss-GMM weight) of highest-loss rows per"
                               " class; of the rest P if the weak rejects at its class mean",
    "budgetlog-strong/weak-mean": "as budget-strong/weak-mean, the noise share from the log(loss) GMM",
    "budgetdis-strong/weak-mean": "as budget-strong/weak-mean, the noise share = share of the class whose strong"
                                  " argmax is another class",
    "budgetmax-strong/weak-mean": "as budget-strong/weak-mean, the noise share = max(log(loss) GMM weight,"
                                  " argmax-disagreement share)",
    "gmm|mean-strong/weak-mean": "as gmm-strong/weak-mean, but a class whose GMM noise estimate is under half"
                                 " its argmax-disagreement share uses the strong's class mean",
    "gmm|class-mean-strong/weak-mean": "as gmm|mean-strong/weak-mean, but such a class is split by today's rule"
                                       " (class-mean)",
    "gmm|class-mean-strong/argmax": "as gmm|class-mean-strong/weak-mean, but P/H by the strong argmax: P if it names"
                                    " another class, else H",
    "gmmlog|mean-strong/weak-mean": "as gmm|mean-strong/weak-mean, the mixture fit on log(loss)",
    "argmax/weak-mean": "R = strong's argmax is the given label; of the rest P if the weak rejects at its class mean",
    "argmax/argmax": "R = strong's argmax is the given label; all the rest P",
    "gmmlog+argmax/weak-mean": "R = strong's log(loss) GMM accepts AND its argmax is the given label; of the rest P"
                               " if the weak rejects at its class mean, else H",
    "gmmlog+argmax/argmax": "R = as gmmlog+argmax; of the rest P if the strong's argmax is another class, else H",
    "gmmlog+argmax/weak-mean+argmax": "R = as gmmlog+argmax; of the rest P if the weak rejects at its class mean AND"
                                      " the strong's argmax is another class, else H",
}
"""Split rules by name (``benchmarks/split_rules.py`` compares them); see ``RuleSpec``."""


# RuleSpec.ph -> the ``ph`` of ``split_strong`` (the weak model's test is already in its tau).
STRONG_PH = {"weak-gmm": "weak", "weak-mean": "weak", "argmax": "argmax", "weak-mean+argmax": "weak+argmax"}

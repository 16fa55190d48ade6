"""Noise-adaptive clean/noisy split rules from small per-class aggregates (numpy only).

The class-mean rule of ``partition.py`` puts each model's threshold at the class mean of
``p = softmax(model(x))[given]``. A mean lies inside the clean mode of a bimodal ``p``, so it
rejects a fixed share of clean rows whatever the noise. The rules here instead fit, per given
class, a two-component 1-D Gaussian mixture to the per-row loss ``-log(max(p, 1e-12))`` (the
DivideMix/SelfMix recipe) and call the low-mean component clean. The fit only needs a per-class
histogram of the loss on FIXED bin edges (``LOSS_EDGES``), so in a distributed pipeline every
batch contributes a (C, B) array of counts, the driver adds them up (``score.reduce_sum`` with
``hist_sums``) and fits C mixtures on C * B numbers; no row ever reaches the driver.

Everything returns per-class thresholds on ``p`` (shape (C,)), which plug into
``partition.accept``, and partition codes like ``partition.partition`` (0 = R, 1 = P, 2 = H).

Modules (everything is re-exported here):
- ``histogram``: ``loss_histograms``, counts (C, B) of the loss per given class (partial
  histograms add up), and ``hist_sums``, the ``score.reduce_sum`` aggregator.
- ``gmm``: ``gmm_cutoffs``, per-class loss cutoff, estimated noise rate and the fit (``GmmFit``);
  ``budget_cutoffs``, the cutoff that rejects a given share (e.g. the estimated noise rate) of
  the class's highest-loss rows (co-teaching's rule); ``cutoffs_to_tau``, loss cutoff ->
  threshold on p (tau = exp(-cutoff)).
- ``table``: ``RULES`` names the variants ``benchmarks/split_rules.py`` compares; ``RuleSpec``
  says how each decides.
- ``thresholds``: ``rule_thresholds`` turns aggregates (``RuleInputs``) into a rule's taus.
- ``assign``: the split frames ``split_class_mean`` (today's rule), ``split_gmm_both``,
  ``split_gmm_strong``, ``split_budget_strong``, ``split_strong``, and ``assign_codes``.
"""

from noiseal_ray.split.assign import (
    assign_codes,
    split_budget_strong,
    split_class_mean,
    split_gmm_both,
    split_gmm_strong,
    split_strong,
)
from noiseal_ray.split.gmm import (
    FEW_ROWS,
    FIT_OK,
    NO_CROSSING,
    NO_NOISE,
    ONE_MODE,
    GmmFit,
    budget_cutoffs,
    cutoffs_to_tau,
    gmm_cutoffs,
)
from noiseal_ray.split.histogram import (
    LOSS_EDGES,
    LOSS_MAX,
    P_FLOOR,
    SPACES,
    bin_centres,
    hist_sums,
    loss_histograms,
    row_loss,
)
from noiseal_ray.split.table import RULES, RuleSpec
from noiseal_ray.split.thresholds import RuleInputs, RuleThresholds, mean_tau, rule_thresholds

__all__ = [
    "FEW_ROWS", "FIT_OK", "LOSS_EDGES", "LOSS_MAX", "NO_CROSSING", "NO_NOISE", "ONE_MODE", "P_FLOOR", "RULES",
    "SPACES", "GmmFit", "RuleInputs", "RuleSpec", "RuleThresholds", "assign_codes", "bin_centres",
    "budget_cutoffs", "cutoffs_to_tau", "gmm_cutoffs", "hist_sums", "loss_histograms", "mean_tau", "row_loss",
    "rule_thresholds", "split_budget_strong", "split_class_mean", "split_gmm_both", "split_gmm_strong",
    "split_strong",
]

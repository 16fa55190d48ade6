"""NoiseAL's per-subset losses (torch only): CE on R, RCE on P, EmbMix on H.

Every loss takes the full batch plus a boolean mask of its subset, averages over that subset
only, and returns a zero that still carries a graph when the subset is empty in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.sum() * 0.0


def ce_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with ``targets`` (B,) over rows where ``mask`` (B,) is True."""
    if not bool(mask.any()):
        return _zero(logits)
    return F.cross_entropy(logits[mask], targets[mask])


def rce_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *, a: float = -4.0) -> torch.Tensor:
    """Reverse cross-entropy -sum_k p_k log q_k with q one-hot(targets) and log 0 := a.

    Closed form: -a * (1 - p[target]). Rows with target < 0 (no annotator label) are ignored.
    """
    mask = mask & (targets >= 0)
    if not bool(mask.any()):
        return _zero(logits)
    p = F.softmax(logits[mask], dim=-1)
    p_t = p.gather(1, targets[mask].unsqueeze(1)).squeeze(1)
    return (-a * (1.0 - p_t)).mean()


def sharpen(p: torch.Tensor, t: float) -> torch.Tensor:
    """p^(1/t), renormalised over the last dim."""
    q = p.clamp_min(1e-12) ** (1.0 / t)
    return q / q.sum(dim=-1, keepdim=True)


def embmix_loss(
    emb: torch.Tensor,
    logits: torch.Tensor,
    head: torch.nn.Module,
    labels: torch.Tensor,
    mask_r: torch.Tensor,
    mask_h: torch.Tensor,
    *,
    num_classes: int,
    alpha: float = 0.75,
    t: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """EmbMix on H: mix sentence embeddings and targets, soft CE of ``head`` on the mix.

    Targets: sharpened, detached predictions for H rows; one-hot given labels for R rows. The
    mixed set is R and H rows of the batch, mixed with a random permutation of itself,
    lambda ~ Beta(alpha, alpha), lambda' = max(lambda, 1 - lambda). The loss is averaged over the
    H rows' mixes; zero (with graph) when the batch has no H row.
    emb: (B, D) the vector that feeds ``head``; logits: (B, C) = head(emb).
    """
    if not bool(mask_h.any()):
        return _zero(logits)
    use = mask_r | mask_h
    e = emb[use]
    with torch.no_grad():
        q = sharpen(F.softmax(logits[use].detach(), dim=-1), t)
        onehot = F.one_hot(labels[use].clamp_min(0), num_classes).to(q.dtype)
        is_r = mask_r[use].unsqueeze(1)
        target = torch.where(is_r, onehot, q)
        # Draws come from torch's RNG (seeded per worker and epoch) unless a generator is given.
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        lam = float(rng.beta(alpha, alpha))
        lam = max(lam, 1.0 - lam)
        perm = torch.from_numpy(rng.permutation(e.shape[0])).to(e.device)
    mixed = lam * e + (1.0 - lam) * e[perm]
    mixed_t = lam * target + (1.0 - lam) * target[perm]
    out = head(mixed)
    per_row = -(mixed_t * F.log_softmax(out, dim=-1)).sum(dim=-1)
    h_rows = mask_h[use]
    return per_row[h_rows].mean()


@dataclass
class LossParts:
    total: torch.Tensor
    r: float
    p: float
    h: float


def noiseal_loss(
    *,
    emb: torch.Tensor,
    logits: torch.Tensor,
    head: torch.nn.Module,
    labels: torch.Tensor,
    llm_labels: torch.Tensor,
    part: torch.Tensor,
    num_classes: int,
    rce_a: float = -4.0,
    alpha: float = 0.75,
    t: float = 0.5,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    norm: str = "subset",
    hard: str = "embmix",
) -> LossParts:
    """L = w_R * CE(R) + w_P * RCE(P, llm label) + w_H * EmbMix(H).

    part: (B,) int codes 0=R, 1=P, 2=H. llm_labels: (B,) int, -1 where P has no annotator label.
    ``norm``: ``"subset"``: each term is its subset's mean (a P or H row weighs |R|/|P| or
    |R|/|H| times an R row); ``"rows"``: each term is its subset's sum over B, so every row that
    trains weighs the same. ``LossParts.r/p/h`` are the subset means either way. ``hard``:
    ``"embmix"``: H's term is EmbMix; ``"given"``: CE on H's given ``labels``, as R's.
    """
    if norm not in ("subset", "rows"):
        raise ValueError(f"norm must be subset or rows, got {norm!r}")
    if hard not in ("embmix", "given"):
        raise ValueError(f"hard must be embmix or given, got {hard!r}")
    m_r, m_p, m_h = part == 0, part == 1, part == 2
    l_r = ce_loss(logits, labels, m_r)
    l_p = rce_loss(logits, llm_labels, m_p, a=rce_a)
    if hard == "given":
        l_h = ce_loss(logits, labels, m_h)
    else:
        l_h = embmix_loss(emb, logits, head, labels, m_r, m_h, num_classes=num_classes, alpha=alpha, t=t)
    share = (1.0, 1.0, 1.0)
    if norm == "rows":
        b = max(int(part.shape[0]), 1)
        share = (float(m_r.sum()) / b, float((m_p & (llm_labels >= 0)).sum()) / b, float(m_h.sum()) / b)
    total = weights[0] * share[0] * l_r + weights[1] * share[1] * l_p + weights[2] * share[2] * l_h
    return LossParts(total=total, r=float(l_r.detach()), p=float(l_p.detach()), h=float(l_h.detach()))

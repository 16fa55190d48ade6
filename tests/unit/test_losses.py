"""Losses: RCE closed form, empty subsets, EmbMix gradients reach the encoder."""

import pytest
import torch
import torch.nn.functional as F

from noiseal_ray.losses import ce_loss, embmix_loss, noiseal_loss, rce_loss, sharpen


def test_rce_closed_form():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    t = torch.tensor([0, 1, 2, 3, 1])
    mask = torch.ones(5, dtype=torch.bool)
    p = F.softmax(logits, -1)
    # -sum_k p_k log q_k with log 1 = 0 and log 0 = A = -4.
    q_log = torch.full((5, 4), -4.0)
    q_log[torch.arange(5), t] = 0.0
    direct = -(p * q_log).sum(-1).mean()
    assert rce_loss(logits, t, mask, a=-4.0).item() == pytest.approx(direct.item(), rel=1e-6)
    assert rce_loss(logits, t, mask, a=-4.0).item() == pytest.approx((4 * (1 - p[torch.arange(5), t])).mean().item())


def test_rce_ignores_rows_without_label_and_empty_subsets_keep_graph():
    logits = torch.randn(3, 2, requires_grad=True)
    t = torch.tensor([-1, -1, -1])
    loss = rce_loss(logits, t, torch.ones(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()  # a zero with a graph: DDP sees every parameter used
    assert logits.grad is not None
    assert ce_loss(logits, torch.tensor([0, 1, 0]), torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_sharpen_lowers_entropy_and_normalises():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    q = sharpen(p, 0.5)
    assert q.sum().item() == pytest.approx(1.0)
    assert q[0, 0] > p[0, 0]


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(6, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        e = torch.tanh(self.encoder(x))
        return self.head(e), e


def test_embmix_gradients_flow_to_encoder_only_with_h_rows():
    torch.manual_seed(0)
    m = Tiny()
    x = torch.randn(8, 6)
    logits, emb = m(x)
    y = torch.randint(0, 3, (8,))
    mask_h = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    loss = embmix_loss(emb, logits, m.head, y, ~mask_h, mask_h, num_classes=3)
    loss.backward()
    assert loss.item() > 0
    assert m.encoder.weight.grad.abs().sum() > 0
    m.zero_grad()
    logits, emb = m(x)
    none = embmix_loss(emb, logits, m.head, y, torch.ones(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool),
                       num_classes=3)
    assert none.item() == 0.0


def test_noiseal_loss_sums_weighted_parts():
    torch.manual_seed(1)
    m = Tiny()
    x = torch.randn(6, 6)
    logits, emb = m(x)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    llm = torch.tensor([-1, -1, 1, 2, -1, -1])
    part = torch.tensor([0, 0, 1, 1, 2, 2])
    out = noiseal_loss(emb=emb, logits=logits, head=m.head, labels=y, llm_labels=llm, part=part, num_classes=3,
                       weights=(1.0, 2.0, 0.0))
    assert out.total.item() == pytest.approx(out.r + 2.0 * out.p, rel=1e-5)
    only_r = noiseal_loss(emb=emb, logits=logits, head=m.head, labels=y, llm_labels=llm,
                          part=torch.zeros(6, dtype=torch.long), num_classes=3)
    assert only_r.total.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def test_rows_norm_weighs_every_training_row_the_same():
    torch.manual_seed(2)
    m = Tiny()
    x = torch.randn(8, 6)
    logits, emb = m(x)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    llm = torch.tensor([-1, -1, -1, -1, -1, 2, 0, -1])
    part = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])  # 5 R rows, 3 P rows of which 2 have an annotator label
    kw = dict(emb=emb, logits=logits, head=m.head, labels=y, llm_labels=llm, part=part, num_classes=3)
    means = noiseal_loss(**kw)
    rows = noiseal_loss(**kw, norm="rows")
    assert (rows.r, rows.p) == (means.r, means.p)  # the logged parts stay subset means
    assert rows.total.item() == pytest.approx(5 / 8 * means.r + 2 / 8 * means.p, rel=1e-5)
    # The same as summing the per-row losses and dividing by the batch.
    ce = F.cross_entropy(logits[:5], y[:5], reduction="sum")
    rce = (4.0 * (1 - F.softmax(logits[5:7], -1).gather(1, llm[5:7, None]).squeeze(1))).sum()
    assert rows.total.item() == pytest.approx(((ce + rce) / 8).item(), rel=1e-5)
    with pytest.raises(ValueError, match="norm must be subset or rows"):
        noiseal_loss(**kw, norm="batch")


def test_hard_given_trains_h_on_its_given_labels_as_r():
    torch.manual_seed(3)
    m = Tiny()
    x = torch.randn(6, 6)
    logits, emb = m(x)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    llm = torch.full((6,), -1)
    part = torch.tensor([0, 0, 0, 2, 2, 2])
    kw = dict(emb=emb, logits=logits, head=m.head, labels=y, llm_labels=llm, part=part, num_classes=3)
    given = noiseal_loss(**kw, hard="given", norm="rows")
    # Every row, R or H, is plain cross-entropy on its label: the same as one CE over the batch.
    assert given.total.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert given.h == pytest.approx(F.cross_entropy(logits[3:], y[3:]).item(), rel=1e-5)
    mixed = noiseal_loss(**kw)  # the default, EmbMix on H, is not that
    assert mixed.h != pytest.approx(given.h, rel=1e-3)
    with pytest.raises(ValueError, match="hard must be embmix or given"):
        noiseal_loss(**kw, hard="self")

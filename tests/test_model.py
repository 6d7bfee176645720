"""MIIR.py against hand-written references: embedding (Eq. 1-3), attention masks (Eq. 6, 15, 16),
losses (Eq. 11-14) against a naive per-sequence per-field loop, fast path == reference path."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from DataLoader import load_tables, make_eval_loader, make_train_loader
import MIIR as miir
from MIIR import MIIR, LinearCrossEntropy, MIIRConfig, cross_entropy, dropout
from Utils import InputError, read_dat


@pytest.fixture
def setup(tiny_dat):
    dat = read_dat(tiny_dat)
    return dat, load_tables(dat)


def make_model(dat, tables, seed=0, **over):
    torch.manual_seed(seed)
    return MIIR(MIIRConfig.from_meta(dat["meta"], **over), tables)


def train_batch(dat, tables, kind="mii", bs=16, seed=0):
    return next(iter(make_train_loader(tables, dat["train_filepath"], kind, bs, 0.5, seed)))


# --------------------------------------------------------------------------------------------------
def test_embedding_eq1_3_and_shapes(setup):
    dat, tables = setup
    m = make_model(dat, tables, emb_size=16, heads=2).eval()
    items = torch.tensor([[5, 7, 9, 0], [11, 0, 0, 0]])                   # [2, 4] with padding
    masked = torch.zeros(2, 4, 5, dtype=torch.bool)
    masked[0, 1] = True                                                   # slot 1 fully masked
    h = m.embed(items, masked)
    assert h.shape == (2, 4, 5, 16)
    assert m(items, masked).shape == (2, 4, 5, 16)
    assert torch.all(h[0, 3] == 0) and torch.all(h[1, 1:] == 0)          # padding = zero
    miss = torch.as_tensor(tables["missing"])
    W = m.category_emb.weight
    for b, k in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        i = int(items[b, k])
        hide = masked[b, k] | miss[i]
        f, p = m.field_emb.weight, m.pos_emb.weight[k]
        labels = [c for c in tables["categories"][i] if c >= 0]
        want = [m.item_emb.weight[1 if hide[0] else i],
                W[0] if hide[1] else sum(W[c] for c in labels),
                m.brand_emb.weight[0 if hide[2] else int(tables["brands"][i])],
                m.title_in(torch.as_tensor(tables["titles"][1 if hide[3] else i])),
                m.description_in(torch.as_tensor(tables["descriptions"][1 if hide[4] else i]))]
        for x in range(5):
            torch.testing.assert_close(h[b, k, x], want[x] + f[x] + p)


def naive_allowed(items, missing, sparse, mask_missing):
    """Eq. 6 / 15 / 16 by a double loop over tokens (i, x) -> (j, y); True = may attend."""
    B, L = items.shape
    out = np.zeros((B, 5 * L, 5 * L), dtype=bool)
    for b in range(B):
        for i in range(L):
            for x in range(5):
                for j in range(L):
                    for y in range(5):
                        ok = items[b, j] != 0                              # key not padding
                        if sparse:
                            ok &= (i == j) or (x == y)                     # Eq. 16
                        if mask_missing:                                   # Eq. 15 (side fields)
                            ok &= not (x > 0 and missing[items[b, i], x])
                            ok &= not (y > 0 and missing[items[b, j], y])
                        if i == j and x == y:
                            ok = True                                      # self: no empty row
                        out[b, 5 * i + x, 5 * j + y] = ok
    return out


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("mask_missing", [False, True])
def test_attention_mask_matches_eq(setup, sparse, mask_missing):
    dat, tables = setup
    m = make_model(dat, tables, attention="sparse" if sparse else "dense", mask_missing=mask_missing)
    items = torch.tensor([[3, 4, 5, 0], [6, 1, 0, 0], [7, 8, 9, 10]])
    got = m.attention_mask(items).expand(3, 1, 20, 20)[:, 0].numpy()
    want = naive_allowed(items.numpy(), tables["missing"], sparse, mask_missing)
    if not sparse and not mask_missing:                                    # [B,1,1,T]: no self term
        want[:, np.arange(20), np.arange(20)] = (items.numpy() != 0).repeat(5, 1)
    np.testing.assert_array_equal(got, want)
    if mask_missing:                                                       # eval target i_miss
        keys = got[1, :, 6:10] & ~np.eye(20, dtype=bool)[:, 6:10]          # its side fields
        assert not keys.any()                                              # are no one's keys
        assert got[1, 0, 5] and got[1, 5, 0]                               # its ID token is not


def test_mask_missing_ignores_exactly_the_data_missing_fields(setup):
    """MIIR-M: changing the value a data-missing field holds changes nothing else; an MII-masked
    field (same b_miss value, present in the data) is still attended to; without MIIR-M it is."""
    dat, tables = setup
    miss = tables["missing"]
    brand_missing = [i for i in range(2, len(miss)) if miss[i, 2]][:2]
    brand_present = [i for i in range(2, len(miss)) if not miss[i, 2]][:2]
    items = torch.tensor([brand_missing + brand_present])                  # [1, 4]
    masked = torch.zeros(1, 4, 5, dtype=torch.bool)

    def outputs(model, masked, bump):
        with torch.no_grad():
            model.brand_emb.weight[0] += bump                              # b_miss value
            h = model(items, masked)
            model.brand_emb.weight[0] -= bump
        return h

    m = make_model(dat, tables, mask_missing=True, dropout=0.0).eval()
    h0, h1 = outputs(m, masked, 0.0), outputs(m, masked, 3.0)
    keep = torch.ones(4, 5, dtype=torch.bool)
    keep[:2, 2] = False                                                    # the missing brand tokens
    torch.testing.assert_close(h0[0][keep], h1[0][keep])
    assert torch.isfinite(h0).all()
    masked2 = masked.clone()
    masked2[0, 2, 2] = True                                                # MII-mask a present brand
    assert not torch.allclose(outputs(m, masked2, 0.0)[0, 0, 0], outputs(m, masked2, 3.0)[0, 0, 0])
    dense = make_model(dat, tables, mask_missing=False, dropout=0.0).eval()
    assert not torch.allclose(outputs(dense, masked, 0.0)[0, 3, 0], outputs(dense, masked, 3.0)[0, 3, 0])


def test_padding_does_not_change_real_tokens(setup):
    dat, tables = setup
    for attention in ("dense", "sparse"):
        m = make_model(dat, tables, attention=attention, mask_missing=True).eval()
        items = torch.tensor([[5, 6, 7]])
        masked = torch.zeros(1, 3, 5, dtype=torch.bool)
        masked[0, 1, 0] = True
        padded = torch.tensor([[5, 6, 7, 0, 0]])
        masked_p = torch.zeros(1, 5, 5, dtype=torch.bool)
        masked_p[:, :3] = masked
        torch.testing.assert_close(m(items, masked), m(padded, masked_p)[:, :3])


# --------------------------------------------------------------------------------------------------
def naive_loss(m, batch, kind, category_loss):
    """Eq. 11-14 one sequence and one field at a time, with the authors' normalisation."""
    items, masked = batch["items"], batch["masked"]
    h = m(items, masked)
    T = {k: torch.as_tensor(v) for k, v in m.named_buffers()}
    seq_losses = []
    for b in range(items.shape[0]):
        total, n = 0.0, 0
        for k in range(items.shape[1]):
            i = int(items[b, k])
            for x in (range(5) if kind == "mii" else [0]):
                if i == 0 or not masked[b, k, x] or T["missing"][i, x]:
                    continue
                e = h[b, k, x]
                if x == 0:
                    loss = -torch.log_softmax(m.item_emb.weight @ e, 0)[i]
                elif x == 2:
                    loss = -torch.log_softmax(m.brand_emb.weight @ e, 0)[int(T["brands"][i])]
                elif x == 1:
                    p = torch.sigmoid(m.category_emb.weight @ e)
                    labels = {int(c) for c in T["categories"][i] if c >= 0}
                    terms = [-math.log(p[c]) if c in labels else -math.log(1 - p[c])
                             for c in range(len(p))]
                    loss = sum(terms) / (len(p) if category_loss == "mean" else 1)
                else:
                    out, table = (m.title_out, T["titles"]) if x == 3 else (m.description_out, T["descriptions"])
                    loss = ((out(e) - table[i]) ** 2).sum()
                total, n = total + float(loss), n + 1
        if n:
            seq_losses.append(total / n)
    return sum(seq_losses) / len(seq_losses)


@pytest.mark.parametrize("category_loss", ["sum", "mean"])
@pytest.mark.parametrize("kind", ["mii", "rec"])
def test_loss_equals_naive_loop(setup, category_loss, kind):
    dat, tables = setup
    m = make_model(dat, tables, category_loss=category_loss).eval()
    batch = train_batch(dat, tables, kind, bs=12)
    with torch.no_grad():
        fast = float(m.loss(batch, kind))
        want = naive_loss(m, batch, kind, category_loss)
    assert fast == pytest.approx(want, rel=1e-5)
    assert set(m.last_loss_parts) == ({"id"} if kind == "rec" else
                                      {"id", "category", "brand", "title", "description"})


def test_category_mean_divides_by_n_categories(setup):
    dat, tables = setup
    batch = train_batch(dat, tables, "mii")
    batch["masked"][..., [0, 2, 3, 4]] = False
    losses = {}
    for mode in ("sum", "mean"):
        m = make_model(dat, tables, category_loss=mode).eval()
        losses[mode] = float(m.loss(batch).detach())
    assert losses["mean"] * dat["meta"]["n_categories"] == pytest.approx(losses["sum"], rel=1e-5)


@pytest.mark.parametrize("over", [{}, {"attention": "sparse", "mask_missing": True, "category_loss": "mean"},
                                  {"dropout_sites": "torch"}])
@pytest.mark.parametrize("kind", ["mii", "rec"])
def test_fast_path_equals_reference(setup, over, kind, monkeypatch):
    """Same loss and same gradients, dropout on: model.loss (fast) == model.loss_reference == the plain
    path (set_fast(False), Train.py -reference_path: loss_reference, F.dropout, SDPA). keep_mask is
    made to draw F.dropout's masks, so with the same torch seed all three drop the same units."""
    dat, tables = setup
    calls = []

    def keep_mask_like_f_dropout(shape, p, dtype, device):
        calls.append(shape)
        return F.dropout(torch.ones(shape, dtype=dtype, device=device), p)

    monkeypatch.setattr(miir, "keep_mask", keep_mask_like_f_dropout)
    m = make_model(dat, tables, **over).train()
    batch = train_batch(dat, tables, kind, bs=20)
    grads = []
    for fast, fn in ((True, "loss"), (True, "loss_reference"), (False, "loss")):
        m.set_fast(fast)
        calls.clear()
        torch.manual_seed(123)
        m.zero_grad()
        loss = getattr(m, fn)(batch, kind)
        loss.backward()
        assert bool(calls) == fast                                         # the switch picks the path
        grads.append((float(loss.detach()), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    for other in grads[1:]:
        assert other[0] == pytest.approx(grads[0][0], rel=1e-5)
        assert len(other[1]) == len(grads[0][1])
        for a, b in zip(grads[0][1], other[1]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_row_without_masked_fields_is_left_out(setup):
    dat, tables = setup
    m = make_model(dat, tables).eval()
    batch = train_batch(dat, tables, "rec", bs=6)
    solo = {k: v[:1] for k, v in batch.items()}
    batch["masked"][1:] = False                                            # only row 0 has targets
    assert float(m.loss(batch, "rec").detach()) == pytest.approx(float(m.loss(solo, "rec").detach()), rel=1e-5)


# --------------------------------------------------------------------------------------------------
def test_scores(setup):
    dat, tables = setup
    m = make_model(dat, tables).eval()
    batch = next(iter(make_eval_loader(dat, "valid", batch_size=7)))
    with torch.no_grad():
        s, full = m.score(batch), m.full_scores(batch)
    assert s.shape == batch["candidates"].shape
    torch.testing.assert_close(s, full.gather(1, batch["candidates"]))
    assert torch.isinf(full[:, :2]).all() and torch.isfinite(full[:, 2:]).all()
    h = m(batch["items"], batch["masked"])                                 # Eq. 8 for one row
    e = h[0, batch["target_pos"][0], 0]
    torch.testing.assert_close(s[0], m.item_emb.weight[batch["candidates"][0]] @ e)


def test_buffers_not_in_checkpoint_and_errors(setup):
    dat, tables = setup
    m = make_model(dat, tables)
    sd = m.state_dict()
    assert not any(k in sd for k in ("titles", "categories", "missing", "brands", "descriptions"))
    assert m.titles.shape == (dat["meta"]["n_items"], dat["meta"]["text_dim"])
    assert m.item_emb.weight.shape == (dat["meta"]["n_items"], 64)
    for bad in ({"attention": "full"}, {"category_loss": "avg"}, {"heads": 5}, {"nope": 1}):
        with pytest.raises(InputError):
            MIIRConfig.from_meta(dat["meta"], **bad)
    wrong = dict(tables, titles=tables["titles"][:, :3])
    with pytest.raises(InputError):
        MIIR(MIIRConfig.from_meta(dat["meta"]), wrong)


def test_xavier_init(setup):
    dat, tables = setup
    m = make_model(dat, tables)
    w = m.item_emb.weight
    bound = math.sqrt(6 / sum(w.shape))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert torch.all(m.blocks[0].qkv.bias == 0)


def test_fast_dropout_rate_and_scale():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    for p in (0.1, 0.5):
        y = dropout(x, p, True)
        assert (y == 0).float().mean().item() == pytest.approx(p, abs=0.005)
        assert y.mean().item() == pytest.approx(1.0, abs=0.01)
        assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / (1 - p)])
    assert dropout(x, 0.5, False) is x


def test_cpu_attention_path_equals_sdpa(setup):
    """The CPU training path (baddbmm + own dropout) computes the same attention as SDPA."""
    dat, tables = setup
    for attention in ("dense", "sparse"):
        m = make_model(dat, tables, attention=attention, mask_missing=True, dropout=0.0)
        batch = train_batch(dat, tables, "mii")
        m.eval()
        want = m(batch["items"], batch["masked"])
        m.train()
        for block in m.blocks:
            block.p_inner = 1e-12                                          # manual path, no drops
        torch.testing.assert_close(m(batch["items"], batch["masked"]), want, rtol=1e-4, atol=1e-5)


def test_chunked_cross_entropy_equals_plain():
    torch.manual_seed(0)
    h = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    W = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 13, (10,))
    w = torch.rand(10, dtype=torch.float64)                                # uneven upstream grads
    got = LinearCrossEntropy.apply(h, W, y, 3)                             # 4 chunks
    torch.testing.assert_close(cross_entropy(h, W, y, max_logits=10), got)  # the large-size branch
    want = F.cross_entropy(h @ W.T, y, reduction="none")
    torch.testing.assert_close(got, want)
    g1 = torch.autograd.grad((got * w).sum(), (h, W))
    g2 = torch.autograd.grad((want * w).sum(), (h, W))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)

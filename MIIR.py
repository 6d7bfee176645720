"""MIIR: the missing information imputation recommender (Lin et al., paper section 3), in one file.

Every item of a sequence is five tokens, one per feature field (Utils.FIELDS order: id, category,
brand, title, description), so a sequence of L item slots is 5L tokens. A post-LN transformer over all
tokens (DFSA, Eq. 4-6; SFSA Eq. 16 and MIIR-M Eq. 15 as flags) rebuilds masked fields (Eq. 7-10);
training minimises the MII loss (Eq. 11-13) or the recommendation loss (Eq. 14).

Inputs are item indices and boolean field masks; the feature tables (DataLoader.load_tables) live on
the model's device as non-persistent buffers, so a checkpoint holds only parameters. A field takes its
missing value (ID 1 = i_miss, category label 0 = c_miss, brand 0 = b_miss, text row 1 = t_miss/d_miss)
when it is masked or missing in the data (missings | discard); loss targets are always the true values.
Item 0 is padding: zero embedding, never attended to, never scored.

Shapes: B batch, L item slots, T = 5L tokens, e embedding size, K max categories per item,
D text dimension, M number of masked fields of one type in the batch, C candidates.
"""
import math
from dataclasses import dataclass, fields as dc_fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from Utils import FIELDS, InputError

ID, CATEGORY, BRAND, TITLE, DESCRIPTION = range(5)
TABLES = ("categories", "brands", "titles", "descriptions", "missing")


@dataclass
class MIIRConfig:
    n_items: int                  # rows of the item tables (0 = padding, 1 = i_miss)
    n_categories: int             # category labels (0 = c_miss)
    n_brands: int                 # brands (0 = b_miss)
    max_categories: int           # K, width of the padded label table
    text_dim: int                 # D, width of the title/description vectors
    max_len: int = 20             # item slots per sequence (position embeddings)
    emb_size: int = 64            # e
    heads: int = 4
    layers: int = 3
    dropout: float = 0.5
    attention: str = "dense"      # 'dense' = DFSA (Eq. 6), 'sparse' = SFSA (Eq. 16)
    mask_missing: bool = False    # MIIR-M (Eq. 15)
    category_loss: str = "sum"    # 'sum' over labels (authors' code) or 'mean' (/N_c, Eq. 11)
    dropout_sites: str = "paper"  # 'paper' (Eq. 5) or 'torch' (authors' TransformerEncoderLayer)

    def __post_init__(self):
        if self.attention not in ("dense", "sparse"):
            raise InputError(f"-attention {self.attention}: use dense (DFSA) or sparse (SFSA)")
        if self.dropout_sites not in ("torch", "paper"):
            raise InputError(f"-dropout_sites {self.dropout_sites}: use torch or paper")
        if self.category_loss not in ("sum", "mean"):
            raise InputError(f"-category_loss {self.category_loss}: use sum or mean")
        if self.emb_size % self.heads:
            raise InputError(f"-emb_size {self.emb_size} is not divisible by -heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"-dropout {self.dropout}: must be in [0, 1)")
        for name in ("n_items", "n_categories", "n_brands", "max_categories", "text_dim", "max_len",
                     "emb_size", "heads", "layers"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name}={getattr(self, name)}: must be a positive integer")

    @classmethod
    def from_meta(cls, meta, **overrides):
        """Sizes from the processed data's meta.json; overrides with value None are ignored."""
        keys = ("n_items", "n_categories", "n_brands", "max_categories", "text_dim")
        missing = [k for k in keys if k not in meta]
        if missing:
            raise InputError(f"meta.json lacks {', '.join(missing)}; re-run the Process*.py of the dataset")
        values = {k: int(meta[k]) for k in keys}
        if "max_interactions" in meta:
            values["max_len"] = int(meta["max_interactions"])
        names = {f.name for f in dc_fields(cls)}
        for k, v in overrides.items():
            if k not in names:
                raise InputError(f"unknown model option '{k}'; known: {', '.join(sorted(names))}")
            if v is not None:
                values[k] = v
        return cls(**values)


def keep_mask(shape, p, dtype, device):
    """Inverted-dropout multiplier [shape]: 1 / (1 - p) with probability 1 - p, else 0 (p quantised to
    2^-16, exact for p = 0.5). Built from 16-bit slices of torch.randint words with arithmetic only
    (CPU bool masks and masked_fill are slow): about 4x faster than F.dropout's Bernoulli draws,
    which were a quarter of a CPU training step."""
    n = math.prod(shape)
    bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    bits = bits.view(torch.int16)[:n].view(shape).to(torch.float32)       # uniform integers
    threshold = round(p * 65536) - 32768                                   # P(bits < threshold) = p
    return bits.sub_(threshold - 1).clamp_(0.0, 1.0).mul_(1.0 / (1.0 - p)).to(dtype)


def dropout(x, p, training, fast=True):
    """Inverted dropout: keep_mask on CPU, F.dropout elsewhere or on the plain path (fast=False)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not fast:
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p, x.dtype, x.device)


class LinearCrossEntropy(torch.autograd.Function):
    """Per-row -log softmax(h W^T)[y] (Eq. 8 and 11 for IDs and brands) in chunks of rows, with the
    logits recomputed in the backward pass: the [M, N] logits never exist whole. At 121k items a
    batch's ID logits are ~0.2 GB per copy and plain autograd keeps three or four copies."""

    @staticmethod
    def forward(ctx, h, W, y, chunk):                                      # h [M, e], W [N, e], y [M]
        lse = h.new_empty(len(h))                                          # [M] log-sum-exp
        picked = h.new_empty(len(h))                                       # [M] logit of the target
        for s in range(0, len(h), chunk):
            logits = h[s:s + chunk] @ W.T                                  # [chunk, N]
            lse[s:s + chunk] = logits.logsumexp(1)
            picked[s:s + chunk] = logits.gather(1, y[s:s + chunk, None]).squeeze(1)
        ctx.save_for_backward(h, W, y, lse)
        ctx.chunk = chunk
        return lse - picked                                                # [M]

    @staticmethod
    def backward(ctx, grad):                                               # grad [M]
        h, W, y, lse = ctx.saved_tensors
        gh, gW = torch.empty_like(h), torch.zeros_like(W)                  # [M, e], [N, e]
        for s in range(0, len(h), ctx.chunk):
            p = (h[s:s + ctx.chunk] @ W.T).sub_(lse[s:s + ctx.chunk, None]).exp_()  # softmax
            p[torch.arange(len(p), device=p.device), y[s:s + ctx.chunk]] -= 1.0     # - one-hot
            p.mul_(grad[s:s + ctx.chunk, None])                            # [chunk, N] dL/dlogits
            gh[s:s + ctx.chunk] = p @ W
            gW.addmm_(p.T, h[s:s + ctx.chunk])
        return gh, gW, None, None


def cross_entropy(h, W, y, max_logits=2**24):
    """-log softmax(h W^T)[y] per row, [M]. Up to max_logits logits (64 MB) the plain way, which is
    ~10% faster; beyond, LinearCrossEntropy in chunks of about 4M logits."""
    if h.shape[0] * W.shape[0] <= max_logits:
        return F.cross_entropy(h @ W.T, y, reduction="none")
    dtype = torch.promote_types(h.dtype, torch.float32)                   # at least float32 inside
    with torch.autocast(h.device.type, enabled=False):
        return LinearCrossEntropy.apply(h.to(dtype), W.to(dtype), y, max(1, 2**22 // W.shape[0]))


class Block(nn.Module):
    """One post-LN transformer layer, Eq. 5. Dropout sites: 'torch' = where torch's
    TransformerEncoderLayer (the authors' building block) puts them -- attention weights, attention
    output, inside and after the feed-forward; 'paper' = only the two of Eq. 5."""

    def __init__(self, c: MIIRConfig):
        super().__init__()
        e = c.emb_size
        self.heads, self.p = c.heads, c.dropout
        self.p_inner = c.dropout if c.dropout_sites == "torch" else 0.0    # attention weights, FFN
        self.fast = True                      # False = plain F.dropout and SDPA (MIIR.set_fast)
        self.qkv = nn.Linear(e, 3 * e)        # W^Q, W^K, W^V of all heads
        self.proj = nn.Linear(e, e)           # W^H
        self.ln1 = nn.LayerNorm(e)
        self.ff1 = nn.Linear(e, 4 * e)        # W^F_1, b^F_1
        self.ff2 = nn.Linear(4 * e, e)        # W^F_2, b^F_2
        self.ln2 = nn.LayerNorm(e)

    def attend(self, q, k, v, mask):
        """softmax(Q K^T / sqrt(d) + M) V with dropout on the attention weights; mask additive (0 or
        -inf), [B, 1, 1|T, T], or [B*heads, T, T] for the CPU training path, which fuses the scale and
        the mask into one batched GEMM."""
        p = self.p_inner if self.training else 0.0
        if p == 0.0 or q.device.type != "cpu" or not self.fast:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        B, h, T, d = q.shape
        a = torch.baddbmm(mask, q.reshape(B * h, T, d), k.reshape(B * h, T, d).transpose(1, 2),
                          alpha=d ** -0.5).softmax(-1)                     # [B*h, T, T]
        a = a * keep_mask(a.shape, p, a.dtype, a.device)                   # dropout on the weights
        return (a @ v.reshape(B * h, T, d)).view(B, h, T, d)               # [B, h, T, d]

    def full_mask(self, mask, B, T):
        """The additive mask as the CPU training path of attend wants it: [B*heads, T, T]."""
        if self.training and self.p_inner > 0.0 and mask.device.type == "cpu" and self.fast:
            return mask.expand(B, self.heads, T, T).reshape(B * self.heads, T, T)
        return mask

    def forward(self, x, mask):
        B, T, e = x.shape                                                  # x [B, T, e]
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        a = self.attend(q, k, v, mask).transpose(1, 2).reshape(B, T, e)    # MH(H) heads [B, T, e]
        x = self.ln1(x + dropout(self.proj(a), self.p, self.training, self.fast))  # LN(H + Drop(MH(H)))
        f = F.gelu(self.ff1(x))                                            # [B, T, 4e]
        f = self.ff2(dropout(f, self.p_inner, self.training, self.fast))   # PFFN [B, T, e]
        return self.ln2(x + dropout(f, self.p, self.training, self.fast))  # LN(H~ + Drop(PFFN(H~)))


class MIIR(nn.Module):
    def __init__(self, config: MIIRConfig, tables: dict):
        super().__init__()
        self.config = c = config
        e, D = c.emb_size, c.text_dim
        self._register_tables(tables)
        # Embedding layer (Eq. 1-3); E^i, E^c, E^b are reused by the output layer (Eq. 8).
        self.item_emb = nn.Embedding(c.n_items, e)                        # E^i
        self.category_emb = nn.Embedding(c.n_categories, e)               # E^c
        self.brand_emb = nn.Embedding(c.n_brands, e)                      # E^b
        self.title_in = nn.Linear(D, e, bias=False)                       # E^t
        self.description_in = nn.Linear(D, e, bias=False)                 # E^d
        self.field_emb = nn.Embedding(5, e)                               # f^i, f^c, f^b, f^t, f^d
        self.pos_emb = nn.Embedding(c.max_len, e)                         # p_k
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))    # DFSA (Eq. 4-5)
        self.title_out = nn.Linear(e, D)                                  # O^t (Eq. 10)
        self.description_out = nn.Linear(e, D)                            # O^d (Eq. 10)
        for name, p in self.named_parameters():                           # Xavier init
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        self.last_loss_parts = {}
        self.fast = True

    def set_fast(self, fast=True):
        """fast=False: the plain, slow path, for benchmarks and checks: loss() = loss_reference()
        (full logits everywhere) and F.dropout / F.scaled_dot_product_attention instead of keep_mask
        and the fused CPU attention. Same method, same numbers up to the dropout draws. Not part of
        MIIRConfig: it changes no parameter and no result, so checkpoints do not record it."""
        self.fast = bool(fast)
        for block in self.blocks:
            block.fast = self.fast
        return self

    # ----------------------------------------------------------------------------------------------
    def _register_tables(self, tables):
        """Feature tables as non-persistent buffers (not in state_dict; DDP neither broadcasts nor
        checks them: every process loads the same files)."""
        c = self.config
        want = {"categories": (torch.long, (c.n_items, c.max_categories)),
                "brands": (torch.long, (c.n_items,)),
                "titles": (torch.float32, (c.n_items, c.text_dim)),
                "descriptions": (torch.float32, (c.n_items, c.text_dim)),
                "missing": (torch.bool, (c.n_items, 5))}
        for name, (dtype, shape) in want.items():
            if name not in tables:
                raise InputError(f"feature table '{name}' missing; build tables with DataLoader.load_tables")
            t = torch.as_tensor(tables[name]).to(dtype)
            if tuple(t.shape) != shape:
                raise InputError(f"feature table '{name}' has shape {tuple(t.shape)}, the model config "
                                 f"expects {shape}; meta.json and the tables come from different runs")
            self.register_buffer(name, t, persistent=False)
        miss = torch.full((c.max_categories,), -1, dtype=torch.long)
        miss[0] = 0                                                       # c_miss = [0, -1, ...]
        self.register_buffer("category_miss", miss, persistent=False)     # [K]
        side = torch.tensor([False, True, True, True, True])              # Eq. 15 lists side fields
        self.register_buffer("side_fields", side, persistent=False)       # [5]
        self._ddp_params_and_buffers_to_ignore = list(TABLES) + ["category_miss", "side_fields"]

    # ----------------------------------------------------------------------------------------------
    def embed(self, items, masked):
        """Eq. 1-3: H_k = [e^x_k + f^x + p_k] for x in (i, c, b, t, d); padding slots are zero."""
        B, L = items.shape                                                 # items [B, L]
        hide = masked | self.missing[items]                                # [B, L, 5] take missing value
        ids = torch.where(hide[..., ID], 1, items)                         # [B, L] masked -> i_miss
        labels = self.categories[items]                                    # [B, L, K]
        labels = torch.where(hide[..., CATEGORY, None], self.category_miss, labels)  # -> c_miss
        brands = torch.where(hide[..., BRAND], 0, self.brands[items])      # [B, L] masked -> b_miss
        t_rows = torch.where(hide[..., TITLE], 1, items)                   # [B, L] masked -> t_miss row
        d_rows = torch.where(hide[..., DESCRIPTION], 1, items)             # [B, L]
        flat = labels.view(B * L, -1)                                      # [B*L, K]
        e_c = F.embedding_bag(flat.clamp(min=0), self.category_emb.weight, mode="sum",
                              per_sample_weights=(flat >= 0).to(self.category_emb.weight.dtype))
        h = torch.stack([self.item_emb(ids),                              # e^i [B, L, e]
                         e_c.view(B, L, -1),                               # e^c = sum of label emb.
                         self.brand_emb(brands),                           # e^b
                         self.title_in(self.titles[t_rows]),               # e^t = E^t s^t
                         self.description_in(self.descriptions[d_rows])],  # e^d = E^d s^d
                        dim=2)                                             # [B, L, 5, e]
        h = h + self.field_emb.weight + self.pos_emb.weight[:L, None, :]   # + f^x + p_k [B, L, 5, e]
        return h * (items != 0)[:, :, None, None].to(h.dtype)              # padding -> 0 [B, L, 5, e]

    def attention_mask(self, items):
        """Boolean mask (True = may attend) for M of Eq. 5.
        DFSA (Eq. 6): every token attends to every non-padding token -> [B, 1, 1, T].
        SFSA (Eq. 16): only tokens of the same item or the same field type.
        MIIR-M (Eq. 15): side fields missing in the data (missings | discard, not the MII-masked ones)
        neither attend nor are attended to. A query whose keys are all masked would give NaN, so every
        token always attends to itself (a missing field then only carries its own value forward; its
        output is never a loss target)."""
        B, L = items.shape
        T = 5 * L
        c = self.config
        key_ok = (items != 0)[:, :, None].expand(B, L, 5)                  # [B, L, 5] not padding
        if c.mask_missing:
            data_missing = self.missing[items] & self.side_fields          # [B, L, 5]
            key_ok = key_ok & ~data_missing
        key_ok = key_ok.reshape(B, 1, 1, T)                                # [B, 1, 1, T]
        if c.attention == "dense" and not c.mask_missing:
            return key_ok
        tok = torch.arange(T, device=items.device)                         # [T] token = 5 * slot + field
        allowed = key_ok.expand(B, 1, T, T)                                # [B, 1, T, T]
        if c.mask_missing:
            allowed = allowed & ~data_missing.reshape(B, 1, T, 1)          # missing queries
        if c.attention == "sparse":
            same = (tok[:, None] // 5 == tok[None, :] // 5) | (tok[:, None] % 5 == tok[None, :] % 5)
            allowed = allowed & same                                       # [T, T] Eq. 16
        return allowed | (tok[:, None] == tok[None, :])                    # self always [B, 1, T, T]

    def forward(self, items, masked):
        """items Long [B, L] (0 = pad), masked Bool [B, L, 5] -> hidden states H^L [B, L, 5, e]."""
        B, L = items.shape
        if L > self.config.max_len:
            raise InputError(f"batch has {L} item slots, the model has {self.config.max_len} positions "
                             "(-max_interactions); re-process the data or raise it")
        x = self.embed(items, masked).view(B, 5 * L, -1)                   # H (Eq. 4) [B, T, e]
        allowed = self.attention_mask(items)                               # [B, 1, 1|T, T] bool
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~allowed, float("-inf"))                                       # additive M, once per batch
        mask = self.blocks[0].full_mask(mask, B, 5 * L)                    # [B*heads, T, T] (CPU train)
        for block in self.blocks:
            x = block(x, mask)                                             # H^{l+1} = Trm(H^l)
        return x.view(B, L, 5, -1)                                         # H^L split as Eq. 7

    # ----------------------------------------------------------------------------------------------
    def field_loss(self, field, h, ids):
        """Eq. 11-12 for M masked fields of one type: h [M, e] hidden states, ids [M] true items ->
        per-field losses [M] against the true values (never the masked input)."""
        if field == ID:                                                    # CE over E^i (Eq. 8, 11)
            return cross_entropy(h, self.item_emb.weight, ids)
        if field == BRAND:                                                 # CE over E^b
            return cross_entropy(h, self.brand_emb.weight, self.brands[ids])
        if field == CATEGORY:                                              # BCE over all labels
            logits = h @ self.category_emb.weight.T                        # [M, N_c]
            labels = self.categories[ids]                                  # [M, K]
            positive = logits.gather(1, labels.clamp(min=0)) * (labels >= 0)  # [M, K]
            # sum_j BCE(x_j, y_j) = sum_j softplus(x_j) - sum_{j: y_j = 1} x_j  (no dense target)
            loss = F.softplus(logits).sum(1) - positive.sum(1)             # [M]
            return loss / logits.shape[1] if self.config.category_loss == "mean" else loss
        out, table = ((self.title_out, self.titles) if field == TITLE
                      else (self.description_out, self.descriptions))
        return (out(h) - table[ids]).pow(2).sum(1)                         # ||s - O e||^2 (Eq. 10, 12)

    def loss(self, batch, kind="mii"):
        """MII loss (Eq. 13, kind='mii') or recommendation loss (Eq. 14, kind='rec', IDs only), as the
        authors normalised it: per sequence the sum over its masked fields divided by their number,
        then the mean over sequences (sequences with nothing masked are left out of the mean).
        Fields missing in the data (missings | discard) and padding are never targets.
        Logits are computed only at masked positions (padding never produces logits).
        On the plain path (set_fast(False)) this is loss_reference."""
        if not self.fast:
            return self.loss_reference(batch, kind)
        items, masked = batch["items"], batch["masked"]                    # [B, L], [B, L, 5]
        h = self(items, masked)                                            # [B, L, 5, e]
        fields = self._loss_fields(kind)
        B = items.shape[0]
        per_seq = h.new_zeros(B)                                           # [B] sum of field losses
        count = h.new_zeros(B)                                             # [B] number of masked fields
        parts = {}
        target = masked & ~self.missing[items]                             # [B, L, 5] loss targets
        for f in fields:
            sel = target[:, :, f]                                          # [B, L]
            rows = sel.nonzero()[:, 0]                                     # [M] sequence of each field
            loss_f = self.field_loss(f, h[:, :, f][sel], items[sel])       # [M]
            per_seq = per_seq.index_add(0, rows, loss_f)
            count = count + sel.sum(1)
            parts[FIELDS[f]] = (loss_f.sum() / max(loss_f.numel(), 1)).detach()
        self.last_loss_parts = parts
        return self._reduce(per_seq, count)

    @staticmethod
    def _loss_fields(kind):
        if kind not in ("mii", "rec"):
            raise InputError(f"loss kind '{kind}': use mii or rec")
        return range(5) if kind == "mii" else (ID,)

    @staticmethod
    def _reduce(per_seq, count):
        """mean over sequences (with >= 1 masked field) of per-sequence sum / count."""
        has = (count > 0).to(per_seq.dtype)                                # [B]
        return (per_seq / count.clamp(min=1) * has).sum() / has.sum().clamp(min=1)

    def loss_reference(self, batch, kind="mii"):
        """The same loss computed the plain, slow way: full logits at every position (padding
        included), dense multi-hot category targets, then selection by the masks. For tests/benchmarks."""
        items, masked = batch["items"], batch["masked"]
        h = self(items, masked)                                            # [B, L, 5, e]
        fields = self._loss_fields(kind)
        c = self.config
        losses = []
        for f in fields:
            hf = h[:, :, f]                                                # [B, L, e]
            if f == ID:
                logits = hf @ self.item_emb.weight.T                       # [B, L, N_i]
                lf = F.cross_entropy(logits.transpose(1, 2), items, reduction="none")
            elif f == BRAND:
                logits = hf @ self.brand_emb.weight.T                      # [B, L, N_b]
                lf = F.cross_entropy(logits.transpose(1, 2), self.brands[items], reduction="none")
            elif f == CATEGORY:
                logits = hf @ self.category_emb.weight.T                   # [B, L, N_c]
                labels = self.categories[items]                            # [B, L, K]
                target = torch.zeros_like(logits)                          # dense multi-hot
                target.scatter_add_(2, labels.clamp(min=0), (labels >= 0).to(logits.dtype))
                bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
                lf = bce.mean(2) if c.category_loss == "mean" else bce.sum(2)
            else:
                out, table = ((self.title_out, self.titles) if f == TITLE
                              else (self.description_out, self.descriptions))
                lf = (out(hf) - table[items]).pow(2).sum(2)                # [B, L]
            losses.append(lf)
        lf = torch.stack(losses, 2)                                        # [B, L, |fields|]
        sel = (masked & ~self.missing[items])[:, :, list(fields)]          # [B, L, |fields|]
        per_seq = (lf * sel).sum((1, 2))                                   # [B]
        return self._reduce(per_seq, sel.sum((1, 2)).to(lf.dtype))

    # ----------------------------------------------------------------------------------------------
    def _target_hidden(self, batch):
        h = self(batch["items"], batch["masked"])                          # [B, L, 5, e]
        B = h.shape[0]
        return h[torch.arange(B, device=h.device), batch["target_pos"], ID]  # [B, e] ID token

    def score(self, batch):
        """Sampled evaluation: scores [B, C] of the target slot's ID token against the candidates
        (E^i^T e^i of Eq. 8 for those C items only)."""
        h = self._target_hidden(batch)                                     # [B, e]
        cand = self.item_emb(batch["candidates"])                          # [B, C, e]
        return (cand @ h[:, :, None]).squeeze(2)                           # [B, C]

    def full_scores(self, batch):
        """Scores [B, n_items] against every item; padding (0) and i_miss (1) get -inf."""
        s = self._target_hidden(batch) @ self.item_emb.weight.T            # [B, N_i]
        s[:, :2] = float("-inf")
        return s

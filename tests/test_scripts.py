"""Train / Valid / Test scripts: metrics, checkpoints, resume, NaN stop, DDP, error messages.

Small and fast: a tiny processed dataset (conftest.write_tiny_processed) whose sequences walk a
chain of items (after item i comes i+1), so a few epochs learn something measurable.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, write_tiny_processed

import Test
import Train
import Utils
import Valid

SMALL = ["-emb_size", "16", "-heads", "2", "-layers", "1", "-batch_size", "8"]


def write_chain_data(root, n_items=40, n_train=160, n_users=25, max_len=8, n_neg=9, seed=0):
    """conftest's tiny tables, with train/valid/test rows replaced by walks along the item chain."""
    dat = write_tiny_processed(root, n_items=n_items, n_train=n_train, n_users=n_users,
                               max_len=max_len, n_neg=n_neg, seed=seed)
    d = Utils.read_dat(dat)
    rng = np.random.default_rng(seed + 1)
    real = n_items - 2                                             # items 2 .. n_items - 1

    def walks(n, min_len):
        out = np.zeros((n, max_len), np.int32)
        for r in range(n):
            k, s = rng.integers(min_len, max_len + 1), rng.integers(real)
            out[r, :k] = 2 + (s + np.arange(k)) % real
        return out

    Utils.save_npy(d["train_filepath"], walks(n_train, 2))
    for split in ("valid", "test"):
        rows = walks(n_users, 3)
        target = rows[np.arange(n_users), (rows > 0).sum(1) - 1]
        neg = np.stack([rng.choice(np.setdiff1d(np.arange(2, n_items), [t]), n_neg, replace=False)
                        for t in target]).astype(np.int32)
        Utils.save_npy(d[f"{split}_filepath"], rows)
        Utils.save_npy(d[f"{split}_negatives_filepath"], neg)
    return dat


def run(main, argv, **kw):
    """Call a script's main in this process (fresh accelerate state each time)."""
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return main([str(a) for a in argv], **kw)


def launch(script, argv, processes=2):
    """Run a script under `accelerate launch` with `processes` CPU processes (gloo DDP)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(29500 + os.getpid() % 1000), script] + [str(a) for a in argv]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def epoch_losses(save_path, stage="train"):
    lines = (Path(save_path) / "log.txt").read_text().splitlines()
    return [float(l.split("loss ")[1].split()[0]) for l in lines if l.startswith(f"{stage} epoch ")]


def read_rows(path):
    lines = Path(path).read_text().splitlines()
    return lines[0].split("\t"), np.array([[float(x) for x in l.split("\t")] for l in lines[1:]])


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A chain dataset, an untrained checkpoint and a trained one (in-process training)."""
    root = tmp_path_factory.mktemp("chain")
    dat = write_chain_data(root)
    base = ["-dataset_files", dat] + SMALL + ["-dropout", "0.1", "-seed", "3"]
    run(Train.main, base + ["-save_path", root / "untrained", "-epochs", 1, "-lr", 0])
    run(Train.main, base + ["-save_path", root / "trained", "-epochs", 10, "-lr", 1e-2])
    return {"root": root, "dat": dat, "base": base, "untrained": root / "untrained" / "train-1.pth",
            "trained": root / "trained" / "train-10.pth"}


# ---------------------------------------------------------------------------------------- metrics
def test_metrics_hand_computed_with_ties():
    scores = torch.tensor([[0.5, 0.1, 0.5, 0.9, 0.2, 0.0],      # one tie + one above -> rank 3
                           [0.9, 0.1, 0.5, 0.8, 0.2, 0.0],      # best -> rank 1
                           [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],      # all tied -> rank 6 (last)
                           [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])     # worst -> rank 6
    m = Valid.metrics(scores)
    assert m["rank"].tolist() == [3, 1, 6, 6]
    assert m["hr@5"].tolist() == [1, 1, 0, 0] and m["hr@10"].tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(m["mrr"], [1 / 3, 1, 1 / 6, 1 / 6])
    np.testing.assert_allclose(m["ndcg@5"], [0.5, 1, 0, 0])                     # 1/log2(3+1) = 0.5
    np.testing.assert_allclose(m["ndcg@10"], [0.5, 1, 1 / np.log2(7), 1 / np.log2(7)])
    np.testing.assert_allclose(m["auc"], [3 / 5, 1, 0, 0])       # share of negatives strictly below
    # full ranking: -inf (padding, i_miss) never counts; ties with the target count against it
    full = torch.tensor([[-np.inf, -np.inf, 0.3, 0.7, 0.3, 0.1],
                         [-np.inf, -np.inf, 0.3, 0.7, 0.3, 0.1]])
    f = Valid.full_metrics(full, torch.tensor([2, 3]))
    assert f["rank"].tolist() == [3, 1]
    np.testing.assert_allclose(f["auc"], [1 / 3, 1])                            # 4 scoreable items
    np.testing.assert_allclose(f["ndcg@20"], [0.5, 1])


# ---------------------------------------------------------------------------------------- resume
def test_resume_gives_the_uninterrupted_parameters(tmp_path, chain):
    argv = chain["base"] + ["-epochs", 3, "-lr", 3e-3, "-accumulate_grad_batches", 2]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run(Train.main, argv + ["-save_path", whole])
    cut.mkdir()
    shutil.copy(whole / "train-1.pth", cut / "train-1.pth")
    (cut / ".train-2.pth.x.tmp.pth").write_bytes(b"half-written")   # an interrupted save
    run(Train.main, argv + ["-save_path", cut, "-resume"])
    a = torch.load(whole / "train-3.pth", weights_only=True)
    b = torch.load(cut / "train-3.pth", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, s in a["optimizer"]["state"].items():
        assert torch.equal(s["exp_avg_sq"], b["optimizer"]["state"][k]["exp_avg_sq"])
    # and training did change the parameters (the comparison above is not between two copies of epoch 1)
    one = torch.load(whole / "train-1.pth", weights_only=True)["model"]
    assert any(not torch.equal(one[k], a["model"][k]) for k in one)
    # a new run into a folder with checkpoints is refused
    with pytest.raises(Utils.InputError, match="add -resume"):
        run(Train.main, argv + ["-save_path", cut])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, chain, monkeypatch):
    import MIIR
    real, calls = MIIR.MIIR.loss, []

    def loss(self, batch, kind="mii"):
        calls.append(1)
        out = real(self, batch, kind)
        return out * float("nan") if len(calls) > 20 else out       # epoch 1 has 20 batches
    monkeypatch.setattr(MIIR.MIIR, "loss", loss)
    save = tmp_path / "nan"
    with pytest.raises(Utils.InputError, match=r"epoch 2 batch 0: the loss is nan.*train-1\.pth"):
        run(Train.main, chain["base"] + ["-save_path", save, "-epochs", 3])
    assert sorted(p.name for p in save.glob("*.pth")) == ["train-1.pth"]
    ck = torch.load(save / "train-1.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


# ---------------------------------------------------------------------------------------- Valid / Test
def test_valid_picks_best_and_test_matches_a_naive_reference(tmp_path, chain):
    save = tmp_path / "mixed"
    save.mkdir()
    for epoch, src in ((1, chain["untrained"]), (2, chain["trained"]), (3, chain["untrained"])):
        shutil.copy(src, save / f"train-{epoch}.pth")
    flags = ["-dataset_files", chain["dat"], "-save_path", save, "-batch_size", 4]
    best = run(Valid.main, flags)
    summary = json.loads((save / "train-valid.json").read_text())
    assert best["epoch"] == summary["best_epoch"] == 2
    assert summary["best_checkpoint"] == str(save / "train-2.pth")
    mrr = {int(e): s["mrr"] for e, s in summary["epochs"].items()}
    assert mrr[2] > mrr[1] + 0.15 and mrr[1] == mrr[3]          # trained clearly beats untrained

    results = run(Test.main, flags)                               # default: best-by-validation epoch
    assert [r["epoch"] for r in results] == [2]
    names, table = read_rows(save / "train-2-test-rows.tsv")
    # naive reference: the trained model, one row at a time, rank counted by a Python loop
    import DataLoader
    from MIIR import MIIR
    dat = Utils.read_dat(chain["dat"])
    ck = Train.load_checkpoint(chain["trained"], dat["meta"])
    model = MIIR(Train.model_config(Train.parse_args([], "train", "test"), dat["meta"], ck["config"]),
                 DataLoader.load_tables(dat))
    model.load_state_dict(ck["model"])
    model.eval()
    ranks = {}
    with torch.no_grad():
        for batch in DataLoader.make_eval_loader(dat, "test", batch_size=1):
            s = model.score(batch)[0].tolist()
            ranks[int(batch["row"])] = 1 + sum(x >= s[0] for x in s[1:])
    assert table[:, 0].tolist() == list(range(len(ranks)))
    assert table[:, 1].tolist() == [ranks[r] for r in range(len(ranks))]
    r = np.array([ranks[i] for i in range(len(ranks))], float)
    expect = {"hr@5": (r <= 5).mean(), "hr@10": (r <= 10).mean(), "mrr": (1 / r).mean(),
              "ndcg@5": np.where(r <= 5, 1 / np.log2(r + 1), 0).mean(), "auc": ((10 - r) / 9).mean()}
    for k, v in expect.items():
        assert results[0]["summary"][k] == pytest.approx(v, abs=1e-12), k
    assert json.loads((save / "train-test.json").read_text())["results"][0]["mrr"] == pytest.approx(expect["mrr"])


def test_popularity_baseline_matches_a_counting_loop(tmp_path, chain):
    dat = Utils.read_dat(chain["dat"])
    results = run(Test.main, ["-dataset_files", chain["dat"], "-save_path", tmp_path, "-popularity"])
    train = Utils.load_npy(dat["train_filepath"])
    count = {}
    for item in train.ravel().tolist():
        if item > 1:
            count[item] = count.get(item, 0) + 1
    rows = Utils.load_npy(dat["test_filepath"])
    negatives = Utils.load_npy(dat["test_negatives_filepath"])
    ranks = []
    for row, neg in zip(rows, negatives):
        target = int(row[row > 0][-1])
        ranks.append(1 + sum(count.get(int(n), 0) >= count.get(target, 0) for n in neg))
    names, table = read_rows(tmp_path / "popularity-0-test-rows.tsv")
    assert table[:, 1].tolist() == ranks
    assert results[0]["summary"]["mrr"] == pytest.approx(np.mean(1 / np.array(ranks, float)))
    assert not list(tmp_path.glob("train-*"))                     # never a stage's files


# ---------------------------------------------------------------------------------------- errors
def test_checkpoint_from_other_data_or_shape_is_refused(tmp_path, chain):
    other = write_chain_data(tmp_path / "other", n_items=50)
    save = tmp_path / "one"
    save.mkdir()
    shutil.copy(chain["trained"], save / "train-1.pth")
    with pytest.raises(Utils.InputError, match=r"train-1\.pth: checkpoint data 'n_items' is 40 but .* 50"):
        run(Valid.main, ["-dataset_files", other, "-save_path", save])
    with pytest.raises(Utils.InputError, match=r"train-1\.pth: checkpoint model 'emb_size' is 16 but this run has 32"):
        run(Train.main, ["-dataset_files", chain["dat"], "-save_path", tmp_path / "ft", "-emb_size", 32,
                         "-pretrained_model", save / "train-1.pth"])
    with pytest.raises(Utils.InputError, match="-attention sparse: the checkpoint was trained with dense"):
        run(Valid.main, ["-dataset_files", chain["dat"], "-save_path", save, "-attention", "sparse"])
    (save / "train-2.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Utils.InputError, match=r"train-2\.pth: not a readable MIIR checkpoint"):
        run(Valid.main, ["-dataset_files", chain["dat"], "-save_path", save])


def test_missing_dat_key_is_named(tmp_path, chain):
    conf = Utils.parse_literal(Path(chain["dat"]).read_text(), "dat")
    del conf["valid_negatives_filepath"]
    bad = tmp_path / "bad_files.dat"
    bad.write_text(repr(conf))
    with pytest.raises(Utils.InputError, match=r"bad_files\.dat: missing key 'valid_negatives_filepath'"):
        run(Train.main, ["-dataset_files", bad, "-save_path", tmp_path / "x"])
    with pytest.raises(Utils.InputError, match="no train-<epoch>.pth"):
        run(Valid.main, ["-dataset_files", chain["dat"], "-save_path", tmp_path / "empty"])


# ---------------------------------------------------------------------------------------- DDP
def test_two_process_training_and_evaluation(tmp_path, chain):
    save = tmp_path / "ddp"
    launch("Train.py", chain["base"] + ["-save_path", save, "-epochs", 8, "-lr", 2e-2])
    log = (save / "log.txt").read_text()
    assert "2 process(es) on cpu" in log
    losses = epoch_losses(save)
    assert len(losses) == 8 and losses[-1] < 0.9 * losses[0] and losses[-1] < min(losses[:4]), losses
    # each process saw half of the 160 rows per epoch: 10 batches of 8 per process
    assert "10 batches/epoch/process" in log

    # evaluating one checkpoint with 2 processes gives exactly the 1-process rows and metrics
    one, two = tmp_path / "eval1", tmp_path / "eval2"
    for d in (one, two):
        d.mkdir()
        shutil.copy(chain["trained"], d / "train-1.pth")
    flags = ["-dataset_files", chain["dat"], "-batch_size", 4]             # 25 rows: 7 uneven batches
    run(Valid.main, flags + ["-save_path", one])
    launch("Valid.py", flags + ["-save_path", two])
    h1, rows1 = read_rows(one / "train-1-valid-rows.tsv")
    h2, rows2 = read_rows(two / "train-1-valid-rows.tsv")
    assert h1 == h2 and rows1.shape == (25, 8)
    np.testing.assert_array_equal(rows1, rows2)
    s1 = json.loads((one / "train-valid.json").read_text())["best"]
    s2 = json.loads((two / "train-valid.json").read_text())["best"]
    assert s1 == s2

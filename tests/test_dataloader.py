"""DataLoader.py: tables, MII / rec / eval masking, bucketing, determinism, accelerate sharding."""
import numpy as np
import pytest
import torch

from conftest import write_tiny_processed
from DataLoader import (BucketBatchSampler, TrainRows, load_tables, make_eval_loader,
                        make_train_loader)
from Utils import InputError, load_npy, read_dat


@pytest.fixture
def dat(tiny_dat):
    return read_dat(tiny_dat)


@pytest.fixture
def big_dat(tmp_path):
    """More rows, for rates and bucketing."""
    return read_dat(write_tiny_processed(tmp_path, n_items=60, n_train=900, n_users=300, max_len=12))


def epoch_batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_load_tables_missing_is_missings_or_discard(dat, tmp_path):
    t = load_tables(dat)
    with np.load(dat["items_filepath"]) as z:
        missings = z["missings"]
    discard = load_npy(dat["masks_filepath"])
    assert discard.any() and (discard & ~missings).any()
    np.testing.assert_array_equal(t["missing"], missings | discard)
    assert t["data_missing"] is t["missing"]
    assert t["categories"].dtype == np.int64 and t["titles"].dtype == np.float32
    no_discard = read_dat(write_tiny_processed(tmp_path / "b", discard=False))
    np.testing.assert_array_equal(load_tables(no_discard)["missing"], missings)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_mii_masks_present_fields_at_rate(big_dat, p):
    t = load_tables(big_dat)
    loader = make_train_loader(t, big_dat["train_filepath"], "mii", 32, p, seed=1)
    n_mask = n_present = 0
    for epoch in range(3):
        for b in epoch_batches(loader, epoch):
            items, masked = b["items"].numpy(), b["masked"].numpy()
            present = ~t["missing"][items] & (items != 0)[:, :, None]
            assert not (masked & ~present).any()                          # never missing/discard/pad
            assert masked.any((1, 2)).all()                               # every row has a target
            n_mask += masked.sum()
            n_present += present.sum()
    # the top-up (one field for an all-unmasked row) adds a little above p on short rows
    assert p - 0.02 < n_mask / n_present < p + 0.03


def test_rec_masks_whole_items_at_rate(big_dat):
    t = load_tables(big_dat)
    loader = make_train_loader(t, big_dat["train_filepath"], "rec", 32, 0.5, seed=1)
    n_mask = n_real = 0
    for b in epoch_batches(loader, 0) + epoch_batches(loader, 1):
        items, masked = b["items"].numpy(), b["masked"].numpy()
        assert (masked == masked[:, :, :1]).all()                         # whole items
        assert not masked[items == 0].any()
        assert masked[:, :, 0].any(1).all()
        n_mask += masked[:, :, 0].sum()
        n_real += (items != 0).sum()
    assert 0.48 < n_mask / n_real < 0.56


def test_row_with_nothing_masked_gets_one_target():
    missing = np.zeros((10, 5), dtype=bool)
    missing[:2] = True
    rows = np.array([[2, 3, 0], [4, 0, 0]])
    for kind in ("mii", "rec"):
        ds = TrainRows(rows, missing, kind=kind, mask_prob=1e-9, seed=0)
        b = ds.__getitems__([0, 1])
        m = b["masked"].numpy()
        if kind == "mii":
            assert m.sum(axis=(1, 2)).tolist() == [1, 1]
        else:
            assert m[:, :, 0].tolist() == [[False, True], [True, False]]  # the last item


def test_same_seed_same_batches_and_workers_agree(dat):
    t = load_tables(dat)
    a = make_train_loader(t, dat["train_filepath"], "mii", 8, 0.5, seed=7)
    b = make_train_loader(t, dat["train_filepath"], "mii", 8, 0.5, seed=7, num_workers=2)
    c = make_train_loader(t, dat["train_filepath"], "mii", 8, 0.5, seed=8)
    ea, eb, ec = epoch_batches(a, 3), epoch_batches(b, 3), epoch_batches(c, 3)
    assert len(ea) == len(eb)
    for x, y in zip(ea, eb):
        assert torch.equal(x["items"], y["items"]) and torch.equal(x["masked"], y["masked"])
    assert any(not torch.equal(x["items"], y["items"]) for x, y in zip(ea, ec))
    e4 = epoch_batches(a, 4)
    assert any(not torch.equal(x["items"], y["items"]) for x, y in zip(ea, e4))


def test_bucketing_pads_to_batch_max_and_covers_rows_once(big_dat):
    rows = load_npy(big_dat["train_filepath"])
    lengths = (rows != 0).sum(1)
    t = load_tables(big_dat)
    loader = make_train_loader(t, rows, "rec", 32, 0.5, seed=0)
    ds = loader.dataset
    seen = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        batches = list(iter(loader.batch_sampler))
        assert all(len(x) == 32 for x in batches[:-1]) and 0 < len(batches[-1]) <= 32
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(len(rows)))           # every row exactly once
        for idx, b in zip(batches, loader):
            assert b["items"].shape[1] == lengths[idx].max()               # padded to the batch max
            np.testing.assert_array_equal(b["items"].numpy(), rows[idx, :lengths[idx].max()])
        seen.append(flat)
    assert not np.array_equal(seen[0], seen[1])                            # reshuffled per epoch
    spread = np.mean([np.ptp(lengths[b]) for b in batches[:-1]])
    plain = np.mean([np.ptp(lengths[b]) for b in np.array_split(np.random.default_rng(0).permutation(
        len(rows)), len(batches))])
    assert spread < plain / 2                                              # batches hold similar lengths
    assert ds.epoch == 1


def test_eval_rows(dat):
    rows = load_npy(dat["valid_filepath"])
    negs = load_npy(dat["valid_negatives_filepath"])
    seen = []
    for b in make_eval_loader(dat, "valid", batch_size=4):
        r = b["row"].numpy()
        seen += r.tolist()
        L = (rows[r] != 0).sum(1)
        np.testing.assert_array_equal(b["target_pos"].numpy(), L - 1)
        ar = np.arange(len(r))
        np.testing.assert_array_equal(b["candidates"][:, 0].numpy(), rows[r, L - 1])
        np.testing.assert_array_equal(b["candidates"][:, 1:].numpy(), negs[r])
        assert (b["items"].numpy()[ar, L - 1] == 1).all()                 # i_miss
        m = b["masked"].numpy()
        assert m[ar, L - 1].all() and m.sum() == 5 * len(r)               # only the target slot
        items = b["items"].numpy().copy()
        items[ar, L - 1] = rows[r, L - 1]
        np.testing.assert_array_equal(items, rows[r, :items.shape[1]])
    assert sorted(seen) == list(range(len(rows)))


def test_bad_input(dat, tmp_path):
    t = load_tables(dat)
    with pytest.raises(InputError):
        make_train_loader(t, np.array([[0, 3, 4]]), "mii")                 # not left-aligned
    with pytest.raises(InputError):
        make_train_loader(t, np.array([[3, 4]]), "mlm")
    with pytest.raises(InputError):
        make_train_loader(t, np.array([[3, 10**6]]), "mii")                # id beyond the tables
    with pytest.raises(InputError):
        BucketBatchSampler(None, 0)


def test_accelerate_shards_bucketed_batches(dat):
    """accelerate's prepare_data_loader wraps our batch sampler in BatchSamplerShard: the processes
    get disjoint full batches covering every row, and set_epoch reaches sampler and masks."""
    from accelerate.data_loader import prepare_data_loader
    t = load_tables(dat)
    n = len(load_npy(dat["train_filepath"]))
    shards = []
    for proc in (0, 1):
        loader = make_train_loader(t, dat["train_filepath"], "mii", 8, 0.5, seed=3)
        shards.append(prepare_data_loader(loader, num_processes=2, process_index=proc,
                                          put_on_device=False))
    single = make_train_loader(t, dat["train_filepath"], "mii", 8, 0.5, seed=3)
    for epoch in (0, 1):
        ref = epoch_batches(single, epoch)
        got = [epoch_batches(s, epoch) for s in shards]
        assert len(got[0]) == len(got[1])
        for j, batch in enumerate(ref):                                    # batch j -> process j % 2
            mine = got[j % 2][j // 2]
            k, L = batch["items"].shape                                    # accelerate tops up the
            assert torch.equal(mine["items"][:k, :L], batch["items"])      # short last batch with
            assert not mine["items"][:k, L:].any()                         # rows of the first one
            if k == 8:                                                     # (its masks then differ)
                assert torch.equal(mine["masked"], batch["masked"])
        assert sum(len(b["items"]) for b in ref) == n
        assert len(got[0]) == -(-len(ref) // 2)
    assert shards[0].dataset.epoch == 1

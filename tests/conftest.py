"""Shared pytest fixtures. Keep edits additive: each engineer adds fixtures under distinct names."""
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ---- model / DataLoader fixtures (model engineer) ------------------------------------------------
def write_tiny_processed(root, n_items=40, n_categories=9, n_brands=6, max_categories=3, text_dim=8,
                         n_train=60, n_users=25, max_len=8, n_neg=9, discard=True, seed=0):
    """Write a small random processed dataset following Utils' contract (meta.json, items.npz,
    titles/descriptions.npy, discard.npy, train/valid/test.npy and negatives) plus tiny_files.dat with
    absolute paths under `root`. Returns the .dat path."""
    import Utils
    rng = np.random.default_rng(seed)
    root = Path(root)
    proc = root / "data" / "tiny" / "process"
    proc.mkdir(parents=True, exist_ok=True)
    N = n_items
    categories = np.full((N, max_categories), -1, dtype=np.int32)
    missings = rng.random((N, 5)) < 0.25
    missings[:, 0] = False
    missings[:2] = True                                    # rows 0 (pad) and 1 (i_miss)
    for i in range(2, N):
        if missings[i, 1]:
            categories[i, 0] = 0                           # c_miss
        else:
            k = rng.integers(1, max_categories + 1)
            categories[i, :k] = np.sort(rng.choice(np.arange(1, n_categories), k, replace=False))
    categories[:2, 0] = 0
    brands = np.where(missings[:, 2], 0, rng.integers(1, n_brands, N)).astype(np.int32)
    titles = rng.normal(size=(N, text_dim)).astype(np.float32)
    descriptions = rng.normal(size=(N, text_dim)).astype(np.float32)
    for t, f in ((titles, 3), (descriptions, 4)):
        t[0] = 0.0
        t[missings[:, f]] = t[1]                           # missing text = row 1 (t_miss / d_miss)
    disc = (rng.random((N, 5)) < 0.3) & ~missings
    disc[:, 0] = False

    def rows(n, min_len):
        out = np.zeros((n, max_len), dtype=np.int32)
        for r in range(n):
            k = rng.integers(min_len, max_len + 1)
            out[r, :k] = rng.integers(2, N, k)
        return out

    Utils.save_npz(proc / "items.npz", categories=categories, brands=brands, missings=missings)
    Utils.save_npy(proc / "titles.npy", titles)
    Utils.save_npy(proc / "descriptions.npy", descriptions)
    Utils.save_npy(proc / "discard.npy", disc)
    Utils.save_npy(proc / "train.npy", rows(n_train, 1))
    for split in ("valid", "test"):
        Utils.save_npy(proc / f"{split}.npy", rows(n_users, 2))
        Utils.save_npy(proc / f"{split}_negatives.npy", rng.integers(2, N, (n_users, n_neg)).astype(np.int32))
    meta = {"dataset_token": "tiny", "n_items": N, "n_categories": n_categories, "n_brands": n_brands,
            "max_categories": max_categories, "text_dim": text_dim, "max_interactions": max_len,
            "n_negatives": n_neg, "seed": seed, "stats": {}}
    Utils.write_json(proc / "meta.json", meta)
    files = {"dataset_token": "tiny", "meta_filepath": proc / "meta.json",
             "items_filepath": proc / "items.npz", "titles_filepath": proc / "titles.npy",
             "descriptions_filepath": proc / "descriptions.npy",
             "masks_filepath": (proc / "discard.npy") if discard else None,
             "train_filepath": proc / "train.npy", "valid_filepath": proc / "valid.npy",
             "valid_negatives_filepath": proc / "valid_negatives.npy", "test_filepath": proc / "test.npy",
             "test_negatives_filepath": proc / "test_negatives.npy"}
    dat = root / "tiny_files.dat"
    Utils.write_text(dat, repr({k: (str(v) if v is not None else None) for k, v in files.items()}))
    return dat


@pytest.fixture
def tiny_dat(tmp_path):
    """Path of a tiny random processed dataset's .dat (with discard masks)."""
    return write_tiny_processed(tmp_path)

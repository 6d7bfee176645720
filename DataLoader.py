"""Feature tables, datasets and loaders for MIIR (paper sections 3.5 and 4.4).

Batches are small: item indices and boolean field masks. The feature tables themselves go to the model
(MIIR registers them as buffers on its device) and are gathered there, so workers never build one-hot
or text arrays.

    train, kind 'mii': every present field (not missing in the data, not discarded) of every real item
                       is masked with probability mask_prob (Section 3.5).
    train, kind 'rec': every real item is masked whole (all five fields) with probability mask_prob;
                       the loss covers the masked IDs (Eq. 14).
    A training row where nothing got masked gets one mask, BERT4Rec-style, so no row is wasted:
    'mii' masks one uniformly chosen present field, 'rec' masks the last item.
    eval: the target (last item of a valid/test row) is replaced by i_miss (item 1) with all five
          fields masked -- the paper's appended [i_miss, c_miss, b_miss, t_miss, d_miss]; its
          candidates are [target, negatives...].

Batches come from a length-bucketed batch sampler, so a batch is padded only to its longest row.
Masks are drawn from numpy's Generator seeded by (seed, epoch, first row of the batch): the same seed
gives the same masks whatever the number of workers or processes. The epoch is set with
loader.set_epoch (plain or accelerate-prepared loaders; accelerate also calls it itself each epoch);
there are no persistent workers (the epoch reaches the workers when an epoch's iterator starts).
"""
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from Utils import InputError, load_npy, read_dat

GROUP_BATCHES = 50  # batches per length-sorting group of the bucketed sampler


# --------------------------------------------------------------------------------------------------
def _load(path, what):
    try:
        return load_npy(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the {what} ({e}); re-run the Process*.py of the dataset")


def _as_dat(dat):
    return read_dat(dat) if isinstance(dat, (str, os.PathLike)) else dat


def _missing_table(dat):
    """missings | discard (discard only when masks_filepath is not None): bool [N, 5]."""
    with np.load(dat["items_filepath"], allow_pickle=False) as z:
        if "missings" not in z:
            raise InputError(f"{dat['items_filepath']}: no 'missings' array; re-run the Process*.py")
        missing = z["missings"].astype(bool)
    if dat.get("masks_filepath"):
        discard = _load(dat["masks_filepath"], "discard mask").astype(bool)
        if discard.shape != missing.shape:
            raise InputError(f"{dat['masks_filepath']}: shape {discard.shape} differs from the "
                             f"missings table {missing.shape}; it belongs to another dataset")
        missing = missing | discard
    return missing


def load_tables(dat):
    """The feature tables of a dataset (a read_dat dict or a .dat path) as numpy arrays:
    categories int64 [N, K] (-1 = none), brands int64 [N], titles / descriptions float32 [N, D],
    missing bool [N, 5] = missings | discard (what MIIR-M masks; also under the key data_missing)."""
    dat = _as_dat(dat)
    with np.load(dat["items_filepath"], allow_pickle=False) as z:
        for key in ("categories", "brands", "missings"):
            if key not in z:
                raise InputError(f"{dat['items_filepath']}: no '{key}' array; re-run the Process*.py")
        categories = z["categories"].astype(np.int64)
        brands = z["brands"].astype(np.int64)
    titles = np.ascontiguousarray(_load(dat["titles_filepath"], "title vectors"), dtype=np.float32)
    descriptions = np.ascontiguousarray(_load(dat["descriptions_filepath"], "description vectors"),
                                        dtype=np.float32)
    missing = _missing_table(dat)
    n = len(brands)
    for name, arr in (("categories", categories), ("titles", titles),
                      ("descriptions", descriptions), ("missing", missing)):
        if arr.shape[0] != n:
            raise InputError(f"{dat['dat_path']}: table '{name}' has {arr.shape[0]} rows, brands has {n}; "
                             "the files come from different runs, re-run the Process*.py")
    return {"categories": categories, "brands": brands, "titles": titles,
            "descriptions": descriptions, "missing": missing, "data_missing": missing}


def _split(split, dat, key):
    """A split given as an array, a path, or a split name ('train', 'valid', 'test') of the .dat."""
    if isinstance(split, np.ndarray):
        return split
    if isinstance(split, str) and dat is not None and f"{split}_filepath" in dat:
        split = dat[f"{split}_filepath"]
    return _load(split, f"rows of {Path(str(split)).name}")


def _lengths(rows, where):
    """Row lengths; rows must be left-aligned item ids with 0-padding at the end."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise InputError(f"{where}: expected a 2-D array of item ids, got shape {rows.shape}")
    nonzero = rows != 0
    lengths = nonzero.sum(1)
    if not (nonzero == (np.arange(rows.shape[1]) < lengths[:, None])).all():
        raise InputError(f"{where}: rows are not left-aligned (0-padding must be at the end only)")
    if (lengths == 0).any():
        raise InputError(f"{where}: row {int(np.argmin(lengths))} is empty")
    return lengths


# --------------------------------------------------------------------------------------------------
class _Rows(Dataset):
    """Rows of item ids; __getitems__ builds a whole batch at once (numpy, vectorised)."""

    def __init__(self, rows, seed=0):
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)             # [n, max_len]
        self.lengths = _lengths(self.rows, "rows")                         # [n]
        self.seed, self.epoch = int(seed), 0

    def __len__(self):
        return len(self.rows)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __getitem__(self, i):
        return self.__getitems__([i])

    def _batch_rows(self, idx):
        idx = np.asarray(idx, dtype=np.int64)                              # [B]
        L = int(self.lengths[idx].max())
        return idx, self.rows[idx, :L].copy()                              # [B, L]


class TrainRows(_Rows):
    """Training windows with MII ('mii') or whole-item ('rec') masking."""

    def __init__(self, rows, missing, kind="mii", mask_prob=0.5, seed=0):
        super().__init__(rows, seed)
        if kind not in ("mii", "rec"):
            raise InputError(f"loss kind '{kind}': use mii or rec")
        if not 0.0 < mask_prob <= 1.0:
            raise InputError(f"-mask_prob {mask_prob}: must be in (0, 1]")
        self.missing = np.asarray(missing, dtype=bool)                     # [N, 5]
        if self.rows.max() >= len(self.missing):
            raise InputError(f"training rows hold item id {self.rows.max()} but the tables have "
                             f"{len(self.missing)} items; the files come from different runs")
        self.kind, self.mask_prob = kind, float(mask_prob)

    def __getitems__(self, idx):
        idx, items = self._batch_rows(idx)                                 # [B], [B, L]
        rng = np.random.default_rng([self.seed, self.epoch, int(idx[0])])
        real = items != 0                                                  # [B, L]
        if self.kind == "mii":
            present = ~self.missing[items] & real[:, :, None]              # [B, L, 5]
            masked = present & (rng.random(present.shape) < self.mask_prob)
            for b in np.flatnonzero(~masked.any((1, 2))):                  # nothing masked: one field
                choices = np.flatnonzero(present[b])
                if len(choices):
                    masked[b].flat[choices[rng.integers(len(choices))]] = True
        else:
            whole = real & (rng.random(real.shape) < self.mask_prob)       # [B, L]
            empty = ~whole.any(1)
            whole[empty, self.lengths[idx][empty] - 1] = True              # nothing masked: last item
            masked = np.repeat(whole[:, :, None], 5, axis=2)               # [B, L, 5]
        return {"items": torch.from_numpy(items), "masked": torch.from_numpy(masked)}


class EvalRows(_Rows):
    """Validation/test rows: the last item is the target, replaced by i_miss with every field masked."""

    def __init__(self, rows, negatives):
        super().__init__(rows)
        self.negatives = np.ascontiguousarray(negatives, dtype=np.int64)   # [n, n_neg]
        if self.negatives.ndim != 2 or len(self.negatives) != len(self.rows):
            raise InputError(f"negatives have shape {self.negatives.shape}, rows {self.rows.shape}: "
                             "they must have one row per evaluation row; re-run the Process*.py")

    def __getitems__(self, idx):
        idx, items = self._batch_rows(idx)                                 # [B], [B, L]
        pos = self.lengths[idx] - 1                                        # [B] target slot
        arange = np.arange(len(idx))
        target = items[arange, pos]                                        # [B]
        items[arange, pos] = 1                                             # i_miss
        masked = np.zeros(items.shape + (5,), dtype=bool)                  # [B, L, 5]
        masked[arange, pos] = True
        candidates = np.concatenate([target[:, None], self.negatives[idx]], 1)  # [B, 1 + n_neg]
        return {"items": torch.from_numpy(items), "masked": torch.from_numpy(masked),
                "target_pos": torch.from_numpy(pos), "candidates": torch.from_numpy(candidates),
                "row": torch.from_numpy(idx)}


def collate(batch):
    """Batches are built whole by the dataset's __getitems__."""
    return batch


# --------------------------------------------------------------------------------------------------
class BucketBatchSampler:
    """Length-bucketed batches. shuffle=True: shuffle the rows, cut them into groups of GROUP_BATCHES
    batches, sort each group by length, cut batches, shuffle the batch order. shuffle=False: rows
    sorted by length (longest first). Every batch holds batch_size rows except at most one, which
    always comes last -- the shape accelerate's BatchSamplerShard expects when it splits batches
    across processes. The epoch lives in the dataset (one place for masks and order), so
    set_epoch on either the sampler or the dataset updates both."""

    def __init__(self, dataset, batch_size, shuffle=True, drop_last=False, seed=0,
                 group_batches=GROUP_BATCHES):
        if batch_size < 1:
            raise InputError(f"-batch_size {batch_size}: must be at least 1")
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), shuffle
        self.drop_last, self.seed, self.group = drop_last, int(seed), int(group_batches)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        lengths, bs = self.dataset.lengths, self.batch_size
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.dataset.epoch, 1])
            order = rng.permutation(len(lengths))
            size = bs * self.group
            order = np.concatenate([g[np.argsort(-lengths[g], kind="stable")]
                                    for g in np.array_split(order, range(size, len(order), size))])
        else:
            order = np.argsort(-lengths, kind="stable")
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        last = batches.pop() if len(batches[-1]) < bs else None            # the one short batch
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if last is not None and not self.drop_last:
            batches.append(last)
        for b in batches:
            yield b.tolist()


def worker_init_fn(worker_id):
    """Seed python/numpy in each worker from torch's per-worker seed (masks use their own seeded
    Generator per batch; this keeps any other randomness in workers reproducible)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochDataLoader(DataLoader):
    """A plain DataLoader plus set_epoch (accelerate's prepared loaders have their own)."""

    def set_epoch(self, epoch):
        self.batch_sampler.set_epoch(epoch)


def _loader(dataset, batch_size, shuffle, seed, num_workers, drop_last=False, pin_memory=False):
    sampler = BucketBatchSampler(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
    generator = torch.Generator().manual_seed(int(seed))
    return EpochDataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      worker_init_fn=worker_init_fn if num_workers else None, generator=generator,
                      pin_memory=pin_memory, persistent_workers=False)


def _missing_of(dat_or_tables):
    if isinstance(dat_or_tables, dict) and "missing" in dat_or_tables:
        return dat_or_tables["missing"], None
    dat = _as_dat(dat_or_tables)
    return _missing_table(dat), dat


def make_train_loader(dat_or_tables, split_array="train", kind="mii", batch_size=128, mask_prob=0.5,
                      seed=0, num_workers=0, drop_last=False, pin_memory=False):
    """Training DataLoader: kind 'mii' (MII masking) or 'rec' (whole-item masking).
    dat_or_tables: a load_tables dict, a read_dat dict or a .dat path; split_array: rows [n, max_len]
    or a path or 'train'. Yields {'items': Long [B, L], 'masked': Bool [B, L, 5]}."""
    missing, dat = _missing_of(dat_or_tables)
    rows = _split(split_array, dat, "train")
    dataset = TrainRows(rows, missing, kind=kind, mask_prob=mask_prob, seed=seed)
    return _loader(dataset, batch_size, True, seed, num_workers, drop_last, pin_memory)


def make_eval_loader(dat, split="valid", batch_size=128, num_workers=0, rows=None, negatives=None,
                     pin_memory=False):
    """Evaluation DataLoader over valid or test rows (sorted by length, not shuffled; every row once;
    batch['row'] gives each row's index in the split for per-row output / de-duplication).
    Yields {'items', 'masked', 'target_pos', 'candidates', 'row'}."""
    if rows is None or negatives is None:
        dat = _as_dat(dat)
        if split not in ("valid", "test"):
            raise InputError(f"evaluation split '{split}': use valid or test")
        rows = _load(dat[f"{split}_filepath"], f"{split} rows") if rows is None else rows
        negatives = (_load(dat[f"{split}_negatives_filepath"], f"{split} negatives")
                     if negatives is None else negatives)
    return _loader(EvalRows(rows, negatives), batch_size, False, 0, num_workers, False, pin_memory)

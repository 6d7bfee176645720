"""Small helpers shared by every script: .dat files, atomic writes, seeds, threads, one-line errors.

The processed-data contract (written by Preprocess.py, read by DataLoader.py / MIIR.py):

data/<token>/process/
    meta.json        sizes and provenance: dataset_token, n_items (rows of the item tables, with
                     0 = padding and 1 = i_miss), n_categories (0 = c_miss), n_brands (0 = b_miss),
                     max_categories, text_dim, text_model, pooling, seed, max_interactions,
                     negatives, n_negatives, stats {...}
    items.npz        categories int32 [n_items, max_categories] (label ids, -1 = no label;
                                      an item with no category has [0, -1, ...] = c_miss)
                     brands     int32 [n_items]        (0 = b_miss)
                     missings   bool  [n_items, 5]     (True = the field is missing in the raw data;
                                                        field order FIELDS; rows 0 and 1 all True)
    titles.npy       float32 [n_items, text_dim]  row 0 zeros, row 1 t_miss, missing titles = t_miss
    descriptions.npy float32 [n_items, text_dim]  same for descriptions (d_miss)
    discard.npy      bool  [n_items, 5]  True = the field is discarded (the paper's "D" datasets)
    train.npy        int32 [n_windows, max_interactions] item ids, left-aligned, 0-padded
    valid.npy / test.npy              int32 [n_users, max_interactions] rows ending at the target
                                      (the target is the last non-zero entry), 0-padded at the end
    valid_negatives.npy / test_negatives.npy   int32 [n_users, n_negatives]
"""
import ast
import json
import os
import random
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent
FIELDS = ("id", "category", "brand", "title", "description")  # token order inside an item
DAT_KEYS = ("dataset_token", "meta_filepath", "items_filepath", "titles_filepath",
            "descriptions_filepath", "masks_filepath", "train_filepath", "valid_filepath",
            "valid_negatives_filepath", "test_filepath", "test_negatives_filepath")


class InputError(SystemExit):
    """A bad input: printed as one line (no traceback) when it reaches the top of a script."""

    def __init__(self, message):
        super().__init__(f"error: {message}")
        self.message = message

    def __str__(self):
        return f"error: {self.message}"


def resolve(path, base=REPO):
    """A path from a .dat file or the command line; relative paths resolve against `base`."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else Path(base) / p


def parse_literal(text, where):
    """A dict written as JSON or as a Python literal (never eval)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise InputError(f"{where}: not a JSON or Python literal ({e.__class__.__name__}: {e}); "
                         "write it as {'key': 'value', ...}")


def read_dat(path):
    """Read a <token>_files.dat: check every key and file, return the dict with absolute paths."""
    dat_path = resolve(path, Path.cwd()) if Path(path).exists() else resolve(path)
    if not dat_path.exists():
        raise InputError(f"{path}: no such .dat file; run the Process*.py of its dataset first "
                         "(it writes <token>_files.dat) or pass -dataset_files with the right path")
    conf = parse_literal(dat_path.read_text(), str(dat_path))
    if not isinstance(conf, dict):
        raise InputError(f"{dat_path}: expected a dict of file paths, got {type(conf).__name__}")
    for key in DAT_KEYS:
        if key not in conf:
            raise InputError(f"{dat_path}: missing key '{key}'; add it (see bt_files.dat for the "
                             "full list) or re-run the Process*.py of the dataset")
    out = {"dataset_token": str(conf["dataset_token"]), "dat_path": str(dat_path)}
    for key in DAT_KEYS[1:]:
        if conf[key] is None:
            if key != "masks_filepath":
                raise InputError(f"{dat_path}: key '{key}' is None; only 'masks_filepath' may be None")
            out[key] = None
            continue
        p = resolve(conf[key])
        if not p.exists():
            raise InputError(f"{dat_path}: key '{key}' names {p}, which does not exist; run "
                             f"python Process{out['dataset_token'].upper()}.py (or fix the path)")
        out[key] = str(p)
    meta = load_json(out["meta_filepath"])
    if meta.get("dataset_token") != out["dataset_token"]:
        raise InputError(f"{dat_path}: 'meta_filepath' belongs to dataset "
                         f"'{meta.get('dataset_token')}', not '{out['dataset_token']}'; fix the path")
    out["meta"] = meta
    return out


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e}); re-create it")


@contextmanager
def atomic_path(path):
    """Yield a temporary name beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes),
                               dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy(path, array):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def save_npz(path, **arrays):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npy(path):
    return np.load(path, allow_pickle=False)


# seconds between progress-bar updates: live on a terminal, every 30 s in a log file (nohup)
BAR_INTERVAL = 0.1 if sys.stderr.isatty() else 30.0


def set_seed(seed):
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:
        pass


def default_threads(processes=1):
    """Intra-op threads per process: the cores this process may use, shared among the processes of
    the run. Measured on an idle 2-vCPU machine (Benchmark.py train, 5-core Beauty), 2 threads train
    1.4-1.6x faster than 1; but when other jobs share the cores, give each job -threads 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, processes))


def set_threads(n=0, processes=1):
    """-threads N (0 = default_threads). Returns the number set."""
    import torch
    n = n if n and n > 0 else default_threads(processes)
    torch.set_num_threads(n)
    return n

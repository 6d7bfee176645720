"""Speed figures for README.md.

    python Benchmark.py data                 # full Beauty-scale raw files (2.0M ratings, 1.2M users,
                                             # 250k items with meta, Amazon 2014 format), then time
                                             # the pipeline without text encoding + peak memory,
                                             # then the texts/s of the default text encoder
    python Benchmark.py data -ratings 200000 -users 120000 -items 25000    # a smaller run

    python Benchmark.py train                # training (MII and rec, fast and plain path) and
                                             # evaluation speed of the real scripts, 1 and 2 threads:
                                             # S = processed 5-core Beauty (bt_files.dat),
                                             # L = synthetic tables at the paper's full Beauty scale
    python Benchmark.py train -scales L -threads 1 -paths fast -no_compile    # a quick subset

Every figure is printed and written as JSON (-out).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import Utils

WORDS = np.array(("soft matte glow hydrating serum cream lip eye nail polish shampoo mask oil "
                  "brush palette gel lotion spray long lasting natural organic vitamin rose "
                  "coconut argan shea mineral sheer daily repair volume curl smooth").split())


# ------------------------------------------------------------------------------------------ data
def make_full_scale_raw(raw_dir, ratings=2_000_000, users=1_200_000, items=250_000, seed=0,
                        category="Bench"):
    """ratings_<Cat>.csv + meta_<Cat>.json in the Amazon 2014 format (meta as Python literals,
    with the unused keys 'related', 'salesRank', 'imUrl', 'price' as in the real files). Users and
    items are power-law distributed (every user has at least one rating), so that, as in the
    real data, a few percent of the users have 5 or more ratings."""
    rng = np.random.default_rng(seed)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    user_names = np.char.add("A", np.char.zfill(np.arange(users).astype(str), 13))
    asins = np.char.add("B", np.char.zfill(rng.permutation(items).astype(str), 9))
    extra = ratings - users
    p_user = 1.0 / (np.arange(users) + 50.0) ** 1.2
    uidx = np.concatenate([np.arange(users), rng.choice(users, extra, p=p_user / p_user.sum())])
    p_item = 1.0 / (np.arange(items) + 20.0) ** 0.9
    iidx = rng.choice(items, ratings, p=p_item / p_item.sum())
    times = rng.integers(1_000_000_000, 1_400_000_000, ratings)
    order = np.argsort(iidx, kind="stable")  # the real file is grouped by item
    with open(raw_dir / f"ratings_{category}.csv", "w") as f:
        for u, i, r, t in zip(user_names[uidx[order]].tolist(), asins[iidx[order]].tolist(),
                              rng.integers(1, 6, ratings)[order].tolist(), times[order].tolist()):
            f.write(f"{u},{i},{r}.0,{t}\n")
    with open(raw_dir / f"meta_{category}.json", "w") as f:
        for i in range(items):
            w = WORDS[rng.integers(0, len(WORDS), 40)].tolist()
            u = rng.random(6)
            related = asins[rng.integers(0, items, 8)].tolist()
            rec = {"asin": str(asins[i]), "related": {"also_bought": related},
                   "salesRank": {"Beauty": int(rng.integers(1, 10**6))}, "imUrl": f"http://x/{i}.jpg"}
            if u[0] > 0.05:
                rec["title"] = " ".join(w[:8]) + (" men's" if u[1] < 0.2 else "")
            if u[2] > 0.5:
                rec["price"] = float(round(u[2] * 40, 2))
            if u[3] > 0.1:
                rec["description"] = " ".join(w[8:]) + (" it's great &amp; cheap" if u[4] < 0.4 else "")
            rec["categories"] = [["Beauty", w[0], w[1]]] + ([["Beauty", w[2]]] if u[5] < 0.3 else [])
            if u[5] > 0.4:
                rec["brand"] = w[3].title()
            f.write(repr(rec) + "\n")
    return raw_dir


def run_measured(cmd, log, threads=1, timeout=None):
    """Run a command with OMP_NUM_THREADS=threads, output to `log`; return (wall seconds, peak RSS
    in MB of that child alone). Raises CalledProcessError (or TimeoutExpired after `timeout` s)."""
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        killed = threading.Event()
        timer = threading.Timer(timeout or 0, lambda: (killed.set(), proc.kill()))
        if timeout:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)         # this child's own rusage, not the max of all
        proc.returncode = os.waitstatus_to_exitcode(status)
        timer.cancel()
    if killed.is_set():
        raise subprocess.TimeoutExpired(cmd, timeout)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.time() - t0, usage.ru_maxrss / 1024


def encoding_throughput(n_texts, threads, batch, raw_meta=None):
    """texts/s of the default encoder on n_texts real-looking texts (Beauty meta if present)."""
    import Preprocess
    texts = []
    if raw_meta and Path(raw_meta).exists():
        with Preprocess.open_text(raw_meta) as f:
            for line in f:
                r = Preprocess.parse_meta_line(line)
                texts += [Preprocess.text_value(r.get("title")), Preprocess.text_value(r.get("description"))]
    texts = sorted(set(t for t in texts if t))
    np.random.default_rng(0).shuffle(texts)
    texts = texts[:n_texts]
    out = {}
    for th in threads:
        args = Preprocess.parse_args(["-threads", str(th), "-text_batch", str(batch), "-quiet"],
                                     "bench", "Bench")
        enc = Preprocess.TextEncoder(args, lambda *a: None)
        enc._load_model()
        t0 = time.time()
        enc._encode(texts)
        out[f"threads_{th}"] = round(len(texts) / (time.time() - t0), 1)
    return {"texts": len(texts), "batch": batch, "texts_per_second": out,
            "source": str(raw_meta)}


def data_benchmark(args):
    work = Path(args.work_dir)
    raw = work / "raw"
    figures = {"ratings": args.ratings, "users": args.users, "items": args.items}
    if not args.encoding_only:
        if args.regenerate or not (raw / "meta_Bench.json").exists():
            t0 = time.time()
            make_full_scale_raw(raw, args.ratings, args.users, args.items, args.seed)
            figures["generate_seconds"] = round(time.time() - t0, 1)
        cmd = [sys.executable, str(Utils.REPO / "Preprocess.py"), "-raw_dir", str(raw),
               "-out_dir", str(work / "process"), "-dat", str(work / "bench_files.dat"),
               "-text_model", "hash:8", "-category", "Bench", "-token", "bench"]
        wall, rss = run_measured(cmd, work / "pipeline.log")
        meta = Utils.load_json(work / "process" / "meta.json")
        figures.update({"pipeline_seconds": round(wall, 1), "peak_rss_mb": round(rss),
                        "stages_seconds": meta["stats"]["seconds"],
                        "kept": {k: meta["stats"][k] for k in ("users", "items", "interactions")}})
        print(f"pipeline without text encoding: {wall:.1f} s wall, {rss:.0f} MB peak RSS; "
              f"stages {meta['stats']['seconds']}; kept {figures['kept']}", flush=True)
    if args.encode_texts > 0:
        enc = encoding_throughput(args.encode_texts, [int(t) for t in args.threads.split(",")],
                                  args.text_batch, args.text_source)
        figures["encoding"] = enc
        print(f"text encoding (default encoder, {enc['texts']} texts, batch {enc['batch']}): "
              f"{enc['texts_per_second']} texts/s", flush=True)
    Utils.write_json(args.out, figures)
    print(f"wrote {args.out}")
    return figures


def add_data_parser(sub):
    p = sub.add_parser("data", help="data pipeline speed and memory at full Beauty scale")
    p.add_argument("-ratings", type=int, default=2_000_000)
    p.add_argument("-users", type=int, default=1_200_000)
    p.add_argument("-items", type=int, default=250_000)
    p.add_argument("-seed", type=int, default=0)
    p.add_argument("-work_dir", default="/tmp/miir_benchmark",
                   help="where the generated raw files and outputs go (reused if present)")
    p.add_argument("-regenerate", action="store_true", help="re-create the raw files")
    p.add_argument("-encode_texts", type=int, default=1000, help="texts for the texts/s figure (0 = skip)")
    p.add_argument("-threads", default="1,2", help="torch threads to try for text encoding")
    p.add_argument("-text_batch", type=int, default=64)
    p.add_argument("-text_source", default="/work/shared/data/beauty/meta_Beauty.json",
                   help="meta file whose texts are encoded (default: the real Beauty meta if present, "
                        "else the generated one)")
    p.add_argument("-encoding_only", action="store_true",
                   help="only the text-encoding figure (no pipeline run)")
    p.add_argument("-out", default="/tmp/miir_benchmark/figures.json")
    p.set_defaults(func=data_benchmark)


# ------------------------------------------------------------------------------------------ train
# the paper's full Beauty scale; 8 labels per item at most and 768-d text as in the real tables
FULL_SCALE = {"n_items": 121_293, "n_categories": 657, "n_brands": 13_189, "max_categories": 8,
              "text_dim": 768, "max_interactions": 20}
BT_MISSING = (0.0, 0.0, 0.175, 0.0006, 0.078)  # 5-core Beauty's missing rates before discard (per field)
BT_WINDOWS = 23_607                            # training windows of 5-core Beauty (bt_files.dat)
STAGES = (("pretrain", "mii"), ("train", "rec"))   # Pretrain.py (MII loss), Train.py (rec loss)


def geometric_lengths(rng, n, mean, low, high):
    """n lengths low + G - 1 capped at high, G ~ Geometric(p) with p chosen so the mean is `mean`
    (5-core Beauty's windows: mode at the shortest length, a long tail piled up at the cap).
    E[min(c, G)] = (1 - (1-p)^c) / p for c = high - low + 1."""
    p = np.linspace(0.005, 0.995, 9901)
    c = high - low + 1
    p = p[np.argmin(np.abs(low - 1 + (1 - (1 - p) ** c) / p - mean))]
    return np.minimum(low - 1 + rng.geometric(p, n), high)


def make_full_scale_processed(root, train_rows, eval_rows, seed=0, token="synthl"):
    """A processed dataset following Utils' contract at FULL_SCALE, with random tables and rows:
    <root>/process/* and <root>/<token>_files.dat. Returns the .dat path. Reused when it exists
    with the same sizes."""
    root = Path(root)
    proc, dat = root / "process", root / f"{token}_files.dat"
    want = {**FULL_SCALE, "train_rows": train_rows, "eval_rows": eval_rows, "seed": seed}
    if dat.exists() and (proc / "meta.json").exists() and Utils.load_json(proc / "meta.json")["stats"] == want:
        return dat
    rng = np.random.default_rng(seed)
    N, K, D, L = (FULL_SCALE[k] for k in ("n_items", "max_categories", "text_dim", "max_interactions"))
    missings = rng.random((N, 5)) < np.array(BT_MISSING)                  # [N, 5]
    missings[:2] = True                                                    # padding, i_miss
    n_labels = np.clip(rng.poisson(2.1, N) + 1, 1, K)                     # about 3.1 labels per item
    step = rng.integers(1, (FULL_SCALE["n_categories"] - 1) // K, (N, K))  # distinct labels per item
    categories = 1 + (rng.integers(0, FULL_SCALE["n_categories"] - 1, (N, 1)) + step.cumsum(1)) \
        % (FULL_SCALE["n_categories"] - 1)                                 # [N, K]
    categories[np.arange(K) >= n_labels[:, None]] = -1
    categories[:2] = [0] + [-1] * (K - 1)                                  # c_miss
    brands = np.where(missings[:, 2], 0, rng.integers(1, FULL_SCALE["n_brands"], N))
    discard = (rng.random((N, 5)) < 0.5) & ~missings                       # "Beauty D", as bt_files.dat
    discard[:, 0] = False
    Utils.save_npz(proc / "items.npz", categories=categories.astype(np.int32),
                   brands=brands.astype(np.int32), missings=missings)
    for name, field in (("titles", 3), ("descriptions", 4)):
        text = rng.standard_normal((N, D), dtype=np.float32) * 0.05        # [N, D]
        text[0] = 0.0
        text[missings[:, field]] = text[1]                                 # missing -> t_miss / d_miss
        Utils.save_npy(proc / f"{name}.npy", text)
    Utils.save_npy(proc / "discard.npy", discard)

    def rows(n, lengths):
        ids = rng.integers(2, N, (n, L)).astype(np.int32)                  # [n, L] left-aligned
        ids[np.arange(L) >= lengths[:, None]] = 0
        return ids

    Utils.save_npy(proc / "train.npy", rows(train_rows, geometric_lengths(rng, train_rows, 6.5, 2, L)))
    for split in ("valid", "test"):                                        # 5-core rows: >= 5 items
        Utils.save_npy(proc / f"{split}.npy", rows(eval_rows, geometric_lengths(rng, eval_rows, 8.1, 5, L)))
        Utils.save_npy(proc / f"{split}_negatives.npy", rng.integers(2, N, (eval_rows, 99)).astype(np.int32))
    Utils.write_json(proc / "meta.json", {**FULL_SCALE, "dataset_token": token, "n_negatives": 99,
                                          "negatives": "random", "seed": seed, "stats": want})
    names = ("meta.json", "items.npz", "titles.npy", "descriptions.npy", "discard.npy", "train.npy",
             "valid.npy", "valid_negatives.npy", "test.npy", "test_negatives.npy")
    files = {"dataset_token": token, **{key: str(proc / name) for key, name in zip(Utils.DAT_KEYS[1:], names)}}
    Utils.write_text(dat, repr(files) + "\n")
    return dat


def step_figures(record, warmup):
    """Figures of one epoch from its <stage>-epochs.jsonl record (Train.record_epoch): whole-epoch
    seq/s, steady seq/s (full batches after `warmup` steps), median step, and the overhead (warm-up,
    compilation) = epoch seconds - steps * median step."""
    ends = np.array(record["step_ends"])                                   # [steps] seconds
    steps = np.diff(ends, prepend=0.0)                                     # [steps]
    out = {"sequences": record["sequences"], "steps": len(ends), "epoch_seconds": round(record["seconds"], 2),
           "seq_per_s": round(record["sequences"] / record["seconds"], 1), "loss": round(record["loss"], 4),
           "first_step_s": round(float(steps[0]), 3)}
    if len(ends) >= warmup + 2:                                            # the last batch may be short
        full = ends[-2] - (ends[warmup - 1] if warmup else 0.0)
        out["steady_seq_per_s"] = round(record["batch_size"] * (len(ends) - 1 - warmup) / float(full), 1)
        out["median_step_ms"] = round(1000 * float(np.median(steps[warmup:-1])), 1)
        out["overhead_s"] = round(record["seconds"] - len(ends) * out["median_step_ms"] / 1000, 1)
    return out


def last_record(save, stage):
    return json.loads((Path(save) / f"{stage}-epochs.jsonl").read_text().splitlines()[-1])


def eval_figures(path):
    result = Utils.load_json(path)
    seconds = result["results"][0]["seconds"]
    return {"rows": result["n_rows"], "score_seconds": round(seconds, 2),
            "rows_per_s": round(result["n_rows"] / seconds, 1)}


def measure(figures, key, label, cmd, log, threads, timeout, read):
    """Run one measurement in a fresh process (OMP_NUM_THREADS and -threads = threads); figures[key]
    = read() + wall seconds + the process's peak RSS, or the error."""
    cmd = [sys.executable, *map(str, cmd), "-threads", str(threads)]
    try:
        wall, rss = run_measured(cmd, log, threads, timeout)
        out = {**read(), "wall_s": round(wall, 1), "peak_rss_mb": round(rss)}
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
        out = {"error": f"{e.__class__.__name__}: {e}; see {log}"}
    print(f"  {label}: {out}", flush=True)
    figures[key] = out
    return out


def train_run(figures, label, dat, save, stage, threads, args, *flags):
    """One epoch of Pretrain.py (stage 'pretrain', MII loss) or Train.py ('train', rec loss)."""
    script = "Pretrain.py" if stage == "pretrain" else "Train.py"
    cmd = [Utils.REPO / script, "-dataset_files", dat, "-save_path", save, "-epochs", 1, "-overwrite", *flags]
    return measure(figures, stage, label, cmd, f"{save}.log", threads, args.timeout,
                   lambda: step_figures(last_record(save, stage), args.warmup))


def train_scale(scale, dat, args, figures, save_json):
    """Every measurement of one scale (S or L), per thread count: training (both stages, each of
    -paths), evaluation (Test.py on the fast rec checkpoint) and the ID-loss floor."""
    work = Path(args.work_dir) / "runs" / scale
    work.mkdir(parents=True, exist_ok=True)
    for t in [int(x) for x in args.threads.split(",")]:
        fig = figures.setdefault(f"threads_{t}", {})
        for path in args.paths.split(","):
            for stage, kind in STAGES:
                out = train_run(fig.setdefault(path, {}), f"{scale} {t} thread(s) {path} {stage} ({kind})", dat,
                                work / f"t{t}-{path}-{stage}", stage, t, args,
                                *(["-reference_path"] if path == "plain" else []))
                if scale == "L" and "steady_seq_per_s" in out:
                    out["estimated_epoch_seconds"] = round(args.epoch_windows / out["steady_seq_per_s"], 1)
                save_json()
        ck = work / f"t{t}-fast-train"
        if (ck / "train-1.pth").exists():
            measure(fig, "evaluation", f"{scale} {t} thread(s) evaluation (Test.py)",
                    [Utils.REPO / "Test.py", "-dataset_files", dat, "-save_path", ck, "-epoch", 1],
                    work / f"t{t}-test.log", t, args.timeout, lambda: eval_figures(ck / "train-test.json"))
        for stage, kind in STAGES:
            log = work / f"t{t}-floor-{kind}.log"
            floor = measure(fig.setdefault("floor", {}), kind, f"{scale} {t} thread(s) floor ({kind})",
                            [Utils.REPO / "Benchmark.py", "floor", "-dataset_files", dat, "-kind", kind,
                             "-steps", args.floor_steps, "-warmup", args.warmup], log, t, args.timeout,
                            lambda: json.loads(log.read_text().splitlines()[-1]))
            step = fig.get("fast", {}).get(stage, {}).get("median_step_ms")
            if step and "median_step_ms" in floor:
                floor["step_over_floor"] = round(step / floor["median_step_ms"], 2)
                print(f"  {scale} {t} thread(s) {kind}: step {step} ms / floor {floor['median_step_ms']} ms "
                      f"= {floor['step_over_floor']}", flush=True)
        save_json()


def table(figures):
    """Markdown table of the figures (README.md)."""
    lines = ["| scale | threads | path | MII seq/s | MII s/epoch | MII peak RSS | rec seq/s | rec s/epoch "
             "| rec peak RSS | step / floor (MII, rec) | test rows/s |", "|" + " --- |" * 11]
    for scale in ("S", "L"):
        for key, fig in figures.get(scale, {}).items():
            if not key.startswith("threads_"):
                continue
            for path in ("fast", "plain"):
                cells = []
                for stage, _ in STAGES:
                    r = fig.get(path, {}).get(stage, {})
                    if scale == "L":   # a sample of the epoch: steady speed, estimated epoch
                        est = r.get("estimated_epoch_seconds", "-")
                        cells += [r.get("steady_seq_per_s", "-"), f"{est} (est.)"]
                    else:
                        cells += [r.get("seq_per_s", "-"), r.get("epoch_seconds", "-")]
                    cells.append(f"{r['peak_rss_mb']} MB" if "peak_rss_mb" in r else "-")
                floor = fig.get("floor", {})
                cells.append(", ".join(str(floor.get(k, {}).get("step_over_floor", "-")) for _, k in STAGES)
                             if path == "fast" else "")
                cells.append(fig.get("evaluation", {}).get("rows_per_s", "-") if path == "fast" else "")
                if any(c not in ("-", "- (est.)", "") for c in map(str, cells)):
                    lines.append(f"| {scale} | {key[8:]} | {path} | " + " | ".join(map(str, cells)) + " |")
    for stage, r in figures.get("S", {}).get("compile_threads_1", {}).items():
        lines.append(f"\nS, 1 thread, -compile {stage}: {r}")
    return "\n".join(lines)


def train_benchmark(args):
    figures = {"command": sys.argv, "threads": args.threads, "paths": args.paths}

    def save_json():
        Utils.write_json(args.out, figures)

    scales = args.scales.split(",")
    if "S" in scales:
        try:
            dat = Utils.read_dat(args.dataset_files)["dat_path"]
        except Utils.InputError as e:
            dat = None
            print(f"S skipped: {e.message}\n  make it with: python ProcessBT.py -raw_dir ../shared/data/beauty",
                  flush=True)
        if dat:
            print(f"S: {dat}", flush=True)
            train_scale("S", dat, args, figures.setdefault("S", {"dataset_files": dat}), save_json)
            if not args.no_compile:                                        # compilation = overhead_s
                fig = figures["S"].setdefault("compile_threads_1", {})
                for stage, kind in STAGES:
                    save = Path(args.work_dir) / "runs" / "S" / f"t1-compile-{stage}"
                    train_run(fig, f"S 1 thread -compile {stage} ({kind})", dat, save, stage, 1, args, "-compile")
                    save_json()
    if "L" in scales:
        t0 = time.time()
        dat = make_full_scale_processed(Path(args.work_dir) / "L", args.l_batches * 128, args.l_eval_rows,
                                        args.seed)
        print(f"L: {dat} ({time.time() - t0:.0f} s to make or find); {args.l_batches * 128} training windows, "
              f"epoch time estimated for {args.epoch_windows}", flush=True)
        train_scale("L", dat, args, figures.setdefault("L", {"dataset_files": str(dat), **FULL_SCALE,
                                                             "epoch_windows": args.epoch_windows}), save_json)
    figures["table"] = table(figures)
    save_json()
    print(figures["table"])
    print(f"wrote {args.out}")
    return figures


def floor_benchmark(args):
    """The exact ID loss alone at the masked ID positions of the real loader's batches (epoch 1, the
    training defaults): hidden rows [M, e] @ E^i^T, cross-entropy, backward. Prints one JSON line."""
    import torch
    import torch.nn.functional as F
    import DataLoader
    import Train
    from MIIR import MIIRConfig
    Utils.set_threads(args.threads)
    dat = Utils.read_dat(args.dataset_files)
    d = Train.parse_args([], "train")
    e = MIIRConfig.__dataclass_fields__["emb_size"].default
    loader = DataLoader.make_train_loader(dat, "train", args.kind, d.batch_size, d.mask_prob, d.seed)
    loader.set_epoch(1)                                                    # Train.py's first epoch
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(dat["meta"]["n_items"], e)))  # E^i
    missing_id = torch.from_numpy(loader.dataset.missing[:, 0])           # [N_i] (padding, i_miss)
    times, targets = [], []
    for i, batch in enumerate(loader):
        if i >= args.steps:
            break
        sel = batch["masked"][:, :, 0] & ~missing_id[batch["items"]]      # [B, L] ID targets
        y = batch["items"][sel]                                            # [M]
        h = torch.randn(len(y), e, requires_grad=True)                     # [M, e]
        tic = time.perf_counter()
        loss = F.cross_entropy(h @ W.T, y, reduction="sum") / len(batch["items"])  # [M, N_i] logits
        loss.backward()
        times.append(time.perf_counter() - tic)
        W.grad = None
        targets.append(len(y))
    print(json.dumps({"steps": len(times), "masked_ids_per_step": round(float(np.mean(targets)), 1),
                      "median_step_ms": round(1000 * float(np.median(times[args.warmup:] or times)), 1)}))


def add_train_parser(sub):
    p = sub.add_parser("train", help="training and evaluation speed of the real scripts at two scales")
    p.add_argument("-scales", default="S,L", help="S = real processed 5-core Beauty (-dataset_files), "
                   "L = synthetic tables at the paper's full Beauty scale")
    p.add_argument("-threads", default="1,2", help="torch threads (and OMP_NUM_THREADS) to try")
    p.add_argument("-paths", default="fast,plain", help="fast = default training, plain = -reference_path")
    p.add_argument("-dataset_files", default="bt_files.dat", help="the S data")
    p.add_argument("-work_dir", default="/tmp/miir_benchmark",
                   help="L data (<work_dir>/L, reused if present) and the runs (<work_dir>/runs)")
    p.add_argument("-l_batches", type=int, default=40, help="L: training windows = this x 128")
    p.add_argument("-l_eval_rows", type=int, default=22_363, help="L: valid/test rows")
    p.add_argument("-epoch_windows", type=int, default=BT_WINDOWS,
                   help="L: windows per epoch for the estimated epoch time (default: 5-core Beauty's)")
    p.add_argument("-warmup", type=int, default=5, help="steps left out of steady-state figures")
    p.add_argument("-floor_steps", type=int, default=60, help="batches timed for the floor")
    p.add_argument("-no_compile", action="store_true", help="skip the -compile run (S, 1 thread)")
    p.add_argument("-timeout", type=float, default=3600, help="seconds per measured process")
    p.add_argument("-seed", type=int, default=0, help="seed of the synthetic L data")
    p.add_argument("-out", default="/tmp/miir_benchmark/train_figures.json")
    p.set_defaults(func=train_benchmark)
    p = sub.add_parser("floor", help=argparse.SUPPRESS)                   # one floor measurement (internal)
    p.add_argument("-dataset_files", required=True)
    p.add_argument("-kind", choices=("mii", "rec"), default="mii")
    p.add_argument("-threads", type=int, default=1)
    p.add_argument("-steps", type=int, default=60)
    p.add_argument("-warmup", type=int, default=5)
    p.set_defaults(func=floor_benchmark)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_parser(sub)
    add_train_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "data" and not Path(args.text_source).exists():
        args.text_source = str(Path(args.work_dir) / "raw" / "meta_Bench.json")
    return args.func(args)


if __name__ == "__main__":
    main()

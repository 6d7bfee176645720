"""Speed figures for README.md.

    python Benchmark.py data                 # full Beauty-scale raw files (2.0M ratings, 1.2M users,
                                             # 250k items with meta, Amazon 2014 format), then time
                                             # the pipeline without text encoding + peak memory,
                                             # then the texts/s of the default text encoder
    python Benchmark.py data -ratings 200000 -users 120000 -items 25000    # a smaller run

Every figure is printed and written as JSON (-out).
"""
import argparse
import os
import resource
import subprocess
import sys
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


def run_measured(cmd, log):
    """Run a command, return (wall seconds, peak RSS in MB of the child)."""
    t0 = time.time()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - t0
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "data" and not Path(args.text_source).exists():
        args.text_source = str(Path(args.work_dir) / "raw" / "meta_Bench.json")
    return args.func(args)


if __name__ == "__main__":
    main()

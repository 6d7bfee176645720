"""The built-in demo dataset: small Amazon-2014-format raw files with learnable sequential structure.

    python MakeDemo.py                  # writes data/demo/raw/, then processes it into data/demo/process
                                        # and demo_files.dat (any Preprocess flag may follow)
    python MakeDemo.py -raw_only        # only the raw files

Items form `clusters`; the clusters of a "department" share a category path, each cluster has its
own leaf category, a couple of brands, and title/description words. Clusters sit on a ring and
a user walks it in order: after item j of cluster c comes (mostly) an item close to j in cluster
c+1. So the next item is predictable from the last one by its ID and, less sharply, by its
category/brand/text, which is what MIIR exploits. Every field type occurs, with missing values,
items without a meta record, HTML entities, quotes that need the Python-literal parser, users too
short to keep, and shuffled ratings rows with equal timestamps.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

import Utils

WORDS = ("amber azure bold breeze calm cedar citrus coral crisp dawn dusk ember fern frost glow "
         "honey ivory jade lotus lunar maple mint misty ocean opal pearl pine plum rose ruby sage "
         "silk slate solar spice storm sugar tidal velvet violet willow").split()
NOUNS = ("balm brush cream gel kit lotion mask mist oil palette polish powder serum shampoo "
         "soap spray stick tonic wash wax").split()


def make_raw(out_dir, users=3000, items=2000, clusters=40, seed=0):
    """Write ratings_Demo.csv and meta_Demo.json (2014 format) into out_dir; return their paths."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    size = items // clusters
    asins = [f"D{rng.integers(10**8, 10**9)}{i:05d}" for i in range(items)]
    rng.shuffle(asins)  # ids in the file are unrelated to the cluster order
    lines = []
    for c in range(clusters):
        dept = f"Department {c % 8}"
        words = rng.choice(WORDS, size=3, replace=False)
        noun = NOUNS[c % len(NOUNS)]
        brands = [f"{words[0].title()}{b} & Co" for b in range(2)]
        for j in range(size):
            i = c * size + j
            rec = {"asin": asins[i]}
            u = rng.random(8)
            if u[0] < 0.02:  # no meta record at all
                continue
            if u[1] > 0.01:
                title = f"{words[0].title()} {words[1]} {noun} no. {j}"
                rec["title"] = title + (" &amp; refill" if u[2] < 0.1 else "") + \
                    ("'s choice" if u[3] < 0.1 else "")
            if u[4] > 0.1:
                rec["description"] = (f"A {words[2]} {noun} from the {words[0]} line. "
                                      f"It goes well with {WORDS[(c * 3 + 1) % len(WORDS)]} things."
                                      + (' Say "wow".' if u[5] < 0.1 else ""))
            if u[6] > 0.05:
                rec["categories"] = [["Demo", dept, f"Leaf {c}"]] + \
                    ([["Demo", "Gifts"]] if j % 7 == 0 else [])
            if u[7] > 0.2:
                rec["brand"] = brands[j % 2]
            rec["salesRank"] = {"Demo": int(rng.integers(1, 10**5))}
            rec["related"] = {"also_bought": [asins[(i + size) % items]]}
            lines.append(repr(rec))  # the 2014 meta files are Python literals
    per_user = []
    for u in range(users):
        n = int(rng.integers(3, 31))  # some users (3, 4 items) are dropped by the 5-item filter
        c, j = int(rng.integers(clusters)), int(rng.integers(size))
        t = int(rng.integers(1.3e9, 1.35e9))
        rows = []
        for _ in range(n):
            rows.append(f"U{u:06d}X,{asins[c * size + j]},{rng.integers(1, 6)}.0,{t}")
            t += int(rng.integers(0, 3)) * 86400  # equal timestamps happen: file order breaks ties
            if rng.random() < 0.8:
                c = (c + 1) % clusters
                j = (j + int(rng.integers(0, 2))) % size
            else:
                j = int(rng.integers(size))
        per_user.append(rows)
    # users' rows are interleaved in the file: rows of a user are in order, but a user's rows
    # come after a random number of other rows, as in the real file (sorted by item there)
    slots = np.concatenate([np.full(len(r), u) for u, r in enumerate(per_user)])
    slots = slots[rng.permutation(len(slots))]
    taken = [iter(r) for r in per_user]
    rows = [next(taken[u]) for u in slots]
    ratings = out_dir / "ratings_Demo.csv"
    meta = out_dir / "meta_Demo.json"
    Utils.write_text(ratings, "\n".join(rows) + "\n")
    Utils.write_text(meta, "\n".join(lines) + "\n")
    return ratings, meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-users", type=int, default=3000)
    p.add_argument("-items", type=int, default=2000)
    p.add_argument("-clusters", type=int, default=40)
    p.add_argument("-demo_seed", type=int, default=0)
    p.add_argument("-raw_dir", default="data/demo/raw")
    p.add_argument("-raw_only", action="store_true")
    args, rest = p.parse_known_args(argv)
    raw = Utils.resolve(args.raw_dir)
    ratings, meta = make_raw(raw, args.users, args.items, args.clusters, args.demo_seed)
    print(f"[demo] wrote {ratings} and {meta}")
    if not args.raw_only:
        import Preprocess
        Preprocess.main(["-raw_dir", str(raw)] + rest, token="demo", category="Demo")


if __name__ == "__main__":
    main(sys.argv[1:])

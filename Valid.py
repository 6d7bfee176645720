"""Score every saved epoch of a stage on the validation rows and name the best (paper section 4.4).

    accelerate launch --config_file accelerate_config.yaml Valid.py -dataset_files bt_files.dat -save_path checkpoint_miirs_bt/

Each validation row ends with the target item; MIIR imputes the ID of that slot with all its fields
missing and ranks the positive among its candidates (1 positive + the processed negatives, 99 in the
paper). Ties count against the positive: rank = 1 + #(negatives scoring >= the positive). The best
epoch by -metric (default mrr; ties -> earliest epoch) goes to <save_path>/<stage>-valid.json
('best_epoch', 'best_checkpoint'), which Test.py reads. Prevalid.py = the same for stage 'pretrain'.

This file also holds the evaluation shared with Test.py: metrics, evaluate, score_checkpoints, write.
"""
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import Train
import Utils
from Utils import InputError

SAMPLED_KS = (5, 10)
FULL_KS = (10, 20)


def metric_names(full_ranking=False):
    ks = FULL_KS if full_ranking else SAMPLED_KS
    return [f"hr@{k}" for k in ks] + ["mrr"] + [f"ndcg@{k}" for k in ks] + ["auc"]


def rank_metrics(rank, n_candidates, ks):
    """Per-row metrics from the positive's 1-based rank among n_candidates (an int or [B]).

    HR@k = [rank <= k]; MRR = 1/rank; NDCG@k = [rank <= k] / log2(rank + 1) (one relevant item);
    AUC = fraction of the other candidates scored strictly below the positive = (n - rank) / (n - 1).
    """
    rank = rank.double()                                                   # [B]
    n = torch.as_tensor(n_candidates, dtype=torch.float64)
    out = {"rank": rank.long()}
    out.update({f"hr@{k}": (rank <= k).double() for k in ks})
    out["mrr"] = 1.0 / rank
    out.update({f"ndcg@{k}": torch.where(rank <= k, 1.0 / torch.log2(rank + 1), 0.0) for k in ks})
    out["auc"] = (n - rank) / (n - 1)
    return out


def metrics(scores):
    """scores [B, C], column 0 = the positive -> dict of per-row tensors: rank, hr@5, hr@10, mrr,
    ndcg@5, ndcg@10, auc. rank = 1 + #(negatives >= positive): ties count against the positive."""
    scores = scores.float()                                                # [B, C]
    rank = 1 + (scores[:, 1:] >= scores[:, :1]).sum(1)                     # [B]
    return rank_metrics(rank, scores.shape[1], SAMPLED_KS)


def full_metrics(scores, target):
    """-full_ranking: scores [B, n_items] (pad / i_miss = -inf), target [B] item ids -> per-row
    rank among all scoreable items (ties against the target) with HR/NDCG@10, @20, MRR, AUC."""
    scores = scores.float()                                                # [B, N]
    pos = scores.gather(1, target[:, None])                                # [B, 1]
    rank = (scores >= pos).sum(1)                                          # [B] (counts the target)
    return rank_metrics(rank, torch.isfinite(scores).sum(1), FULL_KS)


@torch.no_grad()
def evaluate(model, loader, accelerator, full_ranking=False, compile=False, log=print, where=""):
    """Score every row of `loader` (sharded over processes) -> (rows [R] sorted, values [R, M]) on
    every process, M = ['rank'] + metric_names(). Rows that accelerate repeats to even out the
    shards are dropped by row index, so 1 and N processes give the same table."""
    model.eval()
    score = Train.compiled(model.full_scores if full_ranking else model.score, compile, log)
    names = ["rank"] + metric_names(full_ranking)
    rows, values = [], []
    for batch in tqdm(loader, mininterval=Utils.BAR_INTERVAL, desc=f"scoring {where}", leave=False, disable=not accelerator.is_main_process):
        with accelerator.autocast():
            scores = score(batch)                                          # [B, C] or [B, n_items]
        if torch.isnan(scores).any():
            raise InputError(f"{where}: the model gives NaN scores; this checkpoint is broken, "
                             "score another epoch")
        m = full_metrics(scores, batch["candidates"][:, 0]) if full_ranking else metrics(scores)
        rows.append(batch["row"].cpu().numpy())
        values.append(torch.stack([m[k].double() for k in names], 1).cpu().numpy())  # [B, M]
    local = (np.concatenate(rows) if rows else np.zeros(0, np.int64),
             np.concatenate(values) if values else np.zeros((0, len(names))))
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object
        parts = gather_object([local])
    else:
        parts = [local]
    row = np.concatenate([p[0] for p in parts])
    value = np.concatenate([p[1] for p in parts])
    row, first = np.unique(row, return_index=True)                         # sorted, first copy of each
    return row, value[first]


def eval_loader(args, dat, split, accelerator):
    import DataLoader
    loader = DataLoader.make_eval_loader(dat, split, batch_size=args.batch_size, num_workers=args.num_workers)
    return accelerator.prepare(loader), len(loader.dataset)


def pick_checkpoints(args, stage, best_of=None):
    """[(epoch, path)] to score: -epoch N; else -all_epochs or no `best_of` summary: every saved
    epoch; else the best checkpoint named in the `best_of` json (Test.py: <stage>-valid.json)."""
    if args.epoch is not None:
        return [(args.epoch, Train.checkpoint_path(args.save_path, stage, args.epoch))]
    saved = Train.saved_checkpoints(args.save_path, stage)
    if not saved:
        raise InputError(f"{args.save_path}: no {stage}-<epoch>.pth; run "
                         f"{Train.script_name('train', stage)} with this -save_path first")
    if args.all_epochs or best_of is None:
        return saved
    if not best_of.exists():
        raise InputError(f"{best_of}: not found; run {Train.script_name('valid', stage)} first "
                         "(it names the best epoch), or pass -epoch N or -all_epochs")
    best = Utils.load_json(best_of)
    return [(best["best_epoch"], Path(best["best_checkpoint"]))]


class Popularity(torch.nn.Module):
    """Baseline with MIIR's scoring interface: a candidate's score is its number of occurrences in
    the training windows (ties count against the positive, as for every model)."""

    def __init__(self, dat, n_items):
        super().__init__()
        train = Utils.load_npy(dat["train_filepath"])
        counts = np.bincount(train.ravel(), minlength=n_items).astype(np.float32)
        counts[:2] = -np.inf                                               # padding, i_miss
        self.register_buffer("counts", torch.from_numpy(counts))          # [n_items]

    def score(self, batch):
        return self.counts[batch["candidates"]]                            # [B, C]

    def full_scores(self, batch):
        return self.counts.expand(len(batch["candidates"]), -1)            # [B, n_items]


def score_checkpoints(args, stage, split, best_of=None):
    """Score the checkpoints of pick_checkpoints on `split` ('valid' | 'test'). Returns (results, log,
    accelerator), results = [{'epoch', 'checkpoint', 'summary': {metric: mean}, 'rows', 'values'}]."""
    from MIIR import MIIR
    accelerator, dat, tables, log = Train.setup(args, Train.script_name(split, stage), stage)
    if args.popularity:
        checkpoints = [(0, Path("popularity"))]
    else:
        checkpoints = pick_checkpoints(args, stage, best_of(args) if best_of else None)
    loader, n_rows = eval_loader(args, dat, split, accelerator)
    model, config, results = None, None, []
    names = metric_names(args.full_ranking)
    for epoch, path in checkpoints:
        if args.popularity:
            model = Popularity(dat, dat["meta"]["n_items"]).to(accelerator.device)
        else:
            ck = Train.load_checkpoint(path, dat["meta"])
            if model is None or ck["config"] != config:
                config = ck["config"]
                model = MIIR(Train.model_config(args, dat["meta"], stored=config), tables).to(accelerator.device)
            model.load_state_dict(ck["model"])
        tic = time.perf_counter()
        rows, values = evaluate(model, loader, accelerator, args.full_ranking, args.compile, log, str(path))
        seconds = time.perf_counter() - tic                                # scoring only (Benchmark.py)
        if len(rows) != n_rows:
            raise RuntimeError(f"{path}: scored {len(rows)} of {n_rows} {split} rows")
        summary = {k: float(values[:, 1 + j].mean()) for j, k in enumerate(names)}
        results.append({"epoch": epoch, "checkpoint": str(path), "summary": summary, "rows": rows,
                        "values": values, "seconds": seconds})
        log(f"{split} {path.name}: " + " ".join(f"{k.upper()} {v:.4f}" for k, v in summary.items())
            + f" ({len(rows)} rows in {seconds:.1f} s)")
    return results, log, accelerator


def table(results):
    """Text table: one line per epoch."""
    names = list(results[0]["summary"])
    lines = ["epoch  " + "  ".join(f"{k.upper():>8}" for k in names)]
    lines += [f"{r['epoch']:5d}  " + "  ".join(f"{r['summary'][k]:8.4f}" for k in names) for r in results]
    return "\n".join(lines)


def write_rows(save_path, stage, split, result, full_ranking):
    """One line per evaluated row (row index in <split>.npy, rank, metrics): for paired tests."""
    names = ["rank"] + metric_names(full_ranking)
    path = Path(save_path) / f"{stage}-{result['epoch']}-{split}{'-full' if full_ranking else ''}-rows.tsv"
    lines = ["row\t" + "\t".join(names)]
    for row, value in zip(result["rows"], result["values"]):
        lines.append(f"{row}\t{int(value[0])}\t" + "\t".join(f"{v:.6f}" for v in value[1:]))
    Utils.write_text(path, "\n".join(lines) + "\n")
    return path


def summary_name(save_path, stage, split, full_ranking):
    return Path(save_path) / f"{stage}-{split}{'-full' if full_ranking else ''}"


def main(argv=None, stage="train"):
    args = Train.parse_args(argv, stage, script="valid")
    stage = "popularity" if args.popularity else stage
    metric = args.metric.lower()
    if metric not in metric_names(args.full_ranking):
        raise InputError(f"-metric {args.metric}: choose one of {', '.join(metric_names(args.full_ranking))}")
    results, log, accelerator = score_checkpoints(args, stage, "valid")
    best = max(results, key=lambda r: (r["summary"][metric], -r["epoch"]))
    if accelerator.is_main_process:
        base = summary_name(args.save_path, stage, "valid", args.full_ranking)
        rows_path = write_rows(args.save_path, stage, "valid", best, args.full_ranking)
        Utils.write_json(base.with_suffix(".json"), {
            "stage": stage, "split": "valid", "metric": metric, "full_ranking": args.full_ranking,
            "best_epoch": best["epoch"], "best_checkpoint": best["checkpoint"], "best": best["summary"],
            "rows_file": str(rows_path), "n_rows": len(best["rows"]), "dataset_files": args.dataset_files,
            "epochs": {str(r["epoch"]): r["summary"] for r in results}})
        text = table(results) + f"\nbest epoch by {metric.upper()}: {best['epoch']} ({best['checkpoint']})"
        Utils.write_text(base.with_suffix(".txt"), text + "\n")
        log(text)
    accelerator.end_training()
    return best


if __name__ == "__main__":
    main()

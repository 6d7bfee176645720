"""Train MIIR: the one training loop of every stage and variant (paper section 3.4 and 4.3).

    accelerate launch --config_file accelerate_config.yaml Train.py -dataset_files bt_files.dat -save_path checkpoint_miirs_bt/

Train.py trains with the recommendation loss (Eq. 14; MIIR-R, or MIIR-F with -pretrained_model);
Pretrain.py calls main(stage='pretrain'), which trains with the MII loss (Eq. 11-13; MIIR). Each
epoch writes <save_path>/<stage>-<epoch>.pth atomically: parameters, optimizer, RNG states, the
arguments, the data's size signature and the model config. -resume continues from the last complete
epoch and gives the parameters of an uninterrupted run (every epoch re-seeds python, numpy and torch
from (-seed, epoch, process), and the data loader is seeded by (-seed, epoch)).

This file also holds the flags of every script (build_parser) and the checkpoint helpers, so
Valid.py and Test.py share them instead of repeating them.
"""
import argparse
import json
import math
import random
import re
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import Utils
from Utils import InputError

STAGES = ("pretrain", "train")
# what a checkpoint must share with the data it is used on (all from meta.json)
SIGNATURE_KEYS = ("dataset_token", "n_items", "n_categories", "n_brands", "text_dim", "max_categories")
# model config keys that decide parameter shapes (a pretrained model must match these)
SHAPE_KEYS = ("max_len", "emb_size", "heads", "layers")
# model flags: name -> argparse type (defaults come from MIIR.MIIRConfig, the one place they live)
MODEL_FLAGS = {"emb_size": int, "heads": int, "layers": int, "dropout": float,
               "attention": ("dense", "sparse"), "mask_missing": bool, "category_loss": ("sum", "mean"),
               "dropout_sites": ("paper", "torch")}
# training flags that change the run; a resume with other values is allowed but logged
RUN_KEYS = ("loss", "batch_size", "lr", "mask_prob", "gradient_clip_val", "accumulate_grad_batches", "seed")


# ----------------------------------------------------------------------------- flags
def script_name(script, stage):
    """'train', 'pretrain' -> 'Pretrain.py'; 'valid', 'pretrain' -> 'Prevalid.py'; ..."""
    name = {"train": "Pretrain" if stage == "pretrain" else "Train"}.get(script)
    return f"{name or ('Pre' + script if stage == 'pretrain' else script.title())}.py"


def hidden(group, hide):
    """group.add_argument, hiding the flag from -h when `hide` (it is still accepted)."""
    def add(*names, **kw):
        return group.add_argument(*names, **dict(kw, help=argparse.SUPPRESS) if hide else kw)
    return add


def build_parser(script, stage):
    """Every flag of every script, with its typed default, in one place.

    script: 'train' (Train.py / Pretrain.py) or 'valid' / 'test' (evaluation scripts).
    For evaluation the model flags default to None = "as stored in the checkpoint".
    """
    from MIIR import MIIRConfig
    model_defaults = {f.name: f.default for f in fields(MIIRConfig)}
    training = script == "train"
    p = argparse.ArgumentParser(
        prog=script_name(script, stage), allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0] if training else f"Score saved '{stage}' checkpoints on the "
        f"{script} rows (1 positive + the processed negatives; ties count against the positive).")
    g = p.add_argument_group("data and run")
    g.add_argument("-dataset_files", default="bt_files.dat", help="the <token>_files.dat of the processed data")
    g.add_argument("-save_path", default=None,
                   help="folder of checkpoints, logs and results; None = checkpoint_miirs_<dataset_token>/")
    g.add_argument("-batch_size", type=int, default=128, help="sequences per batch (per process)")
    g.add_argument("-num_workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument("-seed", type=int, default=42, help="seeds python, numpy, torch and the data order/masks")
    g.add_argument("-threads", type=int, default=0,
                   help="torch intra-op threads per process (0 = Utils.default_threads: the cores divided "
                        "by the processes of the run; use 1 when other jobs share the cores)")
    g.add_argument("-compile", action="store_true",
                   help="torch.compile the model (falls back to eager if compilation fails)")
    g.add_argument("-max_interactions", type=int, default=None,
                   help="items per sequence; None = the processed data's max_interactions (20)")
    g = p.add_argument_group("model (MIIR.MIIRConfig; evaluation reads them from the checkpoint)")
    for name, kind in MODEL_FLAGS.items():
        default = model_defaults[name] if training else None
        if kind is bool:
            g.add_argument(f"-{name}", action="store_true", default=default,
                           help="MIIR-M: fields missing in the data are masked out as attention keys (Eq. 15)")
        elif isinstance(kind, tuple):
            g.add_argument(f"-{name}", choices=kind, default=default,
                           help={"attention": "dense = DFSA (Eq. 4-5), sparse = SFSA (Eq. 16)",
                                 "category_loss": "BCE over category labels: sum (authors) or mean "
                                                  "(paper, divided by N_c)",
                                 "dropout_sites": "paper = the two dropouts of Eq. 5; torch = also on "
                                                  "attention weights and inside the feed-forward "
                                                  "(torch's TransformerEncoderLayer, the authors' code)"}[name])
        else:
            g.add_argument(f"-{name}", type=kind, default=default,
                           help={"emb_size": "e, the token embedding size", "heads": "attention heads",
                                 "layers": "transformer layers", "dropout": "dropout rate"}[name])
    # every script accepts every flag (so one flag string serves the whole README sequence);
    # the flags a script does not use are hidden from its -h and ignored
    add = hidden(p.add_argument_group("training (paper section 4.3 defaults)"), not training)
    add("-loss", choices=("mii", "rec"), default="mii" if stage == "pretrain" else "rec",
        help="mii = MII loss (Eq. 11-13), rec = recommendation loss (Eq. 14)")
    add("-epochs", type=int, default=100, help="train until this epoch")
    add("-lr", type=float, default=1e-4, help="Adam learning rate")
    add("-mask_prob", type=float, default=0.5,
        help="probability of masking a present field (mii) or an item (rec)")
    add("-gradient_clip_val", type=float, default=5.0,
        help="clip every gradient value to [-v, v] (the paper's range [-5, 5]); 0 = off")
    add("-accumulate_grad_batches", type=int, default=1,
        help="batches per optimizer step (accelerate gradient accumulation)")
    add("-pretrained_model", default=None,
        help="MIIR-F: start from this pretrain checkpoint (a .pth, or a folder: its "
             "best-by-validation pretrain checkpoint from pretrain-valid.json)")
    add("-resume", nargs="?", const="last", default=None,
        help="continue from the last complete epoch in save_path (or from the given .pth)")
    add("-overwrite", action="store_true",
        help="delete this stage's checkpoints in save_path and start again")
    add("-reference_path", action="store_true",
        help="the plain, slow path, for benchmarks and checks: MIIR.loss_reference (full logits "
             "everywhere), F.dropout and F.scaled_dot_product_attention; same method and losses")
    add = hidden(p.add_argument_group("evaluation"), training)
    add("-metric", default="mrr", help="validation metric that names the best epoch")
    add("-epoch", type=int, default=None, help="score only this epoch")
    add("-all_epochs", action="store_true", help="score every saved epoch")
    add("-full_ranking", action="store_true",
        help="rank the target among all items instead of the 100 candidates")
    add("-popularity", action="store_true",
        help="score the popularity baseline (candidates ranked by their count in the training "
             "windows) instead of checkpoints; results go to popularity-<split>.json")
    return p


def parse_args(argv, stage, script="train"):
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    args = build_parser(script, stage).parse_args(argv)
    for name in ("batch_size", "epochs", "accumulate_grad_batches"):
        if getattr(args, name, 1) < 1:
            raise InputError(f"-{name} {getattr(args, name)}: must be at least 1")
    if not (math.isfinite(args.lr) and args.lr >= 0):
        raise InputError(f"-lr {args.lr}: must be a finite number >= 0")
    if script == "train" and not 0 < args.mask_prob <= 1:
        raise InputError(f"-mask_prob {args.mask_prob}: must be in (0, 1]")
    return args


def setup(args, script, stage):
    """Accelerator, threads, data and log shared by every script. Returns (accelerator, dat, tables, log)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    import DataLoader
    # broadcast_buffers=False: the feature tables are buffers and never change; find_unused: the
    # rec loss leaves the category/brand/text output layers without gradient
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp],
                              gradient_accumulation_steps=getattr(args, "accumulate_grad_batches", 1))
    threads = Utils.set_threads(args.threads, accelerator.num_processes)
    dat = Utils.read_dat(args.dataset_files)
    if args.save_path is None:
        args.save_path = f"checkpoint_miirs_{dat['dataset_token']}/"
    log = Log(args.save_path, accelerator, script, stage)
    log(f"{accelerator.num_processes} process(es) on {accelerator.device}, {threads} thread(s) each, "
        f"mixed precision {accelerator.mixed_precision}; data {dat['dat_path']}")
    tables = DataLoader.load_tables(dat)
    return accelerator, dat, tables, log


class Log:
    """Lines to the console (main process, through tqdm) and appended to <save_path>/log.txt."""

    def __init__(self, save_path, accelerator, script, stage):
        self.main = accelerator.is_main_process
        self.path = Path(save_path) / "log.txt"
        if self.main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {script} ({stage}): {' '.join(sys.argv)}")

    def __call__(self, text):
        if self.main:
            tqdm.write(text)
            with open(self.path, "a") as f:
                f.write(text + "\n")


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_path(save_path, stage, epoch):
    return Path(save_path) / f"{stage}-{epoch}.pth"


def saved_checkpoints(save_path, stage):
    """[(epoch, path)] of <save_path>/<stage>-<epoch>.pth, by epoch (only complete files exist:
    they are written under a temporary name and renamed)."""
    found = []
    for path in Path(save_path).glob(f"{stage}-*.pth"):
        m = re.fullmatch(rf"{stage}-(\d+)\.pth", path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def data_signature(meta):
    return {k: meta[k] for k in SIGNATURE_KEYS}


def rng_state():
    """python, numpy, torch (and cuda) RNG states in types torch.load(weights_only=True) accepts."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_pos": int(pos), "numpy_gauss": [int(has_gauss), float(gauss)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         *state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_seed(seed, epoch, process=0):
    """The seed of one epoch on one process (python/numpy/torch: dropout and anything unseeded)."""
    return (seed * 1_000_003 + epoch * 7919 + process * 104_729) % 2**63


def save_checkpoint(path, model, optimizer, epoch, args, config, meta):
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "rng": rng_state(), "sampler_seed": [args.seed, epoch], "args": vars(args),
             "signature": data_signature(meta), "config": asdict(config)}
    with Utils.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path, meta, config=None, keys=SHAPE_KEYS):
    """Load a checkpoint (weights_only) and refuse it, in one line, if it was made on other data or
    (when `config` is given) with another value of a model config key in `keys`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint; train first or fix the path")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise InputError(f"{path}: not a readable MIIR checkpoint ({e.__class__.__name__}: "
                         f"{str(e).splitlines()[0][:200]}); delete it or pass another file")
    missing = [k for k in ("epoch", "model", "signature", "config") if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise InputError(f"{path}: not a MIIR checkpoint (no '{missing[0]}'); pass a <stage>-<epoch>.pth "
                         "written by Train.py or Pretrain.py")
    for key in SIGNATURE_KEYS:
        if ck["signature"].get(key) != meta[key]:
            raise InputError(f"{path}: checkpoint data '{key}' is {ck['signature'].get(key)!r} but the "
                             f"-dataset_files data has {meta[key]!r}; use the checkpoint's dataset "
                             "(or another -save_path)")
    if config is not None:
        now = asdict(config)
        for key in keys:
            if ck["config"].get(key) != now[key]:
                raise InputError(f"{path}: checkpoint model '{key}' is {ck['config'].get(key)!r} but "
                                 f"this run has {now[key]!r}; pass -{'max_interactions' if key == 'max_len' else key} "
                                 f"{ck['config'].get(key)} (or another -save_path)")
    return ck


def model_config(args, meta, stored=None):
    """MIIRConfig from the data sizes and the model flags. With `stored` (a checkpoint's config):
    that config, with any model flag given on the command line checked against it."""
    from MIIR import MIIRConfig
    flags = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k, None) is not None}
    if args.max_interactions is not None:
        flags["max_len"] = args.max_interactions
    if stored is None:
        if flags.get("max_len", meta["max_interactions"]) != meta["max_interactions"]:
            raise InputError(f"-max_interactions {flags['max_len']}: the data in {args.dataset_files} was "
                             f"processed with {meta['max_interactions']} items per row; re-run its "
                             "Process*.py with -max_interactions or drop the flag")
        return MIIRConfig.from_meta(meta, **flags)
    config = MIIRConfig(**stored)
    for key, value in flags.items():
        if getattr(config, key) != value:
            raise InputError(f"-{'max_interactions' if key == 'max_len' else key} {value}: the checkpoint "
                             f"was trained with {getattr(config, key)}; drop the flag (evaluation uses "
                             "the checkpoint's model) or use another -save_path")
    return config


def compiled(fn, enabled, log):
    """torch.compile(fn) when -compile; errors during compilation fall back to eager."""
    if not enabled:
        return fn
    try:
        import torch._dynamo
        torch._dynamo.config.suppress_errors = True  # a failed graph runs eagerly instead of crashing
        return torch.compile(fn, dynamic=True)
    except Exception as e:  # no compiler support at all
        log(f"note: torch.compile unavailable ({e.__class__.__name__}: {e}); running eagerly")
        return fn


class LossStep(torch.nn.Module):
    """forward(batch) = model.loss(batch, kind), so DDP sees the loss computation as its forward."""

    def __init__(self, model, kind):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, batch):
        return self.model.loss(batch, kind=self.kind)


# ----------------------------------------------------------------------------- training
def resume_point(args, stage, meta, config, log):
    """(first epoch, checkpoint to continue from or None). Refuses to mix a new run into old epochs."""
    saved = saved_checkpoints(args.save_path, stage)
    if args.resume is None:
        if saved and not args.overwrite:
            raise InputError(f"{saved[-1][1]} exists: add -resume to continue that run, -overwrite to "
                             "start again (deletes its checkpoints), or use another -save_path")
        return 1, None
    if args.resume != "last":
        path = Path(args.resume)
    elif saved:
        path = saved[-1][1]
    else:
        log(f"-resume: no {stage}-<epoch>.pth in {args.save_path}; starting at epoch 1")
        return 1, None
    ck = load_checkpoint(path, meta, config, keys=tuple(asdict(config)))
    changed = [f"-{k} {ck['args'].get(k)} -> {getattr(args, k)}" for k in RUN_KEYS
               if ck["args"].get(k) != getattr(args, k)]
    log(f"resuming from {path} (epoch {ck['epoch']})" + (f"; note: changed {', '.join(changed)}" if changed else ""))
    return ck["epoch"] + 1, ck


def pretrained_checkpoint(path):
    """-pretrained_model: a .pth, or a folder whose pretrain-valid.json names the best epoch."""
    path = Path(path)
    if path.is_dir():
        summary = path / "pretrain-valid.json"
        if not summary.exists():
            raise InputError(f"-pretrained_model {path}: a folder without pretrain-valid.json; run "
                             "Prevalid.py on it first or pass a pretrain-<epoch>.pth")
        return Path(Utils.load_json(summary)["best_checkpoint"])
    return path


def record_epoch(save_path, stage, record):
    """One JSON line per epoch in <save_path>/<stage>-epochs.jsonl (read by Benchmark.py): the
    record of this epoch replaces any of this or later epochs (left over from an earlier run)."""
    path = Path(save_path) / f"{stage}-epochs.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if json.loads(line)["epoch"] < record["epoch"]]
    Utils.write_text(path, "\n".join(lines + [json.dumps(record)]) + "\n")


def main(argv=None, stage="train"):
    import DataLoader
    from MIIR import MIIR
    args = parse_args(argv, stage)
    accelerator, dat, tables, log = setup(args, script_name("train", stage), stage)
    meta = dat["meta"]
    config = model_config(args, meta)
    start, ck = resume_point(args, stage, meta, config, log)
    if accelerator.is_main_process:
        if args.overwrite and ck is None:
            for _, path in saved_checkpoints(args.save_path, stage):
                path.unlink()
        Utils.write_json(Path(args.save_path) / f"{stage}-args.json",
                         {"args": vars(args), "config": asdict(config), "signature": data_signature(meta),
                          "processes": accelerator.num_processes, "command": sys.argv})
    accelerator.wait_for_everyone()

    Utils.set_seed(args.seed)
    model = MIIR(config, tables).set_fast(not args.reference_path).to(accelerator.device)
    if ck is not None:
        model.load_state_dict(ck["model"])
    elif args.pretrained_model:
        path = pretrained_checkpoint(args.pretrained_model)
        model.load_state_dict(load_checkpoint(path, meta, config)["model"])
        log(f"MIIR-F: starting from {path}")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr,
                                 **({"fused": True} if accelerator.device.type == "cuda" else {"foreach": True}))
    if ck is not None:
        optimizer.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
    loader = DataLoader.make_train_loader(tables, Utils.load_npy(dat["train_filepath"]), kind=args.loss,
                                          batch_size=args.batch_size, mask_prob=args.mask_prob,
                                          seed=args.seed, num_workers=args.num_workers)
    step = LossStep(model, args.loss)
    step, optimizer, loader = accelerator.prepare(compiled(step, args.compile, log), optimizer, loader)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{stage}: {args.loss} loss, {n_params:,} parameters, {len(loader)} batches/epoch/process, "
        f"epochs {start}..{args.epochs}")

    for epoch in range(start, args.epochs + 1):
        Utils.set_seed(epoch_seed(args.seed, epoch, accelerator.process_index))
        loader.set_epoch(epoch)
        step.train()
        sums = torch.zeros(2 + len(Utils.FIELDS), dtype=torch.float64)  # loss*n, n, per-field loss*n
        tic = time.perf_counter()
        ends = []                                                          # seconds at each step's end
        bar = tqdm(loader, mininterval=Utils.BAR_INTERVAL, desc=f"{stage} {epoch}/{args.epochs}", leave=False,
                   disable=not accelerator.is_main_process)
        for i, batch in enumerate(bar):
            with accelerator.accumulate(step):
                loss = step(batch)
                value = loss.item()
                if not math.isfinite(value):
                    last = saved_checkpoints(args.save_path, stage)
                    raise InputError(f"{stage} epoch {epoch} batch {i}: the loss is {value}; stopped. The last "
                                     f"good checkpoint is {last[-1][1] if last else 'none'}; lower -lr or "
                                     "-gradient_clip_val and -resume")
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.gradient_clip_val > 0:
                    accelerator.clip_grad_value_(step.parameters(), args.gradient_clip_val)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            n = batch["items"].shape[0]
            sums[0] += value * n
            sums[1] += n
            for f, name in enumerate(Utils.FIELDS):
                part = model.last_loss_parts.get(name)
                if part is not None:
                    sums[2 + f] += float(part) * n
            bar.set_postfix(loss=f"{sums[0] / sums[1]:.4f}", refresh=False)
            ends.append(round(time.perf_counter() - tic, 4))
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
        seconds = time.perf_counter() - tic
        if accelerator.is_main_process:
            path = checkpoint_path(args.save_path, stage, epoch)
            save_checkpoint(path, model, optimizer, epoch, args, config, meta)
            parts = " ".join(f"{name}={sums[2 + f] / sums[1]:.4f}" for f, name in enumerate(Utils.FIELDS)
                             if sums[2 + f] != 0)
            log(f"{stage} epoch {epoch}: loss {sums[0] / sums[1]:.6f} ({parts}) {seconds:.1f}s "
                f"{sums[1] / seconds:.0f} seq/s -> {path}")
            record_epoch(args.save_path, stage, {
                "epoch": epoch, "loss": float(sums[0] / sums[1]), "seconds": seconds,
                "sequences": int(sums[1]), "processes": accelerator.num_processes,
                "batch_size": args.batch_size,                             # every batch but the last
                "step_ends": ends})                                        # main process, seconds
        accelerator.wait_for_everyone()
    log(f"{stage} done: {args.save_path}")
    accelerator.end_training()


if __name__ == "__main__":
    main()

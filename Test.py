"""Score the best-by-validation epoch on the test rows and print HR@5, HR@10, MRR, NDCG@5, NDCG@10, AUC.

    accelerate launch --config_file accelerate_config.yaml Test.py -dataset_files bt_files.dat -save_path checkpoint_miirs_bt/

The epoch is the one <save_path>/<stage>-valid.json names (run Valid.py first); -epoch N scores
that epoch, -all_epochs every saved one. -full_ranking ranks the target among all items (HR@10/20,
NDCG@10/20, MRR, AUC). Writes <stage>-test.json / .txt and one line per test row
(<stage>-<epoch>-test-rows.tsv: row, rank, metrics) for paired significance tests.
Pretest.py = the same for stage 'pretrain'.
"""
import Train
import Utils
import Valid


def best_of(stage):
    """The validation summary that names the best epoch (the -full_ranking one if it exists)."""
    def path(args):
        full = Valid.summary_name(args.save_path, stage, "valid", args.full_ranking).with_suffix(".json")
        return full if full.exists() else Valid.summary_name(args.save_path, stage, "valid", False).with_suffix(".json")
    return path


def main(argv=None, stage="train"):
    args = Train.parse_args(argv, stage, script="test")
    stage = "popularity" if args.popularity else stage
    results, log, accelerator = Valid.score_checkpoints(args, stage, "test", best_of(stage))
    if accelerator.is_main_process:
        base = Valid.summary_name(args.save_path, stage, "test", args.full_ranking)
        rows = [str(Valid.write_rows(args.save_path, stage, "test", r, args.full_ranking)) for r in results]
        Utils.write_json(base.with_suffix(".json"), {
            "stage": stage, "split": "test", "full_ranking": args.full_ranking,
            "dataset_files": args.dataset_files, "n_rows": len(results[0]["rows"]),
            "results": [{"epoch": r["epoch"], "checkpoint": r["checkpoint"], "rows_file": f,
                         "seconds": r["seconds"], **r["summary"]}
                        for r, f in zip(results, rows)]})
        text = Valid.table(results)
        Utils.write_text(base.with_suffix(".txt"), text + "\n")
        log(f"test ({len(results[0]['rows'])} rows):\n{text}")
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()

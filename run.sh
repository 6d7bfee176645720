#!/usr/bin/env bash
# The main job, end to end: process a dataset, then the authors' README sequence
# (Pretrain -> Prevalid -> Pretest -> Train -pretrained_model -> Valid -> Test).
#   bash run.sh                 # bt if Amazon Beauty files are in data/bt/raw, else the built-in demo
#   bash run.sh bt 100 100      # dataset token, pretrain epochs, train epochs
#   RAW_DIR=../shared/data/beauty bash run.sh bt
# Extra flags for every training/evaluation script go in MIIR_FLAGS, e.g. MIIR_FLAGS="-attention sparse".
# Re-running continues (-resume) from the last complete epoch in checkpoint_miirs_<token>/.
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

token=${1:-}
if [ -z "$token" ]; then
  if [ -n "${RAW_DIR:-}" ] || compgen -G "data/bt/raw/*" > /dev/null; then token=bt; else token=demo; fi
fi
if [ "$token" = demo ]; then pre_epochs=${2:-2}; train_epochs=${3:-2}; else pre_epochs=${2:-100}; train_epochs=${3:-100}; fi

case "$token" in
  demo) [ -f data/demo/process/meta.json ] && [ -f demo_files.dat ] || python MakeDemo.py ;;
  bt|so|tg)
    script=Process$(echo "$token" | tr a-z A-Z).py
    if [ ! -f "data/${token}/process/meta.json" ]; then
      if [ -n "${RAW_DIR:-}" ]; then python "$script" -raw_dir "$RAW_DIR"; else python "$script"; fi
    fi ;;
  *) echo "error: unknown dataset '$token'; use demo, bt, so or tg" >&2; exit 2 ;;
esac

files=${token}_files.dat
save=checkpoint_miirs_${token}/
launch="accelerate launch --config_file accelerate_config.yaml"
flags=${MIIR_FLAGS:-}
set -x
$launch Pretrain.py -dataset_files "$files" -save_path "$save" -epochs "$pre_epochs" -resume $flags
$launch Prevalid.py -dataset_files "$files" -save_path "$save" $flags
$launch Pretest.py -dataset_files "$files" -save_path "$save" $flags
# -pretrained_model with a folder takes the pretrain epoch that Prevalid.py named best
$launch Train.py -dataset_files "$files" -save_path "$save" -epochs "$train_epochs" -pretrained_model "$save" -resume $flags
$launch Valid.py -dataset_files "$files" -save_path "$save" $flags
$launch Test.py -dataset_files "$files" -save_path "$save" $flags

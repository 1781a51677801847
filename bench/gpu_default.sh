#!/usr/bin/env bash
# The shipped default model's GPU run: the default recipe fed fresh captchas (--online) by the
# machine's cores, fine-tuned from the shipped model, sized to a wall-time budget.
#
#   OUT=dir bash bench/gpu_default.sh [TRAIN_SECONDS] [INIT_MODEL]
#
# 1. A short smoke run (auto precision, then fp32 if that fails) proves the CUDA path and
#    measures how many captchas per second the generating workers feed the GPU, on its second
#    epoch: the first one pays the workers' start.
# 2. The main run gets as many 100,000-captcha epochs as that rate fits into TRAIN_SECONDS
#    (default 420), so its one-cycle schedule ends inside the budget.
# Writes to $OUT: gpu.txt (machine), smoke.log, train.log, gpu.pkl and gpu_run/ (history, last).
# The model is then measured on the CPU with bench/accuracy.py (docs/BENCHMARKS.md).
set -u
budget=${1:-420}
init=${2:-captchakit/models/default.pkl}
out=${OUT:?set OUT to the folder that receives the results}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
workers=$(($(nproc) > 3 ? $(nproc) - 2 : 1))
device=${DEVICE:-cuda} epoch=${EPOCH:-100000}  # DEVICE=cpu EPOCH=2000: a dry run of this script
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "cores $(nproc), workers $workers, $(python3 -c 'import torch; print("torch", torch.__version__)')"
} | tee "$out/gpu.txt"

smoke() {  # smoke PRECISION: two epochs of 14 batches per worker, into /tmp/smoke
    rm -rf /tmp/smoke && mkdir -p /tmp/smoke
    python3 captcha_train.py --online --online-size $((workers * 128 * 14)) --epochs 2 --online-val 256 \
        --workers "$workers" --device "$device" --precision "$1" --init-from "$init" \
        --model /tmp/smoke/s.pkl >>"$out/smoke.log" 2>&1
}
precision=auto
smoke auto || { precision=fp32; smoke fp32; } || { echo "smoke failed: see smoke.log"; tail -30 "$out/smoke.log"; exit 1; }
rate=$(python3 -c "import csv; r = list(csv.DictReader(open('/tmp/smoke/s_run/history.csv')))[-1]; print(int($workers * 128 * 14 / float(r['epoch_s'])))")
epochs=$((rate * budget / epoch))
epochs=$((epochs < 2 ? 2 : epochs))
echo "smoke: precision $precision, $rate captchas/s; main run: $epochs epochs of $epoch" | tee -a "$out/gpu.txt"

python3 captcha_train.py --online --online-size "$epoch" --epochs "$epochs" --workers "$workers" --device "$device" \
    --precision "$precision" --init-from "$init" --model "$out/gpu.pkl" >"$out/train.log" 2>&1
status=$?
tr '\r' '\n' <"$out/train.log" | grep -E "^(epoch [0-9]+/[0-9]+  loss|done:|confidence|model:|training on)" | tail -40
exit $status

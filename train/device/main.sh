#!/bin/bash
# The campaign on a lent GPU machine (see train/device/README.md): assembles ../shared/data from
# the staged parts as WAV, installs the carried wheels if an earlier call did not, puts the
# carried five-fold CNN-LSTM run (trained on the CPU) in place, runs train/campaign.py until
# DEADLINE seconds from now, and leaves the reports and the models to ship in $OUT.
#   Use: bash train/device/main.sh PARALLEL DEADLINE_S GROUPS
set -u
parallel=${1:-5}
deadline=${2:-480}
groups=${3:-cnn-lstm-10hz-denoise,table2,two-step,cnn-lstm-20hz,cnn5-10hz,cnn5-20hz,cnn-lstm-10hz-denoise-all,two-step-all}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/stage
for part in 1 2 3 4; do
  [ -f /tmp/stage/data.part$part ] || cp .dev$part/data.part$part /tmp/stage/ || { echo "part $part missing"; exit 3; }
done
if [ ! -d /tmp/site/silero_vad ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .dev1/wheels/*.whl || exit 4
fi
started=$(date +%s)
if [ ! -d /tmp/sd/data ]; then
  mkdir -p /tmp/sd && cat /tmp/stage/data.part1 /tmp/stage/data.part2 /tmp/stage/data.part3 \
    /tmp/stage/data.part4 | tar -x -C /tmp/sd || exit 5
  chmod -R u+w /tmp/sd && python3 train/device/flac_to_wav.py /tmp/sd/data || exit 6
fi
export SERCLI_FFMPEG=$PWD/train/device/ffmpeg_wav.py
chmod +x "$SERCLI_FFMPEG"
mkdir -p /tmp/runs/cnn-lstm-10hz && cp -r .dev4/r3/* /tmp/runs/cnn-lstm-10hz/
echo "data ready in $(( $(date +%s) - started )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
lscpu | grep -E "Model name|^CPU\(s\)" >> "$OUT/gpu.txt"
python3 train/campaign.py /tmp/sd/data --runs /tmp/runs --device cuda --parallel "$parallel" --workers 16 \
  --eval-workers 6 --deadline $(( deadline - ($(date +%s) - started) )) --groups "$groups" > "$OUT/campaign.log" 2>&1
status=$?
cd /tmp/runs && tar -czf "$OUT/results.tar.gz" --exclude='*.pt' --exclude='*.pt.sha256' --exclude=cache .
# The models, a tar each (at most 8 files come back, 16 MiB each; results.tar.gz is one).
n=0
for run in cnn-lstm-10hz-denoise/all cnn-lstm-10hz-denoise/fold? two-step/fold? two-step-all/all; do
  if [ -f "$run/model.pt" ] && [ $n -lt 7 ]; then
    tar -cf "$OUT/$(echo "$run" | tr / -).tar" "$run"/model.pt* "$run"/metrics.json && n=$((n + 1))
  fi
done
tail -5 "$OUT/campaign.log"
exit $status

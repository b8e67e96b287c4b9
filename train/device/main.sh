#!/bin/bash
# The campaign on a lent GPU machine (see train/device/README.md): assembles ../shared/data from
# the staged parts as WAV, installs the carried packages if an earlier call did not, runs
# train/campaign.py until DEADLINE seconds from now, and leaves the reports and the models to
# ship in $OUT.
#   Use: bash train/device/main.sh PARALLEL DEADLINE_S GROUPS [RECIPE]
# A trial elsewhere: DEVICE=cpu EPOCHS=1 OUT=/tmp/out bash train/device/main.sh 1 300 cnn5-20hz
set -u
parallel=${1:-5}
deadline=${2:-480}
groups=${3:-cnn-lstm-10hz,cnn-lstm-10hz-all,cnn5-10hz,cnn-lstm-20hz,cnn5-20hz,two-step}
recipe=${4:-context}
started=$(date +%s)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
bash train/device/stage.sh || exit $?
if [ ! -d /tmp/sd/data ]; then
  mkdir -p /tmp/sd && cat /tmp/stage/data.part* | tar -x -C /tmp/sd --strip-components=1 || exit 5
  chmod -R u+w /tmp/sd && python3 train/device/flac_to_wav.py /tmp/sd/data || exit 6
fi
export SERCLI_FFMPEG=$PWD/train/device/ffmpeg_wav.py
chmod +x "$SERCLI_FFMPEG"
for carried in .dev*/runs/*; do  # finished runs to reuse (train resumes and skips them)
  [ -d "$carried" ] && mkdir -p /tmp/runs && cp -rn "$carried" /tmp/runs/
done
echo "data ready in $(( $(date +%s) - started )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
lscpu | grep -E "Model name|^CPU\(s\)" >> "$OUT/gpu.txt"
python3 train/campaign.py /tmp/sd/data --runs /tmp/runs --device "${DEVICE:-cuda}" ${EPOCHS:+--epochs $EPOCHS} \
  --parallel "$parallel" --workers 16 \
  --eval-workers 6 --deadline $(( deadline - ($(date +%s) - started) )) --groups "$groups" --recipe "$recipe" \
  > "$OUT/campaign.log" 2>&1
status=$?
cd /tmp/runs && tar -czf "$OUT/results.tar.gz" --exclude='*.pt' --exclude='*.pt.sha256' --exclude=cache .
# The models, a tar each: at most 8 files come back, 16 MiB each, and gpu.txt, campaign.log
# and results.tar.gz are three of them (on 2026-11-26 six model tars pushed results.tar.gz out;
# fetch further models in a next call while the machine is warm).
n=0
for run in cnn-lstm-10hz/all cnn-lstm-10hz/fold? cnn-lstm-10hz-denoise/all two-step/fold?; do
  if [ -f "$run/model.pt" ] && [ $n -lt 5 ]; then
    tar -cf "$OUT/$(echo "$run" | tr / -).tar" "$run"/model.pt* "$run"/metrics.json && n=$((n + 1))
  fi
done
tail -12 "$OUT/campaign.log"
exit $status

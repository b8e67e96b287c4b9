#!/bin/bash
# Starts the CUDA multi-process service, so the campaign's training processes run their kernels
# side by side instead of time-sliced, and keeps it only if four probe processes then run at
# least as fast as they do without it.
#   Use: bash train/device/mps.sh
export PYTHONPATH=$PWD
probe() {  # steps per second of four processes together
  python3 - <<'PY'
import subprocess, sys, time
t = time.perf_counter()
kids = [subprocess.Popen([sys.executable, "train/device/probe.py", "--child", "cnn-lstm"], stdout=subprocess.PIPE,
                         text=True) for _ in range(4)]
ms = [float(k.communicate()[0].strip() or "nan") for k in kids]
print(f"{4000 / (sum(ms) / 4):.0f}")
PY
}
python3 train/device/probe.py --layouts
without=$(probe)
nvidia-cuda-mps-control -d || { echo "MPS did not start; without it: $without steps/s"; exit 0; }
with=$(probe)
echo "four processes: $without steps/s without MPS, $with with it"
if ! python3 -c "import sys; sys.exit(0 if float('$with') >= float('$without') else 1)"; then
  echo quit | nvidia-cuda-mps-control
  echo "MPS stopped"
fi

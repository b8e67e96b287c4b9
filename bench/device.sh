#!/bin/bash
# bench/run.py on a lent GPU machine, all but the 500 clips: the 60-minute programme (default,
# --denoise, fixed segmentation, against ffmpeg alone), the 180-minute one, and features and
# network on the CPU and the GPU. The machine has no ffmpeg and reaches no network: the static
# ffmpeg that imageio-ffmpeg installs here, the programme, the wheels the machine's Python 3.12
# lacks (praat-parselmouth, ffmpeg-python and its `future`) and silero-vad's voice activity model
# travel as one tar cut into parts, one part carried per call while the
# machine stays warm (train/device/README.md, "Benchmarks"):
#   here:  bash bench/device.sh pack      # writes .devpack/bench.part00, 01, ...
#   there: bash train/device/stage.sh     # each call but the last, carrying its part
#          bash bench/device.sh           # the last call, carrying the last part
# The table lands in $OUT/GPU.md.
set -u
if [ "${1:-}" = "pack" ]; then
  python3 -c "import sys; from pathlib import Path; sys.path.insert(0, 'bench'); import run; run.MEDIA.mkdir(exist_ok=True); run._programme(Path('${2:-../shared/data}'), 60)" || exit 2
  ffmpeg=$(python3 -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())") || exit 2
  mkdir -p .devpack /tmp/bench-pack && rm -rf .devpack/bench.part* /tmp/bench-pack/*.whl /tmp/bench-pack/site
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" \
    --platform manylinux2014_x86_64 -d /tmp/bench-pack praat-parselmouth ffmpeg-python future || exit 2
  # silero-vad's wheel drags torchaudio in on import: only the model sercli reads travels
  vad=$(python3 -c "from importlib import resources; print(resources.files('silero_vad.data'))") || exit 2
  mkdir -p /tmp/bench-pack/site/silero_vad/data
  touch /tmp/bench-pack/site/silero_vad/__init__.py /tmp/bench-pack/site/silero_vad/data/__init__.py
  cp "$vad/silero_vad_16k_sequence.onnx" /tmp/bench-pack/site/silero_vad/data/ || exit 2
  if [ ! -s /tmp/bench-pack/ffmpeg.xz ] || [ "$ffmpeg" -nt /tmp/bench-pack/ffmpeg.xz ]; then  # 50 MB, 80 s
    xz -T0 -6 -c "$ffmpeg" > /tmp/bench-pack/ffmpeg.xz.part && mv /tmp/bench-pack/ffmpeg.xz.part /tmp/bench-pack/ffmpeg.xz || exit 2
  fi
  cp bench/media/programme-60.mp4 /tmp/bench-pack/
  # 44 MB parts: each call's working tree (about 16 MB) and one part stay under the 64 MiB carried
  tar -cf - -C /tmp/bench-pack . | split -b 44000000 -d - .devpack/bench.part
  ls -la .devpack
  exit 0
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
bash train/device/stage.sh > /dev/null || exit $?
if [ ! -x /tmp/bench/ffmpeg ]; then
  mkdir -p /tmp/bench && cat /tmp/stage/bench.part* | tar -x -C /tmp/bench || exit 5
  xz -d -c /tmp/bench/ffmpeg.xz > /tmp/bench/ffmpeg && chmod +x /tmp/bench/ffmpeg || exit 5
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/bench/*.whl || exit 4
  cp -r /tmp/bench/site/silero_vad /tmp/site/ || exit 4
fi
python3 -c "import ffmpeg, parselmouth, silero_vad.data, sercli.cli" || exit 4
mkdir -p bench/media /tmp/site/bin
cp -n /tmp/bench/programme-60.mp4 bench/media/
printf '#!/bin/sh\nexec python3 -m sercli "$@"\n' > /tmp/site/bin/sercli && chmod +x /tmp/site/bin/sercli
export PATH=/tmp/site/bin:$PATH SERCLI_FFMPEG=/tmp/bench/ffmpeg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 bench/run.py /nonexistent ${BENCH_PARTS:---only analyze --only long --only peers} --out "$OUT/GPU.md"

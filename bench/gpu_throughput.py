"""The GPU's throughput for sercli's features and network by batch size, and how it splits between
the two: what `--batch-size` to use on a GPU, and how far the issue's 20,000x target is.

    python bench/gpu_throughput.py            # on a machine with CUDA; prints a markdown table

Input: 4,096 segments of 3 s of noise (content does not change the work), handed over as NumPy
arrays, as the pipeline hands them; each figure is the best of three passes after a warm-up.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sercli.features import log_spectrograms
from sercli.weights import load_model

SEGMENTS = 4096
SIZES = (32, 128, 256, 512, 1024, 2048, 4096)


def best_of(passes: int, function) -> float:
    times = []
    for _ in range(passes + 1):  # the first is the warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def main() -> None:
    torch.backends.cudnn.benchmark = True
    model = load_model(device="cuda")
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(48000).astype(np.float32) * 0.05 for _ in range(SEGMENTS)]
    frames = model.features.n_frames
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {model.name}, {model.precision}")
    print("| batch | features | network | both | both, x realtime |")
    print("|---|---|---|---|---|")
    for size in SIZES:
        batches = [audio[i : i + size] for i in range(0, SEGMENTS, size)]
        n = torch.full((size,), frames)
        spectrograms = [log_spectrograms(b, model.features, model.device) for b in batches]
        features = best_of(3, lambda: [log_spectrograms(b, model.features, model.device) for b in batches])
        network = best_of(3, lambda: [model.posteriors(s, n) for s in spectrograms])
        both = best_of(3, lambda: [model.posteriors(log_spectrograms(b, model.features, model.device), n)
                                   for b in batches])
        per = 1000 / SEGMENTS
        print(f"| {size} | {features * per:.3f} ms | {network * per:.3f} ms | {both * per:.3f} ms | "
              f"{3 * SEGMENTS / both:.0f}x |", flush=True)
        del spectrograms


if __name__ == "__main__":
    main()

"""What a lent GPU machine has, and how fast one training step runs there, alone and with
several processes sharing the GPU: sizes the campaign (train/campaign.py --parallel).

    python train/device/probe.py [--processes 8]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def steps(topology: str, n: int, benchmark: bool = False, varying: bool = False, channels_last: bool = False) -> float:
    """Seconds per training step of 32 segments; varying: a new random length (multiple of 8
    frames, as batches are cut) every step, so cuDNN's autotuning is paid for each new shape."""
    import torch

    from sercli.model import EmotionNet, ModelConfig

    torch.backends.cudnn.benchmark = benchmark
    device = torch.device("cuda")
    net = EmotionNet(ModelConfig(topology=topology)).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(32, 400, 300, device=device)
    frames = torch.full((32,), 300)
    y = torch.randint(0, 4, (32,), device=device)
    lengths = torch.randint(1, 38, (n + 10,)) * 8
    for i in range(n + 10):
        if i == 10:
            torch.cuda.synchronize()
            started = time.perf_counter()
        if varying:
            frames = torch.full((32,), int(lengths[i]))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x, frames).float(), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--child", default=None)
    parser.add_argument("--layouts", action="store_true",
                        help="only compare the memory layouts: ms per step, one process, lengths varying")
    args = parser.parse_args()
    if args.child:
        print(f"{steps(args.child, 100) * 1000:.2f}", flush=True)
        return
    if args.layouts:
        for topology in ("cnn-lstm", "cnn5"):
            for channels_last in (False, True, False, True):  # twice each: the first pays cuDNN's tuning
                ms = steps(topology, 150, True, True, channels_last) * 1000
                print(f"{topology}, channels_last {channels_last}: {ms:.2f} ms per step (150 steps, lengths varying)")
        return
    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
          f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPUs")
    print(f"ffmpeg on PATH: {shutil.which('ffmpeg')}; MPS control: {shutil.which('nvidia-cuda-mps-control')}")
    for module in ("parselmouth", "silero_vad", "soundfile", "onnxruntime", "ffmpeg", "click", "rich", "tqdm"):
        try:
            __import__(module)
            print(f"import {module}: ok")
        except Exception as exc:  # report every missing piece in one run
            print(f"import {module}: FAILED {exc}")
    for topology in ("cnn-lstm", "cnn5"):
        print(f"{topology}: {steps(topology, 50) * 1000:.2f} ms per step of 32 (one process)")
    for benchmark in (False, True):
        print(f"cnn-lstm, lengths varying, cudnn.benchmark {benchmark}: "
              f"{steps('cnn-lstm', 300, benchmark, True) * 1000:.2f} ms per step (300 steps, tuning included)")
    for count in [c for c in (4, args.processes) if c]:
        started = time.perf_counter()
        children = [subprocess.Popen([sys.executable, __file__, "--child", "cnn-lstm"], stdout=subprocess.PIPE,
                                     text=True) for _ in range(count)]
        each = [float(c.communicate()[0].strip() or "nan") for c in children]
        wall = time.perf_counter() - started
        print(f"cnn-lstm, {count} processes: {count * 100 / wall:.0f} steps/s in all "
              f"({wall:.1f} s with start-up), per process {sum(each) / len(each):.2f} ms per step")


if __name__ == "__main__":
    main()

"""The paper's Table 2 from `sercli evaluate --noise ... -o FILE.json` outputs of a normal and a
denoising model: per noise condition and SNR, utterance WA / UA of both, and the means over the
noise categories with the issue's targets.

    python train/table2.py runs/table2-0.json runs/table2-5.json ...

Each JSON is `evaluate -o` with two --model options (normal first, modified second).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def overall(scored: dict) -> tuple[float, float]:
    mean = scored.get("mean") or next(iter(scored["runs"].values()))["utterance"]
    return 100 * mean["wa"], 100 * mean["ua"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    rows: dict[str, tuple] = {}
    for path in args.files:
        normal, modified = json.loads(path.read_text())
        for label, scored in normal["conditions"].items():
            rows[label] = overall(scored) + overall(modified["conditions"][label])
    print("| condition | normal WA | normal UA | modified WA | modified UA |")
    print("|---|---|---|---|---|")
    for label, (nw, nu, mw, mu) in rows.items():
        print(f"| {label} | {nw:.1f} | {nu:.1f} | {mw:.1f} | {mu:.1f} |")
    clean = rows.get("clean")
    snrs = sorted({label.rsplit(" ", 2)[1] for label in rows if label.endswith(" dB")}, key=float)
    print("\nMean over the noise conditions (every category and babble), utterance level:\n")
    print("| SNR | normal WA | normal UA | modified WA | modified UA | modified UA - normal UA | "
          "modified clean UA - noisy UA |")
    print("|---|---|---|---|---|---|---|")
    if clean:
        print(f"| clean | {clean[0]:.1f} | {clean[1]:.1f} | {clean[2]:.1f} | {clean[3]:.1f} | "
              f"{clean[3] - clean[1]:+.1f} | |")
    for snr in snrs:
        picked = [v for label, v in rows.items() if label.endswith(f" {snr} dB")]
        nw, nu, mw, mu = (sum(v[i] for v in picked) / len(picked) for i in range(4))
        drop = f"{clean[3] - mu:.1f}" if clean else ""
        print(f"| {snr} dB ({len(picked)} conditions) | {nw:.1f} | {nu:.1f} | {mw:.1f} | {mu:.1f} | {mu - nu:+.1f} | "
              f"{drop} |")


if __name__ == "__main__":
    main()

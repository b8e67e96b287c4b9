"""Turn a copy of ../shared/data into 16-bit WAV (same samples) for a machine without ffmpeg,
whose stand-in (ffmpeg_wav.py) then decodes each file with Python's standard library alone:
every .flac becomes a .wav beside it, and each manifest.csv's paths follow.

    python train/device/flac_to_wav.py /tmp/sd/data
"""

import csv
import sys
from multiprocessing import Pool
from pathlib import Path

import soundfile


def convert(path: Path) -> None:
    samples, rate = soundfile.read(path, dtype="int16")
    soundfile.write(path.with_suffix(".wav"), samples, rate, subtype="PCM_16")
    path.unlink()


def main(root: Path) -> None:
    with Pool(16) as pool:
        pool.map(convert, sorted(root.rglob("*.flac")), chunksize=32)
    for manifest in root.rglob("manifest.csv"):
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            if row.get("path", "").endswith(".flac"):
                row["path"] = row["path"][: -len(".flac")] + ".wav"
        with open(manifest, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

#!/usr/bin/env -S python3 -S -E
"""A stand-in for ffmpeg on a machine that has none (the lent GPU machine), for the one command
sercli.audio runs to decode a file: it reads 16 kHz mono 16-bit WAV (see flac_to_wav.py) with
the standard library alone, so each decode costs a bare interpreter start, and writes float32
samples (int16 / 32768) to stdout: bit-identical to ffmpeg's output for such files. Anything
else is refused with a one-line message, as ffmpeg would.

Use: SERCLI_FFMPEG=train/device/ffmpeg_wav.py sercli train ...
"""

import array
import sys
import wave


def main(argv: list[str]) -> int:
    if "-i" not in argv:
        print("ffmpeg_wav: no -i", file=sys.stderr)
        return 1
    path = argv[argv.index("-i") + 1]
    path = path[len("file:"):] if path.startswith("file:") else path
    try:
        with wave.open(path, "rb") as f:
            shape = (f.getframerate(), f.getnchannels(), f.getsampwidth())
            data = f.readframes(f.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        print(f"{path}: Invalid data found when processing input ({exc})", file=sys.stderr)
        return 1
    if shape != (16000, 1, 2):
        print(f"{path}: ffmpeg_wav reads 16 kHz mono 16-bit only ({shape})", file=sys.stderr)
        return 1
    samples = array.array("h")
    samples.frombytes(data)
    if sys.byteorder != "little":
        samples.byteswap()
    out = array.array("f", [x / 32768.0 for x in samples])
    sys.stdout.buffer.write(out.tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

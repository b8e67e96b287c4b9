"""The inputs of `sercli analyze`: paths, folders (their media files), and `-` for a list of
paths on stdin, each input once. Torch-free."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

# How media files begin: WAV, FLAC, Ogg, ID3-tagged MP3, Matroska/WebM, AIFF, AMR, ASF/WMA, and
# bare MPEG audio frames (MP3, ADTS AAC); MP4/MOV say "ftyp" at byte 4.
MEDIA_SIGNATURES = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\x1a\x45\xdf\xa3", b"FORM", b"#!AMR", b"0&\xb2u",
                    b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xf1", b"\xff\xf9")


def media_in(folder: Path, recursive: bool) -> Iterator[Path]:
    """The media files of `folder` (and of its subfolders if `recursive`), in name order."""
    from .audio import MEDIA_EXTENSIONS

    if recursive:
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                if Path(name).suffix.lower() in MEDIA_EXTENSIONS:
                    yield Path(root) / name
    else:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in MEDIA_EXTENSIONS:
                yield path


def inputs(paths: tuple[str, ...], recursive: bool) -> Iterator[str]:
    """Every input path once (the same file given twice counts once), lazily: stdin is read
    as it arrives."""
    seen = set()
    for path in _given_inputs(paths, recursive):
        if os.path.abspath(path) not in seen:
            seen.add(os.path.abspath(path))
            yield path


def _given_inputs(paths: tuple[str, ...], recursive: bool) -> Iterator[str]:
    for given in paths:
        if given == "-":
            for line in sys.stdin.buffer:
                line = os.fsdecode(line.rstrip(b"\r\n"))  # any bytes a file name may hold
                if line.strip():
                    yield line
        elif Path(given).is_dir():
            for path in media_in(Path(given), recursive):
                yield str(path)
        else:
            yield given


def stdin_is_not_paths() -> bool:
    """Whether what waits on stdin is not a list of paths (audio piped in, say): NUL bytes, a
    first block that is not UTF-8, or a known media signature. Looks without consuming."""
    buffer = sys.stdin.buffer
    if hasattr(buffer, "peek"):
        head = buffer.peek(4096)[:4096]
    elif buffer.seekable():
        where = buffer.tell()
        head = buffer.read(4096)
        buffer.seek(where)
    else:
        return False
    if b"\0" in head or head.startswith(MEDIA_SIGNATURES) or head[4:8] == b"ftyp":
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return False  # just a character cut at the block's end
        # Names in other encodings (Latin-1 on old disks) are paths still, if they exist.
        lines = [line.rstrip(b"\r") for line in head.split(b"\n")[:-1]]
        return not lines or not all(os.path.lexists(line) for line in lines if not _is_utf8(line))
    return False


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

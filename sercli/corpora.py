"""Labelled speech for training and evaluation: corpus readers and speaker folds."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .model import LABELS

# Spellings of the four classes found in corpora and manifests.
LABEL_ALIASES = {
    "angry": "angry", "anger": "angry", "ang": "angry",
    "happy": "happy", "happiness": "happy", "hap": "happy", "joy": "happy",
    "neutral": "neutral", "neu": "neutral",
    "sad": "sad", "sadness": "sad",
}


class CorpusError(Exception):
    """A corpus or manifest cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Utterance:
    path: str
    label: str  # one of LABELS
    speaker: str
    corpus: str
    fold: int | None = None


def read_manifest(path: str | Path, corpus: str | None = None) -> list[Utterance]:
    """A CSV with columns path, emotion, speaker and optionally fold (others are ignored).

    Relative paths are taken from the manifest's folder. Rows whose emotion is not one of the
    four classes are skipped; a row with a missing field or file is an error naming the line.
    """
    path = Path(path)
    root = path.parent
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read manifest ({exc.strerror})") from exc
    utterances = []
    with handle:
        reader = csv.DictReader(handle)
        missing = {"path", "emotion", "speaker"} - set(reader.fieldnames or [])
        if missing:
            raise CorpusError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            if not (row.get("path") and row.get("emotion") and row.get("speaker")):
                raise CorpusError(f"{path}:{line}: empty path, emotion or speaker")
            label = LABEL_ALIASES.get(row["emotion"].strip().lower())
            if label is None:
                continue
            audio = Path(row["path"])
            audio = audio if audio.is_absolute() else root / audio
            if not audio.is_file():
                raise CorpusError(f"{path}:{line}: audio file {audio} does not exist")
            fold = row.get("fold")
            try:
                fold_number = int(fold) if fold not in (None, "") else None
            except ValueError as exc:
                raise CorpusError(f"{path}:{line}: fold {fold!r} is not a number") from exc
            utterances.append(Utterance(str(audio), label, row["speaker"].strip(),
                                        row.get("corpus") or corpus or path.parent.name, fold_number))
    if not utterances:
        raise CorpusError(f"{path}: no utterance of the classes {', '.join(LABELS)}")
    return utterances


def read_folds(path: str | Path) -> dict[str, int]:
    """speaker -> fold from a CSV with columns speaker, fold."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["speaker"].strip(): int(row["fold"]) for row in csv.DictReader(handle)}
    except (OSError, KeyError, ValueError) as exc:
        raise CorpusError(f"{path}: cannot read speaker folds ({exc})") from exc


def assign_folds(utterances: list[Utterance], folds: dict[str, int]) -> list[Utterance]:
    missing = sorted({u.speaker for u in utterances} - set(folds))
    if missing:
        raise CorpusError(f"speakers without a fold: {', '.join(missing[:5])}")
    return [Utterance(u.path, u.label, u.speaker, u.corpus, folds[u.speaker]) for u in utterances]


def validation_speakers(utterances: list[Utterance], test_fold: int | None, share: float = 0.15,
                        seed: int = 0) -> set[str]:
    """Speakers held out for model selection, drawn per corpus from outside the test fold."""
    import random

    chosen: set[str] = set()
    for corpus in sorted({u.corpus for u in utterances}):
        speakers = sorted({u.speaker for u in utterances if u.corpus == corpus and u.fold != test_fold})
        if len(speakers) < 2:
            continue
        count = max(1, round(share * len(speakers)))
        chosen.update(random.Random(f"{seed}-{corpus}").sample(speakers, count))
    return chosen

"""Labelled speech for training and evaluation: corpus readers and speaker folds."""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

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
    voice: str | None = None  # the speaker's voice type, "female" or "male", where the corpus says (VOICES)
    speed: float = 1.0  # a speed-perturbed training copy (sercli train --augment-speed): tempo and pitch times this
    channel: str = ""  # a channel copy (sercli train --augment-channel): the speech through this codec or room
    then: tuple[str, str] | None = None  # a pair copy (sercli train --augment-pairs): (path, label) played after it

    @property
    def perturbed(self) -> bool:
        """Whether this is a training copy (another speed or channel, or a pair), not the recording itself."""
        return self.speed != 1 or bool(self.channel) or self.then is not None

    @property
    def _copy(self) -> str:
        return ((f"@speed={self.speed:g}" if self.speed != 1 else "") + (f"@{self.channel}" if self.channel else "")
                + ("@pairs" if self.then is not None else ""))

    @property
    def key(self) -> str:
        """What names the audio as heard: the path, with the speed or channel of a copy, or the
        utterance a pair copy plays after it."""
        return self.path + self._copy + (f"+{self.then[0]}" if self.then is not None else "")

    @property
    def talker(self) -> str:
        """The voice a speaker context pools: the speaker, or a copy's speaker at that speed
        (who sounds like another person: lower or higher, slower or faster) or through that
        channel (as a film's context is all one channel); a speaker's pair copies pool apart."""
        return self.speaker + self._copy


def pair_copies(utterances: list[Utterance]) -> list[Utterance]:
    """A pair copy of each recorded utterance (Utterance.then): the utterance followed by another
    of its speaker's, the partner drawn by a hash of the two paths, so that the pairs are the same
    on every run, whatever the order of the manifest. A speaker with one utterance has no pairs."""
    recorded = [u for u in utterances if not u.perturbed]
    by_speaker: dict[str, list[Utterance]] = {}
    for utterance in recorded:
        by_speaker.setdefault(utterance.speaker, []).append(utterance)
    pairs = []
    for utterance in recorded:
        others = [u for u in by_speaker[utterance.speaker] if u.path != utterance.path]
        if others:
            partner = min(others, key=lambda u: hashlib.sha256(f"{utterance.path}\n{u.path}".encode()).digest())
            pairs.append(replace(utterance, then=(partner.path, partner.label)))
    return pairs


VOICES = ("male", "female")  # the voice types a voice-typed context tells apart (sercli.context.Voices)
VOICE_ALIASES = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female"}


def _voice(value: str | None) -> str | None:
    """A gender column's value as one of VOICES, or None where it is empty or says neither."""
    return VOICE_ALIASES.get((value or "").strip().lower())


def _table(path: Path, columns: set[str], what: str, delimiter: str = ",") -> Iterator[tuple[int, dict]]:
    """(line number, row) of a CSV/TSV file that must have `columns`; errors name the file."""
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    with handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        missing = columns - set(reader.fieldnames or [])
        if missing:
            raise CorpusError(f"{path}: {what} lacks column(s) {', '.join(sorted(missing))}")
        yield from enumerate(reader, start=2)


def read_manifest(path: str | Path, corpus: str | None = None) -> list[Utterance]:
    """A CSV with columns path, emotion, speaker and optionally fold and gender (female/male: the
    voice type a voice-typed context learns from); others are ignored.

    Relative paths are taken from the manifest's folder. Rows whose emotion is not one of the
    four classes are skipped; a row with a missing field or file is an error naming the line.
    """
    path = Path(path)
    root = path.parent
    utterances = []
    for line, row in _table(path, {"path", "emotion", "speaker"}, "manifest"):
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
                                    row.get("corpus") or corpus or path.parent.name, fold_number,
                                    _voice(row.get("gender"))))
    if not utterances:
        raise CorpusError(f"{path}: no utterance of the classes {', '.join(LABELS)}")
    return utterances


def read_folds(path: str | Path) -> dict[str, int]:
    """speaker -> fold from a CSV with columns speaker, fold."""
    path = Path(path)
    folds = {}
    for line, row in _table(path, {"speaker", "fold"}, "speaker folds"):
        try:
            folds[row["speaker"].strip()] = int(row["fold"])
        except (AttributeError, ValueError) as exc:
            raise CorpusError(f"{path}:{line}: bad speaker or fold ({row['speaker']!r}, {row['fold']!r})") from exc
    return folds


def assign_folds(utterances: list[Utterance], folds: dict[str, int]) -> list[Utterance]:
    missing = sorted({u.speaker for u in utterances} - set(folds))
    if missing:
        raise CorpusError(f"speakers without a fold: {', '.join(missing[:5])}")
    return [replace(u, fold=folds[u.speaker]) for u in utterances]


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


@dataclass(frozen=True)
class Split:
    """One training run of a cross-validation: whose speech tests, whose selects the model."""

    name: str  # run folder: fold3, fold2-valid-Session2-M, all
    fold: int | None
    test: frozenset[str]  # test speakers (empty for a model trained on every fold)
    valid: frozenset[str]  # validation speakers, never in test
    role: int = 0  # validating inside a fold: which of the fold's speakers (sorted) validates


def plan_splits(utterances: list[Utterance], fold: str = "all", validation: str = "auto",
                seed: int = 0) -> list[Split]:
    """The runs of `--fold all|none|N` under a validation scheme.

    validation "train": validation speakers are drawn from the training folds (about 15% per
    corpus) and the whole held-out fold tests. "fold": inside the held-out fold each speaker in
    turn validates while the others test, so IEMOCAP's leave-one-session-out gives two runs per
    session with the roles swapped (the paper's protocol). "auto": "fold" when every utterance is
    IEMOCAP's, else "train".
    """
    folds = sorted({u.fold for u in utterances if u.fold is not None})
    if fold == "none":
        return [Split("all", None, frozenset(), frozenset(validation_speakers(utterances, None, seed=seed)))]
    if fold == "all":
        chosen = folds
    elif fold.isdigit() and int(fold) in folds:
        chosen = [int(fold)]
    else:
        raise CorpusError(f"--fold {fold}: expected all, none or one of {folds or 'no folds (give --folds)'}")
    if not chosen:
        raise CorpusError("no folds: give --folds, a manifest with a fold column, or --fold none")
    if validation == "auto":
        validation = "fold" if all(u.corpus == "iemocap" for u in utterances) else "train"
    if validation not in ("train", "fold"):
        raise CorpusError(f"validation must be auto, train or fold, not {validation!r}")
    splits = []
    for k in chosen:
        members = sorted({u.speaker for u in utterances if u.fold == k})
        if validation == "train":
            splits.append(Split(f"fold{k}", k, frozenset(members),
                                frozenset(validation_speakers(utterances, k, seed=seed))))
            continue
        if len(members) < 2:
            raise CorpusError(f"fold {k} has {len(members)} speaker(s): validating inside a fold needs two or more")
        for role, speaker in enumerate(members):
            splits.append(Split(f"fold{k}-valid-{speaker}", k, frozenset(members) - {speaker},
                                frozenset({speaker}), role))
    return splits


RAVDESS_EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}  # of 01-08
AUDIO_SUFFIXES = (".wav", ".flac")


def read_ravdess(root: str | Path) -> list[Utterance]:
    """RAVDESS speech as distributed: Actor_NN/MM-VV-EE-II-SS-RR-NN.wav (or .flac).

    The label is the EE field of the file name; song files (vocal channel 02) are skipped.
    """
    root = Path(root)
    files = sorted(p for p in root.glob("Actor_*/*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise CorpusError(f"{root}: no Actor_*/ audio files (is this the RAVDESS speech folder?)")
    utterances = []
    for path in files:
        fields = path.stem.split("-")
        if len(fields) != 7 or not all(f.isdigit() for f in fields):
            raise CorpusError(f"{path}: not a RAVDESS file name (MM-VV-EE-II-SS-RR-NN)")
        if fields[1] != "01":
            continue  # song
        label = RAVDESS_EMOTIONS.get(fields[2])
        if label is not None:
            voice = "male" if int(fields[6]) % 2 else "female"  # RAVDESS: odd actors male, even female
            utterances.append(Utterance(str(path), label, f"ravdess-{fields[6]}", "ravdess", voice=voice))
    return utterances


def read_nemo(root: str | Path) -> list[Utterance]:
    """nEMO as distributed: data.tsv (file_id, emotion, ..., speaker_id) and samples/<file_id>."""
    root = Path(root)
    table = root / "data.tsv"
    utterances = []
    for line, row in _table(table, {"file_id", "emotion", "speaker_id"}, "table", delimiter="\t"):
        label = LABEL_ALIASES.get((row["emotion"] or "").strip().lower())
        if label is None:
            continue
        audio = _existing(root / "samples" / row["file_id"].strip())
        if audio is None:
            raise CorpusError(f"{table}:{line}: audio file samples/{row['file_id'].strip()} does not exist")
        utterances.append(Utterance(str(audio), label, f"nemo-{row['speaker_id'].strip()}", "nemo",
                                    voice=_voice(row.get("gender"))))
    if not utterances:
        raise CorpusError(f"{table}: no utterance of the classes {', '.join(LABELS)}")
    return utterances


def _existing(path: Path) -> Path | None:
    """The file, or the same name with the other audio suffix (corpora get re-encoded)."""
    for candidate in [path] + [path.with_suffix(s) for s in AUDIO_SUFFIXES]:
        if candidate.is_file():
            return candidate
    return None


IEMOCAP_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(Ses\d\d[FM]_\S+)\s+(\w+)\s+\[")
IEMOCAP_CLASSES = {"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad"}


def read_iemocap(root: str | Path, scripted: bool = False, excited_as_happy: bool = False) -> list[Utterance]:
    """IEMOCAP release layout: labels from SessionN/dialog/EmoEvaluation/*.txt, audio from
    SessionN/sentences/wav/<dialog>/<utterance>.wav. Improvised dialogs only unless `scripted`.

    Speaker = session and gender of the utterance's speaker (Session1-F); fold = session.
    """
    root = Path(root)
    sessions = sorted(p for p in root.glob("Session[1-5]") if p.is_dir())
    if not sessions:
        raise CorpusError(f"{root}: no Session1..Session5 folders (is this the IEMOCAP release?)")
    classes = dict(IEMOCAP_CLASSES, **({"exc": "happy"} if excited_as_happy else {}))
    utterances = []
    for session in sessions:
        number = int(session.name[-1])
        for labels in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            dialog = labels.stem
            if "impro" not in dialog and not scripted:
                continue
            for line in labels.read_text(encoding="utf-8", errors="replace").splitlines():
                match = IEMOCAP_LINE.match(line)
                if not match:
                    continue
                utterance, code = match.groups()
                label = classes.get(code)
                if label is None:
                    continue
                audio = session / "sentences" / "wav" / dialog / f"{utterance}.wav"
                if not audio.is_file():
                    raise CorpusError(f"{labels}: audio file {audio} does not exist")
                gender = utterance.rsplit("_", 1)[-1][0]  # Ses01F_impro01_M003 -> M
                utterances.append(Utterance(str(audio), label, f"Session{number}-{gender}", "iemocap", number,
                                            _voice(gender)))
    if not utterances:
        raise CorpusError(f"{root}: no IEMOCAP utterance of the classes {', '.join(LABELS)}")
    return utterances


def read_corpus(spec: str, scripted: bool = False, excited_as_happy: bool = False) -> list[Utterance]:
    """NAME=PATH as given to --corpus: manifest (or csv), ravdess, nemo, iemocap (with its options)."""
    name, _, path = spec.partition("=")
    readers = {"manifest": read_manifest, "csv": read_manifest, "ravdess": read_ravdess, "nemo": read_nemo,
               "iemocap": read_iemocap}
    if name not in readers or not path:
        raise CorpusError(f"--corpus {spec}: expected NAME=PATH with NAME one of {', '.join(readers)}")
    if name == "iemocap":
        return read_iemocap(path, scripted=scripted, excited_as_happy=excited_as_happy)
    return readers[name](path)

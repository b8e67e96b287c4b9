"""The `sercli` command line: formats, outputs, inputs, failures, usage errors, models.

Runs in-process through click's CliRunner (stdout and stderr captured apart) with the tiny
random checkpoints of conftest.py; segments come from the bundled example, real speech.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from sercli import __version__
from sercli.cli import main

LABELS = ("angry", "happy", "neutral", "sad")
CSV_HEADER = "file,segment,start_s,end_s,label,confidence,p_angry,p_happy,p_neutral,p_sad"
SEGMENT_KEYS = {"start_s", "end_s", "label", "confidence", "probs"}
MAX_SEGMENT_S = 3.0
# Silero's regions in the example (seconds); the third utterance (4.1 s) is cut in two halves.
EXAMPLE_SEGMENTS = 5
EXAMPLE_DURATION_S = 21.5


# --------------------------------------------------------------------------- helpers


def invoke(*args, input: str | None = None):
    """Run `sercli ARGS...` in-process; stdout and stderr come back separately."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def analyze(model: Path, *args, input: str | None = None):
    return invoke("analyze", "-m", model, *args, input=input)


def parse_csv(text: str) -> tuple[str, list[dict]]:
    lines = text.splitlines()
    assert lines, "no CSV on stdout"
    rows = list(csv.DictReader(io.StringIO(text)))
    return lines[0], rows


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("sercli: error: ")]


def assert_one_line_failure(stderr: str, path) -> str:
    """Exactly one `sercli: error: <path>: ...` line for `path`, and no traceback anywhere."""
    assert "Traceback" not in stderr
    prefix = f"sercli: error: {path}: "
    mine = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(mine) == 1, stderr
    assert len(mine[0]) > len(prefix), "the error line gives no cause"
    return mine[0][len(prefix):]


def check_segment_dict(segment: dict) -> None:
    assert set(segment) == SEGMENT_KEYS
    assert set(segment["probs"]) == set(LABELS)
    assert 0 <= segment["start_s"] < segment["end_s"]
    assert segment["end_s"] - segment["start_s"] <= MAX_SEGMENT_S + 1e-6
    assert sum(segment["probs"].values()) == pytest.approx(1.0, abs=2e-3)
    assert all(0.0 <= p <= 1.0 for p in segment["probs"].values())
    best = max(segment["probs"], key=segment["probs"].get)
    assert segment["probs"][segment["label"]] == pytest.approx(segment["probs"][best], abs=1e-4)
    assert segment["confidence"] == pytest.approx(segment["probs"][segment["label"]], abs=1e-4)


def leftover_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]


def merged(intervals: list[tuple[float, float]], gap: float = 0.002) -> list[tuple[float, float]]:
    """Touching intervals joined: the speech regions the segments were cut from."""
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def media(tmp_path_factory, run_ffmpeg, example):
    """Short media made once: speech (first 5 s of the example, one utterance), silence,
    a video without audio, a truncated mp4, an empty file and text posing as a .wav."""
    folder = tmp_path_factory.mktemp("media")
    speech = folder / "speech.wav"
    run_ffmpeg("-i", str(example), "-t", "5", "-ac", "1", "-ar", "16000", str(speech))
    silence = folder / "silence.wav"
    run_ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", str(silence))
    no_audio = folder / "no_audio.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=10", "-c:v", "mpeg4", str(no_audio))
    whole = folder / "whole.mp4"  # ffmpeg's default mp4: the moov index is written at the end
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=duration=5:size=64x48:rate=10", "-i", str(speech),
               "-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(whole))
    data = whole.read_bytes()
    assert data.rfind(b"moov") > len(data) // 2, "expected the mp4 index at the end"
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    fast = folder / "fast.mp4"  # the index first: a cut copy still decodes up to the cut
    run_ffmpeg("-i", str(whole), "-c", "copy", "-movflags", "+faststart", str(fast))
    data = fast.read_bytes()
    cut_late = folder / "cut_late.mp4"
    cut_late.write_bytes(data[: len(data) // 2])
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    text_wav = folder / "text.wav"
    text_wav.write_text("this is not audio, just some text in a file named .wav\n" * 20)
    return SimpleNamespace(speech=speech, silence=silence, no_audio=no_audio, whole=whole,
                           truncated=truncated, cut_late=cut_late, empty=empty, text_wav=text_wav,
                           missing=folder / "does-not-exist.wav")


@pytest.fixture(scope="module")
def example_outputs(example, tiny_model):
    """The example analysed once in each format (speech segmentation, default settings)."""
    out = {}
    for fmt in ("csv", "json", "jsonl"):
        result = analyze(tiny_model, example, "--format", fmt, "--quiet")
        assert result.exit_code == 0, result.stderr
        out[fmt] = result.stdout
    return out


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory) -> Path:
    """A random tiny-lstm whose output layer is scaled up: its posteriors differ clearly from
    segment to segment (those of the conftest models are all close to uniform)."""
    import torch

    from sercli.features import FeatureConfig
    from sercli.model import EmotionNet, ModelConfig
    from sercli.weights import save_checkpoint

    config = ModelConfig(lstm_hidden=16, dense=16)
    torch.manual_seed(2)
    net = EmotionNet(config)
    with torch.no_grad():
        net.head[-1].weight.mul_(30)
        net.head[-1].bias.zero_()
    path = tmp_path_factory.mktemp("sharp") / "sharp.pt"
    save_checkpoint(path, config, net.state_dict(), FeatureConfig(), {"name": "sharp"})
    return path


def copy_speech(media, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(media.speech, target)
    return target


# --------------------------------------------------------------------------- formats


def test_csv_format(example_outputs, example):
    header, rows = parse_csv(example_outputs["csv"])
    assert header == CSV_HEADER
    assert len(rows) == EXAMPLE_SEGMENTS
    assert [int(r["segment"]) for r in rows] == list(range(EXAMPLE_SEGMENTS))
    previous_end = 0.0
    for row in rows:
        assert row["file"] == str(example)
        start, end = float(row["start_s"]), float(row["end_s"])
        assert previous_end - 1e-6 <= start < end <= EXAMPLE_DURATION_S + 0.05
        assert end - start <= MAX_SEGMENT_S + 1e-6
        previous_end = end
        probs = {label: float(row[f"p_{label}"]) for label in LABELS}
        assert sum(probs.values()) == pytest.approx(1.0, abs=2e-3)
        assert row["label"] == max(probs, key=probs.get)
        assert float(row["confidence"]) == pytest.approx(probs[row["label"]], abs=1e-4)
    # the 4.1 s utterance is cut into two touching halves of ~2.05 s
    durations = [float(r["end_s"]) - float(r["start_s"]) for r in rows]
    halves = [i for i in range(len(rows) - 1) if rows[i]["end_s"] == rows[i + 1]["start_s"]]
    assert len(halves) == 1
    assert durations[halves[0]] == pytest.approx(2.05, abs=0.1)
    assert durations[halves[0] + 1] == pytest.approx(2.05, abs=0.1)


def test_json_single_file_schema_and_summary(example_outputs, example):
    document = json.loads(example_outputs["json"])
    assert isinstance(document, dict)
    assert set(document) == {"file", "duration_s", "model", "segments", "summary"}
    assert document["file"] == str(example)
    assert document["model"] == "tiny-lstm"
    assert document["duration_s"] == pytest.approx(EXAMPLE_DURATION_S, abs=0.1)
    segments = document["segments"]
    assert len(segments) == EXAMPLE_SEGMENTS
    for segment in segments:
        check_segment_dict(segment)

    summary = document["summary"]
    assert set(summary) == {"label", "probs", "speech_s", "seconds_by_label", "spans"}
    durations = [s["end_s"] - s["start_s"] for s in segments]
    speech_s = sum(durations)
    assert summary["speech_s"] == pytest.approx(speech_s, abs=2e-3)
    expected = {label: sum(d * s["probs"][label] for d, s in zip(durations, segments)) / speech_s
                for label in LABELS}
    assert set(summary["probs"]) == set(LABELS)
    for label in LABELS:
        assert summary["probs"][label] == pytest.approx(expected[label], abs=5e-4)
    assert sum(summary["probs"].values()) == pytest.approx(1.0, abs=2e-3)
    assert summary["label"] == max(summary["probs"], key=summary["probs"].get)
    by_label = summary["seconds_by_label"]
    assert set(by_label) == set(LABELS)
    for label in LABELS:
        seconds = sum(d for d, s in zip(durations, segments) if s["label"] == label)
        assert by_label[label] == pytest.approx(seconds, abs=2e-3)
    assert sum(by_label.values()) == pytest.approx(summary["speech_s"], abs=2e-3)
    # spans: the segments' runs of one label, in order; the example's speech regions are more
    # than the default merge gap (1 s) apart, so its spans join only the halves of one utterance.
    spans = summary["spans"]
    assert [set(span) for span in spans] == [{"label", "start_s", "end_s", "confidence"}] * len(spans)
    assert spans[0]["start_s"] == segments[0]["start_s"] and spans[-1]["end_s"] == segments[-1]["end_s"]
    halves_alike = segments[2]["label"] == segments[3]["label"]
    assert len(spans) == EXAMPLE_SEGMENTS - halves_alike


def test_json_summary_is_duration_weighted(sharp_model, example, run_ffmpeg, tmp_path):
    clip = tmp_path / "cut.wav"  # cut at 18.4 s: the last utterance leaves a short last segment
    run_ffmpeg("-i", str(example), "-t", "18.4", str(clip))
    result = analyze(sharp_model, clip, "-f", "json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    segments, summary = document["segments"], document["summary"]
    assert document["model"] == "sharp"
    assert len(segments) == EXAMPLE_SEGMENTS
    durations = [s["end_s"] - s["start_s"] for s in segments]
    assert min(durations) < 1.0 < 2.0 < max(durations)
    weighted = {label: sum(d * s["probs"][label] for d, s in zip(durations, segments)) / sum(durations)
                for label in LABELS}
    plain = {label: sum(s["probs"][label] for s in segments) / len(segments) for label in LABELS}
    assert max(abs(weighted[k] - plain[k]) for k in LABELS) > 5e-3, "the test input no longer tells them apart"
    for label in LABELS:
        assert summary["probs"][label] == pytest.approx(weighted[label], abs=5e-4)
    assert summary["label"] == max(weighted, key=weighted.get)
    assert summary["speech_s"] == pytest.approx(sum(durations), abs=2e-3)
    for label in LABELS:
        seconds = sum(d for d, s in zip(durations, segments) if s["label"] == label)
        assert summary["seconds_by_label"][label] == pytest.approx(seconds, abs=2e-3)
    assert sum(summary["seconds_by_label"].values()) == pytest.approx(summary["speech_s"], abs=2e-3)


def test_jsonl_one_line_per_segment(example_outputs, example):
    lines = example_outputs["jsonl"].splitlines()
    assert len(lines) == EXAMPLE_SEGMENTS
    records = [json.loads(line) for line in lines]
    document = json.loads(example_outputs["json"])
    for record, segment in zip(records, document["segments"]):
        assert record["file"] == str(example)
        rest = {k: v for k, v in record.items() if k != "file"}
        check_segment_dict(rest)
        assert rest == segment  # the same segments as the JSON output


def test_formats_agree(example_outputs):
    _, rows = parse_csv(example_outputs["csv"])
    segments = json.loads(example_outputs["json"])["segments"]
    assert [(float(r["start_s"]), float(r["end_s"]), r["label"]) for r in rows] == [
        (pytest.approx(s["start_s"], abs=1e-3), pytest.approx(s["end_s"], abs=1e-3), s["label"]) for s in segments]
    for row, segment in zip(rows, segments):
        for label in LABELS:
            assert float(row[f"p_{label}"]) == pytest.approx(segment["probs"][label], abs=1e-4)


def test_json_several_files_is_an_array(tiny_model, media):
    result = analyze(tiny_model, media.speech, media.silence, "-f", "json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, list) and len(document) == 2
    speech, silence = document
    assert speech["file"] == str(media.speech)
    assert silence["file"] == str(media.silence)
    assert speech["duration_s"] == pytest.approx(5.0, abs=0.05)
    assert silence["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert len(speech["segments"]) == 1
    check_segment_dict(speech["segments"][0])
    assert speech["segments"][0]["start_s"] == pytest.approx(2.0, abs=0.1)
    assert speech["segments"][0]["end_s"] == pytest.approx(4.6, abs=0.1)
    # no speech: no segments and an empty summary, not an error
    assert silence["segments"] == []
    assert silence["summary"]["label"] is None
    assert silence["summary"]["probs"] is None
    assert silence["summary"]["speech_s"] == 0
    assert silence["summary"]["seconds_by_label"] == {label: 0 for label in LABELS}
    assert silence["summary"]["spans"] == []


# --------------------------------------------------------------------------- outputs


def test_output_file_is_written_atomically(tiny_model, media, tmp_path):
    target = tmp_path / "results" / "all.json"
    target.parent.mkdir()
    result = analyze(tiny_model, media.speech, media.silence, "-f", "json", "-o", target)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    document = json.loads(target.read_text())
    assert [d["file"] for d in document] == [str(media.speech), str(media.silence)]
    assert list(target.parent.iterdir()) == [target]  # no .part temp file left behind


def test_output_file_replaces_an_old_one(tiny_model, media, tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old contents\n")
    result = analyze(tiny_model, media.speech, "-o", target, "-q")
    assert result.exit_code == 0, result.stderr
    header, rows = parse_csv(target.read_text())
    assert header == CSV_HEADER
    assert [r["file"] for r in rows] == [str(media.speech)]
    assert list(tmp_path.iterdir()) == [target]


def test_output_dir_one_file_per_input(tiny_model, media, tmp_path, example, monkeypatch):
    monkeypatch.chdir(media.speech.parent)
    out = tmp_path / "out"
    result = analyze(tiny_model, media.speech.name, example, "--output-dir", out, "-f", "csv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    # a relative input keeps its path; an absolute one is mirrored whole under the folder
    mirrored = out / str(example).lstrip(os.sep)
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(
        [out / "speech.wav.csv", mirrored.with_name("montage.mp3.csv")])
    header, rows = parse_csv((out / "speech.wav.csv").read_text())
    assert header == CSV_HEADER
    assert {r["file"] for r in rows} == {media.speech.name} and len(rows) == 1
    header, rows = parse_csv(mirrored.with_name("montage.mp3.csv").read_text())
    assert header == CSV_HEADER
    assert {r["file"] for r in rows} == {str(example)} and len(rows) == EXAMPLE_SEGMENTS


@pytest.fixture
def tree(media, tmp_path):
    """root/a.wav, root/notes.txt, root/sub/b.wav, root/sub/deeper/c.WAV, root/sub/readme.md."""
    root = tmp_path / "root"
    copy_speech(media, root / "a.wav")
    copy_speech(media, root / "sub" / "b.wav")
    copy_speech(media, root / "sub" / "deeper" / "c.WAV")  # extensions match case-insensitively
    (root / "notes.txt").write_text("not media\n")
    (root / "sub" / "readme.md").write_text("not media either\n")
    return root


def test_output_dir_mirrors_folder_tree(tiny_model, tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tree.parent)
    out = tmp_path / "out"
    result = analyze(tiny_model, "-r", "root", "--output-dir", out, "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted([os.path.join("root", "a.wav.jsonl"), os.path.join("root", "sub", "b.wav.jsonl"),
                              os.path.join("root", "sub", "deeper", "c.WAV.jsonl")])
    record = json.loads((out / "root" / "sub" / "b.wav.jsonl").read_text().splitlines()[0])
    assert record["file"] == os.path.join("root", "sub", "b.wav")
    assert leftover_temp_files(out) == []


def test_folder_without_recursion_takes_only_its_own_media(tiny_model, tree):
    result = analyze(tiny_model, tree, "-f", "json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, dict)  # exactly one file: a.wav
    assert document["file"] == str(tree / "a.wav")


def test_folder_with_recursion_finds_nested_media_and_ignores_the_rest(tiny_model, tree):
    result = analyze(tiny_model, "-r", tree, "-f", "json", "-q")
    assert result.exit_code == 0, result.stderr
    files = [d["file"] for d in json.loads(result.stdout)]
    assert sorted(files) == sorted(str(p) for p in (tree / "a.wav", tree / "sub" / "b.wav",
                                                     tree / "sub" / "deeper" / "c.WAV"))
    assert result.stderr == ""  # .txt and .md were not even tried


def test_same_basename_from_two_folders_no_collision(tiny_model, media, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy_speech(media, tmp_path / "x" / "talk.wav")
    copy_speech(media, tmp_path / "y" / "talk.wav")
    first, second = os.path.join("x", "talk.wav"), os.path.join("y", "talk.wav")
    out = tmp_path / "out"
    result = analyze(tiny_model, first, second, "--output-dir", "out")
    assert result.exit_code == 0, result.stderr
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [first + ".csv", second + ".csv"]
    for name in (first, second):
        _, rows = parse_csv((out / f"{name}.csv").read_text())
        assert {r["file"] for r in rows} == {name}

    # the names depend only on the inputs, so a resumed batch finds both outputs
    again = analyze(tiny_model, first, second, "--output-dir", "out", "--skip-existing")
    assert again.exit_code == 0, again.stderr
    assert "skipped 2" in again.stderr


def test_resume_with_same_basenames_in_another_order(tiny_model, media, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy_speech(media, tmp_path / "x" / "talk.wav")
    copy_speech(media, tmp_path / "y" / "talk.wav")
    first, second = os.path.join("x", "talk.wav"), os.path.join("y", "talk.wav")
    result = analyze(tiny_model, first, "--output-dir", "out", "-q")
    assert result.exit_code == 0, result.stderr
    result = analyze(tiny_model, second, first, "--output-dir", "out", "--skip-existing")
    assert result.exit_code == 0, result.stderr
    assert "skipped 1" in result.stderr
    analysed = set()
    for path in (tmp_path / "out").rglob("*.csv"):
        _, rows = parse_csv(path.read_text())
        analysed |= {r["file"] for r in rows}
    assert analysed == {first, second}


def test_same_file_twice_is_analysed_once(tiny_model, media, monkeypatch):
    monkeypatch.chdir(media.speech.parent)
    result = analyze(tiny_model, media.speech.name, os.path.join(".", media.speech.name), "-q")
    assert result.exit_code == 0, result.stderr
    _, rows = parse_csv(result.stdout)
    assert len(rows) == 1


def test_parent_relative_inputs_are_mirrored_absolutely(tiny_model, media, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    copy_speech(media, tmp_path / "up.wav")
    result = analyze(tiny_model, os.path.join("..", "up.wav"), "--output-dir", "out", "-q")
    assert result.exit_code == 0, result.stderr
    expected = work / "out" / str(tmp_path / "up.wav.csv").lstrip(os.sep)
    assert expected.is_file()  # never written outside the output folder


# --------------------------------------------------------------------------- inputs


def test_several_files_in_order(tiny_model, media, example):
    result = analyze(tiny_model, example, media.speech, "-q")
    assert result.exit_code == 0, result.stderr
    _, rows = parse_csv(result.stdout)
    files = [r["file"] for r in rows]
    assert files == [str(example)] * EXAMPLE_SEGMENTS + [str(media.speech)]
    # segment numbers restart for each file
    assert [int(r["segment"]) for r in rows] == list(range(EXAMPLE_SEGMENTS)) + [0]


def test_paths_from_stdin(tiny_model, media, tmp_path):
    other = copy_speech(media, tmp_path / "other.wav")
    result = analyze(tiny_model, "-", "-f", "json", input=f"{media.speech}\n\n{other}\n")
    assert result.exit_code == 0, result.stderr
    assert [d["file"] for d in json.loads(result.stdout)] == [str(media.speech), str(other)]


def test_paths_from_stdin_with_output_dir(tiny_model, media, tmp_path):
    other = copy_speech(media, tmp_path / "in" / "other.wav")
    out = tmp_path / "out"
    result = analyze(tiny_model, "-", "--output-dir", out, "-f", "json",
                     input=f"{media.speech}\r\n{other}\r\n")
    assert result.exit_code == 0, result.stderr
    assert output_names(out) == ["other.wav.json", "speech.wav.json"]
    assert json.loads(find_output(out, "other.wav.json").read_text())["file"] == str(other)


def test_output_to_a_folder_writes_one_file_per_input(tiny_model, media, tmp_path, monkeypatch):
    """`find ... | sercli analyze - -o out/`: -o with a trailing slash, or naming an existing
    folder, acts as --output-dir instead of writing one file called `out`."""
    other = copy_speech(media, tmp_path / "in" / "other.wav")
    monkeypatch.chdir(tmp_path)
    result = analyze(tiny_model, "-", "-o", "out/", "-q", input=f"{other}\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert (tmp_path / "out").is_dir() and output_names(tmp_path / "out") == ["other.wav.csv"]
    (tmp_path / "existing").mkdir()
    result = analyze(tiny_model, media.speech, "-o", "existing", "-f", "json", "-q")
    assert result.exit_code == 0, result.stderr
    assert output_names(tmp_path / "existing") == ["speech.wav.json"]
    again = analyze(tiny_model, media.speech, "-o", "existing", "--skip-existing", "-f", "json")
    assert again.exit_code == 0 and "skipped 1 with existing output" in again.stderr, again.stderr
    both = analyze(tiny_model, media.speech, "-o", "out/", "--output-dir", "elsewhere")
    assert both.exit_code == 2 and not (tmp_path / "elsewhere").exists()
    (tmp_path / "taken").write_text("not a folder")
    clash = analyze(tiny_model, media.speech, "-o", "taken/")
    assert clash.exit_code == 2 and clash.stderr == "sercli: error: cannot write output taken: is a file, not a folder\n", clash.stderr
    assert (tmp_path / "taken").read_text() == "not a folder"


# --------------------------------------------------------------------------- --skip-existing


def output_names(out: Path) -> list[str]:
    """Names of the files written anywhere under an --output-dir."""
    return sorted(p.name for p in out.rglob("*") if p.is_file())


def find_output(out: Path, name: str) -> Path:
    (found,) = [p for p in out.rglob(name) if p.is_file()]
    return found


def test_skip_existing_resumes_a_batch(tiny_model, media, tmp_path):
    first = copy_speech(media, tmp_path / "in" / "first.wav")
    out = tmp_path / "out"
    result = analyze(tiny_model, first, "--output-dir", out)
    assert result.exit_code == 0, result.stderr
    done = find_output(out, "first.wav.csv")
    content = done.read_bytes()
    assert content.startswith(CSV_HEADER.encode())
    os.utime(done, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # an old mtime to spot rewrites

    second = copy_speech(media, tmp_path / "in" / "second.wav")
    result = analyze(tiny_model, first, second, "--output-dir", out, "--skip-existing")
    assert result.exit_code == 0, result.stderr
    assert done.stat().st_mtime_ns == 1_000_000_000_000_000_000
    assert done.read_bytes() == content
    _, rows = parse_csv(find_output(out, "second.wav.csv").read_text())
    assert [r["file"] for r in rows] == [str(second)]
    assert "skipped 1" in result.stderr
    assert "analysed 1 of 1" in result.stderr

    # without --skip-existing the output is written again
    result = analyze(tiny_model, first, "--output-dir", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert done.stat().st_mtime_ns != 1_000_000_000_000_000_000


def test_skip_existing_needs_output_dir(tiny_model, media):
    result = analyze(tiny_model, media.speech, "--skip-existing")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--output-dir" in result.stderr


# --------------------------------------------------------------------------- bad inputs


BAD_INPUTS = {
    "missing": "no such file",
    "empty": "empty",
    "text_wav": "invalid data",
    "no_audio": "no audio stream",
    "truncated": "truncated",
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_the_good_file_is_still_analysed(tiny_model, media, kind):
    bad = getattr(media, kind)
    result = analyze(tiny_model, bad, media.speech)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    cause = assert_one_line_failure(result.stderr, bad)
    assert BAD_INPUTS[kind] in cause.lower()
    assert len(error_lines(result.stderr)) == 1
    header, rows = parse_csv(result.stdout)
    assert header == CSV_HEADER
    assert [r["file"] for r in rows] == [str(media.speech)]


def test_directory_from_stdin_is_one_failure(tiny_model, media, tmp_path):
    result = analyze(tiny_model, "-", input=f"{tmp_path}\n{media.speech}\n")
    assert result.exit_code == 1
    assert "directory" in assert_one_line_failure(result.stderr, tmp_path)
    _, rows = parse_csv(result.stdout)
    assert [r["file"] for r in rows] == [str(media.speech)]


def test_partly_decodable_file_is_a_success_with_a_warning(tiny_model, media):
    result = analyze(tiny_model, media.cut_late, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("sercli: warning: ")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"sercli: warning: {media.cut_late}: ffmpeg reported damaged or missing data")
    assert warnings[0].endswith("were decoded and analysed")
    assert error_lines(result.stderr) == []
    document = json.loads(result.stdout)
    assert 1.0 < document["duration_s"] < 4.0  # the part before the cut
    assert len(document["segments"]) == 1
    assert document["segments"][0]["start_s"] == pytest.approx(2.0, abs=0.1)
    assert document["segments"][0]["end_s"] <= document["duration_s"] + 1e-6
    quiet = analyze(tiny_model, media.cut_late, "-f", "json", "-q")
    assert quiet.exit_code == 0
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout) == document


def test_bad_input_alone_exits_1(tiny_model, media):
    result = analyze(tiny_model, media.truncated, "-f", "json", "-q")
    assert result.exit_code == 1
    assert_one_line_failure(result.stderr, media.truncated)
    assert json.loads(result.stdout) == []


def test_folder_with_a_broken_file_among_good_ones(tiny_model, media, tmp_path):
    folder = tmp_path / "batch"
    copy_speech(media, folder / "a.wav")
    shutil.copyfile(media.text_wav, folder / "b.wav")
    copy_speech(media, folder / "c.wav")
    out = tmp_path / "out"
    result = analyze(tiny_model, folder, "--output-dir", out)
    assert result.exit_code == 1
    assert_one_line_failure(result.stderr, folder / "b.wav")
    assert len(error_lines(result.stderr)) == 1
    assert output_names(out) == ["a.wav.csv", "c.wav.csv"]
    for name in ("a.wav", "c.wav"):
        _, rows = parse_csv(find_output(out, f"{name}.csv").read_text())
        assert [r["file"] for r in rows] == [str(folder / name)]
    assert "1 failed" in result.stderr.splitlines()[-1]


def test_failure_with_output_file_still_writes_the_good_results(tiny_model, media, tmp_path):
    target = tmp_path / "all.jsonl"
    result = analyze(tiny_model, media.missing, media.speech, "-f", "jsonl", "-o", target)
    assert result.exit_code == 1
    assert_one_line_failure(result.stderr, media.missing)
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["file"] for r in records] == [str(media.speech)]
    assert list(tmp_path.iterdir()) == [target]


# --------------------------------------------------------------------------- usage and model errors


@pytest.mark.parametrize("extra", [["--bogus"], ["--format", "xml"], ["--max-segment", "5"],
                                   ["--context", "all", "--ray=local"], ["--context", "speaker"]],
                         ids=["unknown-option", "format-xml", "max-segment-too-long", "context-all-with-ray",
                              "context-speaker"])
def test_usage_errors_exit_2(tiny_model, media, extra):
    result = analyze(tiny_model, media.speech, *extra)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Usage" in result.stderr or "Error" in result.stderr


def test_output_and_output_dir_together_exit_2(tiny_model, media, tmp_path):
    result = analyze(tiny_model, media.speech, "-o", tmp_path / "a.csv", "--output-dir", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--output-dir" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_no_path_is_a_usage_error(tiny_model):
    result = analyze(tiny_model)
    assert result.exit_code == 2
    assert result.stdout == ""


def test_no_model_available(no_default_model, media):
    result = invoke("analyze", media.speech)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--model" in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_model_name(no_default_model, media):
    result = invoke("analyze", "-m", "no-such-model", media.speech)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "no-such-model" in result.stderr


def test_tampered_checkpoint_is_refused(tiny_model, media, tmp_path):
    copy = tmp_path / "tiny-lstm.pt"
    shutil.copyfile(tiny_model, copy)
    shutil.copyfile(tiny_model.with_name(tiny_model.name + ".sha256"), tmp_path / "tiny-lstm.pt.sha256")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    result = analyze(copy, media.speech)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "sha256 mismatch" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_intact_copy_of_the_checkpoint_loads(tiny_model, media, tmp_path):
    """The counterpart of the tampering test: the same copy, untouched, is accepted."""
    copy = tmp_path / "tiny-lstm.pt"
    shutil.copyfile(tiny_model, copy)
    shutil.copyfile(tiny_model.with_name(tiny_model.name + ".sha256"), tmp_path / "tiny-lstm.pt.sha256")
    result = analyze(copy, media.speech, "-q")
    assert result.exit_code == 0, result.stderr


# --------------------------------------------------------------------------- segmentation options


def test_fixed_segmentation_gives_consecutive_3s_windows(tiny_model, example):
    result = analyze(tiny_model, example, "--segmentation", "fixed", "-f", "json")
    assert result.exit_code == 0, result.stderr
    segments = json.loads(result.stdout)["segments"]
    for segment in segments:
        check_segment_dict(segment)
        k = round(segment["start_s"] / 3.0)
        assert segment["start_s"] == pytest.approx(3.0 * k, abs=1e-3)
        assert segment["end_s"] == pytest.approx(min(3.0 * (k + 1), EXAMPLE_DURATION_S), abs=0.05)
    starts = [s["start_s"] for s in segments]
    # 21.5 s: windows 0..6 all hold speech; the last, 21-21.5 s, is silence and is dropped
    assert starts == pytest.approx([0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0], abs=1e-3)
    assert segments[-1]["end_s"] == pytest.approx(21.0, abs=1e-3)


def test_fixed_segmentation_drops_windows_without_speech(tiny_model, media, run_ffmpeg, tmp_path):
    padded = tmp_path / "gap.wav"  # 4 s of silence, then the 5 s clip: speech at about 6.0-8.6 s
    run_ffmpeg("-i", str(media.silence), "-i", str(media.silence), "-i", str(media.speech),
               "-filter_complex", "[0:a][1:a][2:a]concat=n=3:v=0:a=1", str(padded))
    # 2 s windows: 0-2, 2-4, 4-6 are silent and dropped; 6-8 and 8-9 hold speech
    result = analyze(tiny_model, padded, "--segmentation", "fixed", "--max-segment", "2", "-f", "json")
    assert result.exit_code == 0, result.stderr
    starts = [s["start_s"] for s in json.loads(result.stdout)["segments"]]
    assert starts == pytest.approx([6.0, 8.0], abs=1e-3)


def test_max_segment_limits_segment_length(tiny_model, example, example_outputs):
    result = analyze(tiny_model, example, "--max-segment", "1.5", "-f", "json")
    assert result.exit_code == 0, result.stderr
    segments = json.loads(result.stdout)["segments"]
    assert len(segments) > EXAMPLE_SEGMENTS
    for segment in segments:
        assert segment["end_s"] - segment["start_s"] <= 1.5 + 1e-6
    # the same speech regions, only cut finer
    default = json.loads(example_outputs["json"])["segments"]
    fine = merged([(s["start_s"], s["end_s"]) for s in segments])
    coarse = merged([(s["start_s"], s["end_s"]) for s in default])
    assert len(fine) == len(coarse)
    assert [t for pair in fine for t in pair] == pytest.approx([t for pair in coarse for t in pair], abs=2e-3)


# --------------------------------------------------------------------------- version and models


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout
    assert "sercli" in result.stdout


def test_models_lists_installed_models(monkeypatch, model_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    (folder / "scores.json").write_text(json.dumps({"tiny-lstm": {
        "programmes": {"ua": 41.25, "wa": 40.0}, "clips": None, "speaker": {"ua": 50.0, "wa": 52.5}}}))
    import torch

    from sercli.features import FeatureConfig
    from sercli.model import EmotionNet, ModelConfig
    from sercli.weights import save_checkpoint

    config = ModelConfig(lstm_hidden=8, dense=8)
    save_checkpoint(folder / "tiny-fold3.pt", config, EmotionNet(config).state_dict(), FeatureConfig(),
                    {"metrics": {"valid_wa": 0.5, "test_wa": 0.45, "test_ua": 0.4}, "training": {"test_fold": 3}})
    monkeypatch.setenv("SERCLI_MODEL_PATH", str(folder))
    result = invoke("models")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "KIND", "PROGRAMMES", "UA", "CLIPS", "UA", "SPEAKER", "UA/WA",
                                "VALIDATION", "WA", "FILE"]
    rows = {line.split()[0]: line for line in lines[1:] if line.startswith("tiny-")}
    assert {"tiny-lstm", "tiny-cnn5", "tiny-denoise"} <= set(rows)
    assert str(folder / "tiny-cnn5.pt") in rows["tiny-cnn5"]
    assert "cnn5" in rows["tiny-cnn5"] and "20 Hz" in rows["tiny-cnn5"]
    assert "denoising" in rows["tiny-denoise"]
    programmes = lines[0].index("PROGRAMMES")  # the columns line up under their headers
    assert rows["tiny-lstm"][programmes:].split()[:5] == ["41.2", "-", "50.0", "/", "52.5"]
    assert rows["tiny-cnn5"][programmes:].split()[:4] == ["-", "-", "-", "-"]  # nothing recorded: dashes
    # a fold model: its own test speakers' figures, labelled as one fold's, and its validation WA
    assert rows["tiny-fold3"][programmes:].split()[:8] == ["-", "-", "40.0", "/", "45.0", "(fold", "3", "only)"]
    assert rows["tiny-fold3"][programmes:].split()[8] == "50.0"
    assert "Default: egemaps-mlp|egemaps-mlp-voices, a routed pair" in result.stdout
    assert re.search(r"Programmes \d+\.\d, clips \d+\.\d UA\.", result.stdout)  # the pair's figures, from scores.json


def test_models_with_nothing_installed(no_default_model):
    result = invoke("models")
    assert result.exit_code == 0
    assert "no models installed" in result.stdout


def test_analyze_with_model_by_name(monkeypatch, model_dir, media):
    monkeypatch.setenv("SERCLI_MODEL_PATH", str(model_dir))
    result = invoke("analyze", "-m", "tiny-cnn5", media.speech, "-f", "json", "-q")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"] == "tiny-cnn5"
    assert len(document["segments"]) == 1
    check_segment_dict(document["segments"][0])


# --------------------------------------------------------------------------- stderr and stdout


def test_quiet_prints_nothing_on_stderr(tiny_model, media):
    result = analyze(tiny_model, media.speech, "--quiet")
    assert result.exit_code == 0
    assert result.stderr == ""
    header, rows = parse_csv(result.stdout)
    assert header == CSV_HEADER and len(rows) == 1


def test_quiet_still_reports_errors(tiny_model, media):
    result = analyze(tiny_model, media.missing, media.speech, "-q")
    assert result.exit_code == 1
    assert_one_line_failure(result.stderr, media.missing)
    assert len(result.stderr.splitlines()) == 1  # no summary line


def test_summary_line_on_stderr_and_only_data_on_stdout(tiny_model, media, example):
    result = analyze(tiny_model, media.speech, example)
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("sercli: analysed 2 of 2 file(s)")
    assert "failed" not in lines[0]
    # stdout is CSV and nothing else
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert ",".join(rows[0]) == CSV_HEADER
    assert len(rows) == 1 + 1 + EXAMPLE_SEGMENTS
    assert all(len(row) == 10 for row in rows)
    assert "sercli" not in result.stdout.replace(str(example), "")


def test_device_out_of_memory_gives_a_batch_size_hint(tiny_model, example, monkeypatch):
    import torch

    from sercli.weights import Model

    def out_of_memory(self, spectrograms, n_frames):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Model, "posteriors", out_of_memory)
    result = analyze(tiny_model, example, "--batch-size", "512")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert "ran out of memory" in line and "--batch-size" in line


def test_context_prior_default_is_the_library_default():
    """The command line spells the default out (importing sercli.features at parse time would
    import torch for every command); it must stay the library's."""
    from sercli.cli import evaluate
    from sercli.context import CONTEXT_PRIOR_S

    option = next(p for p in evaluate.params if p.name == "context_prior_s")
    assert option.default == CONTEXT_PRIOR_S

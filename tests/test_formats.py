"""Emotion spans and the span formats (srt, vtt, textgrid, audacity), read back as their users'
tools would: hand-made results for exact expectations, then the CLI on the bundled example."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sercli.cli import main
from sercli.predict import FileResult, SegmentResult
from sercli.spans import Span, merge_spans
from sercli.writers import WRITERS, format_of, result_to_dict

LABELS = ("angry", "happy", "neutral", "sad")


def segment(start: float, end: float, label: str, confidence: float) -> SegmentResult:
    rest = (1 - confidence) / 3
    return SegmentResult(start, end, label, confidence, {k: confidence if k == label else rest for k in LABELS})


def film(merge_gap_s: float = 1.0) -> FileResult:
    """Speech from 2 s: angry 2-5 (0.9) and 5-6 (0.6) touching, angry again after a 0.8 s gap,
    then happy after 2 s of silence, neutral touching it, and silence to the end (30 s)."""
    segments = [segment(2.0, 5.0, "angry", 0.9), segment(5.0, 6.0, "angry", 0.6), segment(6.8, 8.8, "angry", 0.75),
                segment(10.8, 12.3, "happy", 0.5), segment(12.3, 13.1, "neutral", 0.4)]
    return FileResult("film.mkv", 30.0, "hand-made", segments, LABELS, merge_gap_s=merge_gap_s)


def written(result: FileResult, fmt: str) -> str:
    out = io.StringIO()
    writer = WRITERS[fmt](out, LABELS)
    writer.write(result)
    writer.close()
    return out.getvalue()


# --------------------------------------------------------------------------- spans


def test_spans_join_same_label_runs_across_small_gaps_with_duration_weighted_confidence():
    spans = film().spans
    assert [(s.label, s.start_s, s.end_s) for s in spans] == [
        ("angry", 2.0, 8.8), ("happy", 10.8, 12.3), ("neutral", 12.3, 13.1)]
    # 3 s at 0.9, 1 s at 0.6, 2 s at 0.75; the 0.8 s gap counts for nothing
    assert spans[0].confidence == pytest.approx((3 * 0.9 + 1 * 0.6 + 2 * 0.75) / 6, abs=1e-4)
    assert spans[0].duration_s == pytest.approx(6.8)
    assert film().summary.spans == spans


def test_merge_gap_decides_which_gaps_a_span_bridges():
    segments = film().segments
    touching_only = merge_spans(segments, 0.0)
    assert [(s.start_s, s.end_s) for s in touching_only][:2] == [(2.0, 6.0), (6.8, 8.8)]
    assert touching_only[0].confidence == pytest.approx((3 * 0.9 + 0.6) / 4, abs=1e-4)
    assert len(merge_spans(segments, 0.79)) == 4 and len(merge_spans(segments, 0.8)) == 3
    # a segment of another label in between splits a run however close its ends are
    sandwich = [segment(0, 1, "sad", 0.5), segment(1, 2, "happy", 0.5), segment(2, 3, "sad", 0.5)]
    assert [s.label for s in merge_spans(sandwich, 100.0)] == ["sad", "happy", "sad"]
    assert merge_spans([], 1.0) == []
    with pytest.raises(ValueError):
        merge_spans(segments, -1.0)


def test_json_summary_lists_the_spans():
    document = result_to_dict(film(merge_gap_s=0.0))
    assert document["summary"]["spans"] == [
        {"label": "angry", "start_s": 2.0, "end_s": 6.0, "confidence": 0.825},
        {"label": "angry", "start_s": 6.8, "end_s": 8.8, "confidence": 0.75},
        {"label": "happy", "start_s": 10.8, "end_s": 12.3, "confidence": 0.5},
        {"label": "neutral", "start_s": 12.3, "end_s": 13.1, "confidence": 0.4}]
    assert len(document["segments"]) == 5  # segments stay as they are


# --------------------------------------------------------------------------- formats, read back


TIME = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"


def seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = map(int, match)
    return h * 3600 + m * 60 + s + ms / 1000


def parse_cues(text: str, decimal: str) -> list[tuple[float, float, str]]:
    """Cues of an SRT or WebVTT text: blocks split by blank lines, a timing line, then text."""
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        timing = next(i for i, line in enumerate(lines) if "-->" in line)
        found = re.fullmatch(rf"{TIME} --> {TIME}", lines[timing])
        assert found, lines[timing]
        assert lines[timing].count(decimal) == 2
        cues.append((seconds(found.groups()[:4]), seconds(found.groups()[4:]), "\n".join(lines[timing + 1:])))
    return cues


def test_srt_cues_are_numbered_spans():
    text = written(film(), "srt")
    blocks = text.strip().split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == ["1", "2", "3"]
    assert parse_cues(text, ",") == [(2.0, 8.8, "angry (0.80)"), (10.8, 12.3, "happy (0.50)"),
                                     (12.3, 13.1, "neutral (0.40)")]
    assert "00:00:08,800 --> " not in text and "00:00:02,000 --> 00:00:08,800" in text


def test_vtt_cues_are_spans_after_the_header():
    text = written(film(), "vtt")
    assert text.startswith("WEBVTT\n\n")
    cues = parse_cues(text[len("WEBVTT"):], ".")
    assert cues == [(2.0, 8.8, "angry (0.80)"), (10.8, 12.3, "happy (0.50)"), (12.3, 13.1, "neutral (0.40)")]


def test_long_times_keep_their_hours():
    late = FileResult("film.mkv", 7300.0, "m", [segment(3723.5, 3726.25, "sad", 0.7)], LABELS)
    assert "01:02:03,500 --> 01:02:06,250" in written(late, "srt")
    assert "01:02:03.500 --> 01:02:06.250" in written(late, "vtt")


def test_audacity_labels_are_tab_separated_spans():
    lines = written(film(), "audacity").splitlines()
    rows = [line.split("\t") for line in lines]
    assert [(float(a), float(b), text) for a, b, text in rows] == [
        (2.0, 8.8, "angry (0.80)"), (10.8, 12.3, "happy (0.50)"), (12.3, 13.1, "neutral (0.40)")]


def textgrid_tiers(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    """Every interval of every tier, as Praat itself reads the file."""
    import parselmouth
    from parselmouth.praat import call

    grid = parselmouth.read(str(path))
    tiers = {}
    for tier in range(1, int(call(grid, "Get number of tiers")) + 1):
        name = call(grid, "Get tier name", tier)
        tiers[name] = [(call(grid, "Get start time of interval", tier, k),
                        call(grid, "Get end time of interval", tier, k), call(grid, "Get label of interval", tier, k))
                       for k in range(1, int(call(grid, "Get number of intervals", tier)) + 1)]
    return tiers


def test_textgrid_has_a_span_tier_and_a_segment_tier_with_silence_empty(tmp_path):
    path = tmp_path / "film.TextGrid"
    path.write_text(written(film(), "textgrid"))
    tiers = textgrid_tiers(path)
    assert list(tiers) == ["spans", "segments"]
    assert tiers["spans"] == [(0.0, 2.0, ""), (2.0, 8.8, "angry"), (8.8, 10.8, ""), (10.8, 12.3, "happy"),
                              (12.3, 13.1, "neutral"), (13.1, 30.0, "")]
    assert tiers["segments"] == [(0.0, 2.0, ""), (2.0, 5.0, "angry"), (5.0, 6.0, "angry"), (6.0, 6.8, ""),
                                 (6.8, 8.8, "angry"), (8.8, 10.8, ""), (10.8, 12.3, "happy"),
                                 (12.3, 13.1, "neutral"), (13.1, 30.0, "")]


def test_textgrid_of_a_file_without_speech_is_one_empty_interval(tmp_path):
    path = tmp_path / "quiet.TextGrid"
    path.write_text(written(FileResult("quiet.wav", 2.5, "m", [], LABELS), "textgrid"))
    assert textgrid_tiers(path) == {"spans": [(0.0, 2.5, "")], "segments": [(0.0, 2.5, "")]}


def test_span_formats_hold_one_input():
    writer = WRITERS["srt"](io.StringIO(), LABELS)
    writer.write(film())
    with pytest.raises(ValueError, match="one input"):
        writer.write(film())


def test_format_of_an_output_name():
    assert [format_of(name) for name in ("a.srt", "b.VTT", "c.TextGrid", "d.textgrid", "e.json", "f.jsonl",
                                          "g.csv", "h.txt", "i.tsv", "-")] == [
        "srt", "vtt", "textgrid", "textgrid", "json", "jsonl", "csv", "audacity", None, None]


# --------------------------------------------------------------------------- the command line


def analyze(model: Path, *args):
    return CliRunner().invoke(main, ["analyze", "-m", str(model), *map(str, args), "-q"])


def test_output_extension_picks_the_format(tiny_model, example, tmp_path):
    for name, check in (("r.json", lambda text: json.loads(text)["summary"]["spans"]),
                        ("r.srt", lambda text: parse_cues(text, ",")),
                        ("r.vtt", lambda text: text.startswith("WEBVTT")),
                        ("r.TextGrid", lambda text: textgrid_tiers(tmp_path / "r.TextGrid")["spans"])):
        result = analyze(tiny_model, example, "-o", tmp_path / name)
        assert result.exit_code == 0, result.stderr
        assert check((tmp_path / name).read_text()), name
    assert analyze(tiny_model, example, "-o", tmp_path / "r.srt", "-f", "srt").exit_code == 0


def test_format_contradicting_the_extension_is_a_usage_error(tiny_model, example, tmp_path):
    result = analyze(tiny_model, example, "-o", tmp_path / "r.json", "-f", "csv")
    assert result.exit_code == 2
    assert "contradicts" in result.stderr and "r.json" in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_span_format_with_several_inputs_needs_an_output_dir(tiny_model, example, tmp_path):
    copy = tmp_path / "copy.mp3"
    copy.write_bytes(example.read_bytes())
    result = analyze(tiny_model, example, copy, "-f", "vtt")
    assert result.exit_code == 2 and "--output-dir" in result.stderr
    assert result.stdout == ""
    piped = CliRunner().invoke(main, ["analyze", "-m", str(tiny_model), "-", "-f", "srt"], input=f"{example}\n")
    assert piped.exit_code == 2


def test_format_all_writes_every_format_per_input_and_resumes(tiny_model, example, tmp_path, monkeypatch):
    monkeypatch.chdir(example.parent)
    out = tmp_path / "out"
    assert analyze(tiny_model, "-f", "all").exit_code == 2  # needs somewhere for seven files
    result = analyze(tiny_model, example.name, "-f", "all", "--output-dir", out, "--merge-gap", "5")
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{example.name}{ext}" for ext in
                           (".csv", ".json", ".jsonl", ".srt", ".vtt", ".TextGrid", ".txt"))
    document = json.loads((out / f"{example.name}.json").read_text())
    spans = document["summary"]["spans"]
    # with a 5 s gap, same-label neighbours merge across the example's 2-3 s pauses
    expected = merge_spans([Span(s["label"], s["start_s"], s["end_s"], s["confidence"])
                            for s in document["segments"]], 5.0)
    assert [(s["label"], s["start_s"], s["end_s"]) for s in spans] == [(s.label, s.start_s, s.end_s) for s in expected]
    cues = parse_cues((out / f"{example.name}.srt").read_text(), ",")
    assert [(a, b) for a, b, _ in cues] == [(s["start_s"], s["end_s"]) for s in spans]
    assert [text for *_, text in cues] == [f"{s['label']} ({s['confidence']:.2f})" for s in spans]
    labels = [line.split("\t") for line in (out / f"{example.name}.txt").read_text().splitlines()]
    assert [(float(a), float(b)) for a, b, _ in labels] == [(s["start_s"], s["end_s"]) for s in spans]
    (out / f"{example.name}.vtt").unlink()  # one format missing: the input is analysed again
    again = CliRunner().invoke(main, ["analyze", "-m", str(tiny_model), example.name, "-f", "all", "--output-dir",
                                      str(out), "--skip-existing"])
    assert again.exit_code == 0 and (out / f"{example.name}.vtt").exists()
    assert "skipped" not in again.stderr
    skipped = CliRunner().invoke(main, ["analyze", "-m", str(tiny_model), example.name, "-f", "all", "--output-dir",
                                        str(out), "--skip-existing"])
    assert "skipped 1" in skipped.stderr


def test_writers_and_spans_do_not_load_torch():
    import subprocess
    import sys

    code = ("import sys, sercli.writers, sercli.spans, sercli.timeline\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

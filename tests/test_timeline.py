"""`sercli timeline`: binning, the time axis, and the pictures of a 2-hour film and a 20 s clip,
checked by the colours where the emotions are."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sercli.cli import main
from sercli.timeline import COLOURS, bin_posteriors, bin_seconds, clock, draw_timeline, tick_seconds

pytest.importorskip("matplotlib")

LABELS = ("angry", "happy", "neutral", "sad")


def segment(start: float, end: float, label: str, confidence: float = 1.0) -> dict:
    rest = (1 - confidence) / 3
    return {"start_s": start, "end_s": end, "label": label, "confidence": confidence,
            "probs": {k: confidence if k == label else rest for k in LABELS}}


def document(duration_s: float, segments: list[dict]) -> dict:
    return {"file": "made.mkv", "duration_s": duration_s, "model": "hand-made", "segments": segments,
            "summary": {"label": segments[0]["label"] if segments else None}}


def film(hours: float = 2.0) -> dict:
    """Angry talk, 2 s segments with 1 s pauses, through the first half; sad talk from 75% on
    (confidence 1: no other colour in either)."""
    duration = hours * 3600
    segments = [segment(t, t + 2, "angry") for t in np.arange(0, duration / 2 - 3, 3.0)]
    segments += [segment(t, t + 2, "sad") for t in np.arange(duration * 0.75, duration - 3, 3.0)]
    return document(duration, segments)


def colour_share(png: Path, label: str, columns: slice) -> float:
    """The share of the pixels in these columns that are the label's colour (either panel)."""
    import matplotlib.image

    image = matplotlib.image.imread(str(png))[:, columns, :3]
    target = np.array([int(COLOURS[label][i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return float((np.abs(image - target).max(axis=2) < 0.02).mean())


def test_bins_share_speech_and_weight_posteriors_by_overlap():
    segments = [segment(0.5, 1.5, "angry", 0.7), segment(1.5, 2.0, "sad", 0.4)]
    edges, speech, probs = bin_posteriors(segments, LABELS, 3.0, 1.0)
    assert edges.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert speech.tolist() == [0.5, 1.0, 0.0]
    assert probs[0].tolist() == pytest.approx([0.7, 0.1, 0.1, 0.1])
    # the second bin: half a second of each segment
    assert probs[1].tolist() == pytest.approx([(0.7 + 0.2) / 2, (0.1 + 0.2) / 2, (0.1 + 0.2) / 2, (0.1 + 0.4) / 2])
    assert probs[2].tolist() == [0, 0, 0, 0]


def test_bin_and_tick_sizes_fit_a_clip_and_a_film():
    assert bin_seconds(20) == 0.1 and bin_seconds(7200) == 15 and bin_seconds(600) == 1
    assert tick_seconds(20) == 2 and tick_seconds(7200) == 600
    assert clock(4 * 60 + 5, False) == "4:05" and clock(3 * 3600 + 59, True) == "3:00:59"


def test_two_hour_film_draws_its_halves_apart(tmp_path):
    png = draw_timeline(film(), tmp_path / "film.png")
    import matplotlib.image

    height, width = matplotlib.image.imread(str(png)).shape[:2]
    assert width > 1200 and height > 400
    first_half, third_quarter, last_quarter = slice(120, 650), slice(780, 1000), slice(1130, 1360)
    assert colour_share(png, "angry", first_half) > 0.2
    assert colour_share(png, "angry", third_quarter) == 0 and colour_share(png, "angry", last_quarter) == 0
    assert colour_share(png, "sad", last_quarter) > 0.2 and colour_share(png, "sad", first_half) == 0


def test_twenty_second_clip_draws_each_segment_where_it_is(tmp_path):
    clip = document(20.0, [segment(1.0, 4.0, "happy"), segment(12.0, 15.0, "neutral")])
    png = draw_timeline(clip, tmp_path / "clip.png")
    # the plot runs from about x=95 to x=1395: 65 px a second
    assert colour_share(png, "happy", slice(170, 330)) > 0.2 and colour_share(png, "happy", slice(400, 1350)) == 0
    assert colour_share(png, "neutral", slice(900, 1060)) > 0.1 and colour_share(png, "neutral", slice(100, 850)) == 0


def test_timeline_of_media_and_of_its_json(tiny_model, example, tmp_path):
    runner = CliRunner()
    png = tmp_path / "clip.png"
    drawn = runner.invoke(main, ["timeline", str(example), "-m", str(tiny_model), "-o", str(png)])
    assert drawn.exit_code == 0, drawn.stderr
    assert drawn.stdout.strip() == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = tmp_path / "clip.json"
    assert runner.invoke(main, ["analyze", str(example), "-m", str(tiny_model), "-o", str(result), "-q"]).exit_code == 0
    again = runner.invoke(main, ["timeline", str(result), "-o", str(tmp_path / "again.png")])
    assert again.exit_code == 0, again.stderr
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with_model = runner.invoke(main, ["timeline", str(result), "-m", str(tiny_model), "--denoise"])
    assert with_model.exit_code == 2 and "--model, --denoise" in with_model.stderr


def test_timeline_of_bad_json_is_one_line_error(tmp_path):
    runner = CliRunner()
    two = tmp_path / "two.json"
    two.write_text(json.dumps([document(5, []), document(5, [])]))
    not_json = tmp_path / "broken.json"
    not_json.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text('{"name": "something else"}')
    for path, cause in ((two, "holds the results of 2 files"), (not_json, "not JSON"),
                        (other, "not a sercli JSON result"), (tmp_path / "missing.json", "cannot read")):
        result = runner.invoke(main, ["timeline", str(path), "-o", str(tmp_path / "x.png")])
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"sercli: error: {path}: ") and cause in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_timeline_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(main, ["timeline", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert result.stderr.strip() == 'sercli: error: sercli timeline needs matplotlib: pip install "sercli[plot]"'


def test_a_file_without_speech_draws_grey(tmp_path):
    png = draw_timeline(document(2.0, []), tmp_path / "quiet.png")
    assert all(colour_share(png, label, slice(100, 1350)) == 0 for label in LABELS)

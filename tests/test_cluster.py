"""`sercli analyze --ray`: same outputs as local mode on a local Ray, survives a killed worker.

Needs the `ray` extra (CI installs it); skipped without it. Each test starts its own local Ray
in a subprocess, as a user's command would.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

SERCLI = [sys.executable, "-m", "sercli.cli"]
TOLERANCE = 5e-3  # bf16 posteriors depend a little on which segments share a batch


def library(folder: Path, example: Path, run_ffmpeg, copies: int = 6) -> Path:
    """A small media library: copies of the example in several containers, and one bad file."""
    folder.mkdir()
    for i in range(copies):
        target = folder / f"talk{i:02d}.{['mp3', 'wav', 'm4a'][i % 3]}"
        if target.suffix == ".mp3":
            shutil.copyfile(example, target)
        else:
            run_ffmpeg("-i", str(example), "-ar", "22050", str(target))
    (folder / "broken.mp3").write_text("not audio")
    return folder


def rows(folder: Path) -> dict[str, list[dict]]:
    found = {}
    for path in sorted(folder.rglob("*.csv")):
        with open(path, newline="") as handle:
            found[path.name] = list(csv.DictReader(handle))
    return found


def assert_same(local: dict, clustered: dict) -> None:
    assert local.keys() == clustered.keys()
    for name in local:
        assert len(local[name]) == len(clustered[name]), name
        for a, b in zip(local[name], clustered[name]):
            assert (a["start_s"], a["end_s"]) == (b["start_s"], b["end_s"])
            for key in a:
                if key.startswith("p_"):
                    assert abs(float(a[key]) - float(b[key])) < TOLERANCE, (name, key)


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*SERCLI, *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


def test_ray_local_gives_the_local_results(tmp_path, example, run_ffmpeg):
    media = library(tmp_path / "media", example, run_ffmpeg)
    local = run("analyze", media, "--output-dir", tmp_path / "local", "-q")
    clustered = run("analyze", media, "--output-dir", tmp_path / "ray", "-q", "--ray=local")
    assert local.returncode == clustered.returncode == 1  # the broken file, in both modes
    error = f"sercli: error: {media / 'broken.mp3'}: not a media file ffmpeg can read (invalid data)"
    assert local.stderr.strip() == clustered.stderr.strip() == error
    assert_same(rows(tmp_path / "local"), rows(tmp_path / "ray"))
    assert len(rows(tmp_path / "ray")) == 6
    # one combined output, in input order, as locally
    combined = run("analyze", media / "talk00.mp3", media / "talk01.wav", "--ray", "local", "--ray-actors", "2", "-q")
    assert combined.returncode == 0
    alone = run("analyze", media / "talk00.mp3", media / "talk01.wav", "-q")
    assert [r.split(",")[:4] for r in combined.stdout.splitlines()] == [r.split(",")[:4] for r in alone.stdout.splitlines()]
    # --skip-existing: nothing left to do
    again = run("analyze", media, "--output-dir", tmp_path / "ray", "--skip-existing", "--ray=local")
    assert again.returncode == 1 and "skipped 6 with existing output" in again.stderr


def worker_pids(kind: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if command.startswith(f"ray::{kind}"):
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's workers through /proc")
def test_a_killed_worker_loses_and_duplicates_nothing(tmp_path, example, run_ffmpeg):
    media = library(tmp_path / "media", example, run_ffmpeg, copies=12)
    (media / "broken.mp3").unlink()
    out = tmp_path / "out"
    process = subprocess.Popen([*SERCLI, "analyze", str(media), "--output-dir", str(out), "-q", "--ray=local",
                                "--batch-size", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = set()
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and len(killed) < 2:
        for kind in ("_Classifier", "_featurise"):
            if kind in killed:
                continue
            pids = worker_pids(kind)
            if pids and (kind == "_featurise" or any(out.rglob("*.csv"))):
                os.kill(pids[0], signal.SIGKILL)  # the model actor once some output exists
                killed.add(kind)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert killed == {"_Classifier", "_featurise"}, f"killed only {killed}"
    reference = run("analyze", media, "--output-dir", tmp_path / "local", "-q")
    assert reference.returncode == 0
    assert_same(rows(tmp_path / "local"), rows(out))  # every file, each segment once
    assert not list(out.rglob("*.part"))


def test_ray_missing_says_how_to_install(example, monkeypatch):
    from click.testing import CliRunner

    from sercli.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    result = CliRunner().invoke(main, ["analyze", str(example), "--ray=local"])
    assert result.exit_code == 2
    assert result.stderr.strip() == 'sercli: error: sercli --ray needs Ray: pip install "sercli[ray]"'
    # --denoise --ray runs the modified model alone, so it is not refused as an ensemble.
    result = CliRunner().invoke(main, ["analyze", str(example), "--denoise", "--ray=local"])
    assert result.exit_code == 2 and "needs Ray" in result.stderr


def test_local_mode_never_imports_ray(example, tmp_path):
    code = ("import sys; from sercli.cli import main\n"
            "try:\n    main(['analyze', sys.argv[1], '-q', '-o', sys.argv[2]])\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    result = subprocess.run([sys.executable, "-c", code, str(example), str(tmp_path / "o.csv")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr

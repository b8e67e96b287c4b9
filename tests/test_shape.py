"""The package's shape: what each entry point loads. `sercli --help` stays instant (no torch),
writing results needs no torch, and analysis never loads the training side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAINING = {"sercli.train", "sercli.experiment", "sercli.dataset", "sercli.metrics", "sercli.evaluation",
            "sercli.corpora", "sercli.programmes"}


def modules_after(code: str, cwd: Path = ROOT) -> set[str]:
    """The modules loaded once `code` has run in a fresh interpreter (SystemExit allowed)."""
    program = (f"import json, sys\ntry:\n    exec({code!r})\nexcept SystemExit:\n    pass\n"
               "sys.stdout.flush()\nprint('\\nMODULES ' + json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", program], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.rsplit("MODULES ", 1)[1]))


@pytest.mark.parametrize("argv", [["--help"], ["analyze", "--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["--version"]])
def test_help_loads_no_torch(argv):
    loaded = modules_after(f"from sercli.cli import main\nmain({argv!r})")
    assert "torch" not in loaded and "numpy" not in loaded


def test_writing_results_needs_no_torch():
    loaded = modules_after("import sercli.writers, sercli.sink, sercli.results, sercli.report")
    assert "torch" not in loaded


def test_inference_never_loads_the_training_side(tiny_model, example, tmp_path):
    api = modules_after("import sercli.predict, sercli.analysis, sercli.weights, sercli.cluster")
    assert "torch" in api and not api & TRAINING, sorted(api & TRAINING)
    command = modules_after(f"from sercli.cli import main\n"
                            f"main(['analyze', {str(example)!r}, '-m', {str(tiny_model)!r}, '-q', '-f', 'json', "
                            f"'-o', {str(tmp_path / 'out.json')!r}])")
    assert (tmp_path / "out.json").is_file()
    assert "sercli.predict" in command and not command & TRAINING, sorted(command & TRAINING)


def test_every_subpackage_is_installed():
    """A plain `pip install .` (the quick start) ships every package folder of sercli/, not just
    those an editable install happens to find."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"sercli." + p.parent.name for p in (root / "sercli").glob("*/__init__.py")}
    assert folders <= listed, f"add to pyproject.toml's packages: {sorted(folders - listed)}"

"""`sercli`: the command line. Thin: each subcommand (sercli/commands/) validates its options,
turns them into one typed run and hands it to the library; heavy modules load inside the
subcommand that needs them, so `sercli --help` is instant."""

from __future__ import annotations

import click

from . import __version__
from .commands.analyze import FORMATS, ONE_FILE_FORMATS, analyze  # noqa: F401
from .commands.draw import plot, timeline
from .commands.evaluate import evaluate
from .commands.models import models
from .commands.train import train
from .report import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE  # noqa: F401


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="sercli")
def main() -> None:
    """Which emotion is expressed in the speech of any audio or video file, segment by segment."""


for command in (analyze, train, evaluate, plot, timeline, models):
    main.add_command(command)


if __name__ == "__main__":
    main()

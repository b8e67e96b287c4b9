"""How sercli's commands talk to their user: exit statuses and one-line messages on stderr.
Torch-free."""

from __future__ import annotations

import sys

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def say(console, kind: str, message: str) -> None:
    """`sercli: KIND: MESSAGE` on stderr, or through `console` while a progress bar is up."""
    if console is not None:
        console.print(f"sercli: {kind}: {message}", markup=False, highlight=False)
    else:
        click.echo(f"sercli: {kind}: {message}", err=True)


def fail(message: str, code: int) -> None:
    """Say `message` as an error and exit with `code`."""
    say(None, "error", message)
    sys.exit(code)

"""The `sercli` command (and `python -m sercli`): its entry point stops cleanly on any stop signal."""

from __future__ import annotations

import signal
import sys

from .stopping import Interrupted, install


def run() -> None:
    """Install the stop-signal handlers before anything heavy is imported, then run the command
    line; a stop at any moment, start-up included, ends with one line and 128 + the signal."""
    install()
    try:
        from .cli import main

        main()
    except Interrupted as stop:
        name = "" if stop.signum == signal.SIGINT else f" ({stop})"
        sys.stderr.write(f"sercli: error: interrupted{name}; outputs already completed are kept\n")
        sys.stderr.flush()
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    run()

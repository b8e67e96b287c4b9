"""Stopping cleanly on SIGINT, SIGTERM and SIGHUP: the same path for Ctrl-C, `kill`, `timeout`
and batch schedulers.

Each signal raises `Interrupted` in the main thread. It is a BaseException but not a
KeyboardInterrupt, so no `except Exception` swallows it and click does not turn it into its
own "Aborted!" with exit 1: it unwinds through every `finally` (temporary outputs removed,
ffmpeg children killed, the decoding thread stopped) up to the entry point, which says so in
one line and exits 128 + the signal's number, as a shell reports a command killed by it.
"""

from __future__ import annotations

import signal

HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(BaseException):
    """A stop signal arrived; `exit_code` is 128 + its number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame) -> None:
    # Later signals are ignored while the first one's unwinding cleans up, so a second Ctrl-C
    # cannot cut a cleanup short and leave a temporary file behind.
    for other in HANDLED:
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


def install() -> None:
    """Route the stop signals to `Interrupted` (main thread only, as Python requires). A signal
    the process was started with ignored (`nohup` ignores SIGHUP) stays ignored."""
    for signum in HANDLED:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise)

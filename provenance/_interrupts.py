"""Hold Ctrl-C back over a commit point, so that an interrupt lands before it or after it, never inside.

A generation's files are renamed into place inside the registry transaction and the commit makes them
final. A ``KeyboardInterrupt`` raised between the database's commit and the line that notes it was taken
for a failure before the commit, and the clean-up removed the files of a committed record. Python has no
standard way to delay a signal, so this installs a SIGINT handler for the span: unarmed it behaves like the
handler it replaced (Ctrl-C stops the work at once, e.g. while waiting for the database's write lock);
armed it only notes the signal, which is raised as ``KeyboardInterrupt`` when the span ends. Signals reach
only the main thread, so elsewhere (worker threads) this does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["InterruptGuard", "interrupts_held"]


class InterruptGuard:
    """The span's switch: :meth:`hold` from the point where stopping would leave a half-done commit."""

    def __init__(self) -> None:
        self.holding = False
        self.received = False

    def hold(self) -> None:
        self.holding = True


@contextmanager
def interrupts_held() -> Iterator[InterruptGuard]:
    """A span in which SIGINT is deferred once :meth:`InterruptGuard.hold` was called, and raised as
    ``KeyboardInterrupt`` at the end of the span (after the block's own exception, if any, is raised)."""
    guard = InterruptGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> Any:
        if guard.holding:
            guard.received = True
            return None
        if callable(previous):
            return previous(signum, frame)
        if previous == signal.SIG_DFL:  # (SIG_IGN: nothing to do)
            raise KeyboardInterrupt
        return None

    signal.signal(signal.SIGINT, handler)
    try:
        yield guard
    finally:
        signal.signal(signal.SIGINT, previous)
    if guard.received:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt

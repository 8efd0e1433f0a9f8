"""Ctrl-C and SIGTERM for the command line: exceptions in the main thread, held back while a row is written.

Python runs signal handlers in the main thread, whichever thread the signal was delivered to (here often
a decoding or torch worker thread), so blocking the signals in the main thread does not hold them back;
the handlers below check, in the main thread, whether a row is being written, and if so raise once it
is in every output.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C (outputs are finished on the way), then exit 143."""


_RAISES: dict[int, type[BaseException]] = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}
_depth = 0  # nesting of deferred() in the main thread
_pending: int | None = None  # the first signal that arrived while deferred


def _handler(signum: int, frame: Any) -> None:
    global _pending
    if _depth:
        if _pending is None:
            _pending = signum
        return
    raise _RAISES[signum]


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While inside: SIGINT raises KeyboardInterrupt and SIGTERM raises :class:`Terminated`, except within
    :func:`deferred`. A SIGINT that was ignored when the process started (``nohup``) stays ignored."""
    installed = {}
    for signum in _RAISES:
        current = signal.getsignal(signum)
        if signum == signal.SIGINT and current is not signal.default_int_handler:
            continue
        installed[signum] = signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block is done, then raise for the first that arrived."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            raise _RAISES[signum]

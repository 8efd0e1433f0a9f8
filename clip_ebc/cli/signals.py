"""Ctrl-C and SIGTERM for the command line: exceptions in the main thread, held back while a row is written.

Python runs signal handlers in the main thread, whichever thread the signal was delivered to (here often
a decoding or torch worker thread), so blocking the signals in the main thread does not hold them back;
the handlers below check, in the main thread, whether a row is being written (or outputs are being
finished), and if so raise once that is done.
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
_depth = 0  # nesting of deferred() (and of installing / restoring the handlers) in the main thread
_pending: int | None = None  # the first signal that arrived while deferred
_installed: set[int] = set()  # the signals whose handler is ours while stop_signals_raise() is active


def _handler(signum: int, frame: Any) -> None:
    global _pending
    if _depth:
        if _pending is None:
            _pending = signum
        return
    raise _RAISES[signum]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_pending() -> None:
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise _RAISES[signum]


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While inside: SIGINT raises KeyboardInterrupt and SIGTERM raises :class:`Terminated`, except within
    :func:`deferred`. SIGINT is taken over only from Python's default handler: one that was ignored
    when the process started (``nohup``), or that the host program handles itself, is left alone.
    Outside the main thread (where handlers cannot be set) this does nothing."""
    global _depth, _pending
    if not _main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    _depth += 1  # a signal while the handlers change hands is held, then raised below
    try:
        for signum in _RAISES:
            current = signal.getsignal(signum)
            if signum == signal.SIGINT and current is not signal.default_int_handler:
                continue
            previous[signum] = signal.signal(signum, _handler)
            _installed.add(signum)
    finally:
        _depth -= 1
    finished = False
    try:
        _raise_pending()
        yield
        finished = True
    finally:
        _depth += 1
        try:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
                _installed.discard(signum)
        finally:
            _depth -= 1
        if not _depth:
            if finished:
                _raise_pending()
            else:
                _pending = None  # an exception is already ending the command


def reclaim() -> None:
    """Put this module's handlers back inside :func:`stop_signals_raise` after a library replaced them
    (``ray.init`` installs its own SIGTERM handler, which exits with code 15)."""
    if _main_thread():
        for signum in _installed:
            signal.signal(signum, _handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block is done, then raise for the first that arrived. When
    the block itself raises, that exception goes on and the signal is raised at the next chance (the end
    of the next deferred block, or of :func:`stop_signals_raise`), so a real error is not hidden."""
    global _depth
    if not _main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        raise
    _depth -= 1
    if not _depth:
        _raise_pending()

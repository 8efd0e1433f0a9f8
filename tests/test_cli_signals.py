"""Ctrl-C and SIGTERM in the command line: raised in the main thread, never in the middle of a row."""

import os
import signal
import threading
import time

import pytest

from clip_ebc.cli.signals import Terminated, deferred, reclaim, stop_signals_raise


class _Sender(threading.Thread):
    """Sends a process-directed signal when told to. It is started before the row, like the command's
    decoding and torch threads, so its signal mask is not the row's: the kernel may deliver the signal to
    it, and Python then runs the handler in the main thread all the same."""

    def __init__(self, signum: int) -> None:
        super().__init__(daemon=True)
        self.signum, self.go = signum, threading.Event()
        self.start()

    def run(self) -> None:
        if self.go.wait(10):
            os.kill(os.getpid(), self.signum)

    def send(self) -> None:
        self.go.set()
        self.join()


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, even when pytest was started with SIGINT ignored (``pytest &``)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_during_a_row_is_raised_after_it(signum, raised, python_sigint):
    steps = []
    sender = _Sender(signum)
    with pytest.raises(raised), stop_signals_raise():
        with deferred():
            steps.append("stdout")
            sender.send()
            time.sleep(0.3)  # the handler runs in here (and resumes the sleep): the row is not cut short
            steps.append("waited")
            steps.append("csv")
        steps.append("after the row")  # never reached: the signal is raised when the row is done
    assert steps == ["stdout", "waited", "csv"]


def test_a_signal_outside_a_row_is_raised_at_once():
    sender = _Sender(signal.SIGTERM)
    with pytest.raises(Terminated), stop_signals_raise():
        sender.send()
        for _ in range(500):
            time.sleep(0.01)
        pytest.fail("SIGTERM was not raised within 5 s")


def test_handlers_are_restored_and_an_ignored_sigint_stays_ignored():
    before = signal.getsignal(signal.SIGTERM)
    with stop_signals_raise():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup, or `cmd &` in a script
    try:
        with stop_signals_raise():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_while_the_handlers_are_put_back_is_raised_and_leaves_nothing_behind(python_sigint, monkeypatch):
    real = signal.signal

    def put_back_then_terminate(signum, handler):
        previous = real(signum, handler)
        if signum == signal.SIGINT and handler is signal.default_int_handler:  # SIGINT restored, SIGTERM not yet
            os.kill(os.getpid(), signal.SIGTERM)
        return previous

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), stop_signals_raise():
        monkeypatch.setattr(signal, "signal", put_back_then_terminate)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_in_a_row_is_not_hidden_by_a_pending_signal(python_sigint):
    # `crowdcount ... | head` and Ctrl-C at once: the closed pipe decides (a quiet exit), not the signal
    sender = _Sender(signal.SIGINT)
    with pytest.raises(BrokenPipeError), stop_signals_raise():
        with deferred():
            sender.send()
            time.sleep(0.2)
            raise BrokenPipeError
    # ... and a signal kept pending while an error passes is raised at the end of the next row
    sender = _Sender(signal.SIGTERM)
    steps = []
    with pytest.raises(Terminated), stop_signals_raise():
        try:
            with deferred():
                sender.send()
                time.sleep(0.2)
                raise OSError("disk full")
        except OSError:
            steps.append("handled")
        with deferred():
            steps.append("next row")
        steps.append("after it")
    assert steps == ["handled", "next row"]


def test_handlers_a_library_replaced_are_reclaimed():
    # ray.init installs its own SIGTERM handler (it exits with code 15); the command takes its own back
    with stop_signals_raise():
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        reclaim()
        sender = _Sender(signal.SIGTERM)
        with pytest.raises(Terminated):
            sender.send()
            time.sleep(2)

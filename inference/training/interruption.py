"""Stopping on SIGINT and SIGTERM alike, with the clean-up of an interrupted command.

Python turns SIGINT into :class:`KeyboardInterrupt`, but SIGTERM (what ``kill``, ``timeout`` and batch schedulers
send) ends the process at once: a run folder would keep ``status.json`` at "training", and the ranks of a
``--nproc`` launch would lose their parent and train on as orphans that hold the folder's lock.
:func:`stop_on_signals` makes both signals raise :class:`Interrupted` (a ``KeyboardInterrupt``, so every
``except KeyboardInterrupt`` and ``finally`` that cleans up runs) the first time; a repeat while that clean-up
runs is ignored, so a Ctrl-C that reaches a process both from the terminal and from its launcher stops it once.
:func:`forward_signals` is the launcher's half: it passes each signal on to its child processes.
"""

import contextlib
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised by SIGINT or SIGTERM; ``exit_status`` is the shell's ``128 + signal number`` (130, 143)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The exit status for an interruption: 130 for Ctrl-C, 143 for SIGTERM."""
    return interrupt.exit_status if isinstance(interrupt, Interrupted) else 128 + signal.SIGINT


@contextlib.contextmanager
def stop_on_signals():
    """Within the block the first SIGINT or SIGTERM raises :class:`Interrupted`; later ones are ignored while the
    interrupted command cleans up. The previous handlers come back after the block. Only the main thread can
    handle signals: elsewhere the block changes nothing."""

    def interrupt(signum, frame):
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    with _handlers(interrupt):
        yield


@contextlib.contextmanager
def _handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def forward_signals(pids):
    """Within the block, SIGINT and SIGTERM to this process are sent on to the processes ``pids`` and then raise
    :class:`Interrupted` here (once); the caller waits for the children before it leaves."""

    def forward(signum, frame):
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        raise Interrupted(signum)

    with _handlers(forward):
        yield

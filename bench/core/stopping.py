"""How a command stops on a signal: SIGINT, SIGTERM and SIGHUP take one exit path.

`docker stop`, SLURM's time limit and a Kubernetes eviction send SIGTERM; a closed terminal sends
SIGHUP; Ctrl-C sends SIGINT. Each raises `Interrupted` (a KeyboardInterrupt, so that no `except
Exception` of a case swallows it and pytest ends its session on it), which carries the signal, so
that the run records how it ended and the process exits 128 + the signal's number (130, 143, 129),
as a shell reports a command a signal ended.

Three policies, each a context manager that restores the previous handlers:
- `signals_interrupt()`: any of the three raises at once (a command's default; a rank of several).
- `stop_after_current_case(say)`: the first SIGINT only asks the sweep to stop after the case in
  progress; a second signal, or a SIGTERM/SIGHUP (whose sender waits only seconds), raises at once.
- `signals_deferred()`: noted, not raised, while the tables are written or torchrun winds down.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_requested: list[int] = []  # the signals received since the outermost policy was entered
_depth = 0


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised where the main thread was; `exit_code` is what the process exits with."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal_name(self.signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code_for(name: str | None) -> int:
    """The exit status of a run that `name` ("SIGTERM") interrupted: 128 + its number, 130 when unknown."""
    try:
        return 128 + signal.Signals[name or "SIGINT"]
    except KeyError:
        return 128 + signal.SIGINT


def requested() -> int | None:
    """The first stop signal received under the current policies, if any."""
    return _requested[0] if _requested else None


def interrupt_of(error: BaseException) -> Interrupted:
    """An Interrupted for any KeyboardInterrupt (Python's own default handler raises a plain one)."""
    if isinstance(error, Interrupted):
        return error
    return Interrupted(requested() or signal.SIGINT)


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    global _depth
    if threading.current_thread() is not threading.main_thread():  # signals can only be set there
        yield
        return
    if _depth == 0:
        _requested.clear()
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for signum, old in previous.items():
            signal.signal(signum, old)


def _note(signum: int) -> bool:
    """Records the signal; True when it is the first."""
    _requested.append(signum)
    return len(_requested) == 1


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise Interrupted at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        _note(signum)
        raise Interrupted(signum)

    with _handlers(handler):
        yield


@contextmanager
def stop_after_current_case(say: Callable[[str], None], on_first: Callable[[], None]) -> Iterator[None]:
    """The first SIGINT calls `on_first` (the sweep stops after the case in progress); anything else raises."""

    def handler(signum: int, frame: FrameType | None) -> None:
        first = _note(signum)
        if not (first and signum == signal.SIGINT):
            raise Interrupted(signum)
        on_first()
        try:
            say("Ctrl-C: stopping after the current case (press Ctrl-C again to abort it now)")
        except (OSError, RuntimeError):  # a terminal gone, or a print already in progress
            pass

    with _handlers(handler):
        yield


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Signals are noted and otherwise ignored: the stop already under way is finished first."""

    def handler(signum: int, frame: FrameType | None) -> None:
        _note(signum)

    with _handlers(handler):
        yield

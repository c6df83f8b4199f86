"""Errors a user can fix: each carries what was wrong and what to do, so the CLI can print both."""

from __future__ import annotations


class BenchError(Exception):
    """A failure caused by input or environment, reported without a traceback.

    `exit_code` 2 means bad input (nothing was measured); the CLI uses it as the process status.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.short: str | None = None  # a one-line form for notes, where the message is long

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(BenchError):
    """An option value that cannot work (unknown device, bad batch size, ...)."""


class DatasetError(BenchError):
    """Dataset files missing, truncated or corrupt, or a download that failed."""


class RunFailure(BenchError):
    """A run that could not go on (its worker group failed before any case): exit status 1."""

    exit_code = 1


class WriteFailure(BenchError):
    """A file of the run folder could not be written (full, read-only, gone): the run stops, exit 1."""

    exit_code = 1


class ResultsFileError(BenchError):
    """A file given to `report` or `compare` that is not a readable results file."""


def one_line(error: BaseException, limit: int = 500) -> str:
    """`Type: message` on one line, cut to `limit` characters: how a failure is shown in a cell or a check."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:limit]


class CheckFailure(Exception):
    """A computation of the install check that ran and got a wrong answer: what it saw, and what to do."""

    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint

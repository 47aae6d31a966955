"""Errors a user can act on: each names the file, line, field or key that is wrong."""

from __future__ import annotations


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), cut to `limit`."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]


class TunedexError(Exception):
    """Base for errors shown to the user without a traceback (CLI exits non-zero)."""

    exit_code = 2


class ConfigError(TunedexError):
    """The config file is missing, malformed, or has a wrong/unknown key."""


class DataError(TunedexError):
    """An input data file breaks the data contract (encoding, JSON, field types)."""

    def __init__(self, path: str, line: int | None, field: str | None, expected: str):
        where = f"{path}" + (f", line {line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{expected}")
        self.path, self.line, self.field, self.expected = path, line, field, expected


class ValidationFailed(TunedexError):
    """A Great Expectations suite failed; the summary lists each failed expectation."""

    exit_code = 3


class LeakageError(TunedexError):
    """An eval question also appears (normalised) in the train split."""

    exit_code = 3


class ModelNotAvailable(TunedexError):
    """A model id cannot be resolved offline and downloads are not allowed."""


class ServingError(TunedexError):
    """The release to serve cannot be used as recorded (missing alias, table or version)."""

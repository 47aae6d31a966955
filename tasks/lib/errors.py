"""Errors a user can act on: each names the file, line, field or key that is wrong."""

from __future__ import annotations


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), cut to `limit`."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a timeout, a worker's cancellation): unwinds like Ctrl-C, so every `with`
    cleans up (temp outputs, MLflow runs ended KILLED, the write lock) before the exit."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signal = signum


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


class DiskFull(TunedexError):
    """A write ran out of space or quota (ENOSPC, EDQUOT); what was published before is intact."""

    def __init__(self, what: str, path: str, free_bytes: int | None, key: str | None = None):
        free = ("free space unknown" if free_bytes is None else
                f"{free_bytes / 1e6:.1f} MB free" if free_bytes >= 100_000 else
                f"{free_bytes // 1000} KB free")
        elsewhere = f"point {key} elsewhere" if key else "write elsewhere"
        super().__init__(f"no space left on device while writing {what} to {path} ({free}): "
                         f"free space or {elsewhere}; nothing was published")
        self.what, self.path, self.free_bytes, self.key = what, path, free_bytes, key

"""Errors a user can act on (tasks/lib/errors.py): where, which field, what was expected."""

from tasks.lib.errors import (
    ConfigError,
    DataError,
    LeakageError,
    TunedexError,
    ValidationFailed,
    first_line,
)


def test_data_error_names_file_line_and_field():
    err = DataError("qa.jsonl", 3, "doc_ids", "expected a list of strings")
    assert str(err) == "qa.jsonl, line 3: field 'doc_ids': expected a list of strings"
    assert (err.path, err.line, err.field) == ("qa.jsonl", 3, "doc_ids")
    assert str(DataError("qa.jsonl", None, None, "file is empty")) == "qa.jsonl: file is empty"


def test_exit_codes_tell_config_from_failed_checks():
    assert issubclass(DataError, TunedexError) and ConfigError.exit_code == 2
    assert ValidationFailed.exit_code == LeakageError.exit_code == 3


def test_first_line_cuts_and_falls_back_to_the_type():
    assert first_line(ValueError("  first\nsecond")) == "first"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("x" * 400), limit=10) == "x" * 10

"""PII redaction: what is personal data is replaced, lookalikes that fail checksums are not."""

import pytest

from tasks.lib.pii import iban_ok, luhn_ok, redact


@pytest.mark.parametrize("text,expected,kind", [
    ("mail me at jane.doe@example.co.uk please", "mail me at [EMAIL] please", "email"),
    ("card 4111 1111 1111 1111 was charged twice", "card [CARD] was charged twice", "card"),
    ("refund to DE89 3704 0044 0532 0130 00 thanks", "refund to [IBAN] thanks", "iban"),
    ("call me on +44 20 7946 0958 tonight", "call me on [PHONE] tonight", "phone"),
    ("ring (555) 123-4567", "ring [PHONE]", "phone"),
])
def test_personal_data_is_redacted(text, expected, kind):
    assert redact(text) == (expected, {kind: 1})


@pytest.mark.parametrize("text", [
    "order 1234 5678 9012 3456 has not arrived",  # 16 digits, fails Luhn: not a card
    "my meter read 12345 on 2026-11-02",          # a date is not a phone number
    "error E07 after 10 minutes",
    "DE00 1234 5678 9012 3456 78",                # fails mod 97: not an IBAN
])
def test_lookalikes_are_kept(text):
    assert redact(text) == (text, {})


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_counts_add_up():
    text, counts = redact("a@b.io or c@d.io, card 5555 5555 5555 4444")
    assert counts == {"email": 2, "card": 1} and "@" not in text and "5555" not in text

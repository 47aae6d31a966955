"""PII detection and redaction (tasks/lib/pii.py): what is personal data is replaced, lookalikes
(dates, times, versions, prices, order numbers, numbers failing a checksum) are not; frames are
scanned per field, counted per kind, and findings named by line and field, never by value."""

import pandas as pd
import pytest

from tasks.lib.pii import (
    DEFAULT_REGIONS,
    KINDS,
    describe_findings,
    field_counts,
    findings,
    iban_ok,
    luhn_ok,
    pii_metrics,
    redact,
    scan_frame,
)


@pytest.mark.parametrize("text,expected,kind", [
    ("mail me at jane.doe@example.co.uk please", "mail me at [EMAIL] please", "email"),
    ("card 4111 1111 1111 1111 was charged twice", "card [CARD] was charged twice", "card"),
    ("refund to DE89 3704 0044 0532 0130 00 thanks", "refund to [IBAN] thanks", "iban"),
    ("call me on +44 20 7946 0958 tonight", "call me on [PHONE] tonight", "phone"),
    ("ring (212) 555-0123", "ring [PHONE]", "phone"),                  # US, national format
    ("our line (0800 414 2290) is free", "our line ([PHONE]) is free", "phone"),  # GB
    ("Ruf an: 030 12345678", "Ruf an: [PHONE]", "phone"),              # DE, national format
    ("appelez le 01 23 45 67 89", "appelez le [PHONE]", "phone"),      # FR, national format
    ("tel 0049 30 901820", "tel [PHONE]", "phone"),                    # 00: international
    ("pay 5555-5555-5555-4444 now", "pay [CARD] now", "card"),
    ("IBAN GB82WEST12345698765432.", "IBAN [IBAN].", "iban"),
])
def test_personal_data_is_redacted(text, expected, kind):
    assert redact(text) == (expected, {kind: 1})


@pytest.mark.parametrize("text", [
    "order 1234 5678 9012 3456 has not arrived",  # 16 digits, fails Luhn: not a card
    "my meter read 12345 on 2026-11-02",          # a date is not a phone number
    "error E07 after 10 minutes",
    "DE00 1234 5678 9012 3456 78",                # fails mod 97: not an IBAN
    "card 4111 1111 1111 1112 declined",          # fails Luhn: not a card
    "ref 1234 5678 9012 3452",                    # passes Luhn, but no card starts with 1
    "maintenance window 00:30-05:30 UTC",
    "on 12/03/2024 at 14:30, and again on 2024.03.15",
    "upgrade to version 10.0.19045.3803 or 2.14.3",
    "it costs $1,299.00 (1.299,00 EUR), 230 V, 1,200 W",
    "order #20240315-0042 and order 123456789",
    "ISBN 978-3-16-148410-0",
])
def test_lookalikes_are_kept(text):
    assert redact(text) == (text, {})


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_counts_add_up():
    text, counts = redact("a@b.io or c@d.io, card 5555 5555 5555 4444")
    assert counts == {"email": 2, "card": 1} and "@" not in text and "5555" not in text


def test_phone_regions_decide_national_formats_and_plus_numbers_are_always_found():
    french = "appelez le 01 23 45 67 89"
    assert redact(french, regions=("US",)) == (french, {})
    assert redact("+33 1 23 45 67 89", regions=("US",)) == ("[PHONE]", {"phone": 1})
    assert redact("+33 1 23 45 67 89 or 01 23 45 67 89", regions=()) == (
        "[PHONE] or 01 23 45 67 89", {"phone": 1})


def test_strict_grouping_drops_lookalikes_that_valid_takes():
    ticket = "ticket 2024-000123"  # ten digits that make a valid US number
    assert redact(ticket) == ("ticket [PHONE]", {"phone": 1})
    assert redact(ticket, leniency="strict_grouping") == (ticket, {})
    assert redact("ring (212) 555-0123", leniency="strict_grouping")[1] == {"phone": 1}


def test_only_the_configured_kinds_are_looked_for():
    text = "a@b.io, +44 20 7946 0958, 4111 1111 1111 1111"
    assert redact(text, kinds=("email",)) == ("[EMAIL], +44 20 7946 0958, 4111 1111 1111 1111",
                                              {"email": 1})
    assert redact(text, kinds=("phone", "card"))[1] == {"phone": 1, "card": 1}


def test_defaults_are_the_config_defaults():
    from tasks.lib.config import PiiConfig

    assert PiiConfig().phone_regions == DEFAULT_REGIONS
    assert sorted(PiiConfig().kinds) == sorted(KINDS) and PiiConfig().policy == "warn"


def test_unknown_phone_region_is_a_config_error():
    from tasks.lib.config import parse_config
    from tasks.lib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pii: .*unknown region\(s\) \['UK'\]; use ISO 3166"):
        parse_config({"pii": {"phone_regions": ["GB", "UK"]}})
    with pytest.raises(ConfigError, match=r"pii.policy: Input should be 'warn', 'redact' or 'fail'"):
        parse_config({"pii": {"policy": "drop"}})


QA = pd.DataFrame({
    "line": [1, 2, 3],
    "qid": ["q1", "q2", "q3"],
    "question": ["mail me at jo@x.org or call +44 20 7946 0958", "How much is Pro?", None],
    "answer": ["Sure.", "9 euros, card 4111 1111 1111 1111 or jo@x.org", "Ten minutes."]})


def test_scan_frame_redacts_a_copy_and_counts_per_row():
    scan = scan_frame(QA, ("question", "answer", "title"))  # no title column: skipped
    assert scan.frame["question"].tolist()[:2] == ["mail me at [EMAIL] or call [PHONE]",
                                                   "How much is Pro?"]
    assert pd.isna(scan.frame["question"][2]) and scan.frame["question"].dtype == QA["question"].dtype
    assert scan.frame["answer"][1] == "9 euros, card [CARD] or [EMAIL]"
    assert QA["question"][0].startswith("mail me at jo@x.org")  # not mutated
    assert scan.found == {"question": [{"email": 1, "phone": 1}, {}, {}],
                          "answer": [{}, {"email": 1, "card": 1}, {}]}
    assert scan.kinds_column("question") == ["email, phone", None, None]


def test_counts_metrics_and_findings_name_line_field_kind_not_value():
    scans = {"qa": scan_frame(QA, ("question", "answer"))}
    counts = field_counts(scans)
    assert counts == {"qa.question": {"email": 1, "phone": 1}, "qa.answer": {"card": 1, "email": 1}}
    assert pii_metrics(counts, ("email", "phone")) == {
        "pii.qa.question.email": 1, "pii.qa.question.phone": 1, "pii.qa.answer.email": 1,
        "pii.qa.answer.phone": 0, "pii.total": 3}
    assert findings(scans["qa"]) == [(1, "question", "email, phone"), (2, "answer", "card, email")]
    text = describe_findings(scans, {"qa": "raw/qa.jsonl"}, limit=1)
    assert "raw/qa.jsonl line 1, field 'question': email, phone" in text
    assert "... and 1 more" in text and "line 2" not in text
    assert "jo@x.org" not in text and "7946" not in text

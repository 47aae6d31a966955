"""Personal data in free text: find and redact e-mail addresses, IBANs, payment card numbers and
phone numbers before text is chunked, embedded, trained on or logged (the PII gate: validate
counts, prepare redacts under `pii.policy: redact`, serving's query log always redacts).

Detectors, all offline: where a kind has rules a regular expression cannot know, a maintained
library decides. `phonenumbers` (Google's libphonenumber) matches numbers against each region's
numbering plan, so dates, times, versions, prices and order numbers are not phone numbers;
`python-stdnum` checks IBANs (country length and format, mod 97) and card numbers (Luhn).
E-mail addresses are a regular expression. Presidio was not chosen: its recognisers need a spaCy
language model, which is not on PyPI (it downloads from GitHub releases).

Usage: `redact("mail me at a@b.org")` -> ("mail me at [EMAIL]", {"email": 1});
`scan_frame(qa, ("question", "answer"))` -> the redacted copy and what each row held.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tasks.lib.data import LINE_COLUMN

# The order kinds are looked for: an IBAN's digits are no card, a card number is no phone number.
KINDS = ("email", "iban", "card", "phone")
DEFAULT_REGIONS = ("US", "GB", "DE", "FR")  # = PiiConfig().phone_regions (a test checks it)
PLACEHOLDERS = {"email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "phone": "[PHONE]"}
FIELDS = {"corpus": ("title", "text"), "qa": ("question", "answer")}  # the free text scanned

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
# 13-19 digits, spaces or dashes between; payment cards start with 2-6 (ISO/IEC 7812 MII).
CARD = re.compile(r"(?<![\d-])[2-6](?:[ -]?\d){12,18}(?![\d-])")

Span = tuple[int, int]


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string (payment cards)."""
    from stdnum import luhn

    return luhn.is_valid(digits)


def iban_ok(text: str) -> bool:
    """A valid IBAN: known country, its length and format, mod-97 check digits (spaces ignored)."""
    from stdnum import iban

    return iban.is_valid(text)


def email_spans(text: str) -> list[Span]:
    return [m.span() for m in EMAIL.finditer(text)]


def iban_spans(text: str) -> list[Span]:
    return [m.span() for m in IBAN.finditer(text) if iban_ok(m.group())]


def card_spans(text: str) -> list[Span]:
    return [m.span() for m in CARD.finditer(text) if luhn_ok(re.sub(r"\D", "", m.group()))]


def phone_spans(text: str, regions: Sequence[str] = DEFAULT_REGIONS,
                leniency: str = "valid") -> list[Span]:
    """Valid numbers in any region's national format; with + (or the region's 00) any country.
    No regions: only numbers written with +. Leniency strict_grouping also wants the digits
    grouped as the country writes them (fewer lookalikes, misses odd groupings)."""
    import phonenumbers

    level = getattr(phonenumbers.Leniency, leniency.upper())
    spans = []
    for region in regions or (None,):
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=level):
            opened = m.raw_string.startswith("(") and ")" not in m.raw_string  # "(0800 414 2290)"
            spans.append((m.start + opened, m.end))
    return merged(spans)


def merged(spans: Iterable[Span]) -> list[Span]:
    """Sorted spans with overlapping ones joined (two regions may match the same number)."""
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


FINDERS: dict[str, Callable[[str], list[Span]]] = {
    "email": email_spans, "iban": iban_spans, "card": card_spans}


def replace_spans(text: str, spans: list[Span], placeholder: str) -> str:
    """The text with each (sorted, disjoint) span replaced by the placeholder."""
    parts, end = [], 0
    for start, stop in spans:
        parts += [text[end:start], placeholder]
        end = stop
    return "".join(parts) + text[end:]


def redact(text: str, kinds: Iterable[str] = KINDS, regions: Sequence[str] = DEFAULT_REGIONS,
           leniency: str = "valid") -> tuple[str, dict[str, int]]:
    """The text with each e-mail, IBAN, card and phone number (of `kinds`) replaced by its
    placeholder, and the count of each kind replaced (kinds with none are left out)."""
    wanted = set(kinds)
    counts: dict[str, int] = {}
    for kind in (k for k in KINDS if k in wanted):
        spans = (phone_spans(text, regions, leniency) if kind == "phone"
                 else FINDERS[kind](text))
        if spans:
            counts[kind] = len(spans)
            text = replace_spans(text, spans, PLACEHOLDERS[kind])
    return text, counts


# ---- frames: what validate counts and prepare redacts ------------------------------------------


@dataclass(frozen=True)
class Scan:
    """One frame with its free-text fields redacted, and what each row held, per field."""

    frame: pd.DataFrame  # the redacted copy (non-text values untouched)
    found: dict[str, list[dict[str, int]]]  # field -> per row: count by kind

    def kinds_column(self, field: str) -> list[str | None]:
        """Per row, the kinds found in `field` ("email, phone"), None where none: what the GX
        expectation checks, so reports name kinds, never the values."""
        return [", ".join(sorted(c)) or None for c in self.found[field]]


def scan_frame(frame: pd.DataFrame, fields: Sequence[str], kinds: Iterable[str] = KINDS,
               regions: Sequence[str] = DEFAULT_REGIONS, leniency: str = "valid") -> Scan:
    """Redact `fields` of a copy of `frame` (missing fields are skipped)."""
    out, found = frame.copy(), {}
    kinds = tuple(kinds)
    for field in (f for f in fields if f in frame.columns):
        pairs = [redact(v, kinds, regions, leniency) if isinstance(v, str) else (v, {})
                 for v in frame[field]]
        out[field] = pd.Series([text for text, _ in pairs], index=frame.index,
                               dtype=frame[field].dtype)  # None stays None
        found[field] = [counts for _, counts in pairs]
    return Scan(out, found)


def scan_frames(frames: dict[str, pd.DataFrame], section: Any) -> dict[str, Scan]:
    """Scan the corpus and QA (FIELDS) as the `pii` config section says (kinds, phone rules)."""
    return {name: scan_frame(frame, FIELDS[name], section.kinds, section.phone_regions,
                             section.phone_leniency) for name, frame in frames.items()}


def field_counts(scans: dict[str, Scan]) -> dict[str, dict[str, int]]:
    """`frame.field` -> count by kind (every scanned field listed, `{}` when clean)."""
    out: dict[str, dict[str, int]] = {}
    for name, scan in scans.items():
        for field, rows in scan.found.items():
            total: dict[str, int] = {}
            for counts in rows:
                for kind, n in counts.items():
                    total[kind] = total.get(kind, 0) + n
            out[f"{name}.{field}"] = dict(sorted(total.items()))
    return out


def pii_metrics(counts: dict[str, dict[str, int]], kinds: Iterable[str] = KINDS,
                prefix: str = "pii") -> dict[str, int]:
    """Flat metrics, 0 where none was found: pii.qa.question.email, ..., and pii.total."""
    flat = {f"{prefix}.{where}.{kind}": by_kind.get(kind, 0) for where, by_kind in counts.items()
            for kind in kinds}
    return {**flat, f"{prefix}.total": sum(flat.values())}


def findings(scan: Scan) -> list[tuple[int, str, str]]:
    """(source line, field, kinds) of every row and field holding personal data, by line."""
    lines = [int(n) for n in scan.frame[LINE_COLUMN]]
    found = [(lines[i], field, kinds) for field in scan.found
             for i, kinds in enumerate(scan.kinds_column(field)) if kinds]
    return sorted(found)


def describe_findings(scans: dict[str, Scan], sources: dict[str, str], limit: int) -> str:
    """The first `limit` findings as `file line N, field 'f': kinds` (never the values)."""
    found = [(sources.get(name, name), *f) for name, scan in scans.items() for f in findings(scan)]
    shown = [f"  {path} line {line}, field '{field}': {kinds}"
             for path, line, field, kinds in found[:limit]]
    more = [f"  ... and {len(found) - limit} more"] if len(found) > limit else []
    return "\n".join([f"personal data found ({len(found)} field(s)); pii.policy is fail, so "
                      "remove it from the data or set pii.policy: redact:", *shown, *more])

"""The PII gate on data frames, shared by validate (corpus and QA) and reindex (the corpus):
scan, pick what GX validates and MLflow logs, add the `fail` expectations, summarise, warn.

Policies (config `pii.policy`): warn counts and logs; redact validates and logs the redacted
text; fail adds one expectation per scanned field, naming lines and kinds (never the values).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tasks.lib.config import PiiConfig
from tasks.lib.expectations import pii_expectations
from tasks.lib.pii import Scan, field_counts, scan_frames

Suites = dict[str, list[tuple[str, dict]]]


def gate_frames(frames: dict[str, pd.DataFrame], pii: PiiConfig
                ) -> tuple[dict[str, pd.DataFrame], dict[str, Scan]]:
    """Scan each frame for personal data; under policy redact the redacted copies are what GX
    validates and MLflow logs (so examples and Data Docs hold none), else the frames as given."""
    scans = scan_frames(frames, pii)
    if pii.policy == "redact":
        return {name: scan.frame for name, scan in scans.items()}, scans
    return frames, scans


def with_pii_checks(frames: dict[str, pd.DataFrame], suites: Suites, scans: dict[str, Scan],
                    policy: str) -> tuple[dict[str, pd.DataFrame], Suites]:
    """Under policy fail: a `pii_<field>` column per scanned field (the kinds each row holds)
    and an expectation that it is null; otherwise the frames and suites unchanged."""
    if policy != "fail":
        return frames, suites
    frames, suites = dict(frames), dict(suites)
    for name, scan in scans.items():
        columns = {f"pii_{field}": scan.kinds_column(field) for field in scan.found}
        frames[name] = frames[name].assign(**columns)
        suites[name] = [*suites[name], *pii_expectations(list(columns))]
    return frames, suites


def pii_summary(scans: dict[str, Scan], pii: PiiConfig) -> dict[str, Any]:
    """What the summary says about personal data: policy, kinds, count by field and kind."""
    counts = field_counts(scans)
    return {"policy": pii.policy, "kinds": list(pii.kinds), "counts": counts,
            "total": sum(n for by_kind in counts.values() for n in by_kind.values())}


def pii_warning(summary: dict[str, Any]) -> str | None:
    """The warning line for policy warn when anything was found (counts only, no values)."""
    if summary["policy"] != "warn" or not summary["total"]:
        return None
    found = "; ".join(f"{where}: " + ", ".join(f"{n} {kind}" for kind, n in by_kind.items())
                      for where, by_kind in summary["counts"].items() if by_kind)
    return (f"personal data left in the text (pii.policy: warn): {found}. Set pii.policy: "
            "redact to replace it before prepare, or fail to stop here")

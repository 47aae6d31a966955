"""Named points where a crash test stops a real process: with `TUNEDEX_FAILPOINT=<name>` set,
the process that reaches <name> writes "<pid> <name>" to `$TUNEDEX_FAILPOINT_FILE` and waits
there (at most 10 minutes) for the test's SIGKILL or SIGTERM; `<name>:go` writes the file and
carries on (a kill then lands while the next step runs, e.g. inside a LanceDB merge).

Unset (always, outside tests), a failpoint is one environment lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

WAIT_SECONDS = 600.0


def failpoint(name: str) -> None:
    """Stop here (or mark and go on) when the environment names this point; otherwise nothing."""
    wanted = os.environ.get("TUNEDEX_FAILPOINT")
    if wanted not in (name, f"{name}:go"):
        return
    Path(os.environ["TUNEDEX_FAILPOINT_FILE"]).write_text(f"{os.getpid()} {name}\n")
    if wanted == name:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.05)  # short sleeps: a signal handler runs between them

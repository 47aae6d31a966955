"""Start Prefect's temporary local API early, when a pipeline run is sure to need it.

Without PREFECT_API_URL, the first flow run starts a temporary API (uvicorn in a child process,
~5 s on 2 cores) and waits for it. The CLI first checks the MLflow registry and whether the run
would only repeat a registered release; that is seconds on a fresh store (its tables are
created). When no skip is possible without asking the registry (--force,
`schedule.skip_unchanged: false`, or a local sqlite store that does not exist yet), the API is
started in a background thread before that check, so the two overlap; otherwise nothing starts
early and a skipped run never pays for an API.

Usage (flows/cli.py): if cannot_skip(cfg, force): api = head_start(); ...; api.wait() before
the flow.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cannot_skip(cfg: Any, force: bool) -> bool:
    """True when the run must train whatever the registry holds: --force, skip_unchanged off,
    or a local sqlite registry whose file does not exist yet (nothing is registered)."""
    from tasks.lib.registry import registry_ref
    from tasks.lib.release_skip import skip_disabled

    if skip_disabled(cfg, force):
        return True

    uri = registry_ref(cfg).registry_uri or ""
    if not uri.startswith("sqlite:///"):
        return False
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return path not in ("", ":memory:") and not Path(path).exists()


class HeadStart:
    """The temporary API's start in a background thread (or nothing, when not started)."""

    def __init__(self, thread: threading.Thread | None = None) -> None:
        self.thread = thread

    def wait(self) -> None:
        """Block until the API answers /health (or its start failed: the flow retries and says
        why)."""
        if self.thread is not None:
            self.thread.join()


def head_start() -> HeadStart:
    """Start the temporary Prefect API now, in the background, unless a PREFECT_API_URL is set
    (call it only for a run that cannot be skipped: see cannot_skip)."""
    if os.environ.get("PREFECT_API_URL"):
        return HeadStart()
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():  # set in a Prefect profile rather than the environment
        return HeadStart()
    from prefect.server.api.server import SubprocessASGIServer

    def start() -> None:
        try:
            SubprocessASGIServer().start()  # the instance the flow's client uses later
        except Exception as err:  # noqa: BLE001 - the flow's own start retries and raises
            log.debug("temporary Prefect API head start failed: %s", err)

    thread = threading.Thread(target=start, name="prefect-api-head-start", daemon=True)
    thread.start()
    return HeadStart(thread)

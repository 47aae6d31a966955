"""Run policies shared by the flows: which tasks retry (I/O, index writes), and failure hooks.

Training and promotion never retry: a second training run is not an idempotent I/O step, and
registering a model version twice makes two versions. A TunedexError (bad data, bad config, a
failed gate input) is the user's to fix, so it is not retried either.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.tasks import exponential_backoff

from tasks.lib.errors import TunedexError

log = logging.getLogger("tunedex.notify")


TRANSIENT_MLFLOW = {"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED"}


def is_transient(err: BaseException) -> bool:
    """I/O that may work a second time: OS/network errors, LanceDB I/O, MLflow 5xx/throttling."""
    if isinstance(err, TunedexError):
        return False  # the user's to fix (data, config, a missing release)
    if isinstance(err, OSError | TimeoutError | ConnectionError):
        return True
    if getattr(err, "error_code", None) in TRANSIENT_MLFLOW:
        return True
    return "LanceError(IO)" in str(err)


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed task only when its error was transient I/O (not bugs, not bad input)."""
    try:
        err = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - no result to inspect
        return False
    return isinstance(err, BaseException) and is_transient(err)


# Three retries after 2, 4, 8 s (each +-50% jitter), for reads/writes that are idempotent.
IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2),
                              "retry_jitter_factor": 0.5, "retry_condition_fn": retry_on_io}


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow state hook (on_failure, on_crashed): log who failed and why.

    The extension point for alerts: replace or extend with a Prefect notification block, e.g.
    `from prefect.blocks.notifications import SlackWebhook; SlackWebhook.load("tunedex").notify(text)`.
    """
    text = (f"tunedex flow '{flow.name}' run '{flow_run.name}' ended {state.type.value}: "
            f"{state.message}")
    log.error(text)


def clean_killed_runs(catalog: Any) -> list[Any]:
    """Remove the temp files and dirs killed runs left (call it holding the write lock)."""
    from tasks.lib.files import clean_leftovers

    removed = clean_leftovers(*catalog.work_dirs)
    if removed:
        log.warning("removed %d temp output(s) left by killed runs: %s", len(removed),
                    ", ".join(map(str, removed[:5])) + (" ..." if len(removed) > 5 else ""))
    return removed


def stage_of(tb: Any) -> str:
    """The innermost stage (tasks/<stage>.py) a traceback passes through, else "start-up"."""
    import traceback

    from tasks.lib.stages import ALL_STAGES

    names = [frame.f_globals.get("__name__", "") for frame, _ in traceback.walk_tb(tb)]
    stages = [n.removeprefix("tasks.") for n in names if n.removeprefix("tasks.") in ALL_STAGES]
    return stages[-1] if stages else "start-up"


def until_cancelled(what: str, fn: Any, *args: Any) -> Any:
    """Call fn(*args); a SIGTERM (a timeout, a worker's cancellation) or Ctrl-C ends it as a
    Cancelled flow state instead of a crash.

    The exception has unwound every `with` on its way here: MLflow runs ended KILLED
    (tracking.py), temp outputs removed, and the caller's write lock is released as it returns.
    The champion is untouched: promotion moves it last, and that step is atomic per alias."""
    from prefect.exceptions import TerminationSignal
    from prefect.states import Cancelled

    try:
        return fn(*args)
    except (TerminationSignal, KeyboardInterrupt) as exc:  # KeyboardInterrupt: also errors.Terminated
        sig = getattr(exc, "signal", 2)
        message = (f"{what} cancelled by signal {sig} during {stage_of(exc.__traceback__)}; "
                   "the interrupted step published nothing (`tunedex releases` shows the champion)")
        log.warning(message)
        return Cancelled(message=message)

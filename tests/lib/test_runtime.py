"""Run policies (tasks/lib/runtime.py): only transient I/O is retried; the failure hook logs."""

import logging
from types import SimpleNamespace

import pytest

from tasks.lib.errors import ConfigError, DataError
from tasks.lib.runtime import IO_RETRIES, is_transient, notify_failure, retry_on_io


@pytest.mark.parametrize(("err", "transient"), [
    (OSError("disk hiccup"), True),
    (TimeoutError("slow"), True),
    (ConnectionResetError("reset"), True),
    (RuntimeError("LanceError(IO): connection reset"), True),
    (type("MlflowException", (Exception,), {"error_code": "TEMPORARILY_UNAVAILABLE"})("503"), True),
    (type("MlflowException", (Exception,), {"error_code": "INVALID_PARAMETER_VALUE"})("bad"), False),
    (DataError("x.jsonl", 3, "text", "a string"), False),
    (ConfigError("bad key"), False),
    (KeyError("a bug is not transient"), False),
])
def test_is_transient(err, transient):
    assert is_transient(err) is transient


def test_retry_on_io_reads_the_failed_state():
    from prefect.states import Completed, Failed

    assert retry_on_io(None, None, Failed(data=OSError("disk hiccup")))
    assert retry_on_io(None, None, Failed(data=RuntimeError("LanceError(IO): connection reset")))
    assert not retry_on_io(None, None, Failed(data=DataError("x.jsonl", 3, "text", "a string")))
    assert not retry_on_io(None, None, Failed(data=KeyError("a bug is not transient")))
    assert not retry_on_io(None, None, Completed(data="not an error"))


def test_io_retries_are_three_with_the_condition():
    assert IO_RETRIES["retries"] == 3 and IO_RETRIES["retry_condition_fn"] is retry_on_io
    assert IO_RETRIES["retry_jitter_factor"] == 0.5
    assert IO_RETRIES["retry_delay_seconds"](3) == [2, 4, 8]  # seconds before each retry


def test_failure_hook_logs_flow_run_and_message(caplog):
    flow = SimpleNamespace(name="tunedex-pipeline")
    run = SimpleNamespace(name="configs/smoke.yaml")
    state = SimpleNamespace(type=SimpleNamespace(value="FAILED"), message="boom")
    with caplog.at_level(logging.ERROR, logger="tunedex.notify"):
        notify_failure(flow, run, state)
    assert [r.getMessage() for r in caplog.records] == [
        "tunedex flow 'tunedex-pipeline' run 'configs/smoke.yaml' ended FAILED: boom"]

"""tunedex tasks: pure functions first, thin Prefect @task wrappers last.

Our loggers report at INFO wherever a flow runs (CLI, the `schedule` runner, a worker): Prefect
attaches its handlers to them (PREFECT_LOGGING_EXTRA_LOGGERS) but leaves their level unset."""

import logging

for _name in ("tasks", "flows", "tunedex"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.INFO)

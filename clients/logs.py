"""Where a step logs: the Prefect run logger inside a flow or task run (so its lines reach the UI), a plain module
logger outside one (tests, the CLI's plan mode, benchmarks)."""

from __future__ import annotations

import logging

from prefect.context import get_run_context
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

log = logging.getLogger("elastic_inference")


def in_prefect_run() -> bool:
    """True inside a Prefect flow or task run (where the run logger and artifacts are available)."""
    try:
        get_run_context()
    except MissingContextError:
        return False
    return True


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run; the ``elastic_inference`` logger outside one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return log

"""Where the model upload step logs: the Prefect run logger inside a flow or task run, a plain logger outside."""

from __future__ import annotations

import logging

log = logging.getLogger("elastic_inference.model")


def in_prefect_run() -> bool:
    """True inside a Prefect flow or task run (where the run logger and artifacts are available)."""
    from prefect.context import get_run_context

    try:
        get_run_context()
    except Exception:
        return False
    return True


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run; the ``elastic_inference.model`` logger outside one."""
    if in_prefect_run():
        from prefect import get_run_logger

        return get_run_logger()
    return log

"""Polling a remote state until it holds, with backoff and a deadline: the one poller of the flow's steps.

Built on ``tenacity`` like the clients' retries. The check returns ``None`` for "not yet" and anything else for
"done" (returned to the caller); an exception from the check ends the wait at once (a failed task is not something
to wait out). When time runs out :func:`poll_until` returns ``None`` and the caller raises with what it last saw,
in its own words. Delays are real seconds: they pace calls to a remote API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_result, stop_before_delay, wait_exponential

T = TypeVar("T")


def poll_until(
    check: Callable[[], T | None],
    timeout: float,
    interval: float = 1.0,
    max_interval: float = 15.0,
    backoff: float = 1.5,
) -> T | None:
    """Call ``check`` until it returns something other than ``None`` and return that, waiting ``interval``
    seconds after the first try, ``backoff`` times longer after each next one (at most ``max_interval``); give
    up, returning ``None``, once the next wait would end past ``timeout`` seconds from the start."""
    retrying = Retrying(
        retry=retry_if_result(lambda result: result is None),
        stop=stop_before_delay(timeout),
        wait=wait_exponential(multiplier=interval, exp_base=backoff, min=interval, max=max_interval),
        retry_error_callback=lambda state: None,
    )
    return retrying(check)

"""Waiting in tests: poll a check until it holds, and say what was last seen when it never does.

Importable from every test module (pytest puts ``tests/`` on ``sys.path`` for the root ``conftest.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.1,
             state: Callable[[], Any] | None = None, tolerate: tuple[type[BaseException], ...] = ()) -> Any:
    """Call ``check`` until it returns something truthy and return that.

    Exceptions of the ``tolerate`` types count as "not yet" (e.g. a 404 before an object exists). On timeout an
    AssertionError names ``what``, the last value (or exception) seen and, if given, ``state()``.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except tolerate as e:
            last = e
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() >= deadline:
            extra = f"; state: {state()!r}" if state else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}{extra}")
        time.sleep(interval)

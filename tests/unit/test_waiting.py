"""clients.waiting.poll_until: the steps' one poller (tenacity underneath)."""

from __future__ import annotations

import pytest

from clients.waiting import poll_until


def test_returns_the_first_answer_that_is_not_none() -> None:
    answers = iter([None, None, 0, 5])
    assert poll_until(lambda: next(answers), timeout=5, interval=0.001) == 0  # a falsy answer is still an answer


def test_gives_up_with_none_once_the_next_wait_would_pass_the_timeout() -> None:
    calls = []
    assert poll_until(lambda: calls.append(1), timeout=0.5, interval=0.1, max_interval=0.1) is None
    assert 2 <= len(calls) <= 7  # tried more than once, stopped near the deadline


def test_an_exception_from_the_check_ends_the_wait_at_once() -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        raise RuntimeError("the task failed")

    with pytest.raises(RuntimeError, match="the task failed"):
        poll_until(check, timeout=5, interval=0.001)
    assert calls == [1]

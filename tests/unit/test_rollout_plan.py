"""The rollout's steps as data and the one decision of what comes next: every transition of both strategies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.spec import DeploySpec
from tasks.rollout.plan import Outcome, Step, decide, plan


def spec(**rollout) -> DeploySpec:
    return DeploySpec.parse({"rollout": rollout})


def kinds(steps: list[Step]) -> list[tuple[str, str, int]]:
    return [(s.kind, s.name, s.weight) for s in steps]


def test_canary_plan_is_capacity_weight_and_analysis_per_step_then_switch_and_retire() -> None:
    steps = plan(spec(steps=[10, 50], step_seconds=30))
    assert kinds(steps) == [("weight", "step 1 (10%)", 10), ("analyse", "step 1 (10%)", 10),
                            ("weight", "step 2 (50%)", 50), ("analyse", "step 2 (50%)", 50),
                            ("switch", "promotion", 100), ("retire", "retire", 100)]
    assert [s.seconds for s in steps if s.kind == "analyse"] == [30, 30]


def test_blue_green_plan_is_switch_bake_retire_and_no_bake_without_a_window() -> None:
    assert kinds(plan(spec(strategy="blue-green", bake_seconds=60))) == [
        ("switch", "switch", 100), ("analyse", "bake", 100), ("retire", "retire", 100)]
    assert kinds(plan(spec(strategy="blue-green", bake_seconds=0))) == [
        ("switch", "switch", 100), ("retire", "retire", 100)]


def test_each_step_follows_the_previous_and_a_plan_run_to_its_end_is_promoted() -> None:
    steps = plan(spec(steps=[10, 50]))
    assert [decide(steps, i) for i in range(len(steps))] == steps
    assert decide(steps, len(steps)) == Outcome(decision="promoted", reason="2 step(s) passed")
    bg = plan(spec(strategy="blue-green"))
    assert decide(bg, len(bg)) == Outcome(decision="promoted", reason="the bake window passed")
    bare = plan(spec(strategy="blue-green", bake_seconds=0))
    assert decide(bare, len(bare)) == Outcome(decision="promoted", reason="no bake window")


def test_a_failed_analysis_before_the_switch_rolls_back_after_it_switches_back() -> None:
    steps = plan(spec(steps=[10, 50]))
    assert decide(steps, 2, "error rate 3%") == Outcome(decision="rolled back", reason="step 1 (10%): error rate 3%")
    assert decide(steps, 4, "p95 900 ms") == Outcome(decision="rolled back", reason="step 2 (50%): p95 900 ms")
    bg = plan(spec(strategy="blue-green"))
    assert decide(bg, 2, "p95 900 ms") == Outcome(decision="switched back", reason="bake (100%): p95 900 ms")


def test_only_an_analysis_can_fail_and_no_step_lies_beyond_the_plan() -> None:
    steps = plan(spec(steps=[10]))
    for done in (0, 1, 3, 4):  # nothing, a weight, the switch, the retire
        with pytest.raises(ValueError):
            decide(steps, done, "boom")
    for done in (-1, len(steps) + 1):
        with pytest.raises(ValueError):
            decide(steps, done)


@given(st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True).map(sorted), st.data())
def test_every_canary_run_ends_promoted_or_rolled_back_at_its_first_failed_analysis(weights, data) -> None:
    steps = plan(spec(steps=weights))
    fails_at = data.draw(st.one_of(st.none(), st.integers(0, len(weights) - 1)))
    done, failed, analysed = 0, None, 0
    while not isinstance(nxt := decide(steps, done, failed), Outcome):
        failed = None
        if nxt.kind == "analyse":
            failed = "bad" if analysed == fails_at else None
            analysed += 1
        done += 1
    if fails_at is None:
        assert nxt.decision == "promoted" and done == len(steps)
    else:
        assert nxt.decision == "rolled back" and nxt.reason.startswith(f"step {fails_at + 1} ")
        assert not any(s.kind == "switch" for s in steps[:done])

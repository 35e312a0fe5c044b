"""A rollout as data: the steps a strategy takes (as Argo Rollouts keeps ``steps`` and ``currentStepIndex``), and the
one pure decision of what comes next (as Flagger's ``advanceCanary`` takes exactly one step per tick).

    canary [10, 30]:  weight 10 ─ analyse ─ weight 30 ─ analyse ─ switch ─ retire
    blue-green:       switch (previous held at its replicas) ─ analyse (the bake) ─ retire

:func:`decide` reads how far the rollout got and whether the last analysis failed, and answers the next step or the
outcome: an analysis that failed before the switch rolls back, one that failed after it (a blue-green bake)
switches back; a plan run to its end is promoted. flows/rollout.py carries the steps out, one at a time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from core.spec import DeploySpec

StepKind = Literal["weight", "analyse", "switch", "retire"]


class Step(BaseModel):
    kind: StepKind
    name: str
    """The stage's name, as the record and the failure messages say it ("step 2 (30%)", "bake", ...)."""
    weight: int = 0
    """The users' share on the new release while this step runs."""
    seconds: float = 0.0
    """analyse: the window."""


class Outcome(BaseModel):
    decision: Literal["promoted", "rolled back", "switched back"]
    reason: str


def plan(spec: DeploySpec) -> list[Step]:
    """The steps of ``spec.rollout``'s strategy, after the isolated stress test passed."""
    r = spec.rollout
    if r.strategy == "blue-green":
        steps = [Step(kind="switch", name="switch", weight=100)]
        if r.bake_seconds:
            steps.append(Step(kind="analyse", name="bake", weight=100, seconds=r.bake_seconds))
        return [*steps, Step(kind="retire", name="retire", weight=100)]
    steps = []
    for i, weight in enumerate(r.steps, 1):
        name = f"step {i} ({weight}%)"
        steps += [Step(kind="weight", name=name, weight=weight),
                  Step(kind="analyse", name=name, weight=weight, seconds=r.step_seconds)]
    return [*steps, Step(kind="switch", name="promotion", weight=100), Step(kind="retire", name="retire", weight=100)]


def decide(steps: list[Step], done: int, failed: str | None = None) -> Step | Outcome:
    """What comes after the first ``done`` steps of ``steps``. ``failed``: why the last step (an analysis) failed,
    or None. A failure before the switch rolls back; after it, switches back. At the end: promoted."""
    if not 0 <= done <= len(steps):
        raise ValueError(f"{done} steps done of a plan of {len(steps)}")
    if failed is not None:
        if done == 0 or steps[done - 1].kind != "analyse":
            raise ValueError(f"only an analysis can fail, not {steps[done - 1].kind if done else 'nothing'}")
        where = steps[done - 1]
        switched = any(s.kind == "switch" for s in steps[:done])
        return Outcome(decision="switched back" if switched else "rolled back",
                       reason=f"{where.name}: {failed}" if where.name != "bake" else f"bake (100%): {failed}")
    if done == len(steps):
        analysed = [s for s in steps if s.kind == "analyse"]
        if any(s.name == "bake" for s in analysed):
            reason = "the bake window passed"
        elif analysed:
            reason = f"{len(analysed)} step(s) passed"
        else:
            reason = "no bake window"
        return Outcome(decision="promoted", reason=reason)
    return steps[done]

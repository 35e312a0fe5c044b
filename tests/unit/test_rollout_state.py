"""The rollout's state as kept in the cluster: stages map to Flagger's phases, and whatever a ConfigMap holds (edited
by hand, from another version) reads as a state or as none, never as an error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.spec import DeploySpec
from tasks.rollout.state import Phase, RolloutState, parse_state, phase_of, render_state


def test_stages_map_to_phases() -> None:
    assert [phase_of(s) for s in ("canary set-up", "isolated stress test", "step 2 (30%)", "bake",
                                  "capacity before the switch", "switch", "promotion", "retire")] == [
        Phase.INITIALIZING, Phase.INITIALIZING, Phase.PROGRESSING, Phase.PROGRESSING, Phase.PROMOTING,
        Phase.PROMOTING, Phase.PROMOTING, Phase.FINALISING]


def test_a_rendered_state_reads_back() -> None:
    spec = DeploySpec.parse({"serving": {"version": "v2", "namespace": "prod"}})
    state = RolloutState(release="v2", previous="v1", strategy="canary", phase=Phase.PROGRESSING,
                         stage="step 1 (10%)", weight=10, run="h/1")
    cm = render_state(spec, state)
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("bert-tfserving-rollout", "prod")
    back = parse_state(cm)
    assert back is not None and back.model_copy(update={"updated": ""}) == state and back.updated


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.text(), st.dictionaries(st.text(), st.text()),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                              lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20)))
def test_any_configmap_content_reads_as_a_state_or_none(data) -> None:
    import json

    for raw in ({"data": data}, {"data": {"state.json": data if isinstance(data, str) else json.dumps(data)}}):
        result = parse_state(raw)
        assert result is None or isinstance(result, RolloutState)

"""The timing table's overrides and pods in real time (sandbox/timings.py): pure, no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.runner import Sandbox
from sandbox.timings import DEFAULTS, POD_RATES, POD_STAGES, resolve, with_real_time_pods


@given(speed=st.floats(min_value=0.01, max_value=1000), start=st.floats(min_value=0, max_value=600))
def test_real_time_pods_last_their_seconds_at_any_speed(speed, start):
    options = with_real_time_pods({"pods": "real-time", "timings": {"container_start": start}}, speed)
    table = resolve(options)
    # simulated seconds / speed = real seconds: what the table says (or the override), whatever the speed
    assert table["container_start"] / speed == pytest.approx(start)
    assert table["volume_mount"] / speed == pytest.approx(DEFAULTS["volume_mount"])
    assert table["pod_seconds"] / speed == pytest.approx(1.0)
    assert table["image_pull_mb_per_s"] * speed == pytest.approx(DEFAULTS["image_pull_mb_per_s"])
    # the control plane keeps its simulated seconds
    assert table["ecs_boot"] == DEFAULTS["ecs_boot"] and table["hpa_sync"] == DEFAULTS["hpa_sync"]


def test_simulated_pods_are_the_default_and_leave_the_table_alone():
    assert resolve(with_real_time_pods({}, 50.0)) == DEFAULTS
    assert resolve(with_real_time_pods({"pods": "simulated"}, 50.0)) == DEFAULTS
    assert set(POD_STAGES) | set(POD_RATES) <= set(DEFAULTS)


@pytest.mark.parametrize("value", ["realtime", "", None, 1])
def test_an_unknown_pods_value_is_refused_before_anything_starts(tmp_path, value):
    with pytest.raises(ValueError, match=r"pods must be one of \['simulated', 'real-time'\]"):
        Sandbox(tmp_path / "sb", speed=50.0, options={"pods": value})
    assert not (tmp_path / "sb").exists()

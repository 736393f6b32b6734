"""The open-loop p50 floor bench/proxy_batching.py prints beside its rows: no policy, on
the fake clock of tests/harness/simulation.py, answers its median Poisson arrival
sooner. Were the floor too high (a slot count forgotten, the wait counted twice), the bench
would excuse a policy for a target it could meet."""

from __future__ import annotations

import pytest

from batch_proxy.policies import POLICIES, make_policy
from tests.harness.simulation import MODELS, Simulation, open_loop_floor_ms


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("load", [0.25, 0.5, 0.9])
def test_no_policy_answers_the_median_arrival_under_the_floor(
    name: str, policy: str, load: float
) -> None:
    model = MODELS[name]
    sim = Simulation(make_policy(policy, max_batch=32, max_wait_s=0.050, max_inflight=None), model)
    sim.poisson(load * model.capacity(), until=3.0)
    sim.run(3.5)
    direct_ms = (model.seconds(1) + model.rtt_s) * 1000  # the simulated call's HTTP: its round trip
    floor_ms = open_loop_floor_ms(model, direct_ms, hop_ms=0.0)
    assert sim.latency(0.5, after=0.5) * 1000 >= floor_ms


def test_the_floor_of_a_fixed_time_model_is_one_and_a_half_runs_per_slot_plus_http() -> None:
    # 20 ms runs, 0.5 ms of HTTP on the direct call, 0.6 ms through the proxy
    assert open_loop_floor_ms(MODELS["20ms"], 20.5, 0.6) == pytest.approx(30 + 0.5 + 0.6)
    assert open_loop_floor_ms(MODELS["two"], 20.5, 0.6) == pytest.approx(25 + 0.5 + 0.6)
    assert open_loop_floor_ms(MODELS["20ms"], 20.5, -0.1) == pytest.approx(30.5)  # no negative hop

"""Batching policies on a fake clock against simulated upstreams (tests/harness/simulation.py).

No test sleeps: time is the simulation's. The ratios asserted are against the
ideal for each load, after a warm-up second in which the policy learns.
"""

from __future__ import annotations

import pytest

from batch_proxy.estimators import ArrivalRate, BatchTimeModel, ReturnTracker
from batch_proxy.policies import POLICIES, BatchPolicy, Lane, make_policy
from tests.harness.simulation import Model, Simulation

FIXED_20MS = Model()
LINEAR = Model(fixed_s=0.005, per_item_s=0.0005)
TWO_AT_ONCE = Model(concurrency=2)
MODELS = {"20 ms": FIXED_20MS, "5 ms + 0.5 ms/item": LINEAR, "two at once": TWO_AT_ONCE}


def policy(name: str = "adaptive", max_wait_s: float = 0.050) -> BatchPolicy:
    return make_policy(name, max_batch=32, max_wait_s=max_wait_s, max_inflight=None)


def closed_loop(name: str, model: Model, clients: int, seconds: float = 3.0) -> Simulation:
    sim = Simulation(policy(name), model)
    sim.closed_loop(clients)
    return sim.run(seconds)


def test_eight_closed_loop_callers_share_one_batch_per_model_run() -> None:
    sim = closed_loop("adaptive", FIXED_20MS, 8)
    assert set(sim.sizes(after=0.5)) == {8}
    runs = len(sim.sizes(after=1.0)) / 2.0
    assert runs > 0.9 / FIXED_20MS.seconds(8)  # one batch per model run, near 50 a second
    # The regression: eager sends the first caller back alone, then the rest behind it.
    eager = closed_loop("eager", FIXED_20MS, 8)
    assert eager.throughput(1.0) < 0.5 * FIXED_20MS.ideal(8)


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("clients", [1, 8, 16, 32, 48, 64, 128, 256])
def test_closed_loop_near_the_ideal_at_every_load(model: Model, clients: int) -> None:
    sim = closed_loop("adaptive", model, clients)
    assert sim.throughput(1.0) >= 0.88 * model.ideal(clients)


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_open_loop_latency_at_half_and_most_of_capacity(model: Model) -> None:
    full = model.seconds(32)
    half = Simulation(policy(), model)
    half.poisson(0.5 * model.capacity(), until=4.0)
    half.run(4.5)
    # An item waits for the running batch, then its own: 1.5 runs at the median is the
    # floor for one slot (give or take 2 ms: the round trip, the sample's noise and the
    # millisecond a batch sent ahead leaves early to make up for late timers).
    assert half.latency(0.5, after=1.0) <= 1.5 * full + 0.002
    busy = Simulation(policy(), model)
    busy.poisson(0.9 * model.capacity(), until=4.0, seed=2)
    busy.run(4.5)
    assert busy.latency(0.99, after=1.0) <= 3 * full
    assert busy.throughput(1.0) >= 0.85 * model.capacity() * 0.9  # keeps up, no backlog


def test_one_caller_is_sent_the_moment_it_arrives() -> None:
    sim = closed_loop("adaptive", LINEAR, 1)
    assert max(w for b in sim.sent for w in b.waits) == 0.0


def test_light_independent_load_is_never_held() -> None:
    for model in MODELS.values():
        sim = Simulation(policy(), model)
        sim.poisson(20.0, until=3.0)
        sim.run(3.5)
        # 20 items a second: an item finds the upstream free almost always.
        assert sim.median_wait() == 0.0


def test_several_slots_take_turns_with_even_batches() -> None:
    sim = Simulation(policy(), TWO_AT_ONCE)
    sim.poisson(0.5 * TWO_AT_ONCE.capacity(), until=3.0)
    sim.run(3.5)
    # 1,600 items a second over two 20 ms slots: about 16 a batch, one every 10 ms.
    assert _share_under(sim.sizes(after=1.0), 8) < 0.05
    # eager lets one slot carry nearly everything and the other a few items
    eager = Simulation(policy("eager"), TWO_AT_ONCE)
    eager.poisson(0.5 * TWO_AT_ONCE.capacity(), until=3.0)
    eager.run(3.5)
    assert _share_under(eager.sizes(after=1.0), 8) > 0.3


def _share_under(sizes: list[int], size: int) -> float:
    return sum(1 for s in sizes if s < size) / len(sizes)


def test_no_item_is_held_past_max_wait() -> None:
    # Callers come back over 7 ms, and some wait a whole run behind a batch: holding for
    # the rest would keep those past a 25 ms max_wait.
    sim = Simulation(policy(max_wait_s=0.025), FIXED_20MS, return_lag=lambda i: 0.001 * i)
    sim.closed_loop(8)
    sim.run(2.0)
    held = [b for b in sim.sent if b.held]
    assert held  # it does wait for returning callers...
    assert max(max(b.waits) for b in held) <= 0.025 + 1e-9  # ...but never past max_wait


def test_learns_the_batch_time_and_the_callers() -> None:
    independent = policy()
    sim = Simulation(independent, LINEAR)
    sim.poisson(0.6 * LINEAR.capacity(), until=2.0)
    sim.run(2.0)
    estimates = independent.estimates(sim.now)
    assert estimates["batch_seconds_per_item"] == pytest.approx(0.0005, rel=0.15)
    assert estimates["batch_fixed_seconds"] == pytest.approx(0.005 + LINEAR.rtt_s, rel=0.15)
    assert estimates["arrival_rate_per_second"] == pytest.approx(0.6 * LINEAR.capacity(), rel=0.3)
    assert estimates["return_fraction"] < 0.1
    assert estimates["upstream_concurrency"] == 1
    closed = policy()
    sim = Simulation(closed, TWO_AT_ONCE)
    sim.closed_loop(48)
    sim.run(2.0)
    assert closed.estimates(sim.now)["return_fraction"] > 0.9
    assert closed.estimates(sim.now)["upstream_concurrency"] == 2


def test_fixed_policy_waits_and_eager_does_not() -> None:
    fixed = closed_loop("fixed", FIXED_20MS, 1, seconds=1.0)
    assert {round(w, 6) for b in fixed.sent for w in b.waits} == {0.050}
    eager = closed_loop("eager", FIXED_20MS, 1, seconds=1.0)
    assert {w for b in eager.sent for w in b.waits} == {0.0}
    assert set(POLICIES) == {"adaptive", "eager", "fixed"}
    with pytest.raises(ValueError, match="unknown batching policy 'lifo'"):
        make_policy("lifo", max_batch=32, max_wait_s=0.05, max_inflight=None)


def test_a_busy_upstream_gets_one_batch_ahead_at_most() -> None:
    adaptive = policy()
    lane = Lane("u", concurrency=1, outstanding=0, rtt_s=0.001)
    ticket = adaptive.sent(0.0, lane, 4)
    adaptive.answered(0.021, ticket, True)  # it learns: 20 ms a batch, at the upstream
    assert adaptive.estimates(0.021)["batch_fixed_seconds"] == pytest.approx(0.020)
    for i in range(1260):  # independent arrivals, 1,400 a second: 28 a run, near full
        adaptive.arrived(0.1 + i / 1400)
    first = adaptive.sent(1.0, lane, 4)  # reaches the upstream at 1.0005, done at 1.0205
    busy = Lane("u", concurrency=1, outstanding=1, rtt_s=0.001)
    assert adaptive.decide(1.001, 3, 1.001, [busy], flush=False).lane is None  # too early
    wake = adaptive.decide(1.001, 3, 1.001, [busy], flush=False).wake_at
    assert wake is not None
    # Half a round trip before it ends, less the slack for a late timer.
    assert wake == pytest.approx(1.0205 - 0.0005 - 0.001)
    assert adaptive.decide(wake, 3, 1.001, [busy], flush=False).lane == busy
    adaptive.sent(wake, busy, 3)
    full = Lane("u", concurrency=1, outstanding=2, rtt_s=0.001)
    assert adaptive.decide(1.0205, 40, 1.001, [full], flush=True).lane is None
    adaptive.answered(1.021, first, True)
    # At light load too: items waiting behind a running batch go just ahead of its end, so
    # the upstream does not idle a round trip that each of them would pay.
    calm = policy()
    calm.answered(0.021, calm.sent(0.0, lane, 4), True)
    calm.sent(1.0, lane, 4)
    early = calm.decide(1.010, 3, 1.005, [busy], flush=False)
    assert early.lane is None
    assert early.wake_at == pytest.approx(1.0205 - 0.0005 - 0.001)
    assert calm.decide(1.0199, 3, 1.005, [busy], flush=False).lane == busy


def test_batch_time_model_fits_a_line_and_a_constant() -> None:
    line = BatchTimeModel()
    for size in (1, 4, 8, 16, 32) * 10:
        line.observe(size, 0.005 + 0.0005 * size)
    assert line.coefficients() == pytest.approx((0.005, 0.0005), rel=0.05)
    constant = BatchTimeModel()
    for _ in range(20):
        constant.observe(8, 0.020)
    assert constant.predict(8) == pytest.approx(0.020)
    assert constant.coefficients()[1] == 0.0
    assert not BatchTimeModel().known


def test_arrival_rate_and_returns() -> None:
    rate = ArrivalRate(tau_s=0.2)
    for i in range(2000):
        rate.arrived(i / 1000)
    assert rate.rate(2.0) == pytest.approx(1000, rel=0.05)
    returns = ReturnTracker()
    assert returns.pending(0.0) == 0.0
    for cycle in range(20):
        start = cycle * 0.021
        returns.answered(start, 4, horizon_s=0.005)
        for i in range(4):
            returns.arrived(start + 0.0002 * (i + 1))
    assert returns.fraction > 0.9
    assert returns.lag_s == pytest.approx(0.0008, rel=0.2)


def test_high_priority_keeps_its_latency_under_twice_the_capacity_of_low_priority() -> None:
    """Priority 1 alone for 4 s, then the same with priority 2 at 2x the capacity on top:
    the high-priority p99 stays within 1.2x, none is refused, and the low-priority excess
    is refused at arrival (its level's queue is full), never queued behind."""
    model = FIXED_20MS
    capacity = model.capacity()
    sim = Simulation(policy(), model, queue_limits=(1024, 256))
    sim.poisson(0.1 * capacity, until=8.0, seed=3, priority=1)
    sim.poisson(2.0 * capacity, until=8.0, seed=4, priority=2, start=4.0)
    sim.run(9.0)
    alone = sim.latency(0.99, after=1.0, before=4.0, priority=1)
    loaded = sim.latency(0.99, after=5.0, before=8.0, priority=1)
    assert loaded <= 1.2 * alone, (alone, loaded)
    assert all(priority == 2 for _, priority in sim.rejected)
    refused = len(sim.rejected) / 4.0
    assert refused >= 0.9 * capacity  # about the half it cannot serve
    served = sum(1 for arrived, latency in sim.answered if 5.0 <= arrived + latency < 8.0)
    assert served / 3.0 >= 0.9 * capacity  # and the rest keeps the upstream full

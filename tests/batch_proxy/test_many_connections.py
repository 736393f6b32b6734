"""Ten thousand concurrent client connections against the proxy as a real process."""

from __future__ import annotations

import logging
import resource

import pytest

from nexus_common.runner import raise_open_files_limit
from tests.harness.connections import LOW_SOFT_LIMIT, hold, proxy_and_model

CONNECTIONS = 10_000


async def test_ten_thousand_connections_are_held_and_every_request_answered() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < CONNECTIONS + 1024:
        pytest.skip(f"this machine's open-files hard limit ({hard}) is below the test's need")
    with proxy_and_model() as (url, pid):
        held = await hold(url, pid, CONNECTIONS)
    assert held.soft_limit > LOW_SOFT_LIMIT  # the proxy raised its own limit
    assert held.connections == CONNECTIONS
    assert held.failed_connections == 0  # no reset, no stall
    assert set(held.statuses) <= {200, 429}
    assert held.statuses[200] >= 1024  # the queue bound's worth served, the rest refused at once
    assert held.refused_without_retry_after == 0
    assert held.health_after == 200


def test_a_low_hard_limit_is_said_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        with caplog.at_level(logging.WARNING, logger="nexus.proxy"):
            now = raise_open_files_limit(wanted=hard + 1)
        assert now == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert f"the open-files hard limit is {hard}" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

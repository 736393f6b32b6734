"""`nexus-proxy` as a real process: start, serve, drain on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import httpx

from tests.harness.servers import console_script, free_port, run_process


def test_proxy_process_serves_and_drains_on_sigterm() -> None:
    sim_port, proxy_port = free_port(), free_port()
    sim_cmd = [
        sys.executable,
        "-m",
        "tests.harness.sim_model",
        "--port",
        str(sim_port),
        "--latency-ms",
        "400",
    ]
    proxy_cmd = [
        console_script("nexus-proxy"),
        "--port",
        str(proxy_port),
        "--upstream",
        f"http://127.0.0.1:{sim_port}",
        "--max-inflight",
        "1",
    ]
    base = f"http://127.0.0.1:{proxy_port}"
    with (
        run_process(sim_cmd, f"http://127.0.0.1:{sim_port}/health"),
        run_process(proxy_cmd, base + "/ready") as proxy,
    ):
        results: list[httpx.Response] = []

        def call(i: int) -> None:
            results.append(httpx.post(base + "/predict", json={"id": i}, timeout=30))

        first = threading.Thread(target=call, args=(0,))
        first.start()
        threading.Event().wait(0.1)
        rest = [threading.Thread(target=call, args=(i,)) for i in range(1, 6)]
        for thread in rest:
            thread.start()
        threading.Event().wait(0.1)  # items 1-5 are queued behind the busy slot
        metrics = httpx.get(base + "/metrics", timeout=5).text
        proxy.send_signal(signal.SIGTERM)
        for thread in [first, *rest]:
            thread.join(30)
        assert proxy.wait(30) == 0
    assert "nexus_proxy_queue_depth" in metrics
    assert sorted(r.status_code for r in results) == [200] * 6
    assert sorted(r.json()["output"]["echo"]["id"] for r in results) == list(range(6))


def test_bad_settings_exit_non_zero_with_one_line() -> None:
    import subprocess

    done = subprocess.run(
        [console_script("nexus-proxy"), "--upstream", "ftp://x", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: upstream 'ftp://x' must be an http:// or https:// URL."


def test_the_startup_heap_is_frozen_before_serving() -> None:
    """`nexus-proxy` hides what it imported and built from the cyclic collector before it
    serves (nexus_common/memory.py: a full collection under load stalled it ~30 ms)."""
    script = (
        "import gc, batch_proxy.__main__ as m\n"
        "seen = []\n"
        "m.run_until_signalled = lambda server: seen.append(gc.get_freeze_count())\n"
        "m.main(['--upstream', 'http://127.0.0.1:1'])\n"
        "print(seen[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(done.stdout) > 20_000  # the imported modules, settings and app (about 40,000)

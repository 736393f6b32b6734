"""The registry's pages for a model with 10,000 versions: how long each takes to render.

    python bench/ui_pages.py [--versions 10000] [--screenshots docs/images]

`nexus-registry` runs as its console script over a workspace whose metadata holds one
model with --versions versions (each with a `stored` event; the last two hold
production and staging). Each page is fetched 10 times over loopback after one
warm-up; printed: the median and the slowest, in ms, against the 300 ms target for
the model page. With --screenshots, Debian's chromium saves the model page and the
audit timeline of a small, realistic registry there (the README and docs/web.md show them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from bench.list_large import make_metadata
from tests.harness.repos import git_repo
from tests.harness.servers import console_script, free_port, run_process

TARGET_MS = 300.0
PAGES = {
    "model page": "/models/model_0",
    "model page, page 100": "/models/model_0?page=100",
    "version page": "/models/model_0/versions/v1",
    "audit log (one model)": "/audit?model=model_0",
    "models": "/",
    "API: versions of the model": "/api/v1/versions?model=model_0&limit=50",
}


def timings(url: str, runs: int = 10) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get(PAGES["model page"]).status_code == 200  # warm-up
        result = {}
        for name, path in PAGES.items():
            seconds = []
            for _ in range(runs):
                began = time.perf_counter()
                reply = client.get(path)
                seconds.append(time.perf_counter() - began)
                assert reply.status_code == 200, (path, reply.status_code)
            result[name] = statistics.median(seconds) * 1000
            result[name + " (max)"] = max(seconds) * 1000
    return result


def serve(repo: Path) -> tuple[Any, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [console_script("nexus-registry"), "--workspace", str(repo), "--port", str(port)]
    return run_process(command, url + "/"), url


def screenshots(out: Path, work: Path) -> None:
    """A small registry with a few weeks of history, as a team's would look, in chromium
    (signed in as an approver, so the model page shows the buttons that role has)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from control_plane import Registry
    from control_plane.web.roles import Role
    from control_plane.web.tokens import add_token
    from tests.harness.browser import chromium
    from tests.harness.repos import store_versions

    repo = git_repo(work / "shots")
    store_versions(repo, "resnet", 6, work)
    store_versions(repo, "bert", 2, work)
    registry = Registry(repo, who="Ada Lovelace <ada@example.com>")
    for ref, stage in (("v2", "production"), ("v3", "staging"), ("v4", "production"),
                       ("v5", "staging"), ("v6", "production")):  # fmt: skip
        registry.approve(ref, "resnet")
        registry.promote(ref, "resnet", stage)
    registry.reject("v1", "resnet", "overfits the night set")
    registry.set_alias("resnet@v4", "champion")
    registry.promote("v1", "bert", "production")
    _spread_over_weeks(repo / ".nexus_meta.json")
    tokens = work / "tokens.json"
    token = add_token(tokens, "Ada Lovelace", Role.APPROVER, "ada@example.com")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [console_script("nexus-registry"), "--workspace", str(repo), "--port", str(port)]
    with (
        run_process([*command, "--tokens", str(tokens)], url + "/login"),
        chromium(1200, 900) as browser,
    ):
        browser.get(url + "/login?next=/models/resnet")
        browser.find_element(By.NAME, "token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "table.versions"))
        )
        browser.save_screenshot(str(out / "registry-model-page.png"))
        browser.get(url + "/audit?model=resnet")
        browser.save_screenshot(str(out / "registry-audit-timeline.png"))
    print(f"screenshots in {out}")


def _spread_over_weeks(path: Path) -> None:
    """A demo's events all happen within a second; give them a team's pace (a day or two
    apart, in the order they happened), so the timeline reads as it would."""
    import json
    from datetime import UTC, datetime, timedelta

    document = json.loads(path.read_text())
    events = [e for entry in document["models"] for e in entry.get("history", [])]
    start = datetime(2026, 9, 1, 9, 30, tzinfo=UTC)
    for event in events:
        event["when"] = (start + timedelta(hours=31 * event["seq"])).isoformat()
    for entry in document["models"]:
        stored = [e for e in entry.get("history", []) if e["what"] == "stored"]
        if stored:
            entry["timestamp"] = stored[0]["when"]
    path.write_text(json.dumps(document, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--screenshots", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = git_repo(Path(tmp) / "repo")
        (repo / ".nexus_meta.json").write_bytes(
            make_metadata(args.versions, models=1, history=True)
        )
        process, url = serve(repo)
        with process:
            result = timings(url)
        if args.screenshots:
            screenshots(args.screenshots, Path(tmp))
    rows = [[name, f"{result[name]:.1f}", f"{result[name + ' (max)']:.1f}"] for name in PAGES]
    print(table(["page", "median ms", "max ms"], rows))
    verdict = "meets" if result["model page"] < TARGET_MS else "MISSES"
    target = f"{TARGET_MS:.0f} ms"
    print(f"\n{args.versions} versions of one model; the model page {verdict} the {target} target")
    save("ui_pages", {"versions": args.versions, "ms": result, "target_ms": TARGET_MS})


if __name__ == "__main__":
    main()

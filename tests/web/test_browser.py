"""A person at a browser: chromium signs in as an approver, clicks Promote on the model
page, and sees the stage change there and in the new commit of `.nexus_meta.json`. The
registry runs as its console script on a free port."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from control_plane import Registry
from tests.conftest import git
from tests.harness.browser import binaries, chromium
from tests.harness.servers import console_script, free_port, run_process
from tests.web.conftest import Team, head_commit

pytestmark = pytest.mark.skipif(
    binaries() is None, reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)


def test_an_approver_promotes_from_the_model_page(team: Team, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [console_script("nexus-registry"), "--workspace", str(team.repo)]
    command += ["--tokens", str(team.tokens_file), "--port", str(port)]
    v2 = Registry(team.repo).resolve("v2", "resnet")
    before = head_commit(team.repo)[0]
    with run_process(command, url + "/login"), chromium() as browser:
        browser.get(f"{url}/models/resnet")  # sends to the sign-in page first
        WebDriverWait(browser, 10).until(expected_conditions.url_contains("/login"))
        browser.find_element(By.NAME, "token").send_keys(team.tokens["approver"])
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        row = WebDriverWait(browser, 10).until(  # the model page (the login URL names it too)
            expected_conditions.presence_of_element_located((By.ID, f"v-{v2.short_hash}"))
        )
        assert row.find_element(By.CSS_SELECTOR, "td.stage").text == ""
        row.find_element(By.CSS_SELECTOR, 'button[data-action="promote-production"]').click()
        notice = (
            WebDriverWait(browser, 10)
            .until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".notice")))
            .text
        )
        assert notice.startswith("Promote resnet v2")
        row = browser.find_element(By.ID, f"v-{v2.short_hash}")
        assert row.find_element(By.CSS_SELECTOR, "td.stage").text == "production"
        assert browser.save_screenshot(str(tmp_path / "model-page.png"))
    sha, author, subject = head_commit(team.repo)
    assert sha != before
    assert author == "approver-person <approver@example.com>"
    assert subject.startswith("Promote resnet v2")
    assert git(team.repo, "diff", "--name-only", before, sha).split() == [".nexus_meta.json"]
    committed = json.loads(git(team.repo, "show", f"{sha}:.nexus_meta.json"))
    staged = [e for e in committed["models"] if e.get("stage") == "production"]
    assert [(e["model_name"], e["commit_hash"]) for e in staged] == [("resnet", v2.commit_hash)]
    assert (tmp_path / "model-page.png").stat().st_size > 10_000

"""The CI recipes in examples/ci: the GitHub workflow against GitHub's published schema,
and its steps run as the commands they are, with a passing gate and a failing one."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from control_plane import Registry
from tests.conftest import commit_all, git

CI = Path(__file__).parents[2] / "examples" / "ci"
EVALUATE = """import os, sys
accuracy = float(os.environ["ACCURACY"])
print(f"accuracy {accuracy:.2f} (needs 0.90)")
sys.exit(0 if accuracy >= 0.9 else 1)
"""


def workflow() -> dict[Any, Any]:
    return dict(yaml.safe_load((CI / "github-workflow.yml").read_text()))


def schema() -> dict[str, Any]:
    return dict(json.loads((CI / "schemas" / "github-workflow.json").read_text()))


def test_the_workflow_validates_against_githubs_schema() -> None:
    document = workflow()
    jsonschema.validate(_yaml_on_key(document), schema())
    assert document["jobs"]["release"]["environment"] == "production"
    assert document["jobs"]["release"]["needs"] == "register"


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["jobs"]["register"].pop("runs-on"),
        lambda d: d["jobs"]["register"]["steps"][0].update({"uses": 7}),
        lambda d: d["jobs"]["release"].update({"enviroment": "production"}),
    ],
    ids=["no runs-on", "uses not a string", "a misspelt key"],
)
def test_a_broken_workflow_fails_validation(break_it: Any) -> None:
    broken = copy.deepcopy(_yaml_on_key(workflow()))
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema())


def test_gitlab_runs_the_same_steps() -> None:
    gitlab = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    script = " ".join(line for job in ("register", "release") for line in gitlab[job]["script"])
    used = set(
        re.findall(r"nexus-ci\.sh (\w+)", script + " ".join(gitlab["register"]["after_script"]))
    )
    assert used == {"register", "gate", "release", "commit"}
    assert gitlab["release"]["environment"] == "production"
    assert gitlab["release"]["when"] == "manual"


@pytest.fixture
def project(repo: Path) -> Path:
    """A user's repository with the recipe copied in, an evaluation script and an artifact."""
    (repo / "examples" / "ci").mkdir(parents=True)
    shutil.copy(CI / "nexus-ci.sh", repo / "examples" / "ci" / "nexus-ci.sh")
    (repo / "evaluate.py").write_text(EVALUATE)
    (repo / ".gitignore").write_text("model.pt\n")
    commit_all(repo, "training code")
    (repo / "model.pt").write_bytes(b"trained weights")
    return repo


def run_job(repo: Path, name: str, accuracy: float, outputs: dict[str, str]) -> bool:
    """The job's `run` steps as GitHub runs them (bash -e, the workflow's and the step's
    env), but those that install or train: True if the job passed. `outputs` carries the
    step outputs between jobs, as `needs.<job>.outputs` does."""
    document = workflow()
    env = {k: v for k, v in document["env"].items() if "${{" not in str(v)}
    env.update(os.environ, ACCURACY=str(accuracy), EVALUATE=f"{sys.executable} evaluate.py")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("NEXUS_PROVIDER", None)  # the local store: the test's own
    failed, outcome = False, dict[str, str]()
    for step in document["jobs"][name]["steps"]:
        if "run" not in step or step["name"] in ("Install NexusML", "Train"):
            continue
        condition = step.get("if", "")
        if failed and "always()" not in condition:
            continue
        if "steps.store.outcome == 'success'" in condition and outcome.get("store") != "success":
            continue
        output_file = repo / ".github_output"
        output_file.write_text("")
        step_env = {key: _expand(str(value), outputs) for key, value in step.get("env", {}).items()}
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            cwd=repo,
            env={**env, **step_env, "GITHUB_OUTPUT": str(output_file)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        for line in output_file.read_text().splitlines():
            key, _, value = line.partition("=")
            outputs[f"steps.{step.get('id')}.outputs.{key}"] = value
            outputs[f"needs.{name}.outputs.{key}"] = value
        outcome[step.get("id", step["name"])] = "success" if done.returncode == 0 else "failure"
        failed = failed or done.returncode != 0
    return not failed


def test_a_passing_gate_registers_waits_then_releases(project: Path) -> None:
    outputs: dict[str, str] = {}
    assert run_job(project, "register", 0.93, outputs)
    assert outputs["needs.register.outputs.version"] == "v1"
    entry = Registry(project).resolve("v1", "my_model")
    assert entry.status == "pending_review"  # the release job waits for the reviewers
    assert run_job(project, "release", 0.93, outputs)
    entry = Registry(project).resolve("production", "my_model")
    assert (entry.data["version"], entry.status) == (1, "approved")
    log = git(project, "log", "--format=%s", "-3").splitlines()
    assert log[:2] == ["Release my_model v1 to production [ci]", "Register my_model v1 [ci]"]
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""


def test_a_failing_gate_rejects_with_its_output_and_stops(project: Path) -> None:
    outputs: dict[str, str] = {}
    assert not run_job(project, "register", 0.41, outputs)
    entry = Registry(project).resolve("v1", "my_model")
    assert entry.status == "rejected"
    assert "accuracy 0.41 (needs 0.90)" in (entry.status_reason or "")
    assert git(project, "log", "--format=%s", "-1").strip() == "Register my_model v1 [ci]"
    with pytest.raises(Exception, match="production"):
        Registry(project).resolve("production", "my_model")


def _expand(value: str, outputs: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: outputs.get(m.group(1), ""), value)


def _yaml_on_key(document: dict[Any, Any]) -> dict[str, Any]:
    """YAML 1.1 reads the key `on` as True; GitHub reads it as "on"."""
    return {("on" if key is True else key): value for key, value in document.items()}

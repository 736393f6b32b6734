"""The listing index: derived from the metadata file, never trusted when the file changed."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from control_plane import Registry, query
from control_plane.cli import app
from tests.conftest import git
from tests.control_plane.test_lifecycle import generate

runner = CliRunner()


def listed(*args: str) -> str:
    result = runner.invoke(app, ["list", *args])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_index_is_built_used_and_follows_every_edit(repo: Path) -> None:
    (repo / ".nexus").mkdir()
    generate(repo, 30)
    index = repo / ".nexus" / "list-index"
    first = listed()
    assert index.is_file()
    assert listed() == first  # served from the index

    meta = repo / ".nexus_meta.json"
    text = meta.read_text()
    edited = text.replace('"gen00"', '"gem00"', 1)  # same size, same second: content decides
    assert len(edited) == len(text)
    meta.write_text(edited)
    after = listed()
    assert "gem" in after
    assert after != first


def test_corrupt_or_missing_index_is_rebuilt(repo: Path) -> None:
    (repo / ".nexus").mkdir()
    generate(repo, 10)
    expected = listed()
    index = repo / ".nexus" / "list-index"
    index.write_bytes(b"garbage")
    assert listed() == expected
    assert index.read_bytes() != b"garbage"


def test_a_fresh_clone_builds_the_index_on_its_first_list(repo: Path) -> None:
    # Issue 10: before, a clone without .nexus/ re-parsed the whole file on every list.
    generate(repo, 10)
    first = listed()
    assert (repo / ".nexus" / "list-index").is_file()
    assert listed() == first
    assert (repo / ".nexus" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert ".nexus/" not in git(repo, "status", "--porcelain", "--untracked-files=all")


def test_where_no_index_can_be_written_listing_still_works(repo: Path) -> None:
    generate(repo, 10)
    (repo / ".nexus").write_text("a file where the folder would go, as on a read-only checkout")
    assert "gen" in listed()
    assert listed().count("gen") == 10


def test_writes_refresh_the_index(repo: Path, model_file: Path) -> None:
    Registry(repo).store(model_file, "m")
    index = repo / ".nexus" / "list-index"
    assert index.is_file()
    before = index.read_bytes()
    Registry(repo).approve("latest", "m")
    assert index.read_bytes() != before
    assert "approved" in listed()


def test_summaries_filter_like_full_entries(repo: Path) -> None:
    (repo / ".nexus").mkdir()
    generate(repo, 60)
    registry = Registry(repo)
    filters = [query.stage("production"), query.metric("accuracy>=0.3"), query.tag("team=a")]
    full = registry.list(filters=filters, sort_metric="accuracy", limit=7)
    registry.list_summaries()  # builds the index
    quick = registry.list_summaries(filters=filters, sort_metric="accuracy", limit=7)
    assert [s.commit_hash for s in quick] == [e.commit_hash for e in full]
    assert [e["commit_hash"][:7] for e in json.loads(listed("--json"))] == [
        s.short_hash for s in registry.list_summaries()
    ]


def test_the_console_script_replays_the_rendered_listing_only_while_valid(repo: Path) -> None:
    """`nexus list` as a real process: the second run prints the cached text, byte for byte,
    and any change to the metadata file (same size included) is seen at once."""
    import subprocess

    from tests.harness.servers import console_script

    def nexus_list(*args: str) -> str:
        done = subprocess.run(
            [console_script("nexus"), "list", *args], cwd=repo, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    (repo / ".nexus").mkdir()
    generate(repo, 30)
    cache = repo / ".nexus" / "list-rendered"
    first = nexus_list()
    assert cache.is_file()
    assert nexus_list() == first
    assert nexus_list("--model-name", "gen00").count("gen00") == 4  # other views: not cached
    meta = repo / ".nexus_meta.json"
    meta.write_text(meta.read_text().replace('"gen00"', '"gem00"', 1))
    changed = nexus_list()
    assert "gem00" in changed
    assert changed != first
    cache.write_bytes(b"garbage")
    assert nexus_list() == changed

"""`.nexusrc` and NEXUS_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane import ConfigError, Registry, load_config
from control_plane.cli import app
from control_plane.storage import LocalBackend


def test_defaults_to_local_store_and_ignores_it(repo: Path, model_file: Path) -> None:
    config = load_config(repo, {})
    assert config.provider == "local"
    assert config.local_root(repo) == repo / ".nexus" / "store"
    Registry().store(model_file, "m")
    assert ".nexus/" in (repo / ".gitignore").read_text().splitlines()
    assert any((repo / ".nexus" / "store" / "m").iterdir())


def test_existing_gitignore_is_extended_once(repo: Path, model_file: Path) -> None:
    (repo / ".gitignore").write_text("*.pyc")
    registry = Registry()
    registry.store(model_file, "m")
    registry.store(model_file, "n")
    assert (repo / ".gitignore").read_text() == "*.pyc\n.nexus/\n"


def test_local_path_and_prefix(repo: Path, tmp_path: Path, model_file: Path) -> None:
    store_dir = tmp_path / "shared-store"
    (repo / ".nexusrc").write_text(f"provider: local\npath: {store_dir}\nprefix: /team/\n")
    registry = Registry()
    assert isinstance(registry.backend, LocalBackend)
    entry = registry.store(model_file, "m", allow_dirty=True).entry
    assert entry.storage_uri.startswith("team/m/")
    assert (store_dir / entry.storage_uri).is_file()


def test_environment_overrides_file(repo: Path) -> None:
    (repo / ".nexusrc").write_text("provider: local\npath: a\n")
    config = load_config(repo, {"NEXUS_STORE_PATH": "b", "NEXUS_PREFIX": "p"})
    assert config.path == "b"
    assert config.prefix == "p"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("aws_secret_access_key: abc", "looks like a credential"),
        ("password: hunter2", "looks like a credential"),
        ("token: x", "looks like a credential"),
        ("bucket: b\nnote: '-----BEGIN RSA PRIVATE KEY-----'", "private key"),
        ("colour: blue", "unknown configuration key 'colour'"),
        ("provider: ftp", "'provider' must be one of"),
        ("provider: s3", "needs a 'bucket'"),
        ("max_concurrency: -1", "'max_concurrency' must be a positive whole number"),
        ("bucket: [1, 2]", "'bucket' must be a non-empty string"),
        ("provider: [unclosed", "line 1, column"),
        ("- a list", "must be a YAML mapping"),
    ],
)
def test_bad_config_is_a_clear_error(repo: Path, content: str, message: str) -> None:
    (repo / ".nexusrc").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(repo, {})


def test_credential_error_says_where_credentials_belong(repo: Path) -> None:
    (repo / ".nexusrc").write_text("secret_key: abc\n")
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 1
    assert "AWS_ACCESS_KEY_ID" in result.stderr
    assert "abc" not in result.stderr


def test_bad_environment_value_names_the_key(repo: Path) -> None:
    with pytest.raises(ConfigError, match="'provider'"):
        load_config(repo, {"NEXUS_PROVIDER": "dropbox"})

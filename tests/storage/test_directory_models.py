"""Directory models: whole trees stored once, restored atomically, refused when unsafe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from control_plane import Registry
from control_plane.cli import app
from control_plane.registry.tree import Manifest, TreeFile
from tests.conftest import commit_all
from tests.storage.test_cloud_flow import configure

runner = CliRunner()
MIB = 1024 * 1024


def nexus(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def make_tree(root: Path) -> Path:
    tree = root / "checkpoint"
    (tree / "tokenizer" / "extra").mkdir(parents=True)
    (tree / "assets").mkdir()  # an empty folder is part of the tree
    (tree / "config.json").write_text(json.dumps({"scale": 2}))
    (tree / "tokenizer" / "vocab.txt").write_text("alpha beta gamma\n")
    (tree / "tokenizer" / "extra" / "empty.txt").write_bytes(b"")
    with (tree / "weights.bin").open("wb") as fh:
        for _ in range(100):
            fh.write(os.urandom(MIB))
    return tree


def same_tree(a: Path, b: Path) -> bool:
    def listing(root: Path) -> dict[str, bytes | None]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))
        }

    return listing(a) == listing(b)


def test_directory_round_trip_over_s3_uploads_only_what_changed(
    repo: Path, tmp_path: Path, s3_bucket: str, moto_url: str
) -> None:
    configure(repo, f"provider: s3\nbucket: {s3_bucket}\nendpoint_url: {moto_url}\n")
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")

    def objects() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    tree = make_tree(tmp_path)
    out = nexus("store", str(tree), "llm", "-q").stdout
    assert "4 files uploaded" in out
    first = objects()
    assert len(first) == 5  # four files and the manifest
    entry = json.loads(nexus("show", "llm@v1", "--json").stdout)
    assert entry["format"] == "directory"
    assert entry["file_count"] == 4
    assert entry["file_size"] == 100 * MIB + len('{"scale": 2}') + len("alpha beta gamma\n")

    nexus("load", "llm@v1", str(tmp_path / "restored"))
    assert same_tree(tree, tmp_path / "restored")

    commit_all(repo, "next experiment")
    (repo / "train.py").write_text("v2\n")
    commit_all(repo, "v2")
    (tree / "config.json").write_text(json.dumps({"scale": 3}))
    out = nexus("store", str(tree), "llm", "-q").stdout
    assert "1 file uploaded" in out
    assert "3 already in the store (100.0 MiB not uploaded again)" in out
    assert len(objects() - first) == 2  # the changed file and the new manifest

    nexus("load", "llm@v2", str(tmp_path / "v2"))
    assert same_tree(tree, tmp_path / "v2")
    assert "2 of 2 versions verified" in nexus("verify", "-m", "llm").stdout

    # A stored file changed behind nexus's back: load refuses, DEST never appears.
    vocab = next(
        k
        for k in objects()
        if k.endswith(__import__("hashlib").sha256(b"alpha beta gamma\n").hexdigest())
    )
    s3.delete_object(Bucket=s3_bucket, Key=vocab)
    s3.put_object(Bucket=s3_bucket, Key=vocab, Body=b"tampered")
    failed = nexus("load", "llm@v2", str(tmp_path / "bad"), code=3).stderr
    assert "does not match its manifest" in failed
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]


def test_directory_load_refuses_a_non_empty_destination(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    nexus("store", str(tree), "m", "-q")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    failed = nexus("load", "m@v1", str(tmp_path / "busy"), code=2).stderr
    assert "never over files" in failed
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    nexus("load", "m@v1", str(tmp_path / "empty"))
    assert (tmp_path / "empty" / "a.txt").read_text() == "a"


@pytest.mark.parametrize("evil", ["../escape.txt", "/tmp/absolute.txt", "a/../../up.txt", "a//b"])
def test_a_manifest_that_leaves_the_tree_is_refused(repo: Path, tmp_path: Path, evil: str) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "ok.txt").write_text("fine")
    entry = Registry(repo).store(tree, "m").entry
    store = repo / ".nexus" / "store"
    good = Manifest.parse((store / entry.storage_uri).read_bytes(), "test")
    payload = good.files[0]
    forged = Manifest((payload, TreeFile(evil, payload.size, payload.sha256, payload.key)))
    data = forged.to_bytes()
    forged_key = "m/forged.tree.json"
    (store / forged_key).write_bytes(data)
    meta = repo / ".nexus_meta.json"
    raw = json.loads(meta.read_text())
    raw["models"][0]["storage_uri"] = forged_key
    raw["models"][0]["sha256"] = __import__("hashlib").sha256(data).hexdigest()
    meta.write_text(json.dumps(raw))

    dest = tmp_path / "deep" / "dest"
    failed = nexus("load", "m@v1", str(dest), code=3).stderr
    assert "leaves the directory" in failed
    assert not dest.exists()
    assert not (tmp_path / "deep" / "escape.txt").exists()
    assert not Path("/tmp/absolute.txt").exists()
    assert not (tmp_path / "up.txt").exists()


def test_store_refuses_symlinks_leaving_the_tree(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "ok.txt").write_text("fine")
    (tmp_path / "secret.txt").write_text("outside")
    (tree / "link.txt").symlink_to(tmp_path / "secret.txt")
    failed = nexus("store", str(tree), "m", code=2).stderr
    assert "symlink leaving the directory" in failed
    assert not (repo / ".nexus_meta.json").exists()
    (tree / "link.txt").unlink()
    (tree / "inside.txt").symlink_to(tree / "ok.txt")  # inside: stored as a file
    nexus("store", str(tree), "m", "-q")
    nexus("load", "m@v1", str(tmp_path / "back"))
    assert (tmp_path / "back" / "inside.txt").read_text() == "fine"
    assert not (tmp_path / "back" / "inside.txt").is_symlink()

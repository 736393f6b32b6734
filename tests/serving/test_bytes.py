"""Text tensors (BYTES) through the proxy and a model server, spoken by the stock Triton
HTTP client: a handler that declares its signature (BYTES in; BYTES and INT32 out), JSON
strings and length-prefixed binary elements in and out, batched across callers with every
element's prefix kept, and a malformed prefix answered 400, never a 500 or a hang.
"""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from control_plane import Registry
from tests.conftest import commit_all
from tests.harness.servers import server_and_proxy
from tests.harness.text import HANDLER, ShoutHandler


@pytest.fixture(scope="module")
def shout_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding the text model, stored with the signature its handler declares."""
    root = tmp_path_factory.mktemp("bytes")
    repo = root / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.name", "T"], ["config", "user.email", "t@x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / ".gitignore").write_text(".nexus/\n")
    commit_all(repo, "start")
    (root / "suffix.txt").write_bytes(b"!")
    Registry(repo).store(root / "suffix.txt", "shout", handler=HANDLER)
    commit_all(repo, "store shout")
    return repo


@pytest.fixture(scope="module")
def stack(shout_repo: Path) -> Iterator[tuple[str, str]]:
    flags = ("--policy", "fixed", "--max-wait-ms", "20")
    cache = shout_repo.parent / "cache"
    with server_and_proxy(shout_repo, cache, flags, ("--handler", HANDLER)) as addresses:
        yield addresses


def _texts(rows: int, seed: int) -> np.ndarray:
    words = ["ok", "héllo wörld", "", "a much longer sentence, of several words", "🙂"]
    picked = [words[(seed + row) % len(words)] + str(seed) for row in range(rows)]
    return np.array([[w.encode()] for w in picked], dtype=np.object_)


def _shout(client: triton.InferenceServerClient, texts: np.ndarray, binary: bool):
    request = triton.InferInput("TEXT", list(texts.shape), "BYTES")
    request.set_data_from_numpy(texts, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("SHOUT", binary_data=binary),
        triton.InferRequestedOutput("LENGTH", binary_data=not binary),
    ]
    return client.infer("shout", [request], outputs=outputs)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_text_in_text_out(stack: tuple[str, str], binary: bool) -> None:
    client = triton.InferenceServerClient(stack[0])
    texts = _texts(3, seed=1)
    result = _shout(client, texts, binary)
    shout = result.as_numpy("SHOUT")
    expected = [t.decode().upper().encode() + b"!" for t in texts[:, 0]]
    assert [s if isinstance(s, bytes) else s.encode() for s in shout[:, 0]] == expected
    assert result.as_numpy("LENGTH")[:, 0].tolist() == [len(t) for t in texts[:, 0]]
    metadata = client.get_model_metadata("shout")
    assert metadata["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}]
    assert [o["name"] for o in metadata["outputs"]] == ["SHOUT", "LENGTH"]


def test_concurrent_text_callers_are_batched_and_each_gets_its_rows(
    stack: tuple[str, str],
) -> None:
    address = stack[0]
    before = triton.InferenceServerClient(address).get_inference_statistics("shout")

    def one(seed: int) -> bool:
        texts = _texts(1 + seed % 3, seed)
        result = _shout(triton.InferenceServerClient(address), texts, binary=seed % 2 == 0)
        got = [s if isinstance(s, bytes) else s.encode() for s in result.as_numpy("SHOUT")[:, 0]]
        return got == [t.decode().upper().encode() + b"!" for t in texts[:, 0]]

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(one, range(32)))
    after = triton.InferenceServerClient(address).get_inference_statistics("shout")
    executions = after["model_stats"][0]["execution_count"]
    executions -= before["model_stats"][0]["execution_count"]
    assert executions < 32  # callers shared batches


@pytest.mark.parametrize("where", ["proxy", "server"])
def test_a_length_prefix_past_the_body_is_a_400(stack: tuple[str, str], where: str) -> None:
    address, server = stack
    url = f"http://{address}" if where == "proxy" else server
    element = struct.pack("<I", 1_000_000) + b"short"  # claims a megabyte, has five bytes
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "TEXT",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(element)},
                }
            ]
        }
    ).encode()
    reply = httpx.post(
        f"{url}/v2/models/shout/infer",
        content=header + element,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Authorization": "Bearer t0k",
        },
        timeout=10,
    )
    assert reply.status_code == 400, reply.text
    assert "runs past its data" in reply.json()["error"]


def test_the_store_records_the_signature_a_handler_declares(shout_repo: Path) -> None:
    entry = Registry(shout_repo).resolve("latest", "shout")
    assert entry.tensors == ShoutHandler.signature


def test_predict_items_of_text(stack: tuple[str, str]) -> None:
    reply = httpx.post(f"http://{stack[0]}/predict", json={"input": ["quiet"]}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["output"] == {"SHOUT": ["QUIET!"], "LENGTH": [5]}

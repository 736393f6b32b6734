"""The Open Inference Protocol over gRPC on the model server (`--grpc-port`), talked to by
the stock `tritonclient.grpc` as a real process: liveness, readiness, metadata, infer on the
two-input model and the BYTES model by name, streaming, and each failure as a status code."""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from control_plane import Registry
from nexus_common.keyfiles import add_key
from tests.harness.models import SUM_DIFF_WIDTH, make_sum_diff_onnx
from tests.harness.servers import console_script, free_port, run_process, server_and_proxy
from tests.harness.text import HANDLER

pytestmark = pytest.mark.long  # model servers and proxies as processes: started first
TOKEN = {"authorization": "Bearer t0k"}


@pytest.fixture
def servers(repo: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two model servers with gRPC on: the two-input ONNX model and the BYTES handler model;
    their gRPC addresses."""
    make_sum_diff_onnx(tmp_path / "simple.onnx")
    (tmp_path / "suffix.txt").write_bytes(b"!")
    Registry(repo).store(tmp_path / "simple.onnx", "simple")
    Registry(repo).store(tmp_path / "suffix.txt", "shout")
    env = dict(os.environ, NEXUS_CACHE_DIR=str(tmp_path / "cache"), NEXUS_SERVER_TOKEN="t0k")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    addresses = []
    with contextlib.ExitStack() as stack:
        for model, flags in (("simple", []), ("shout", ["--handler", HANDLER])):
            port, grpc_port = free_port(), free_port()
            args = [
                *(console_script("nexus-model-server"), "--port", str(port)),
                *("--grpc-port", str(grpc_port), "--repo", str(repo), "--model-name", model),
                *flags,
            ]
            stack.enter_context(run_process(args, f"http://127.0.0.1:{port}/ready", env=env))
            addresses.append(f"127.0.0.1:{grpc_port}")
        yield addresses[0], addresses[1]


def test_metadata_readiness_and_infer_by_name(servers: tuple[str, str]) -> None:
    simple, shout = servers
    client = triton.InferenceServerClient(simple)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata().name == "nexusml"
    metadata = client.get_model_metadata("simple")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("INPUT0", "INT32", [-1, SUM_DIFF_WIDTH]),
        ("INPUT1", "INT32", [-1, SUM_DIFF_WIDTH]),
    ]
    assert [t.name for t in metadata.outputs] == ["OUTPUT0", "OUTPUT1"]

    a = np.arange(3 * SUM_DIFF_WIDTH, dtype=np.int32).reshape(3, SUM_DIFF_WIDTH)
    b = np.full((3, SUM_DIFF_WIDTH), 7, dtype=np.int32)
    inputs = [triton.InferInput(name, list(a.shape), "INT32") for name in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    wanted = [triton.InferRequestedOutput("OUTPUT1")]
    answer = client.infer("simple", inputs, outputs=wanted, headers=TOKEN, request_id="r1")
    assert np.array_equal(answer.as_numpy("OUTPUT1"), a - b)
    assert answer.as_numpy("OUTPUT0") is None  # only what was asked for
    assert answer.get_response().id == "r1"

    texts = triton.InferInput("TEXT", [2, 1], "BYTES")
    texts.set_data_from_numpy(np.array([[b"hello"], ["w\u00f6rld".encode()]], dtype=object))
    shouted = triton.InferenceServerClient(shout).infer("shout", [texts], headers=TOKEN)
    assert shouted.as_numpy("SHOUT").tolist() == [[b"HELLO!"], ["W\u00d6RLD!".encode()]]
    assert shouted.as_numpy("LENGTH").tolist() == [[5], [6]]


def test_streaming_answers_each_request_and_names_a_bad_one(servers: tuple[str, str]) -> None:
    simple, _ = servers
    client = triton.InferenceServerClient(simple)
    answers: queue.Queue[object] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error or result), headers=TOKEN)
    try:
        for value in (1, 2):
            rows = np.full((1, SUM_DIFF_WIDTH), value, dtype=np.int32)
            inputs = [
                triton.InferInput(n, [1, SUM_DIFF_WIDTH], "INT32") for n in ("INPUT0", "INPUT1")
            ]
            for tensor in inputs:
                tensor.set_data_from_numpy(rows)
            client.async_stream_infer("simple", inputs)
        wrong = triton.InferInput("INPUT9", [1, SUM_DIFF_WIDTH], "INT32")
        wrong.set_data_from_numpy(np.zeros((1, SUM_DIFF_WIDTH), dtype=np.int32))
        client.async_stream_infer("simple", [wrong])
        got = [answers.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    sums = [g.as_numpy("OUTPUT0")[0, 0] for g in got[:2]]  # type: ignore[attr-defined]
    assert sums == [2, 4]
    assert isinstance(got[2], InferenceServerException)
    assert "INPUT9" in str(got[2])


def test_failures_are_status_codes_with_one_sentence(servers: tuple[str, str]) -> None:
    simple, _ = servers
    client = triton.InferenceServerClient(simple)
    rows = np.zeros((1, SUM_DIFF_WIDTH), dtype=np.int32)
    inputs = [triton.InferInput(n, [1, SUM_DIFF_WIDTH], "INT32") for n in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(rows)
    cases = [
        (lambda: client.infer("simple", inputs), "StatusCode.UNAUTHENTICATED", "token"),
        (lambda: client.infer("nope", inputs, headers=TOKEN), "StatusCode.NOT_FOUND", "nope"),
        (lambda: client.get_model_metadata("nope"), "StatusCode.NOT_FOUND", "no model 'nope'"),
    ]
    float_input = triton.InferInput("INPUT0", [1, SUM_DIFF_WIDTH], "FP32")
    float_input.set_data_from_numpy(rows.astype(np.float32))
    cases.append(
        (
            lambda: client.infer("simple", [float_input, inputs[1]], headers=TOKEN),
            "StatusCode.INVALID_ARGUMENT",
            "INPUT0",
        )
    )
    for call, status, said in cases:
        with pytest.raises(InferenceServerException) as raised:
            call()
        assert raised.value.status() == status
        assert said in raised.value.message()


@contextlib.contextmanager
def proxied(
    repo: Path, tmp_path: Path, *proxy_flags: str
) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """The two-input model behind `nexus-proxy` with gRPC on and API keys: (the proxy's gRPC
    address, its HTTP URL, the model server's URL, a key's metadata)."""
    make_sum_diff_onnx(tmp_path / "simple.onnx")
    Registry(repo).store(tmp_path / "simple.onnx", "simple")
    keys = tmp_path / "keys.json"
    key = add_key(keys, "team", rate=10_000, burst=10_000)
    tiny = add_key(keys, "tiny", rate=1, burst=1)
    grpc_port = free_port()
    flags = ["--grpc-port", str(grpc_port), "--api-keys", str(keys), *proxy_flags]
    with server_and_proxy(repo, tmp_path / "cache", flags, ["--model-name", "simple"]) as (
        proxy,
        server,
    ):
        yield (
            f"127.0.0.1:{grpc_port}",
            f"http://{proxy}",
            server,
            {
                "authorization": f"Bearer {key}",
                "tiny": f"Bearer {tiny}",
            },
        )


def rows_of(value: int, rows: int = 1) -> list[triton.InferInput]:
    data = np.full((rows, SUM_DIFF_WIDTH), value, dtype=np.int32)
    inputs = [triton.InferInput(n, list(data.shape), "INT32") for n in ("INPUT0", "INPUT1")]
    inputs[0].set_data_from_numpy(data)
    inputs[1].set_data_from_numpy(data * 2)
    return inputs


def stats(server: str) -> tuple[int, int]:
    reply = httpx.get(f"{server}/v2/models/simple/stats", headers={"Authorization": "Bearer t0k"})
    figures = reply.json()["model_stats"][0]
    return int(figures["inference_count"]), int(figures["execution_count"])


def test_64_grpc_callers_through_the_proxy_are_batched_and_exact(
    repo: Path, tmp_path: Path
) -> None:
    with proxied(repo, tmp_path) as (address, _, server, keys):
        key = {"authorization": keys["authorization"]}
        client = triton.InferenceServerClient(address)
        assert client.is_server_ready(headers=key)
        assert [t.name for t in client.get_model_metadata("simple").inputs] == ["INPUT0", "INPUT1"]
        before = stats(server)
        answers: queue.Queue[tuple[int, object]] = queue.Queue()
        for value in range(64):
            client.async_infer(
                "simple",
                rows_of(value),
                callback=lambda result, error, value=value: answers.put((value, error or result)),
                headers=key,
            )
        got = dict(answers.get(timeout=60) for _ in range(64))
        for value, answer in got.items():
            assert not isinstance(answer, Exception), answer
            assert answer.as_numpy("OUTPUT0").tolist() == [[3 * value] * SUM_DIFF_WIDTH]  # type: ignore[attr-defined]
            assert answer.as_numpy("OUTPUT1").tolist() == [[-value] * SUM_DIFF_WIDTH]  # type: ignore[attr-defined]
        items, passes = (a - b for a, b in zip(stats(server), before, strict=True))
        assert items == 64
        assert passes < 64, "64 gRPC callers were not batched"


def test_a_grpc_caller_and_an_http_caller_share_one_batch(repo: Path, tmp_path: Path) -> None:
    # a batch leaves only when it holds two rows: the gRPC caller's and the HTTP caller's
    flags = ("--policy", "fixed", "--max-batch-size", "2", "--max-wait-ms", "20000")
    with proxied(repo, tmp_path, *flags) as (address, http, server, keys):
        key = {"authorization": keys["authorization"]}
        before = stats(server)
        client = triton.InferenceServerClient(address)
        answers: queue.Queue[object] = queue.Queue()
        client.async_infer(
            "simple",
            rows_of(5),
            callback=lambda result, error: answers.put(error or result),
            headers=key,
        )
        body = {
            "inputs": [
                {
                    "name": n,
                    "shape": [1, SUM_DIFF_WIDTH],
                    "datatype": "INT32",
                    "data": [v] * SUM_DIFF_WIDTH,
                }
                for n, v in (("INPUT0", 7), ("INPUT1", 1))
            ]
        }
        reply = httpx.post(
            f"{http}/v2/models/simple/infer",
            json=body,
            headers={"Authorization": key["authorization"]},
            timeout=30,
        )
        grpc_answer = answers.get(timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"] == [8] * SUM_DIFF_WIDTH
        assert grpc_answer.as_numpy("OUTPUT0").tolist() == [[15] * SUM_DIFF_WIDTH]  # type: ignore[attr-defined]
        items, passes = (a - b for a, b in zip(stats(server), before, strict=True))
        assert (items, passes) == (2, 1)


def test_deadlines_keys_and_floods_are_status_codes(repo: Path, tmp_path: Path) -> None:
    # a batch waits up to 1.5 s for a second row: a caller whose deadline is shorter leaves first
    flags = ("--policy", "fixed", "--max-batch-size", "64", "--max-wait-ms", "1500")
    with proxied(repo, tmp_path, *flags) as (address, _, server, keys):
        key = {"authorization": keys["authorization"]}
        client = triton.InferenceServerClient(address)
        before = stats(server)
        with pytest.raises(InferenceServerException) as raised:
            client.infer("simple", rows_of(1), headers=key, client_timeout=0.3)
        assert raised.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        time.sleep(2.0)  # past the batch's wait: had the row stayed queued, it would be sent
        assert stats(server) == before, "an expired caller's row reached the model"

        with pytest.raises(InferenceServerException) as raised:
            client.infer("simple", rows_of(1))
        assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
        assert "API key" in raised.value.message()

        tiny = {"authorization": keys["tiny"]}
        flood: queue.Queue[object] = queue.Queue()
        for _ in range(5):  # at once, on a key of 1 a second with a burst of 1
            client.async_infer(
                "simple",
                rows_of(2),
                callback=lambda result, error: flood.put(error or result),
                headers=tiny,
            )
        outcomes = [flood.get(timeout=30) for _ in range(5)]
        statuses = [o.status() for o in outcomes if isinstance(o, InferenceServerException)]
        assert len(statuses) == 4, outcomes
        assert all(status == "StatusCode.RESOURCE_EXHAUSTED" for status in statuses)
        refused = next(o for o in outcomes if isinstance(o, InferenceServerException))
        assert "rate" in refused.message()


def test_the_health_protocol_follows_readiness(repo: Path, tmp_path: Path) -> None:
    """What Kubernetes' grpc probes ask: the model server is NOT_SERVING while nothing is
    stored, SERVING once a version serves."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port, grpc_port = free_port(), free_port()
    env = dict(os.environ, NEXUS_CACHE_DIR=str(tmp_path / "cache"))
    args = [
        *(console_script("nexus-model-server"), "--port", str(port), "--repo", str(repo)),
        *("--grpc-port", str(grpc_port), "--model-name", "simple", "--poll-interval-s", "0.2"),
    ]
    with (
        run_process(args, f"http://127.0.0.1:{port}/health", env=env),
        grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
    ):
        check = health_pb2_grpc.HealthStub(channel).Check

        def status() -> int:
            return int(check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)

        assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
        make_sum_diff_onnx(tmp_path / "simple.onnx")
        Registry(repo).store(tmp_path / "simple.onnx", "simple")
        deadline = time.monotonic() + 30
        while status() != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "not SERVING once a version serves"
            time.sleep(0.2)
        named = check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
        assert named.status == health_pb2.HealthCheckResponse.SERVING


def test_bytes_and_a_stream_through_the_proxy(repo: Path, tmp_path: Path) -> None:
    """The BYTES model by name through the proxy's gRPC frontend, unary and streamed, at the
    priority a request asks for."""
    (tmp_path / "suffix.txt").write_bytes(b"?")
    Registry(repo).store(tmp_path / "suffix.txt", "shout")
    grpc_port = free_port()
    server_flags = ["--model-name", "shout", "--handler", HANDLER]
    with server_and_proxy(repo, tmp_path / "cache", ["--grpc-port", str(grpc_port)], server_flags):
        client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        texts = triton.InferInput("TEXT", [2, 1], "BYTES")
        texts.set_data_from_numpy(np.array([[b"ab"], [b"cde"]], dtype=object))
        answer = client.infer("shout", [texts], priority=1)
        assert answer.as_numpy("SHOUT").tolist() == [[b"AB?"], [b"CDE?"]]
        assert answer.as_numpy("LENGTH").tolist() == [[2], [3]]
        with pytest.raises(InferenceServerException) as raised:
            client.infer("shout", [texts], priority=9)
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "priority" in raised.value.message()

        answers: queue.Queue[object] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put(error or result))
        try:
            for word in (b"x", b"yy"):
                one = triton.InferInput("TEXT", [1, 1], "BYTES")
                one.set_data_from_numpy(np.array([[word]], dtype=object))
                client.async_stream_infer("shout", [one])
            got = [answers.get(timeout=30) for _ in range(2)]
        finally:
            client.stop_stream()
        assert sorted(g.as_numpy("SHOUT")[0, 0] for g in got) == [b"X?", b"YY?"]  # type: ignore[attr-defined]

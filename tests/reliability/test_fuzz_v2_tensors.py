"""The v2 infer route fuzzed with multi-input and BYTES bodies (hypothesis): JSON and binary
tensors of every datatype, wrong names, shapes, sizes and length prefixes. The model servers
(a two-input INT32 ONNX model, and a BYTES handler) and the proxy in front of them answer
200 or a 4xx with one sentence, never a 5xx; the proxy's side of the same bodies (parsing,
its stack key, packing, slicing) raises nothing but the protocol's 400.
"""

from __future__ import annotations

import json
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_proxy import v2batch
from batch_proxy.app import ProxyApp
from batch_proxy.settings import ProxySettings
from control_plane import Registry
from model_server.app import create_app
from model_server.settings import ServerSettings
from nexus_common import v2wire
from nexus_common.signature import DATATYPES
from tests.harness.models import make_sum_diff_onnx
from tests.harness.repos import git_repo
from tests.harness.text import HANDLER
from tests.reliability.threaded import serve_on_thread, stop_all

NAMES = ("INPUT0", "INPUT1", "TEXT", "other")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = st.one_of(
    st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=6), st.booleans()
)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """One input's spec, and the binary bytes it brings (b"" when it is JSON data)."""
    datatype = draw(st.sampled_from((*DATATYPES, "STRING", "FP8")))
    rows = draw(st.integers(0, 3))
    width = draw(st.sampled_from((1, 2, 16)))
    shape = draw(st.sampled_from(([rows, width], [rows], [rows, width, 1], [-1, width])))
    spec: dict[str, Any] = {"name": draw(st.sampled_from(NAMES)), "datatype": datatype}
    spec["shape"] = shape
    if draw(st.booleans()):
        count = max(0, rows * width) + draw(st.sampled_from((0, 0, 1, -1)))
        spec["data"] = draw(st.lists(scalars, min_size=max(0, count), max_size=max(0, count)))
        return spec, b""
    if datatype == "BYTES":
        elements = draw(st.lists(st.binary(max_size=8), max_size=6))
        raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
        if draw(st.booleans()):  # a prefix that claims more than there is
            raw += struct.pack("<I", draw(st.integers(1, 2**32 - 1))) + b"x"
    else:
        raw = draw(st.binary(max_size=4 * 16 * 4 + 3))
    size = len(raw) + draw(st.sampled_from((0, 0, 0, 1, -1)))
    spec["parameters"] = {"binary_data_size": size}
    return spec, raw


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A request body and its Inference-Header-Content-Length (None: JSON only)."""
    inputs = draw(st.lists(tensors(), min_size=1, max_size=3))
    header: dict[str, Any] = {"inputs": [spec for spec, _ in inputs]}
    if draw(st.booleans()):
        header["outputs"] = [
            {"name": n, "parameters": {"binary_data": draw(st.booleans())}}
            for n in draw(st.lists(st.sampled_from(("OUTPUT0", "OUTPUT1", "SHOUT", "x"))))
        ]
    encoded = json.dumps(header).encode()
    raw = b"".join(chunk for _, chunk in inputs)
    if not raw:
        return encoded, None
    return encoded + raw, str(len(encoded) + draw(st.sampled_from((0, 0, 0, 5, -3))))


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    """Model servers of the two-input model and of the text one, and a proxy in front of
    both, served on threads over HTTP on 127.0.0.1: where to send each model's requests."""
    work = Path(tempfile.mkdtemp(prefix="nexus-fuzz-v2-"))
    repo = git_repo(work / "project")
    make_sum_diff_onnx(work / "simple.onnx")
    Registry(repo).store(work / "simple.onnx", "simple")
    (work / "suffix.txt").write_bytes(b"!")
    Registry(repo).store(work / "suffix.txt", "shout")
    try:
        servers = {
            name: serve_on_thread(
                create_app(
                    ServerSettings(
                        repo=repo,
                        cache_dir=work / "cache",
                        model_name=name,
                        follow=False,
                        handler=handler,
                    )
                ),
                lifespan="on",
            )
            for name, handler in (("simple", None), ("shout", HANDLER))
        }
        upstreams = tuple(f"{name}={url}" for name, url in servers.items())
        proxy = serve_on_thread(
            ProxyApp(ProxySettings(upstreams=upstreams, health_interval_s=0.2)), lifespan="on"
        )
        for url in (*servers.values(), proxy):
            for _ in range(200):
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    break
                time.sleep(0.05)
        yield {"proxy": proxy, **servers}
    finally:
        stop_all()


@FUZZ
@given(
    body=bodies(),
    model=st.sampled_from(("simple", "shout")),
    via_proxy=st.booleans(),
)
def test_every_body_is_answered_200_or_a_4xx_by_the_server_and_the_proxy(
    urls: dict[str, str], body: tuple[bytes, str | None], model: str, via_proxy: bool
) -> None:
    content, length = body
    headers = {} if length is None else {v2wire.HEADER_LENGTH: length}
    base = urls["proxy"] if via_proxy else urls[model]
    reply = httpx.post(
        f"{base}/v2/models/{model}/infer", content=content, headers=headers, timeout=30
    )
    assert reply.status_code < 500, reply.text
    if reply.status_code != 200:
        assert set(reply.json()) == {"error"}


@FUZZ
@given(body=bodies())
def test_the_proxys_side_of_a_body_raises_only_the_protocols_400(
    body: tuple[bytes, str | None],
) -> None:
    content, length = body
    try:
        request = v2wire.parse_request(content, length)
        _, rows = v2batch.stack_key("m", request)
        combined = v2batch.combine([request, request])
        v2batch.split(combined, [rows, rows])
    except v2wire.V2Error as exc:
        refused = exc
    else:
        return
    assert refused.status == 400
    assert str(refused)

"""The batch contract between proxy and model server, tested once for both sides."""

from __future__ import annotations

import orjson
import pytest

from nexus_common import wire


def test_request_is_built_from_raw_items_without_reparsing() -> None:
    raw = [b'{"input": [1, 2]}', b'"text"', b"3"]
    assert orjson.loads(wire.encode_request(raw)) == {"inputs": [{"input": [1, 2]}, "text", 3]}
    assert wire.check_request(orjson.loads(wire.encode_request(raw)), max_batch=8) == [
        {"input": [1, 2]},
        "text",
        3,
    ]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ([1, 2], wire.INVALID, '{"inputs"'),
        ({"inputs": "x"}, wire.INVALID, '{"inputs"'),
        ({"inputs": []}, wire.INVALID, "empty"),
        ({"inputs": [1, 2, 3]}, wire.TOO_LARGE, "limit is 2"),
    ],
)
def test_bad_requests_have_a_status_and_a_sentence(body, status: int, words: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.check_request(body, max_batch=2)
    assert caught.value.status == status
    assert words in caught.value.message


def test_a_reply_round_trips_with_explicit_errors() -> None:
    body = wire.reply_body([{"y": 1}, None, {"error": 0.5}], {1: "bad input"}, {"name": "m"})
    reply = wire.check_reply(orjson.loads(orjson.dumps(body)))
    assert reply.errors == {1: "bad input"}
    assert reply.outputs[1] == {"error": "bad input"}  # readers of the first contract
    assert reply.outputs[2] == {"error": 0.5}  # a real output, not in `errors`
    assert 2 not in reply.errors
    assert reply.model == {"name": "m"}
    assert "errors" not in wire.reply_body([1], {}, None)


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ({"output": []}, "'outputs' list"),
        ({"outputs": [1], "errors": [0]}, "'errors'"),
        ({"outputs": [1], "errors": {"1": "x"}}, "outside the batch"),
        ({"outputs": [1], "errors": {"a": "x"}}, "outside the batch"),
    ],
)
def test_replies_that_break_the_contract_are_refused(reply, words: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.check_reply(reply)
    assert words in caught.value.message


def test_concurrency_comes_from_the_health_header() -> None:
    assert wire.concurrency_of({wire.CONCURRENCY_HEADER: "3"}) == 3
    assert wire.concurrency_of({}) == 1
    assert wire.concurrency_of({wire.CONCURRENCY_HEADER: "0"}) == 1
    assert wire.concurrency_of({wire.CONCURRENCY_HEADER: "many"}) == 1

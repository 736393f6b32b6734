"""Messages between the server and a worker: length-prefixed JSON over a socketpair.

JSON, not pickle, in both directions: the server must never unpickle what a model's code
could have written. Arrays do not travel here but in the arenas (`arena`), so messages
stay small: descriptors, item lists of handler models, errors.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import orjson

from model_server.errors import ChannelClosedError, WorkerProtocolError

_LENGTH = struct.Struct("<I")
MAX_MESSAGE = 64 * 1024 * 1024  # a handler's JSON items travel here; arrays never do


class Channel:
    """One end of a worker's socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: dict[str, Any]) -> None:
        body = orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)
        self.sock.sendall(_LENGTH.pack(len(body)) + body)

    def receive(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The next message; TimeoutError if none came in `timeout_s`, ChannelClosedError at
        the end of the stream."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        (length,) = _LENGTH.unpack(self._exactly(_LENGTH.size, deadline))
        if length > MAX_MESSAGE:
            raise WorkerProtocolError(f"the worker sent a message of {length} bytes")
        try:
            message = orjson.loads(self._exactly(length, deadline))
        except orjson.JSONDecodeError:
            raise WorkerProtocolError("the worker sent a message that is not JSON") from None
        if not isinstance(message, dict):
            raise WorkerProtocolError("the worker sent a message that is not an object")
        return message

    def _exactly(self, count: int, deadline: float | None) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                chunk = self.sock.recv(count - len(chunks))
            except TimeoutError:
                raise
            except OSError as exc:
                raise ChannelClosedError(str(exc)) from None
            if not chunk:
                raise ChannelClosedError("end of stream")
            chunks += chunk
        return bytes(chunks)

    def close(self) -> None:
        self.sock.close()

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
MAX_MESSAGE = 64 * 1024 * 1024
_CHUNK = 256 * 1024  # a handler's JSON items travel here; arrays never do


class Channel:
    """One end of a worker's socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._pending = bytearray()  # received, not yet taken as a message

    def send(self, message: dict[str, Any]) -> None:
        body = orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)
        self.sock.sendall(_LENGTH.pack(len(body)) + body)

    def receive(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The next message; TimeoutError if none came in `timeout_s`, ChannelClosedError at
        the end of the stream."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while len(self._pending) < _LENGTH.size:
            self._fill(deadline)
        (length,) = _LENGTH.unpack_from(self._pending)
        if length > MAX_MESSAGE:
            raise WorkerProtocolError(f"the worker sent a message of {length} bytes")
        end = _LENGTH.size + length
        while len(self._pending) < end:
            self._fill(deadline)
        body = bytes(self._pending[_LENGTH.size : end])
        del self._pending[:end]
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise WorkerProtocolError("the worker sent a message that is not JSON") from None
        if not isinstance(message, dict):
            raise WorkerProtocolError("the worker sent a message that is not an object")
        return message

    def _fill(self, deadline: float | None) -> None:
        """Whatever has arrived (one call reads a whole small message: header and body)."""
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
        else:
            self.sock.settimeout(None)
        try:
            chunk = self.sock.recv(_CHUNK)
        except TimeoutError:
            raise
        except OSError as exc:
            raise ChannelClosedError(str(exc)) from None
        if not chunk:
            raise ChannelClosedError("end of stream")
        self._pending += chunk

    def close(self) -> None:
        self.sock.close()

"""A forwarding HTTP server that injects faults between a client and a real server.

It sits on 127.0.0.1 in front of moto's S3 server or the GCS emulator and, for the
first `times` requests a rule matches, answers for the server instead:

    "503"   503 with S3's SlowDown error (throttling), or a GCS-style JSON error
    "500"   500 Internal Error
    "drop"  forwards, then sends the status, the headers and half the body, and closes
            (a connection dropped mid-transfer)

Everything else is forwarded as is. `injected` counts the faults sent, so a test can
show each fault really happened.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.harness.servers import free_port

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_GCS_ERROR = b'{"error": {"code": %d, "message": "injected fault"}}'
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Rule:
    method: str  # GET, PUT, POST ... or "*"
    path: str  # a regular expression searched in the path and query
    fault: str  # "503", "500" or "drop"
    times: int  # how many matching requests get the fault (-1: all)
    injected: int = 0


@dataclass
class FaultyHttp:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, fault: str, times: int = 1) -> Rule:
        rule = Rule(method, path, fault, times)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def fault_for(self, method: str, path: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                matches = rule.method in ("*", method) and re.search(rule.path, path)
                if matches and (rule.times < 0 or rule.injected < rule.times):
                    rule.injected += 1
                    return rule.fault
        return None


def _handler(faulty: FaultyHttp) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(faulty.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                parts: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def _handle(self) -> None:
            body = self._body()
            fault = faulty.fault_for(self.command, self.path)
            if fault in ("503", "500"):
                status = int(fault)
                payload = (
                    _SLOW_DOWN
                    if status == 503 and "/storage/" not in self.path
                    else (_GCS_ERROR % status)
                )
                self.send_response(status)
                self.send_header("content-length", str(len(payload)))
                self.send_header("content-type", "application/xml")
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["content-length"] = str(len(body))
            upstream = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=60
            )
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
            finally:
                upstream.close()
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if fault == "drop" and self.command != "HEAD":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

    return Handler


@contextlib.contextmanager
def faulty_http(upstream: str) -> Iterator[tuple[FaultyHttp, str]]:
    """(the fault plan, its URL) for a forwarder in front of `upstream`."""
    faulty = FaultyHttp(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(faulty))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield faulty, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

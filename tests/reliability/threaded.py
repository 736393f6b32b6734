"""An ASGI app served by uvicorn on a thread of this process (127.0.0.1).

For module-scoped fixtures outside any event loop of pytest's: the app's lifespan (the
proxy's batcher, the model server's loaded model) runs once on that thread's own loop, not
once per request. `stop_all()` (the fixture's teardown) stops every one: a server left
running would take the GIL from every test after it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


def serve_on_thread(app: Any, port: int = 0, **options: Any) -> str:
    """Start serving `app` (on `port`; 0: a free one); its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.01)
    _running.append((server, thread))
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"


_running: list[tuple[uvicorn.Server, threading.Thread]] = []


def stop_all() -> None:
    while _running:
        server, thread = _running.pop()
        server.should_exit = True
        thread.join(30)

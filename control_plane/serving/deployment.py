"""Reading a model server's rollout log (`GET /deployment`) for `nexus deployment`."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from control_plane.core.errors import ServerError

TIMEOUT_S = 10.0


def fetch_deployment(url: str, since: int = 0) -> dict[str, Any]:
    """The server's rollout state and its events after `since` (a seq number)."""
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ServerError(
            f"'{url}' is not an http(s) URL.", hint="e.g. nexus deployment http://127.0.0.1:8000"
        )
    query = urllib.parse.urlencode({"since": since})
    try:
        with urllib.request.urlopen(f"{base}/deployment?{query}", timeout=TIMEOUT_S) as reply:
            data = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise ServerError(
            f"{base} answered {exc.code} to GET /deployment.",
            hint="point at a NexusML model server (not the proxy)",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(f"cannot reach {base}: {reason}.") from None
    except ValueError:
        raise ServerError(f"{base}/deployment did not answer JSON.") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise ServerError(f"{base}/deployment did not answer a rollout log.")
    return data

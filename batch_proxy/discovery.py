"""Upstreams found in DNS: every address of one name, looked up again on an interval.

A Kubernetes headless Service answers with one address per ready pod, so
`--upstream-dns model-server-headless:8000` follows the model-server replicas as
they come and go, without restarting the proxy. A new address joins its pool
once its `/ready` answers 200 (a replica still loading its model gets no batch);
an address no longer in the answer is drained (no new batch; its in-flight
batches finish). A failed look-up changes nothing: a DNS blip must not empty the
pool, so the last good answer stands until the next one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from batch_proxy.upstream import UpstreamPool

logger = logging.getLogger("nexus.proxy")

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses the name has now; raises OSError when the look-up fails."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address of `host` from the system resolver (what a pod's resolv.conf says)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def upstream_url(address: str, port: int) -> str:
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


class DnsDiscovery:
    """Keeps one pool's upstreams equal to the addresses of `host`, port `port`."""

    def __init__(
        self,
        pool: UpstreamPool,
        host: str,
        port: int,
        *,
        interval_s: float,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.interval_s = interval_s
        self._resolver = resolver
        self._failing: str | None = None
        pool.empty_reason = f"no ready address found yet for {host}:{port}"

    async def start(self) -> None:
        """Look up once: replicas ready now join before the proxy says it is ready. The
        owner then runs `watch` in the background (under its supervisor)."""
        await self.refresh()

    async def refresh(self) -> None:
        try:
            addresses = await self._resolver(self.host, self.port)
        except OSError as exc:
            if self._failing is None:
                logger.warning(
                    "DNS look-up of %s failed (%s); keeping the %d upstreams found before",
                    self.host,
                    exc,
                    len(self.pool.urls),
                )
            self._failing = str(exc)
            return
        if self._failing is not None:
            logger.warning("DNS look-up of %s works again", self.host)
            self._failing = None
        wanted = {upstream_url(address, self.port) for address in addresses}
        for url in sorted(self.pool.urls - wanted):
            self.pool.drain(url)
        await asyncio.gather(*(self.pool.add(url) for url in sorted(wanted)))

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

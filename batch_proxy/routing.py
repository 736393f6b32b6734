"""Which upstreams and which queue a request goes to: one queue per model (and, for the
v2 protocol, per input signature), each over its model's upstreams.

Upstreams are given per model (`--upstream resnet=http://a:8000`: that model's server, whose
`/predict/batch` and `/v2/models/resnet/infer` serve it) or shared (`--upstream URL`: any
model, named in the path: `/models/{name}/predict/batch`). `POST /predict` goes to the
default queue: the shared upstreams' own model, or the one model when only one is named.
A batch never mixes models: each queue sends only its own. A pool's upstreams may also
come from DNS (`--upstream-dns [MODEL=]HOST:PORT`, discovery.py), alone or beside URLs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TypeVar

from batch_proxy import v2batch
from batch_proxy.batcher import Batcher, BatchObserver, Transport, send_items
from batch_proxy.discovery import DnsDiscovery, Resolver, system_resolver
from batch_proxy.errors import QueueFullError, UnknownModel
from batch_proxy.policies import BatchPolicy, make_policy
from batch_proxy.settings import ProxySettings
from batch_proxy.upstream import UpstreamPool
from nexus_common import wire
from nexus_common.supervise import Supervisor

logger = logging.getLogger("nexus.proxy")

K = TypeVar("K")

QUEUES_MAX = 64  # distinct models and v2 input signatures at once; idle ones are dropped


class Router:
    """The pools and queues of one proxy; queues are made on first use, then kept."""

    def __init__(
        self,
        settings: ProxySettings,
        observer: BatchObserver | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.settings = settings
        self.pools: dict[str | None, UpstreamPool] = {
            model: UpstreamPool(
                urls,
                timeout_s=settings.upstream_timeout_s,
                health_interval_s=settings.health_interval_s,
                pool_size=settings.connection_pool_size,
                concurrency=settings.upstream_concurrency,
                token=settings.upstream_token,
            )
            for model, urls in settings.upstream_groups.items()
        }
        self.discoveries = [
            DnsDiscovery(
                self.pools[model],
                host,
                port,
                interval_s=settings.dns_interval_s,
                resolver=resolver,
            )
            for model, (host, port) in settings.dns_names.items()
        ]
        self.observer = observer
        self.supervisor = Supervisor(logger)  # every background loop of the proxy
        self._items: dict[str | None, Batcher] = {}
        self._v2: dict[v2batch.StackKey, Batcher] = {}
        self._started = False
        self._closing: set[asyncio.Task[None]] = set()  # dropped queues stopping
        default = None if None in self.pools else next(iter(self.pools))
        self.default_model = default
        self.default_policy = self._policy()
        self.default = self._queue(self.pools[default], send_items, self.default_policy)
        self._items[default] = self.default

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.gather(*(pool.start() for pool in self.pools.values()))
        await asyncio.gather(*(discovery.start() for discovery in self.discoveries))
        for model, pool in self.pools.items():
            self.supervisor.start(f"health-checks[{model or 'default'}]", pool.watch_health)
        for discovery in self.discoveries:
            self.supervisor.start(f"dns[{discovery.host}]", discovery.watch)
        self._started = True
        for queue in self.queues:
            queue.start()

    async def stop(self, drain_timeout_s: float) -> None:
        await self.supervisor.stop()
        await asyncio.gather(*(q.stop(drain_timeout_s=drain_timeout_s) for q in self.queues))
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))

    @property
    def queues(self) -> list[Batcher]:
        return [*self._items.values(), *self._v2.values()]

    def set_observer(self, observer: BatchObserver) -> None:
        self.observer = observer
        for queue in self.queues:
            queue.observer = observer

    # -- where a request goes ----------------------------------------------------

    def item_queue(self, model: str | None) -> Batcher:
        """The queue of JSON items for `model` (None: the default)."""
        if model is None or model == self.default_model:
            return self.default
        queue = self._items.get(model)
        if queue is None:
            pool, path = self._route(model)
            transport = functools.partial(send_items, path=path)
            queue = self._items[model] = self._new_queue(pool, transport)
        return queue

    def v2_queue(self, group: v2batch.StackKey) -> Batcher:
        """The queue of one model's v2 requests of one input signature."""
        queue = self._v2.get(group)
        if queue is None:
            pool, _ = self._route(group.model)
            queue = self._v2[group] = self._new_queue(pool, v2batch.transport(group.model))
        return queue

    def pool_for(self, model: str) -> UpstreamPool:
        return self._route(model)[0]

    def ready(self) -> dict[str, bool]:
        """Per model (`shared` for the shared upstreams): whether any of its upstreams is
        healthy."""
        return {model or "shared": pool.ready for model, pool in self.pools.items()}

    @property
    def queue_depth(self) -> int:
        return sum(q.queue_depth for q in self.queues)

    @property
    def ready_upstreams(self) -> int:
        """Upstreams taking batches now, over every pool."""
        return sum(pool.ready_count for pool in self.pools.values())

    @property
    def inflight(self) -> int:
        return sum(q.inflight for q in self.queues)

    # -- helpers -----------------------------------------------------------------

    def _route(self, model: str) -> tuple[UpstreamPool, str]:
        """The model's pool and the batch path on it."""
        own = self.pools.get(model)
        if own is not None:
            return own, wire.BATCH_PATH
        shared = self.pools.get(None)
        if shared is None:
            served = ", ".join(sorted(m for m in self.pools if m))
            raise UnknownModel(f"no upstream serves model '{model}' (this proxy serves {served}).")
        return shared, f"/models/{model}{wire.BATCH_PATH}"

    def _new_queue(self, pool: UpstreamPool, transport: Transport) -> Batcher:
        if len(self.queues) >= QUEUES_MAX:
            self._drop_idle_queues()
        if len(self.queues) >= QUEUES_MAX:
            raise QueueFullError(
                f"the proxy is batching {QUEUES_MAX} distinct models and input shapes now; "
                "retry shortly."
            )
        queue = self._queue(pool, transport, self._policy())
        if self._started:
            queue.start()
        return queue

    def _drop_idle_queues(self) -> None:
        """Forget every queue with nothing queued or in flight (the default excepted): names
        that were tried once, or models gone quiet, must not hold the table forever (64 made-up
        names at a shared upstream would otherwise lock every new model out until restart).
        A dropped queue is made anew, with a fresh policy, on its next request."""
        dropped = _pop_idle(self._items, self.default) + _pop_idle(self._v2, self.default)
        for queue in dropped:
            closing = asyncio.get_running_loop().create_task(queue.stop(drain_timeout_s=0))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def _queue(self, pool: UpstreamPool, transport: Transport, policy: BatchPolicy) -> Batcher:
        settings = self.settings
        queue = Batcher(
            pool,
            policy,
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            queue_limits=settings.queue_limits,
            transport=transport,
        )
        if self.observer is not None:
            queue.observer = self.observer
        return queue

    def _policy(self) -> BatchPolicy:
        settings = self.settings
        return make_policy(
            settings.policy,
            max_batch=settings.max_batch_size,
            max_wait_s=settings.max_wait_s,
            max_inflight=settings.max_inflight,
        )


def _pop_idle(table: dict[K, Batcher], keep: Batcher) -> list[Batcher]:
    """Remove and return the queues of `table` with nothing queued or in flight."""
    idle = [k for k, q in table.items() if q is not keep and not q.queue_depth and not q.inflight]
    return [table.pop(key) for key in idle]

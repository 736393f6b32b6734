"""A gRPC server as NexusML's servers run one: on the running event loop, with the gRPC
health protocol (`grpc.health.v1.Health`, what Kubernetes' `grpc` probes ask) following the
server's own readiness, and stopped with a grace period."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

logger = logging.getLogger("nexus.grpc")

HEALTH_INTERVAL_S = 1.0


class GrpcServer:
    """A started gRPC server; `ready` decides what its health service answers."""

    def __init__(self, server: grpc.aio.Server, task: asyncio.Task[None]) -> None:
        self.server = server
        self._task = task

    @classmethod
    async def start(
        cls,
        what: str,
        host: str,
        port: int,
        add_services: Callable[[grpc.aio.Server], Any],
        ready: Callable[[], bool],
        services: tuple[str, ...] = (),
    ) -> GrpcServer:
        server = grpc.aio.server()
        add_services(server)
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        server.add_insecure_port(f"{host}:{port}")
        await server.start()
        names = ("", *services)  # "": the server as a whole
        task = asyncio.get_running_loop().create_task(_follow(checker, names, ready))
        logger.info("gRPC (%s) on %s:%d", what, host, port)
        return cls(server, task)

    async def stop(self, grace_s: float) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.server.stop(grace=grace_s)


async def _follow(checker: Any, names: tuple[str, ...], ready: Callable[[], bool]) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    said = None
    while True:
        status = serving if ready() else not_serving
        if status != said:
            for name in names:
                await checker.set(name, status)
            said = status
        await asyncio.sleep(HEALTH_INTERVAL_S)

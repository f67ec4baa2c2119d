"""Start the services as real processes, wired together, and stop them cleanly.

Used by `make run`, the end-to-end tests and the benchmark, so all three exercise the same wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from servicekit.tls import GrpcTls
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Local development secrets, used only when none are configured; printed by `make run`.
DEV_STRIPE_SECRET = "whsec_boxcostpro_local_dev"
DEV_RAZORPAY_SECRET = "rzp_boxcostpro_local_dev"


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port free now, for a service about to bind it: picked outside the kernel's ephemeral range. A port
    of that range (what binding port 0 gives) is also the source port of outgoing connections, so between
    finding it free and the service binding it, a connection (to PostgreSQL, to a service) could take it."""
    low, high = _ephemeral_range()
    candidates = range(10000, low) if low > 11000 else range(high + 1, 65536)
    pick = random.SystemRandom()  # a test's seeding of `random` must not make two stacks pick alike
    for _ in range(200):
        port = pick.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port found between {candidates.start} and {candidates.stop - 1}")


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # A process group of its own: Ctrl-C in the terminal reaches only the runner, which then stops
        # the services one by one in drain order (see Stack.stop) instead of all at once.
        # Without a log file the output goes to the runner's terminal; with one, the child keeps its own
        # descriptor to it.
        with open(self.log_path, "ab") if self.log_path else contextlib.nullcontext() as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                stdin=subprocess.DEVNULL, process_group=0,
            )

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if not self.process:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@dataclass
class Stack:
    """The three services, started with `env` (which must hold DATABASE_URL), and each service with its own
    `service_env` on top (its certificate, its policy). With `replicas`, that many processes of each: the
    gateways share the public port, billing and notifier replicas listen on ports of their own, and their
    clients spread calls over them. The first replica of each keeps the service's name; the others are
    `billing-2`, `billing-3`, ... With `metrics`, every process serves /metrics on a port of its own."""

    env: Mapping[str, str]
    log_dir: Path | None = None
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    gateway_port: int = field(default_factory=free_port)
    billing_port: int = field(default_factory=free_port)
    notifier_port: int = field(default_factory=free_port)
    services: list[Service] = field(default_factory=list)
    replicas: int = 1
    metrics: bool = False
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ports = {"billing": [self.billing_port, *(free_port() for _ in range(self.replicas - 1))],
                       "notifier": [self.notifier_port, *(free_port() for _ in range(self.replicas - 1))]}

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def billing_addr(self) -> str:
        return f"127.0.0.1:{self.billing_port}"

    @property
    def notifier_addr(self) -> str:
        return f"127.0.0.1:{self.notifier_port}"

    def addrs(self, service: str) -> list[str]:
        """The address of each replica of billing or the notifier."""
        return [f"127.0.0.1:{port}" for port in self._ports[service]]

    def _target(self, service: str) -> str:
        """What clients dial: the one address, or all of them as a gRPC target to balance over."""
        addrs = self.addrs(service)
        return addrs[0] if len(addrs) == 1 else "ipv4:" + ",".join(addrs)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.setdefault("STRIPE_WEBHOOK_SECRET", DEV_STRIPE_SECRET)
        env.setdefault("RAZORPAY_WEBHOOK_SECRET", DEV_RAZORPAY_SECRET)
        if not env.get("GRPC_TLS_CERT_FILE"):
            env.setdefault("GRPC_PLAINTEXT", "true")  # local development: explicit plaintext between services
        env.update(
            BILLING_ADDR=self._target("billing"),
            NOTIFIER_ADDR=self._target("notifier"),
            GATEWAY_PORT=str(self.gateway_port),
            GATEWAY_HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        return env

    def migrate(self) -> None:
        for module in ("billing", "notifier"):
            done = subprocess.run([sys.executable, "-m", module, "migrate"], env=self._env(), capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                # What it logged says why (the database unreachable, a migration refused): pass it on.
                sys.stderr.write(done.stdout + done.stderr)
                raise RuntimeError(f"{module} migrate failed with exit code {done.returncode}")

    def start(self, only: str | None = None) -> None:
        env = self._env()
        for name, module in (("notifier", "notifier"), ("billing", "billing"), ("webhook-gateway", "gateway")):
            if only is not None and name != only:
                continue
            for replica in range(self.replicas):
                replica_name = name if replica == 0 else f"{name}-{replica + 1}"
                own: dict[str, str] = {}
                if name in self._ports:
                    own[f"{module.upper()}_LISTEN_ADDR"] = self.addrs(name)[replica]
                if name == "webhook-gateway" and self.replicas > 1:
                    own["GATEWAY_REUSE_PORT"] = "true"
                if self.metrics:
                    own["METRICS_PORT"] = str(self.metrics_ports.setdefault(replica_name, free_port()))
                log_path = self.log_dir / f"{replica_name}.log" if self.log_dir else None
                service = Service(replica_name, [sys.executable, "-m", module],
                                  {**env, **own, **self.service_env.get(name, {})}, log_path)
                service.start()
                self.services.append(service)

    async def _serving(self, addr: str) -> bool:
        async with GrpcTls.from_env(self._env()).channel(addr) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def _gateway_ready(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.gateway_url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait within `timeout` until billing and the notifier answer their health checks, and then the
        gateway's /readyz says ready from a check of billing made after that (it reuses one for a while)."""
        deadline = time.monotonic() + timeout
        names = {s.name for s in self.services}
        reuse = float(self._env().get("HEALTH_CACHE_SECONDS", "1.0"))
        backends = self.addrs("billing") + (self.addrs("notifier") if "notifier" in names else [])
        await self._until_serving(backends, deadline, "the stack did not become ready in time")
        backends_up = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while True:
                self._all_running()
                if time.monotonic() - backends_up > reuse and await self._gateway_ready(session):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("the stack did not become ready in time")
                await asyncio.sleep(0.1)

    async def start_in_order(self, timeout: float = 30.0) -> None:
        """Start the notifiers, then billing, then the gateways, each once the ones before serve. A client
        balancing over replicas that dials one still starting waits a second or more before it tries that
        one again, and meanwhile sends everything to the others."""
        deadline = time.monotonic() + timeout
        for name in ("notifier", "billing"):
            self.start(only=name)
            await self._until_serving(self.addrs(name), deadline, f"{name} did not serve in time")
        self.start(only="webhook-gateway")
        await self.wait_ready(max(1.0, deadline - time.monotonic()))

    async def _until_serving(self, addrs: list[str], deadline: float, late: str) -> None:
        """Poll until every address answers its health check SERVING; a process that exits or the
        deadline ends the wait."""
        while not all([await self._serving(addr) for addr in addrs]):
            self._all_running()
            if time.monotonic() > deadline:
                raise TimeoutError(late)
            await asyncio.sleep(0.1)

    def _all_running(self) -> None:
        for service in self.services:
            if service.process and service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}")

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM in reverse start order: the gateway drains into billing, billing into the notifier."""
        codes: dict[str, int | None] = {}
        for service in reversed(self.services):
            service.signal(signal.SIGTERM)
            codes[service.name] = service.wait(timeout)
        self.services.clear()
        return codes

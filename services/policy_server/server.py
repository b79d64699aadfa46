"""The gRPC shell around the core: `eat.v1.PolicyService`, standard health checking, reflection (when
EAT_GRPC_REFLECTION asks for it), and the hot-swap listener on `eat.policy.updates`. The port serves
TLS and every call but health checks needs the bearer token (`auth.py`); plaintext without a token
only under the development switch EAT_POLICY_INSECURE, on a loopback address.

Threads: grpc.aio runs every handler on one event loop thread, so Decide calls the (not thread-safe)
policy directly, one decision at a time. DecideOffload rounds run in worker threads instead: a round
of tens of users takes milliseconds to seconds (the exact optimum), which must not hold up the event
loop that answers Decide; the offloading planner keeps no state between rounds. The update listener
is a `Bus` running in its own thread: it loads a new checkpoint there, off the event loop, and swaps
it in with one reference assignment.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eat.v1 import learning_pb2, policy_service_pb2, policy_service_pb2_grpc
from services.common import topology
from services.common.bus import Bus, Delivery, Reject
from services.common.certs import read_file
from services.common.convert import decision_to_proto, snapshot_from_proto, timestamp
from services.policy_server import metrics
from services.policy_server.auth import TokenAuth
from services.policy_server.core import (
    InvalidSnapshot,
    PolicyUpdate,
    ServingPolicy,
    UpdateRefused,
    load_initial,
    load_update,
)
from services.policy_server.offload import plan_to_proto, round_from_proto
from services.policy_server.offload_core import InvalidOffloadRound, OffloadPlanner
from services.policy_server.settings import PolicySettings

SERVICE_NAME = policy_service_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTED_SERVICES = (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME)
GRACE_S = 2.0  # in-flight calls get this long to finish on shutdown
SERVING = health_pb2.HealthCheckResponse.SERVING

log = structlog.get_logger("policy_server")


class PolicyHolder:
    """The serving policy behind one reference: read by Decide, replaced whole by the listener. A
    reader takes `current` once and uses that object throughout, so it never mixes two policies."""

    def __init__(self, serving: ServingPolicy) -> None:
        self._serving = serving
        metrics.VERSION.set(serving.version)

    @property
    def current(self) -> ServingPolicy:
        return self._serving

    def replace(self, serving: ServingPolicy) -> None:
        self._serving = serving  # a single assignment: atomic for readers on other threads
        metrics.VERSION.set(serving.version)


# ----- the gRPC service ------------------------------------------------------------------------------
class PolicyServicer(policy_service_pb2_grpc.PolicyServiceServicer):
    """eat.v1.PolicyService on the serving policy; bad input is INVALID_ARGUMENT, never a crash."""

    def __init__(self, holder: PolicyHolder, planner: OffloadPlanner) -> None:
        self._holder = holder
        self._planner = planner
        self._torch_pinned = False

    async def Decide(
        self, request: policy_service_pb2.DecideRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.DecideResponse:
        started = time.perf_counter()
        serving = self._holder.current  # read once: this decision and its reply use one policy
        if not request.HasField("snapshot"):
            metrics.INVALID_REQUESTS.inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "DecideRequest.snapshot is missing")
        self._pin_torch_threads(serving)
        try:
            decision = serving.decide(snapshot_from_proto(request.snapshot))
        except InvalidSnapshot as err:
            metrics.INVALID_REQUESTS.inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as err:
            log.exception("policy failed to decide", request_id=request.request_id, version=serving.version)
            await context.abort(grpc.StatusCode.INTERNAL, f"policy {serving.name} failed: {err!r}")
        elapsed_s = time.perf_counter() - started
        metrics.DECISIONS.labels(serving.name, str(decision.execute).lower()).inc()
        metrics.DECIDE_SECONDS.observe(elapsed_s)
        return decision_to_proto(
            decision, request.request_id, serving.version, serving.name, round(elapsed_s * 1e6)
        )

    async def GetVersion(
        self, request: policy_service_pb2.GetVersionRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.PolicyVersion:
        serving = self._holder.current
        return policy_service_pb2.PolicyVersion(
            version=serving.version,
            policy_name=serving.name,
            algorithm=serving.algorithm,
            checkpoint_uri=serving.checkpoint_uri,
            obs_spec_version=serving.obs_spec_version,
            loaded_at=timestamp(serving.loaded_at),
        )

    async def DecideOffload(
        self, request: policy_service_pb2.OffloadRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.OffloadPlan:
        started = time.perf_counter()
        try:
            decision = await asyncio.to_thread(self._planner.decide, round_from_proto(request))
        except InvalidOffloadRound as err:
            metrics.OFFLOAD_INVALID_REQUESTS.inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as err:
            log.exception("offloading policy failed to decide", request_id=request.request_id)
            await context.abort(grpc.StatusCode.INTERNAL, f"offloading policy failed: {err!r}")
        elapsed_s = time.perf_counter() - started
        metrics.OFFLOAD_ROUNDS.labels(decision.policy_name).inc()
        metrics.OFFLOAD_SECONDS.observe(elapsed_s)
        return plan_to_proto(decision, request.request_id, round(elapsed_s * 1e6))

    def _pin_torch_threads(self, serving: ServingPolicy) -> None:
        # torch's thread count is per OS thread: pin it on the thread that runs the networks (this
        # one), once a learned policy has brought torch in.
        if serving.algorithm and not self._torch_pinned:
            import torch

            torch.set_num_threads(1)
            self._torch_pinned = True


# ----- hot swap --------------------------------------------------------------------------------------
def update_from_proto(message: learning_pb2.PolicyUpdated) -> PolicyUpdate:
    return PolicyUpdate(
        version=message.version,
        checkpoint_uri=message.checkpoint_uri,
        algorithm=message.algorithm,
        obs_spec_version=message.obs_spec_version,
    )


class UpdateListener:
    """Consumes PolicyUpdated in a background bus thread; a refused update is dead-lettered with its
    reason. If the broker is down the bus keeps reconnecting there and gRPC serves on regardless."""

    def __init__(self, settings: PolicySettings, holder: PolicyHolder) -> None:
        self._settings = settings
        self._holder = holder
        self._bus = Bus(
            settings.amqp_url,
            prefetch=1,
            reconnect_max_s=settings.reconnect_max_s,
            queues=(topology.POLICY_UPDATES, topology.DEAD_LETTERS),
        )
        self._bus.consume(topology.POLICY_UPDATES, self.handle)
        self._thread = threading.Thread(target=self._run, name="policy-updates", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._bus.stop()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            self._bus.run()
        except Exception:  # a bug, not a broker loss (the bus handles those): say so, keep serving
            log.exception("policy update listener stopped")

    def handle(self, delivery: Delivery) -> None:
        try:
            update = update_from_proto(delivery.parse(learning_pb2.PolicyUpdated))
        except Reject:
            metrics.UPDATES_REFUSED.labels("malformed").inc()
            raise
        try:
            serving = load_update(self._holder.current, update, self._settings)
        except UpdateRefused as err:
            metrics.UPDATES_REFUSED.labels(err.kind).inc()
            log.warning("policy update refused", version=update.version, reason=err.reason)
            raise Reject(err.reason) from err
        self._holder.replace(serving)
        metrics.UPDATES_APPLIED.inc()
        log.info("policy swapped in", version=serving.version, policy=serving.name, uri=update.checkpoint_uri)


# ----- the server ------------------------------------------------------------------------------------
class PolicyServer:
    """The whole service in process: load the policies, then serve gRPC and listen for updates."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self.port = 0
        self.holder: PolicyHolder | None = None
        self.planner: OffloadPlanner | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._listener: UpdateListener | None = None

    async def start(self) -> int:
        """Load the policy and the offloading policies (in a worker thread), start serving; returns the
        bound port. Raises SettingsError, before loading anything, when the port would be unprotected."""
        self.settings.check_security()
        serving = await asyncio.to_thread(load_initial, self.settings)
        planner = await asyncio.to_thread(OffloadPlanner.load, self.settings.offload_policy)
        self.holder, self.planner = PolicyHolder(serving), planner
        interceptors = [] if self.settings.policy_insecure else [TokenAuth(self.settings.token())]
        server = grpc.aio.server(interceptors=interceptors)
        servicer = PolicyServicer(self.holder, planner)
        policy_service_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.settings.grpc_reflection:
            reflection.enable_server_reflection(REFLECTED_SERVICES, server)
        self.port = self._listen(server)
        await server.start()
        self._server = server
        for service in ("", SERVICE_NAME):
            await self._health.set(service, SERVING)
        if self.settings.hot_swap:
            self._listener = UpdateListener(self.settings, self.holder)
            self._listener.start()
        log.info(
            "serving",
            port=self.port,
            policy=serving.name,
            version=serving.version,
            offload_policy=planner.default_policy,
        )
        return self.port

    def _listen(self, server: grpc.aio.Server) -> int:
        """Add the port, TLS unless the development switch is on; returns the bound port."""
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        if self.settings.policy_insecure:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(self.settings))
        if not port:
            raise OSError(f"cannot listen on {address}")
        return port

    @property
    def listening(self) -> bool:
        """True while the update listener's thread runs."""
        return self._listener is not None and self._listener.alive

    async def stop(self, grace_s: float = GRACE_S) -> None:
        """NOT_SERVING first (load balancers stop sending), then drain calls, then stop the listener."""
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace_s)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        log.info("stopped")


def server_credentials(settings: PolicySettings) -> grpc.ServerCredentials:
    """The TLS certificate and key named in the settings (read now: a bad path fails the start)."""
    assert settings.grpc_tls_cert is not None and settings.grpc_tls_key is not None
    key = read_file(settings.grpc_tls_key, "TLS key")
    cert = read_file(settings.grpc_tls_cert, "TLS certificate")
    return grpc.ssl_server_credentials([(key, cert)])


async def serve(
    settings: PolicySettings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the service until `stop` is set (forever without one). `ready` is set once it serves."""
    server = PolicyServer(settings)
    await server.start()
    if ready is not None:
        ready.set()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop()


# ----- in-process servers for tests and tools --------------------------------------------------------
@dataclass
class RunningServer:
    """A server running on its own event loop thread; `stop()` shuts it down gracefully."""

    port: int
    server: PolicyServer
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _stop: asyncio.Event = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def version(self) -> int:
        assert self.server.holder is not None
        return self.server.holder.current.version

    @property
    def running(self) -> bool:
        """True while the server's thread (or its update listener) runs."""
        return self._thread.is_alive() or self.server.listening

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class _Startup:
    """What the server thread reports back to the thread that started it."""

    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    running: RunningServer | None = None


def start_in_thread(settings: PolicySettings, timeout_s: float = 60.0) -> RunningServer:
    """Start a real server in a background thread and return once it serves (errors re-raised here).
    grpc_port=0 picks a free port: read it from `.port`."""
    startup = _Startup()

    async def run() -> None:
        server, stop = PolicyServer(settings), asyncio.Event()
        try:
            await server.start()
        except BaseException as err:
            startup.error = err
            startup.done.set()
            return
        loop = asyncio.get_running_loop()
        startup.running = RunningServer(server.port, server, loop, stop, threading.current_thread())
        startup.done.set()
        await stop.wait()
        await server.stop()

    threading.Thread(target=asyncio.run, args=(run(),), name="policy-server", daemon=True).start()
    if not startup.done.wait(timeout_s):
        raise TimeoutError(f"policy server did not start within {timeout_s} s")
    if startup.running is None:
        raise RuntimeError(f"policy server failed to start: {startup.error!r}") from startup.error
    return startup.running

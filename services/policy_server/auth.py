"""Who may call the policy server: TLS on the port, and a bearer token on every call.

A shared bearer token over server-authenticated TLS, not mutual TLS: the callers (the aggregator, the
offload coordinator, tools) are our own services and hold one secret, mounted from the same Secret as
the server's certificate; a token is rotated by replacing one file, needs no client certificates to
issue, renew or revoke, and passes through the proxies and probes that terminate or inspect
connections. TLS keeps the token and the snapshots confidential and proves the server's identity to
the caller.

Every method of the port needs the token (`authorization: Bearer <token>`, gRPC's own
access-token credentials send it), Decide, GetVersion, DecideOffload and reflection alike, except
grpc.health.v1: health carries nothing secret and is what container probes, which hold no token,
call. A missing or wrong token is UNAUTHENTICATED; the comparison takes the same time whatever the
token, so timing does not reveal how much of a guess was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2

from services.policy_server import metrics

HEALTH_PREFIX = "/" + health_pb2.DESCRIPTOR.services_by_name["Health"].full_name + "/"
AUTHORIZATION = "authorization"

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class TokenAuth(grpc.aio.ServerInterceptor):
    """Lets through calls that carry the token (and health checks); refuses the rest."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let anyone in")
        self._expected = f"Bearer {token}".encode()
        # One handler for every refusal: a stream-stream handler that never reads its request answers
        # a call of any arity (unary or streaming look the same on the wire until a message is read).
        self._refuse = grpc.stream_stream_rpc_method_handler(_refuse)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method or ""
        if method.startswith(HEALTH_PREFIX) or self.authorized(handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        metrics.UNAUTHENTICATED.inc()
        return self._refuse

    def authorized(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> bool:
        presented = [value for key, value in metadata or () if key == AUTHORIZATION]
        if len(presented) != 1:
            return False
        (value,) = presented
        got = value.encode() if isinstance(value, str) else value
        return hmac.compare_digest(got, self._expected)


async def _refuse(requests: object, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")

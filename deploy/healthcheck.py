#!/usr/bin/env python3
"""Container health check for the EAT Serve images: exit 0 when healthy, 1 otherwise.

    eat-healthcheck http http://127.0.0.1:9100/metrics     # bus services: /metrics answers 200
    eat-healthcheck grpc --ca CA.crt 127.0.0.1:50051 eat.v1.PolicyService   # grpc.health.v1 says SERVING

`--ca` checks the policy server over TLS, trusting that CA (health needs no token); without it the
check is plaintext (a development server).

Compose healthchecks run it inside the container (Kubernetes has native httpGet and gRPC probes and does
not need it). It only imports the standard library and grpcio, so a check costs a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 3.0


def check_http(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when `url` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as err:
        return f"{url}: {err}"


def check_grpc(target: str, service: str, timeout_s: float = TIMEOUT_S, ca: Path | None = None) -> str | None:
    """None when the gRPC health service at `target` reports `service` SERVING, else why not. With
    `ca`, over TLS trusting that CA."""
    # Imported here so the HTTP check does not pay for loading grpc.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if ca is None:
        channel = grpc.insecure_channel(target)
    else:
        try:
            roots = ca.read_bytes()
        except OSError as err:
            return f"cannot read the CA {ca}: {err}"
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as err:
            return f"{target} {service!r}: {err.code().name}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{target} {service!r}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eat-healthcheck", description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    http = kinds.add_parser("http", help="GET a URL, healthy on 200")
    http.add_argument("url")
    grpc_check = kinds.add_parser("grpc", help="grpc.health.v1 Check, healthy on SERVING")
    grpc_check.add_argument("--ca", type=Path, help="PEM CA that signed the server's certificate (TLS)")
    grpc_check.add_argument("target", help="host:port")
    grpc_check.add_argument("service", nargs="?", default="", help="service name ('' = the server)")
    args = parser.parse_args(argv)
    if args.kind == "http":
        problem = check_http(args.url)
    else:
        problem = check_grpc(args.target, args.service, ca=args.ca)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Who may call the policy server: a real server on TLS with a bearer token, certificates from
`eat certs dev`, refusals for missing and wrong tokens and plaintext, reflection only when asked for,
and loopback by default."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from eat.v1 import policy_service_pb2, policy_service_pb2_grpc
from services.cli import main as eat
from services.common.certs import DevCerts, ensure_dev_certs
from services.common.settings import SettingsError
from services.policy_server.client import (
    PolicyClient,
    PolicyClientSettings,
    PolicyUnavailable,
    policy_channel,
)
from services.policy_server.server import SERVICE_NAME, RunningServer, start_in_thread
from services.policy_server.settings import PolicySettings
from tests.services.policy_server.conftest import settings, startable_snapshot
from tests.services.policy_server.test_client import free_port

REPO = Path(__file__).resolve().parents[3]
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
StartServer = Callable[..., RunningServer]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    """What `eat certs dev --out DIR` writes."""
    directory = tmp_path_factory.mktemp("certs") / "dev"
    assert eat(["certs", "dev", "--out", str(directory)]) == 0
    return DevCerts(directory)


def tls_settings(certs: DevCerts, **overrides: object) -> dict[str, object]:
    tls = dict(
        policy_insecure=False,
        grpc_tls_cert=certs.server_cert,
        grpc_tls_key=certs.server_key,
        policy_token_file=certs.token,
    )
    return {**tls, **overrides}


@pytest.fixture(scope="module")
def server(certs: DevCerts) -> Iterator[RunningServer]:
    running = start_in_thread(settings(**tls_settings(certs)))
    yield running
    running.stop()


def credentials(certs: DevCerts, token: str | None = None) -> PolicyClientSettings:
    """The CA and the real token, another token, or no token (token="")."""
    if token is None:
        return PolicyClientSettings(policy_ca=certs.ca_cert, policy_token_file=certs.token)
    return PolicyClientSettings(policy_ca=certs.ca_cert, policy_token=token)


def call(method: str, channel: grpc.Channel) -> object:
    stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
    requests = {
        "Decide": policy_service_pb2.DecideRequest(),
        "GetVersion": policy_service_pb2.GetVersionRequest(),
        "DecideOffload": policy_service_pb2.OffloadRequest(),
    }
    return getattr(stub, method)(requests[method], timeout=10)


# ----- the certificates ----------------------------------------------------------------------------------
def test_the_certs_command_writes_a_ca_a_server_pair_and_a_private_token(certs: DevCerts) -> None:
    assert certs.complete() and certs.ca_key.is_file()
    assert certs.directory.stat().st_mode & 0o777 == 0o700
    assert certs.ca_key.stat().st_mode & 0o777 == 0o600
    assert len(certs.token.read_text().strip()) >= 32
    made = {p: p.read_bytes() for p in certs.directory.iterdir()}
    ensure_dev_certs(certs.directory)  # complete: kept as they are
    assert {p: p.read_bytes() for p in certs.directory.iterdir()} == made


# ----- authenticated calls ---------------------------------------------------------------------------------
def test_an_authenticated_client_decides_over_tls(server: RunningServer, certs: DevCerts) -> None:
    with PolicyClient(server.target, timeout_s=10.0, credentials=credentials(certs)) as client:
        assert client.decide(startable_snapshot()).policy_name == "reuse"
        assert client.version().policy_name == "reuse"
        assert client.healthy()


def test_the_client_reads_its_credentials_from_the_environment(
    server: RunningServer, certs: DevCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EAT_POLICY_CA", str(certs.ca_cert))
    monkeypatch.setenv("EAT_POLICY_TOKEN_FILE", str(certs.token))
    with PolicyClient(server.target, timeout_s=10.0) as client:
        assert client.decide(startable_snapshot()).policy_name == "reuse"


# ----- refusals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["Decide", "GetVersion", "DecideOffload"])
@pytest.mark.parametrize("token", ["", "not-the-token"], ids=["no-token", "wrong-token"])
def test_every_method_refuses_a_missing_or_wrong_token(
    server: RunningServer, certs: DevCerts, method: str, token: str
) -> None:
    with (
        policy_channel(server.target, credentials(certs, token)) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        call(method, channel)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_that_only_starts_right_is_refused(server: RunningServer, certs: DevCerts) -> None:
    real = certs.token.read_text().strip()
    client = PolicyClient(server.target, 10.0, credentials(certs, real[:-1]))
    with client, pytest.raises(PolicyUnavailable) as caught:
        client.decide(startable_snapshot())
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_tls_but_no_token(server: RunningServer, certs: DevCerts) -> None:
    with PolicyClient(server.target, 10.0, PolicyClientSettings(policy_ca=certs.ca_cert)) as client:
        assert client.healthy()
        with pytest.raises(PolicyUnavailable):
            client.version()


def test_a_plaintext_connection_is_refused(server: RunningServer) -> None:
    with PolicyClient(server.target, 5.0, PolicyClientSettings()) as client:
        with pytest.raises(PolicyUnavailable) as caught:
            client.decide(startable_snapshot())
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert not client.healthy()


def test_a_server_certificate_from_another_ca_is_not_trusted(server: RunningServer, tmp_path: Path) -> None:
    other = ensure_dev_certs(tmp_path / "other")
    client = PolicyClient(server.target, 5.0, credentials(other))
    with client, pytest.raises(PolicyUnavailable) as caught:
        client.version()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


# ----- reflection ---------------------------------------------------------------------------------------
def reflected_services(target: str, settings: PolicyClientSettings) -> set[str]:
    with policy_channel(target, settings) as channel:
        return set(ProtoReflectionDescriptorDatabase(channel).get_services())


def test_reflection_is_off_by_default(server: RunningServer, certs: DevCerts) -> None:
    assert not PolicySettings.from_env({}).grpc_reflection
    with pytest.raises(grpc.RpcError) as caught:
        reflected_services(server.target, credentials(certs))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_when_asked_for_serves_authenticated_callers(
    start_server: StartServer, certs: DevCerts
) -> None:
    running = start_server(**tls_settings(certs, grpc_reflection=True))
    assert SERVICE_NAME in reflected_services(running.target, credentials(certs))
    with pytest.raises(grpc.RpcError) as caught:
        reflected_services(running.target, credentials(certs, "wrong"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ----- what the server refuses to start with -------------------------------------------------------
def test_the_default_bind_is_loopback() -> None:
    assert PolicySettings.from_env({}).grpc_host == "127.0.0.1"


def test_without_tls_material_the_server_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="EAT_POLICY_INSECURE=1"):
        PolicySettings.from_env({}).check_security()
    with pytest.raises(RuntimeError, match="no TLS material"):
        start_in_thread(settings(policy_insecure=False))


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_the_development_switch_serves_on_loopback_only(host: str) -> None:
    with pytest.raises(SettingsError, match="loopback"):
        PolicySettings.from_env({"EAT_POLICY_INSECURE": "1", "EAT_GRPC_HOST": host}).check_security()


def test_tls_without_a_token_is_refused(certs: DevCerts) -> None:
    no_token = settings(**tls_settings(certs, policy_token_file=None))
    with pytest.raises(SettingsError, match="TLS needs a token"):
        no_token.check_security()


@pytest.mark.slow
def test_the_service_exits_2_without_tls_material() -> None:
    env = {"PATH": "/usr/bin:/bin", "EAT_GRPC_PORT": str(free_port()), "EAT_LOG_FORMAT": "json"}
    result = subprocess.run(
        [sys.executable, "-m", "services.policy_server"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "no TLS material" in result.stderr


def test_a_client_token_without_a_ca_is_refused() -> None:
    with pytest.raises(SettingsError, match="EAT_POLICY_CA"):
        PolicyClientSettings.from_env({"EAT_POLICY_TOKEN": "secret"})


# ----- the container health check ------------------------------------------------------------------------
def test_the_health_check_speaks_tls_with_the_ca(server: RunningServer, certs: DevCerts) -> None:
    def check(*options: str) -> int:
        command = [sys.executable, str(HEALTHCHECK), "grpc", *options, server.target, SERVICE_NAME]
        return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode

    assert check("--ca", str(certs.ca_cert)) == 0
    assert check() == 1  # plaintext against a TLS port

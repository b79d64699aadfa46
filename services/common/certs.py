"""TLS material for the policy server's gRPC port: development certificates, and reading the files the
services are pointed at.

`eat certs dev --out DIR` writes a development CA (`ca.crt`, `ca.key`), a server certificate signed by
it (`server.crt`, `server.key`) for localhost, 127.0.0.1, ::1 and the `policy-server` service name of
the compose file and the Kubernetes manifests, and a random bearer token (`token`). The policy server
reads the server pair and the token; its callers read `ca.crt` and the token. `eat up` makes them in
its work directory when they are missing.

Keys are ECDSA P-256 (fast to make and to handshake) made by the `openssl` command line tool. The
directory is private to its owner (0700); the files a container reads (server key, token) are 0644 so
that the images' unprivileged user can read them through a bind mount, which keeps the owner's mode.
The CA key stays 0600: nothing but this command needs it.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import SettingsError, env_name

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1", "policy-server")
VALID_DAYS = 825  # the longest validity clients accept for a server certificate
CA_NAME = "EAT Serve development CA"


class CertsError(RuntimeError):
    """The certificates could not be made (openssl missing or failing)."""


@dataclass(frozen=True)
class DevCerts:
    """The files of one development certificate directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def token(self) -> Path:
        return self.directory / "token"

    def complete(self) -> bool:
        """True when everything a server and its callers read is there."""
        return all(p.is_file() for p in (self.ca_cert, self.server_cert, self.server_key, self.token))


# ----- reading -----------------------------------------------------------------------------------------
def read_token(token: str, token_file: Path | None) -> str:
    """The bearer token given inline or in a file (surrounding whitespace dropped); "" when neither."""
    if token_file is None:
        return token.strip()
    try:
        return token_file.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ValueError(f"cannot read the token file {token_file}: {err}") from err


def check_token_source(token: str, token_file: Path | None) -> None:
    """The token comes inline (EAT_POLICY_TOKEN) or from a file (EAT_POLICY_TOKEN_FILE), never both."""
    if token and token_file is not None:
        raise SettingsError(f"set {env_name('policy_token')} or {env_name('policy_token_file')}, not both")


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read the {what} {path}: {err}") from err


# ----- making ------------------------------------------------------------------------------------------
def make_dev_certs(directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> DevCerts:
    """Write a fresh CA, a server certificate for `hosts` and a token into `directory` (replacing any)."""
    certs = DevCerts(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    _openssl(
        "req", "-x509", *_new_key(certs.ca_key), "-out", str(certs.ca_cert), "-days", str(VALID_DAYS),
        "-subj", f"/CN={CA_NAME}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _sign_server_cert(certs, hosts)
    certs.token.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
    certs.ca_key.chmod(0o600)
    for path in (certs.ca_cert, certs.server_cert, certs.server_key, certs.token):
        path.chmod(0o644)
    return certs


def ensure_dev_certs(directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> DevCerts:
    """The development certificates in `directory`, made first if any file is missing."""
    certs = DevCerts(directory)
    return certs if certs.complete() else make_dev_certs(directory, hosts)


def _sign_server_cert(certs: DevCerts, hosts: Sequence[str]) -> None:
    extensions = "\n".join(
        (
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + ",".join(_alt_name(h) for h in hosts),
        )
    )
    with tempfile.TemporaryDirectory() as scratch:
        request, ext_file = Path(scratch) / "server.csr", Path(scratch) / "server.ext"
        ext_file.write_text(extensions + "\n", encoding="utf-8")
        _openssl("req", "-new", *_new_key(certs.server_key), "-out", str(request), "-subj", f"/CN={hosts[0]}")
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(certs.ca_cert), "-CAkey", str(certs.ca_key),
            "-set_serial", str(secrets.randbits(63)), "-days", str(VALID_DAYS), "-sha256",
            "-extfile", str(ext_file), "-out", str(certs.server_cert),
        )  # fmt: skip


def _new_key(key_path: Path) -> tuple[str, ...]:
    return ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key_path))


def _alt_name(host: str) -> str:
    is_ip = host.replace(".", "").isdigit() or ":" in host
    return f"IP:{host}" if is_ip else f"DNS:{host}"


def _openssl(*args: str) -> None:
    try:
        subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as err:
        raise CertsError("making certificates needs the openssl command (apt-get install openssl)") from err
    except subprocess.CalledProcessError as err:
        raise CertsError(f"openssl {args[0]} failed: {err.stderr.strip()}") from err


# ----- the command line --------------------------------------------------------------------------------
def add_certs_command(commands: argparse._SubParsersAction) -> None:
    """`eat certs dev --out DIR [--host NAME ...]`."""
    certs = commands.add_parser("certs", help="TLS material for the policy server's gRPC port")
    kinds = certs.add_subparsers(dest="certs", required=True)
    p = kinds.add_parser("dev", help="a development CA, a server certificate and a token")
    p.add_argument("--out", type=Path, required=True, help="directory to write (files are replaced)")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        help=f"another name or IP the server certificate covers (always: {', '.join(DEFAULT_HOSTS)})",
    )
    p.set_defaults(handler=run_certs_dev)


def run_certs_dev(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    hosts = list(dict.fromkeys([*DEFAULT_HOSTS, *args.host]))
    try:
        certs = make_dev_certs(args.out, hosts)
    except CertsError as err:
        parser.error(str(err))
    print(f"wrote {certs.directory}: ca.crt ca.key server.crt server.key token (for {', '.join(hosts)})")
    print("server:  EAT_GRPC_TLS_CERT=server.crt EAT_GRPC_TLS_KEY=server.key EAT_POLICY_TOKEN_FILE=token")
    print("callers: EAT_POLICY_CA=ca.crt EAT_POLICY_TOKEN_FILE=token")
    return 0

"""Real Redis topologies for the tests: plain, TLS, ACL, Sentinel and Cluster, on free loopback ports.

``RedisFarm`` starts ``redis-server`` processes (Debian's redis-server 7 has TLS and Sentinel built in;
``redis-server --sentinel`` is what the redis-sentinel package runs) in a temporary directory, waits
until each accepts connections, and kills them all on ``stop()``. Nothing here sleeps for a fixed
time: every wait polls a readiness condition until a deadline. ``make_certs`` writes a CA, a server
certificate for 127.0.0.1 and a client certificate (mutual TLS) with the ``cryptography`` package.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

__all__ = ["REDIS_SERVER", "Certs", "RedisFarm", "make_certs", "needs_redis_server", "wait_for"]

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
START_TIMEOUT = 15.0

needs_redis_server = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None,
    reason="redis-server/redis-cli are not installed (scripts/setup installs the Debian packages "
           "redis-server and redis-tools)")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll `condition` (which may raise OSError/RedisError meaning 'not yet') until it holds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, redis.RedisError) as exc:
            last = exc
        time.sleep(0.02)  # poll interval, not synchronisation
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last error: {last!r})")


def free_port(*, below: int = 65536) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < below:
            return port


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


@dataclass
class RedisFarm:
    """The redis-server processes of one test (or module); `stop()` kills every one of them."""

    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, *args: str, port: int | None = None, sentinel_conf: str | None = None) -> int:
        """Start one server (or a sentinel, given its config text); return once its port accepts."""
        assert REDIS_SERVER is not None
        port = free_port() if port is None else port  # 0: no TCP port (TLS or unix socket only)
        base = [f"--port {port}", "--bind 127.0.0.1", f"--dir {self.workdir}",
                f"--logfile {self.workdir / name}.log"]
        if sentinel_conf is not None:
            conf = self.workdir / f"{name}.conf"
            conf.write_text(sentinel_conf)  # sentinel rewrites its config file: it must be writable
            argv = [REDIS_SERVER, str(conf), "--sentinel"]
        else:
            argv = [REDIS_SERVER, "--save", "", "--appendonly", "no"]
        for option in base:
            flag, value = option.split(" ", 1)
            argv += [flag, value]
        proc = subprocess.Popen([*argv, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        option = dict(zip(args, args[1:], strict=False))

        def up() -> bool:
            if proc.poll() is not None:
                log = (self.workdir / f"{name}.log").read_text(errors="replace")
                raise AssertionError(f"redis-server {name} exited with {proc.returncode}:\n{log[-2000:]}")
            if "--unixsocket" in option:
                with socket.socket(socket.AF_UNIX) as unix:
                    unix.connect(option["--unixsocket"])
                    return True
            return _accepts(int(option.get("--tls-port", port)))

        wait_for(up, f"redis-server {name} accepting connections")
        return port

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)
        self.procs.clear()

    def cluster(self, nodes: int = 3) -> list[int]:
        """`nodes` masters with all 16384 slots assigned, cluster_state:ok on every node."""
        assert REDIS_CLI is not None
        ports = [free_port() for _ in range(nodes)]
        for port in ports:
            # --cluster-port: the bus port would otherwise be port + 10000, which may be taken or > 65535.
            self.start(f"cluster-{port}", "--cluster-enabled", "yes", "--cluster-config-file",
                       f"nodes-{port}.conf", "--cluster-port", str(free_port()), "--cluster-node-timeout", "5000",
                       port=port)
        subprocess.run([REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)

        def ok() -> bool:
            for port in ports:
                with redis.Redis(port=port) as client:
                    info = client.cluster("info")
                    if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != nodes:
                        return False
            return True

        wait_for(ok, "cluster_state:ok on every node")
        return ports


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: verification against it must fail


def make_certs(directory: Path) -> Certs:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(cn: str, usage: x509.ObjectIdentifier, signer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
             ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(signer[1].subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return key, builder.sign(signer[0], hashes.SHA256())

    authority = ca("oidc-gateway test CA")
    server = leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, authority)
    client = leaf("oidc-gateway", ExtendedKeyUsageOID.CLIENT_AUTH, authority)
    return Certs(ca=write_cert(authority[1], directory / "ca.crt"),
                 server_cert=write_cert(server[1], directory / "server.crt"),
                 server_key=write_key(server[0], directory / "server.key"),
                 client_cert=write_cert(client[1], directory / "client.crt"),
                 client_key=write_key(client[0], directory / "client.key"),
                 other_ca=write_cert(ca("some other CA")[1], directory / "other-ca.crt"))

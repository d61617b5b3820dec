"""Real ``redis-server`` processes for tests: never the system one on 6379.

:class:`RedisServer` runs one server on a free loopback port in its own temporary
directory, without persistence (``--save '' --appendonly no``); it can be stopped
and restarted on the same port, or frozen (SIGSTOP), to test reconnects; with
``tls=True`` it speaks only TLS and requires client certificates (:class:`TlsFiles`,
a throw-away CA made on the spot).
:class:`RedisClusterServers` runs three masters (no replicas) joined by
``redis-cli --cluster create``.

Readiness is "PING answers PONG", polled with a deadline: a freshly started
process offers no event to wait on. Every wait here is bounded.

:func:`shared_server` is the one server a whole test process shares, and
:func:`shared_cluster` the one Redis Cluster (each started on first use, stopped at
interpreter exit); tests isolate themselves with a unique ``key_prefix`` instead of
separate servers.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import ipaddress
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "RedisClusterServers",
    "RedisServer",
    "TlsFiles",
    "free_port",
    "ping",
    "shared_cluster",
    "shared_server",
]

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def free_port(also_free_offset: int | None = None) -> int:
    """A TCP port free on 127.0.0.1 now (and ``port + also_free_offset`` too, if given)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if also_free_offset is None:
            return port
        other = port + also_free_offset
        if other < 65536 and _bindable(other):
            return port
    raise RuntimeError("no free port pair found")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ping(port: int, timeout: float = 0.5, tls: TlsFiles | None = None) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING (PONG, or NOAUTH: it is up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            s = (
                raw
                if tls is None
                else tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
            )
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away CA, a server certificate for 127.0.0.1 and a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def create(cls, directory: Path) -> TlsFiles:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "squall test CA")])
        ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, is_ca=True)
        files = cls(
            *(directory / n for n in ("ca.crt", "srv.crt", "srv.key", "cli.crt", "cli.key"))
        )
        files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        for cert_file, key_file, name in (
            (files.server_cert, files.server_key, "127.0.0.1"),
            (files.client_cert, files.client_key, "squall client"),
        ):
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            cert = _certificate(subject, ca_name, key.public_key(), ca_key, is_ca=False)
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return files

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    is_ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(signer, hashes.SHA256())


def _wait(predicate: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout} s")
        time.sleep(0.01)


class RedisServer:
    """One ``redis-server`` on a free loopback port. Use :meth:`start` / :meth:`stop`."""

    def __init__(
        self, port: int | None = None, extra_args: tuple[str, ...] = (), tls: bool = False
    ) -> None:
        self.port = port or free_port()
        self.extra_args = extra_args
        self.dir = Path(tempfile.mkdtemp(prefix=f"squall-redis-{self.port}-"))
        #: with ``tls``: TLS only, client certificates required (mutual TLS)
        self.tls = TlsFiles.create(self.dir) if tls else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.server_cert),
            "--tls-key-file", str(self.tls.server_key),
            "--tls-ca-cert-file", str(self.tls.ca),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start (again, on the same port) and return once PING answers."""
        if self.running:
            return self
        args = [
            "redis-server",
            *self._listen_args(),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            *self.extra_args,
        ]  # fmt: skip
        log = (self.dir / "redis.log").open("ab")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                tail = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on {self.port} exited:\n{tail}")
            return ping(self.port, tls=self.tls)

        try:
            _wait(ready, f"redis-server on port {self.port}")
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop the process (SIGKILL with ``kill``) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: sockets stay open, nothing is answered (a half-open peer)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        """Stop and delete the temporary directory."""
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class RedisClusterServers:
    """Three cluster-enabled masters (no replicas) on free ports, joined into one cluster."""

    def __init__(self, masters: int = 3) -> None:
        # The cluster bus listens on port + 10000: both must be free.
        ports: list[int] = []
        while len(ports) < masters:
            port = free_port(also_free_offset=10000)
            if port not in ports:
                ports.append(port)
        self.servers = [RedisServer(port, _cluster_args(port)) for port in ports]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one master (the client discovers the rest)."""
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    def start(self) -> RedisClusterServers:
        for server in self.servers:
            server.start()
        addrs = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addrs,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        for server in self.servers:
            _wait(functools.partial(_cluster_ok, server.port), f"cluster node {server.port}")
        return self

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()

    def __enter__(self) -> RedisClusterServers:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _cluster_args(port: int) -> tuple[str, ...]:
    return (
        "--cluster-enabled", "yes",
        "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", "2000",
    )  # fmt: skip


def _cluster_ok(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"],
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_S,
    ).stdout
    return "cluster_state:ok" in out


@functools.cache
def shared_server() -> RedisServer:
    """The test process's shared server: started once, stopped at interpreter exit."""
    server = RedisServer().start()
    atexit.register(server.cleanup)
    return server


@functools.cache
def shared_cluster() -> RedisClusterServers:
    """The test process's shared 3-master cluster: started once, stopped at interpreter exit.

    Tests sharing it must not stop, freeze or reshard it (use a private
    :class:`RedisClusterServers` for that); killing client connections is fine.
    """
    cluster = RedisClusterServers()
    try:
        cluster.start()
    except BaseException:
        cluster.cleanup()
        raise
    atexit.register(cluster.cleanup)
    return cluster

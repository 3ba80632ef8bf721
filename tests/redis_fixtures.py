"""A real Redis for the tests of shared budgets: Debian's ``redis-server`` (``.ci/run`` installs
it), started once per session on a free loopback port with no persistence, and emptied before
each test that asks for it.

Where the server is missing the tests skip, except in CI (``CI`` set to true), where a missing
server is an error: a CI run must never pass by skipping the only tests of this feature.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

__all__ = ["RedisCluster", "RedisServer", "redis_cluster", "redis_server", "redis_url"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on ``127.0.0.1:port`` (a given port: a restart of one that was
    stopped, its data gone)."""

    def __init__(self, executable: str, port: int | None = None, extra: Sequence[str] = ()) -> None:
        self.executable = executable
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not answer PING within 10 s")
            time.sleep(0.02)

    def flush(self) -> None:
        """Empty every database and drop the loaded scripts."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\nSCRIPT FLUSH\r\n")
            received = b""
            while received.count(b"\r\n") < 2:
                chunk = sock.recv(64)
                if not chunk:
                    break
                received += chunk

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    while True:
        port = _free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisCluster:
    """Three primaries on loopback ports, no replicas, every slot assigned."""

    def __init__(self, executable: str) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (it comes with redis-server)")
        self._dir = tempfile.TemporaryDirectory(prefix="asyncllm-redis-cluster-")
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(3):
                port = _cluster_port()
                self.nodes.append(
                    RedisServer(
                        executable,
                        port,
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            f"nodes-{port}.conf",
                            "--dir",
                            self._dir.name,
                        ],
                    )
                )
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            deadline = time.monotonic() + 20
            for node in self.nodes:
                while True:
                    info = subprocess.run(
                        [cli, "-p", str(node.port), "cluster", "info"],
                        capture_output=True,
                        text=True,
                        timeout=10,
                    ).stdout
                    if "cluster_state:ok" in info:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the cluster did not come up: {info}")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self._dir.cleanup()


def _executable() -> str:
    executable = shutil.which("redis-server")
    if executable is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-server is not installed, and CI must run the Redis tests")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return executable


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A three-primary Redis Cluster, for the session (its URL: ``redis+cluster://...``)."""
    cluster = RedisCluster(_executable())
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(_executable())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url

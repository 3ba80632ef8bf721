"""A real local S3 for the S3 tests: moto in server mode, in its own process, once per session.

Its own process so that its memory does not count in the tests' tracemalloc measurements and
its threads do not compete with the tests for the GIL. ``moto_auth_endpoint`` is a second
server that checks credentials (``INITIAL_NO_AUTH_ACTION_COUNT=0``), so that unknown keys meet
a real ``InvalidAccessKeyId``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

STARTUP_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto_server_command() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if os.path.exists(beside):
        return [beside]
    found = shutil.which("moto_server")
    if found:
        return [found]
    return [sys.executable, "-m", "moto.server"]


def _wait_until_listening(process: subprocess.Popen[bytes], port: int) -> None:
    end = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not listen on port {port} in {STARTUP_TIMEOUT}s")


def start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``moto_server`` on a free loopback port; returns the process and its endpoint."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra_env or {})
    process = subprocess.Popen(
        [*_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_listening(process, port)
    except BaseException:
        stop_moto(process)
        raise
    return process, f"http://127.0.0.1:{port}"


def stop_moto(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    process, endpoint = start_moto()
    yield endpoint
    stop_moto(process)


@pytest.fixture(scope="session")
def moto_auth_endpoint() -> Iterator[str]:
    process, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield endpoint
    stop_moto(process)

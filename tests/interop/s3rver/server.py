"""s3rver as a local process: on a loopback port the system picks, with a data folder of its own,
ready once it says it listens, and stopped without leaving a node process behind.

The process runs ``serve.js`` (beside this file) with the installed s3rver on ``NODE_PATH``. Its
standard input is a pipe from this process: closing it stops the server, and so does this
process dying, however it dies. Its output goes to ``s3rver.log`` in its folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.interop.s3rver.install import SOURCE, modules, node, node_major, node_options

SERVE = SOURCE / "serve.js"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
_READY = re.compile(rb"^listening (\d+)$", re.MULTILINE)


class StartError(RuntimeError):
    """s3rver was installed but did not start; the message holds its output."""


@dataclass
class S3rver:
    """A running s3rver: ``endpoint`` is its ``http://127.0.0.1:<port>``."""

    process: subprocess.Popen[bytes]
    endpoint: str
    directory: Path

    @property
    def log(self) -> str:
        return _log_text(self.directory)

    def stop(self) -> int:
        """Stop the server and wait for its process; returns its exit code."""
        return stop(self.process)


def _log_text(directory: Path) -> str:
    try:
        return (directory / "s3rver.log").read_text(errors="replace")
    except OSError:
        return ""


def _environment(
    access_key: str | None, secret_key: str | None, modules: Path, major: int
) -> dict[str, str]:
    """This process's environment without proxies and AWS settings, with s3rver's modules on
    ``NODE_PATH``, the ``NODE_OPTIONS`` it needs and the extra key pair, if any."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith(("AWS_", "ASYNCLLM_S3RVER_"))
    }
    env["NODE_PATH"] = str(modules)
    env["NODE_OPTIONS"] = node_options(major, os.environ.get("NODE_OPTIONS", ""))
    if access_key is not None and secret_key is not None:
        env["ASYNCLLM_S3RVER_ACCESS_KEY"] = access_key
        env["ASYNCLLM_S3RVER_SECRET_KEY"] = secret_key
    return env


def start(
    directory: Path, *, access_key: str | None = None, secret_key: str | None = None
) -> S3rver:
    """Start s3rver storing into ``directory/data`` (installing it first if need be). With
    ``access_key`` and ``secret_key`` its account takes that key pair besides ``S3RVER``.

    Raises ``install.InstallError`` when s3rver or Node.js cannot be had, ``StartError`` when
    the server does not come up within ``STARTUP_TIMEOUT``."""
    node_modules = modules()
    executable = node()
    env = _environment(access_key, secret_key, node_modules, node_major(executable))
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    with open(directory / "s3rver.log", "wb") as log:
        process = subprocess.Popen(
            [executable, str(SERVE), str(data)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            env=env,
        )
    try:
        port = _wait_until_ready(process, directory)
    except BaseException:
        stop(process)
        raise
    return S3rver(process, f"http://127.0.0.1:{port}", directory)


def _wait_until_ready(process: subprocess.Popen[bytes], directory: Path) -> int:
    end = time.monotonic() + STARTUP_TIMEOUT
    path = directory / "s3rver.log"
    while time.monotonic() < end:
        found = _READY.search(path.read_bytes())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            raise StartError(
                f"s3rver exited with {process.returncode} before listening:\n{_log_text(directory)}"
            )
        time.sleep(0.05)
    raise StartError(
        f"s3rver did not listen within {STARTUP_TIMEOUT:.0f} s:\n{_log_text(directory)}"
    )


def stop(process: subprocess.Popen[bytes]) -> int:
    """Close the server's standard input (it exits on that), then terminate, then kill, each
    after ``STOP_TIMEOUT`` without an exit; returns the exit code."""
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(OSError):  # a broken pipe: it has exited already
            process.stdin.close()
    for escalate in (process.terminate, process.kill):
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            escalate()
    return process.wait()

"""s3rver installed with npm from this folder's ``package-lock.json`` into ``.interop/s3rver/``.

``npm ci`` installs exactly what the lock file pins (s3rver 3.7.1 and its dependencies, checked
against their integrity hashes), without running any package's install scripts. The installed
folder is reused as long as the hash of ``package.json`` and ``package-lock.json`` matches the one
recorded with it; a changed pin installs afresh. It needs Node.js and npm; s3rver 3.7.1 runs on
Node 20 when given ``--openssl-legacy-provider`` (its listing continuation tokens use DES), which
:func:`node_options` adds.

The test run calls :func:`install` (through ``tests.interop.s3rver.server``); CI can also install
ahead of the tests, with the time it took printed: ``python -m tests.interop.s3rver.install``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent
ROOT = SOURCE.parents[2]
HOME = Path(os.environ.get("ASYNCLLM_INTEROP_ENVS", ROOT / ".interop")) / "s3rver"
PINNED = ("package.json", "package-lock.json")
MARKER = ".package-lock-sha256"
INSTALL_TIMEOUT = 600.0
_lock = threading.Lock()


class InstallError(RuntimeError):
    """s3rver could not be installed (or Node.js is missing); the message says why."""


def pinned_version() -> str:
    """The s3rver version that ``package.json`` pins."""
    manifest = json.loads((SOURCE / "package.json").read_text())
    return str(manifest["dependencies"]["s3rver"])


def _digest() -> str:
    sha = hashlib.sha256()
    for name in PINNED:
        sha.update(name.encode() + b"\0" + (SOURCE / name).read_bytes() + b"\0")
    return sha.hexdigest()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise InstallError(f"{name} is not on PATH: s3rver needs Node.js and npm")
    return found


def node() -> str:
    """The ``node`` executable."""
    return _tool("node")


def node_major(executable: str | None = None) -> int:
    """Node's major version (``v20.20.2`` is 20)."""
    out = subprocess.run(
        [executable or node(), "--version"], capture_output=True, text=True, timeout=30
    )
    found = re.match(r"v(\d+)\.", out.stdout.strip())
    if out.returncode or found is None:
        raise InstallError(f"cannot tell node's version: {(out.stdout + out.stderr).strip()!r}")
    return int(found.group(1))


def node_options(major: int, current: str = "") -> str:
    """``NODE_OPTIONS`` for s3rver: ``current`` plus OpenSSL's legacy provider from Node 17 on
    (OpenSSL 3 moved DES there; earlier Nodes refuse the flag and need none)."""
    flag = "--openssl-legacy-provider"
    if major < 17 or flag in current.split():
        return current
    return f"{current} {flag}".strip()


def modules() -> Path:
    """The ``node_modules`` folder that holds s3rver, installed first if missing or stale."""
    return install() / "node_modules"


def install(home: Path = HOME) -> Path:
    """The folder s3rver is installed in, running ``npm ci`` first unless the install there
    matches the pins."""
    digest = _digest()
    marker = home / MARKER
    with _lock:
        installed = home / "node_modules" / "s3rver" / "package.json"
        if marker.is_file() and marker.read_text() == digest and installed.is_file():
            return home
        npm = _tool("npm")
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        for name in PINNED:
            shutil.copyfile(SOURCE / name, home / name)
        env = {**os.environ, "npm_config_update_notifier": "false"}
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=home,
                env=env,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise InstallError(f"npm ci did not finish within {INSTALL_TIMEOUT:.0f} s") from None
        if done.returncode:
            log = (done.stdout + done.stderr).strip()[-3000:]
            raise InstallError(f"npm ci for s3rver failed (exit {done.returncode}): {log}")
        if not installed.is_file():
            raise InstallError(f"npm ci succeeded but left no {installed}")
        version = json.loads(installed.read_text()).get("version")
        if version != pinned_version():
            raise InstallError(f"npm installed s3rver {version}, not {pinned_version()}")
        marker.write_text(digest)
        return home


def main() -> int:
    started = time.monotonic()
    try:
        home = install()
    except InstallError as exc:
        print(f"s3rver: FAILED\n{exc}", file=sys.stderr, flush=True)
        return 1
    print(f"s3rver {pinned_version()} in {home}: {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

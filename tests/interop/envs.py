"""Pinned virtual environments for the heavy interop groups, built on demand and reused.

Each group (``tests/interop/envs/<group>.txt``, a pip requirements file with exact pins) gets its
own environment under ``.interop/<group>/``, because the groups cannot share one: ``text-generation``
needs ``huggingface_hub<1`` while the ``huggingface_hub`` tests need 1.x, ``opea-comps`` pins about a
hundred exact versions, and the servers (LiteLLM, MLServer) bring their own FastAPI and pydantic.
An environment whose marker matches its requirements file is reused as it is; a changed file
rebuilds it. ``uv`` (a dev dependency) does the installs, compiling bytecode so that a server's
first start (LiteLLM imports thousands of modules) does not compile it; without uv, pip does.

The test run calls this through :func:`python_for` (the ``interop_python`` fixture); CI can also
build every group ahead of the tests, in parallel: ``python -m tests.interop.envs``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPECS = Path(__file__).resolve().parent / "envs"
HOME = Path(os.environ.get("ASYNCLLM_INTEROP_ENVS", ROOT / ".interop"))
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


class EnvError(RuntimeError):
    """A group's environment could not be built (its install log is in the message)."""


def groups() -> list[str]:
    return sorted(p.stem for p in SPECS.glob("*.txt"))


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _uv() -> str | None:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    return found


def python_for(group: str) -> Path:
    """The interpreter of ``group``'s environment, built first if missing or out of date."""
    spec = SPECS / f"{group}.txt"
    if not spec.is_file():
        raise EnvError(f"no interop group {group!r} (known: {', '.join(groups())})")
    with _guard:
        lock = _locks.setdefault(group, threading.Lock())
    with lock:
        env = HOME / group
        digest = hashlib.sha256(spec.read_bytes()).hexdigest()
        marker = env / ".requirements-sha256"
        if marker.is_file() and marker.read_text() == digest and _python(env).exists():
            return _python(env)
        shutil.rmtree(env, ignore_errors=True)
        env.parent.mkdir(parents=True, exist_ok=True)
        uv = _uv()
        if uv:
            python = ("--python", str(_python(env)))
            steps = [
                [uv, "venv", "--quiet", "--python", sys.executable, str(env)],
                [uv, "pip", "install", "--quiet", "--compile-bytecode", "-r", str(spec), *python],
            ]
        else:
            steps = [
                [sys.executable, "-m", "venv", str(env)],
                [str(_python(env)), "-m", "pip", "install", "--quiet", "-r", str(spec)],
            ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if done.returncode:
                log = (done.stdout + done.stderr).strip()[-3000:]
                raise EnvError(f"building the {group!r} interop environment failed: {log}")
        marker.write_text(digest)
        return _python(env)


def main(argv: list[str]) -> int:
    wanted = argv or groups()
    started = time.monotonic()

    def build(group: str) -> str:
        t = time.monotonic()
        python_for(group)
        return f"{group}: {time.monotonic() - t:.1f} s"

    failed = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for group, future in [(g, pool.submit(build, g)) for g in wanted]:
            try:
                print(future.result(), flush=True)
            except EnvError as exc:
                failed += 1
                print(f"{group}: FAILED\n{exc}", file=sys.stderr, flush=True)
    print(f"interop environments: {time.monotonic() - started:.1f} s in all", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

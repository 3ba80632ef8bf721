"""A benchmark's child process: a loopback server (``server.py``) or a worker, started with this
interpreter, ready once it has printed its first line (``PORT n``, ``READY``), and stopped by
closing our end of its stdin (it exits when it reads the end).

Standard library only: ``ratelimits.py`` also runs under LiteLLM's interpreter, which has
neither asyncllm nor aiohttp.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SERVER = str(Path(__file__).resolve().parent / "server.py")


class Child:
    """``python *args`` with pipes to its stdin and stdout; ``first`` is its first line."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.first = self.proc.stdout.readline()

    def port(self, what: str) -> int:
        """The port a server child said it listens on; else it is stopped and this raises."""
        if not self.first.startswith("PORT "):
            self.close()
            raise RuntimeError(f"{what} did not start: {self.first!r}")
        return int(self.first.split()[1])

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """The ``RESULT {json}`` line a worker prints before it exits."""
        out, _ = self.proc.communicate(timeout=timeout)
        for line in out.splitlines():
            if line.startswith("RESULT "):
                found: dict[str, Any] = json.loads(line[len("RESULT ") :])
                return found
        raise RuntimeError(f"a worker printed no result (exit {self.proc.returncode})")

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(*args: str) -> tuple[Child, int]:
    """``server.py *args`` and the port it listens on."""
    child = Child([SERVER, *args])
    return child, child.port(f"benchmark server ({' '.join(args)})")

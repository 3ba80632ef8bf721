"""Event-loop turns per call at concurrency 1: a figure machine load cannot move.

    python benchmarks/turns.py [--calls 500]

At c=1 one call is in flight, so calls/s is one over the round trip: the client's CPU, the
server's, and every time the client's loop goes back to the selector to wait. A change that adds
a turn of the loop per call (a future handed to another task, a body read in two pieces, a
callback scheduled with ``call_soon``) costs a wakeup per call that no instruction count shows.
This counts, per call of raw aiohttp and of ``OpenAI.chat`` against ``server.py --kind fast``:
the loop's turns (``_run_once``), the callbacks it was given (``call_soon``), and the selector's
waits and the events they returned. Run it with each revision's package on ``PYTHONPATH`` to
compare two revisions; ``strace -c`` on the same run gives the system calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from run import Contenders, ServerProcess

COUNTED = ("turns", "call_soon", "selects", "events")


def instrument(loop: asyncio.AbstractEventLoop) -> dict[str, int]:
    """Wrap the loop's ``_run_once``, ``call_soon`` and its selector's ``select`` with counters
    (CPython's selector event loop; the wrappers stay for the loop's life)."""
    counts = dict.fromkeys(COUNTED, 0)
    run_once: Callable[[], None] = loop._run_once  # type: ignore[attr-defined]
    call_soon = loop.call_soon
    selector = loop._selector  # type: ignore[attr-defined]
    select = selector.select

    def counted_run_once() -> None:
        counts["turns"] += 1
        run_once()

    def counted_call_soon(*args: Any, **kwargs: Any) -> Any:
        counts["call_soon"] += 1
        return call_soon(*args, **kwargs)

    def counted_select(timeout: float | None = None) -> Any:
        counts["selects"] += 1
        ready = select(timeout)
        counts["events"] += len(ready)
        return ready

    loop._run_once = counted_run_once  # type: ignore[attr-defined]
    loop.call_soon = counted_call_soon  # type: ignore[method-assign]
    selector.select = counted_select
    return counts


async def measure(calls: int) -> dict[str, dict[str, float]]:
    counts = instrument(asyncio.get_running_loop())
    server = ServerProcess("fast")
    per_call: dict[str, dict[str, float]] = {}
    try:
        contenders = await Contenders(server.url, only=["raw aiohttp", "asyncllm"]).start()
        try:
            for name in contenders.names:
                call = contenders.calls[name]
                for key in counts:
                    counts[key] = 0
                for i in range(calls):
                    await call(i)
                per_call[name] = {key: value / calls for key, value in counts.items()}
        finally:
            await contenders.aclose()
    finally:
        server.close()
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    options = parser.parse_args()
    per_call = asyncio.run(measure(options.calls))
    if options.json:
        print(json.dumps(per_call))
        return
    print(f"per call at c=1, {options.calls} calls each (server.py --kind fast)\n")
    print(f"{'':14}" + "".join(f"{key:>11}" for key in COUNTED))
    for name, row in per_call.items():
        print(f"{name:14}" + "".join(f"{row[key]:>11.2f}" for key in COUNTED))


if __name__ == "__main__":
    main()

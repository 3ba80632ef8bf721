"""One worker process of the multi-process Redis tests (tests/test_redis_processes.py,
tests/test_redis_faults.py): an ``OpenAI`` client on a dispatcher shared through Redis, with
many concurrent callers.

    python -m tests.redis_worker REDIS_URL BASE_URL LIMIT CALLERS CALLS LEASE [RPM]

``CALLS`` calls in all (0: until stdin closes, when the calls under way are cancelled, or the
process is killed; SIGUSR1 stops it starting new calls); ``RPM``, a request
budget per minute shared by the fleet (none: only what the vendor's headers teach). Every call
names the model ``worker-PID``, so that the fake vendor can tell the workers apart. Prints
``ready`` when its dispatcher is up, and at the end one line of JSON: calls that succeeded and
failed, and under ``"redis"`` the lane's ``stats().info["redis"]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import asyncllm


async def main(
    redis_url: str,
    base_url: str,
    limit: int,
    callers: int,
    calls: int,
    lease: float,
    rpm: int | None,
) -> None:
    dispatcher = asyncllm.Dispatcher(redis_url=redis_url, redis_lease=lease, observer=None)
    client = asyncllm.OpenAI(
        api_key="test",
        base_url=base_url,
        dispatcher=dispatcher,
        name="vendor",
        max_concurrent_requests=limit,
        queue_size=callers * 2,
        max_retries=0,
        rate_limits=None if rpm is None else asyncllm.RateLimits(requests_per_minute=rpm),
    )
    model = f"worker-{os.getpid()}"
    done = {"ok": 0, "failed": 0}
    left = [calls]
    stop = asyncio.Event()
    # SIGUSR1: start no new call, finish those under way (their slots go back as they end).
    drain = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, drain.set)

    async def caller() -> None:
        while not stop.is_set() and not drain.is_set():
            if calls:
                if left[0] <= 0:
                    return
                left[0] -= 1
            try:
                await client.chat([{"role": "user", "content": "hi"}], model=model)
                done["ok"] += 1
            except asyncllm.AsyncLLMError:
                done["failed"] += 1

    async def watch_stdin() -> None:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        stop.set()

    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(caller()) for _ in range(callers)]
    watcher = None
    if not calls:
        # Until stdin closes; then the calls still running or queued are abandoned (cancelled),
        # as a worker shutting down would, rather than drained.
        watcher = loop.create_task(watch_stdin())
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    else:
        await asyncio.gather(*tasks)
    shared = dispatcher.stats()["vendor"].info.get("redis", {})
    await client.aclose()
    await dispatcher.aclose()
    print(json.dumps({**done, "redis": shared}), flush=True)
    if watcher is not None:
        watcher.cancel()


if __name__ == "__main__":
    url, base, limit, callers, calls, lease = sys.argv[1:7]
    rpm = int(sys.argv[7]) if len(sys.argv) > 7 else None
    asyncio.run(main(url, base, int(limit), int(callers), int(calls), float(lease), rpm))

"""Upload a model file to S3 with a progress bar, then list the bucket.

Runs against a local moto server it starts itself (``pip install 'moto[server]'``), or against
the store in ``$S3_ENDPOINT`` (with ``$S3_ACCESS_KEY``/``$S3_SECRET_KEY``) when that is set::

    python examples/s3_models.py
    S3_ENDPOINT=http://127.0.0.1:9000 S3_ACCESS_KEY=... S3_SECRET_KEY=... python examples/s3_models.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import asyncllm

BUCKET = os.environ.get("S3_BUCKET", "models")
MODEL_SIZE = 24 * 1024 * 1024  # big enough for a multipart upload of 3 parts of 8 MiB


@contextmanager
def local_moto() -> Iterator[str]:
    """A moto S3 server on a free loopback port, for as long as the block runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(command):
        command = shutil.which("moto_server") or "moto_server"
    server = subprocess.Popen(
        [command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def progress_bar(done: int, total: int) -> None:
    width = 40
    filled = width * done // total if total else width
    print(
        f"\r  [{'#' * filled}{'.' * (width - filled)}] {done / 2**20:6.1f} / {total / 2**20:.1f} MiB",
        end="" if done < total else "\n",
        flush=True,
    )


def make_model_file(directory: str) -> str:
    path = os.path.join(directory, "tiny-llm.safetensors")
    with open(path, "wb") as f:
        block = os.urandom(1024 * 1024)
        for _ in range(MODEL_SIZE // len(block)):
            f.write(block)
    return path


async def run(endpoint: str) -> None:
    async with asyncllm.S3(endpoint_url=endpoint, bucket=BUCKET, max_concurrent_requests=4) as s3:
        await s3.create_bucket(None, exist_ok=True)
        with tempfile.TemporaryDirectory() as directory:
            path = make_model_file(directory)
            print(f"uploading {os.path.basename(path)} to {endpoint}/{BUCKET}")
            result = await s3.upload_file(
                None, "llm/tiny-llm.safetensors", path, progress=progress_bar
            )
            print(f"  stored in {result.parts} parts, etag {result.etag}")
        await s3.put_object(None, "llm/config.json", b'{"layers": 2}')
        print(f"\ncontents of {BUCKET}:")
        async for item in s3.list_objects(None):
            print(f"  {item.size:>12,}  {item.last_modified:%Y-%m-%d %H:%M}  {item.key}")
        print()
        print(s3.dispatcher.stats_table())


def main() -> None:
    endpoint = os.environ.get("S3_ENDPOINT")
    if endpoint:
        asyncio.run(run(endpoint))
        return
    # moto accepts any keys; set some so that botocore does not look elsewhere.
    os.environ.setdefault("S3_ACCESS_KEY", "example-access-key")
    os.environ.setdefault("S3_SECRET_KEY", "example-secret-key")
    os.environ.setdefault("S3_REGION", "us-east-1")
    with local_moto() as endpoint:
        asyncio.run(run(endpoint))


if __name__ == "__main__":
    main()

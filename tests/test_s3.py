"""asyncllm.S3 against a real local S3 (moto in server mode, started once per session)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import traceback
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions
import pytest
from pydantic import SecretStr

from asyncllm import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    Dispatcher,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    RetryConfig,
    request_context,
)
from asyncllm._engine._backoff import is_retryable
from asyncllm.backends import s3 as s3_module
from asyncllm.backends.s3 import S3, BucketInfo, ObjectSummary, map_error
from tests.s3_server import moto_auth_endpoint, moto_endpoint  # noqa: F401 - fixtures

MiB = 1024 * 1024
ACCESS_KEY = "AKIAASYNCLLMTESTKEY1"
SECRET_KEY = "sEcReT/asyncllm+test/never-shown-0123456789"
NO_WAIT = RetryConfig(max_retries=2, initial_delay=0, max_delay=0)


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user's AWS or S3 settings leak into a test."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "S3_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def make_s3(endpoint: str, **kwargs: Any) -> S3:
    options: dict[str, Any] = {
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "region": "us-east-1",
        "retry": NO_WAIT,
        "dispatcher": Dispatcher(),
    }
    options.update(kwargs)
    return S3(endpoint_url=endpoint, **options)


@pytest.fixture
def s3_endpoint(moto_endpoint: str) -> str:  # noqa: F811
    """The S3 that the tests talking to a server use: moto. tests/interop/test_s3rver.py runs
    those tests against s3rver by giving them its own ``s3_endpoint``."""
    return moto_endpoint


@pytest.fixture
def s3_auth_endpoint(moto_auth_endpoint: str) -> str:  # noqa: F811
    """An S3 that checks credentials and does not know the tests' key."""
    return moto_auth_endpoint


@pytest.fixture
async def s3(s3_endpoint: str) -> AsyncIterator[S3]:
    client = make_s3(s3_endpoint)
    yield client
    await client.aclose()


@pytest.fixture
async def bucket(s3: S3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(name)
    return name


def write_file(path: Path, size: int, seed: int = 1) -> bytes:
    """A file of ``size`` pseudo-random bytes (cheap: one random block repeated with a counter)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (64 * 1024 // 32)
    out = bytearray()
    n = 0
    while len(out) < size:
        out += n.to_bytes(8, "big") + block
        n += 1
    data = bytes(out[:size])
    path.write_bytes(data)
    return data


def make_sparse(path: Path, size: int, tail: bytes) -> None:
    """A sparse file: made at once, costs no memory or disk."""
    with open(path, "wb") as f:
        f.seek(size - len(tail))
        f.write(tail)


def read_tail(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(-n, os.SEEK_END)
        return f.read()


def listdir(path: Path) -> list[str]:
    return os.listdir(path)


def client_error(code: str, status: int, message: str = "boom", **headers: str) -> Exception:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {
                "HTTPStatusCode": status,
                "RequestId": "srv-123",
                "HTTPHeaders": headers,
            },
        },
        "PutObject",
    )


class Wrap:
    """Wraps one method of the aiobotocore client: counts calls and concurrency, injects faults."""

    def __init__(
        self,
        client: Any,
        name: str,
        *,
        fail: Callable[[int, dict[str, Any]], Exception | None] | None = None,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.real = getattr(client, name)
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail = fail
        self.delay = delay
        self.gate = gate
        setattr(client, name, self)

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        number = len(self.calls)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.gate is not None:
                await self.gate.wait()
            if self.fail is not None:
                error = self.fail(number, kwargs)
                if error is not None:
                    raise error
            return await self.real(**kwargs)
        finally:
            self.in_flight -= 1


# -- configuration --------------------------------------------------------------------------------


def test_repr_and_secrets_never_show_keys() -> None:
    s3 = S3(
        endpoint_url="http://127.0.0.1:9",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        bucket="models",
    )
    assert isinstance(s3.secret_key, SecretStr)
    for text in (repr(s3), str(s3), repr(vars(s3))):
        assert SECRET_KEY not in text
        assert ACCESS_KEY not in text
    assert "models" in repr(s3)


def test_configuration_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("S3_SECRET_KEY", SECRET_KEY)
    s3 = S3()
    assert s3.endpoint_url == "http://127.0.0.1:9"
    assert s3.access_key is not None
    assert s3.access_key.get_secret_value() == ACCESS_KEY
    assert s3.addressing_style == "path"
    monkeypatch.delenv("S3_ENDPOINT")
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    aws = S3(region="eu-west-1")
    assert aws.endpoint_url is None
    assert aws.access_key is None  # left to botocore's chain
    assert aws.addressing_style == "auto"
    assert "eu-west-1" in repr(aws)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"access_key": "only-one"},
        {"addressing_style": "sideways"},
        {"part_size": 1024},
        {"bucket": "x"},
        {"endpoint_url": "ftp://example"},
        {"access_key": "a\nb", "secret_key": "c"},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        S3(**{"endpoint_url": "http://127.0.0.1:9", **kwargs})


def test_without_aiobotocore_import_works_and_use_explains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = (
        "import sys; sys.modules['aiobotocore'] = None; sys.modules['botocore'] = None\n"
        "import asyncllm\n"
        "try:\n"
        "    asyncllm.S3(endpoint_url='http://127.0.0.1:9')\n"
        "except asyncllm.ConfigurationError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert "pip install 'asyncllm[s3]'" in out.stdout
    monkeypatch.setitem(sys.modules, "aiobotocore", None)
    with pytest.raises(ConfigurationError, match=r"asyncllm\[s3\]"):
        S3(endpoint_url="http://127.0.0.1:9")


async def test_bad_arguments_fail_before_sending(s3: S3, bucket: str) -> None:
    with pytest.raises(ConfigurationError):
        await s3.get_object(None, "k")  # no default bucket
    with pytest.raises(ConfigurationError):
        await s3.get_object(bucket, "")
    with pytest.raises(ConfigurationError):
        await s3.get_object(bucket, "k", byte_range=(5, 2))
    with pytest.raises(ConfigurationError):
        await s3.put_object(bucket, "k", 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        await s3.put_object(bucket, "k", "/no/such/file")
    with pytest.raises(ConfigurationError):
        await s3.presign(bucket, "k", method="post")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        await s3.presign(bucket, "k", expires_in=8 * 24 * 3600)
    assert len(s3.dispatcher.tracker) == 1  # the bucket fixture's create_bucket


async def test_credentials_from_the_aws_chain(
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anonymous = S3(endpoint_url=s3_endpoint, region="us-east-1", dispatcher=Dispatcher())
    async with anonymous:
        with pytest.raises(ConfigurationError, match="no S3 credentials"):
            await anonymous.list_buckets()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    from_env = S3(endpoint_url=s3_endpoint, region="us-east-1", dispatcher=Dispatcher())
    async with from_env:
        assert isinstance(await from_env.list_buckets(), list)
    assert SECRET_KEY not in repr(from_env)


# -- objects --------------------------------------------------------------------------------------


async def test_put_get_head_delete(s3: S3, bucket: str, tmp_path: Path) -> None:
    await s3.put_object(
        bucket, "a.bin", b"hello world", content_type="text/plain", metadata={"m": "1"}
    )
    assert await s3.get_object(bucket, "a.bin") == b"hello world"
    assert await s3.get_object(bucket, "a.bin", byte_range=(6, 10)) == b"world"
    assert await s3.get_object(bucket, "a.bin", byte_range=(6, None)) == b"world"
    info = await s3.head_object(bucket, "a.bin")
    assert (info.key, info.size, info.content_type, dict(info.metadata)) == (
        "a.bin",
        11,
        "text/plain",
        {"m": "1"},
    )
    assert info.etag == hashlib.md5(b"hello world").hexdigest()
    assert info.last_modified is not None

    src = tmp_path / "f.bin"
    src.write_bytes(b"from a file")
    result = await s3.put_object(bucket, "b.bin", src)
    assert (result.size, result.etag) == (11, hashlib.md5(b"from a file").hexdigest())
    assert await s3.get_object(bucket, "b.bin") == b"from a file"

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"one ", b"two ", b"three"):
            yield piece

    await s3.put_object(bucket, "c.bin", pieces())
    assert await s3.get_object(bucket, "c.bin") == b"one two three"

    await s3.delete_object(bucket, "a.bin")
    with pytest.raises(NotFoundError) as head_missing:
        await s3.head_object(bucket, "a.bin")
    assert head_missing.value.code == "404"
    with pytest.raises(NotFoundError) as get_missing:
        await s3.get_object(bucket, "a.bin")
    assert get_missing.value.code == "NoSuchKey"
    assert get_missing.value.body == "The specified key does not exist."
    assert get_missing.value.attempts == 1  # not retried
    with pytest.raises(NotFoundError) as no_bucket:
        await s3.get_object("no-such-bucket-here", "a.bin")
    assert no_bucket.value.code == "NoSuchBucket"
    stats = s3.dispatcher.stats()["s3"]
    assert stats.succeeded >= 8
    assert stats.failed == 3


async def test_default_bucket(s3_endpoint: str, bucket: str) -> None:
    s3 = make_s3(s3_endpoint, bucket=bucket)
    async with s3:
        await s3.put_object(None, "k", b"v")
        assert await s3.get_object(None, "k") == b"v"
        assert [o.key async for o in s3.list_objects(None)] == ["k"]


async def test_stream_object_holds_its_slot(s3: S3, bucket: str) -> None:
    data = os.urandom(3 * MiB + 17)
    await s3.put_object(bucket, "big", data)
    received = bytearray()
    async with s3.stream_object(bucket, "big", chunk_size=256 * 1024) as stream:
        async for chunk in stream:
            assert len(chunk) <= 256 * 1024
            assert s3.dispatcher.stats()["s3"].in_flight == 1
            received += chunk
    assert bytes(received) == data
    assert s3.dispatcher.stats()["s3"].in_flight == 0
    part = b"".join([c async for c in s3.stream_object(bucket, "big", byte_range=(10, 19))])
    assert part == data[10:20]
    with pytest.raises(NotFoundError):
        async for _ in s3.stream_object(bucket, "absent"):
            pass
    assert s3.dispatcher.stats()["s3"].in_flight == 0


async def test_list_objects_pages_and_prefix(s3: S3, bucket: str) -> None:
    for i in range(5):
        await s3.put_object(bucket, f"models/m{i}.bin", b"x" * i)
    await s3.put_object(bucket, "other/z", b"z")
    with request_context("req_listing") as rid:
        listed = [o async for o in s3.list_objects(bucket, "models/", page_size=2)]
    assert [o.key for o in listed] == [f"models/m{i}.bin" for i in range(5)]
    assert [o.size for o in listed] == [0, 1, 2, 3, 4]
    assert all(isinstance(o, ObjectSummary) and o.last_modified for o in listed)
    assert listed[1].etag == hashlib.md5(b"x").hexdigest()
    pages = [r for r in s3.dispatcher.tracker.all(rid) if r.operation == "list_objects"]
    assert len(pages) == 3
    everything = [o.key async for o in s3.list_objects(bucket)]
    assert len(everything) == 6
    assert [o async for o in s3.list_objects(bucket, "nothing/")] == []


async def test_list_objects_in_s3_key_order_across_pages(s3: S3, bucket: str) -> None:
    # S3 lists keys in the order of their UTF-8 bytes: a key comes before the longer keys it
    # starts, and "." (0x2e) before "/" (0x2f).
    keys = ["k", "k-1", "k.txt", "k/a", "k/b/c", "k0"]
    for key in reversed(keys):
        await s3.put_object(bucket, key, b"x")
    assert [o.key async for o in s3.list_objects(bucket)] == keys
    assert [o.key async for o in s3.list_objects(bucket, page_size=1)] == keys
    assert [o.key async for o in s3.list_objects(bucket, "k/")] == ["k/a", "k/b/c"]
    assert [o.key async for o in s3.list_objects(bucket, start_after="k.txt")] == keys[3:]


async def test_delete_objects_splits_batches_of_1000(s3: S3, bucket: str) -> None:
    await s3.put_object(bucket, "real-1", b"1")
    await s3.put_object(bucket, "real-2", b"2")
    raw = Wrap(await s3._client(), "delete_objects")
    keys = ["real-1", "real-2"] + [f"ghost-{i}" for i in range(1999)]
    result = await s3.delete_objects(bucket, keys)
    assert [len(c["Delete"]["Objects"]) for c in raw.calls] == [1000, 1000, 1]
    assert list(result.deleted) == keys
    assert result.errors == ()
    assert [o async for o in s3.list_objects(bucket)] == []


async def test_copy_object_within_and_across_buckets(s3: S3, bucket: str) -> None:
    await s3.put_object(bucket, "src", b"payload")
    copied = await s3.copy_object(bucket, "src", "dst")
    assert copied.etag == hashlib.md5(b"payload").hexdigest()
    assert await s3.get_object(bucket, "dst") == b"payload"
    other = f"other-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(other)
    await s3.copy_object(bucket, "src", "elsewhere", dest_bucket=other)
    assert await s3.get_object(other, "elsewhere") == b"payload"
    with pytest.raises(NotFoundError):
        await s3.copy_object(bucket, "absent", "x")


async def test_create_and_list_buckets(s3: S3) -> None:
    name = f"made-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(name)
    buckets = await s3.list_buckets()
    assert all(isinstance(b, BucketInfo) for b in buckets)
    assert name in {b.name for b in buckets}


async def test_creating_a_bucket_we_own_is_fine_with_exist_ok(s3: S3, bucket: str) -> None:
    await s3.create_bucket(bucket, exist_ok=True)
    assert bucket in {b.name for b in await s3.list_buckets()}


async def test_presigned_urls_work_without_credentials(s3: S3, bucket: str) -> None:
    await s3.put_object(bucket, "shared.txt", b"shared")
    get_url = await s3.presign(bucket, "shared.txt", expires_in=60)
    put_url = await s3.presign(bucket, "uploaded.txt", method="put")
    assert "X-Amz-Signature" in get_url  # SigV4
    assert SECRET_KEY not in get_url
    async with aiohttp.ClientSession() as http:
        async with http.get(get_url) as response:
            assert response.status == 200
            assert await response.read() == b"shared"
        async with http.put(put_url, data=b"via url") as response:
            assert response.status == 200
    assert await s3.get_object(bucket, "uploaded.txt") == b"via url"
    assert len(s3.dispatcher.tracker) == 3  # presigning sends nothing: no jobs


# -- multipart uploads and downloads ------------------------------------------------------------


async def test_multipart_upload_retries_a_failed_part(s3: S3, bucket: str, tmp_path: Path) -> None:
    data = write_file(tmp_path / "model.bin", 12 * MiB + 345)
    raw = Wrap(
        await s3._client(),
        "upload_part",
        fail=lambda n, kw: (
            client_error("InternalError", 500)
            if kw["PartNumber"] == 2 and sum(c["PartNumber"] == 2 for c in raw.calls) == 1
            else None
        ),
    )
    seen: list[tuple[int, int]] = []
    with request_context() as rid:
        result = await s3.upload_file(
            bucket,
            "model.bin",
            tmp_path / "model.bin",
            part_size=5 * MiB,
            progress=lambda d, t: seen.append((d, t)),
        )
    assert (result.parts, result.size) == (3, len(data))
    assert sorted(c["PartNumber"] for c in raw.calls) == [1, 2, 2, 3]
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    records = s3.dispatcher.tracker.all(rid)
    part_two = [r for r in records if r.operation == "upload_part" and r.attempts == 2]
    assert len(part_two) == 1  # one part job retried on its own
    assert {r.operation for r in records} == {
        "create_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
    }
    assert await s3.get_object(bucket, "model.bin") == data
    target = tmp_path / "back.bin"
    assert await s3.download_file(bucket, "model.bin", target) == len(data)
    assert target.read_bytes() == data


async def test_multipart_etag_is_the_md5_of_the_parts_md5s(
    s3: S3, bucket: str, tmp_path: Path
) -> None:
    data = write_file(tmp_path / "f.bin", 11 * MiB)
    result = await s3.upload_file(bucket, "f.bin", tmp_path / "f.bin", part_size=5 * MiB)
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    md5s = b"".join(hashlib.md5(part).digest() for part in parts)
    expected = f"{hashlib.md5(md5s).hexdigest()}-3"
    assert result.etag == expected
    assert (await s3.head_object(bucket, "f.bin")).etag == expected


async def test_small_file_upload_is_one_request(s3: S3, bucket: str, tmp_path: Path) -> None:
    data = write_file(tmp_path / "small.bin", 1000)
    seen: list[tuple[int, int]] = []
    result = await s3.upload_file(
        bucket, "small", tmp_path / "small.bin", progress=lambda d, t: seen.append((d, t))
    )
    assert result.parts == 0
    assert seen == [(1000, 1000)]
    assert await s3.get_object(bucket, "small") == data


async def test_multipart_upload_that_fails_is_aborted(s3: S3, bucket: str, tmp_path: Path) -> None:
    write_file(tmp_path / "f.bin", 11 * MiB)
    client = await s3._client()
    Wrap(
        client,
        "upload_part",
        fail=lambda n, kw: client_error("AccessDenied", 403) if kw["PartNumber"] == 3 else None,
    )
    with pytest.raises(PermissionDeniedError) as caught:
        await s3.upload_file(bucket, "f.bin", tmp_path / "f.bin", part_size=5 * MiB)
    assert caught.value.code == "AccessDenied"
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []
    with pytest.raises(NotFoundError):
        await s3.head_object(bucket, "f.bin")


async def test_cancelled_multipart_upload_leaves_no_parts(
    s3: S3, bucket: str, tmp_path: Path
) -> None:
    write_file(tmp_path / "f.bin", 16 * MiB)
    client = await s3._client()
    gate = asyncio.Event()
    first_done = asyncio.Event()
    real = client.upload_part

    async def upload_part(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 1:
            result = await real(**kwargs)
            first_done.set()
            return result
        await gate.wait()  # the other parts hang until cancelled
        return await real(**kwargs)

    client.upload_part = upload_part
    task = asyncio.ensure_future(
        s3.upload_file(bucket, "f.bin", tmp_path / "f.bin", part_size=5 * MiB)
    )
    await asyncio.wait_for(first_done.wait(), 10)
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    assert len(uploads["Uploads"]) == 1
    upload_id = uploads["Uploads"][0]["UploadId"]
    parts = await client.list_parts(Bucket=bucket, Key="f.bin", UploadId=upload_id)
    assert [p["PartNumber"] for p in parts["Parts"]] == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []
    stats = s3.dispatcher.stats()["s3"]
    assert stats.in_flight == 0
    assert stats.cancelled >= 1


async def test_download_of_100_mb_stays_small_in_memory(
    s3: S3, bucket: str, tmp_path: Path
) -> None:
    size = 100 * MiB
    source = tmp_path / "sparse.bin"
    make_sparse(source, size, b"the end!")
    await s3.upload_file(bucket, "huge", source, part_size=25 * MiB)
    target = tmp_path / "huge.bin"
    seen: list[int] = []
    tracemalloc.start()
    try:
        written = await s3.download_file(
            bucket, "huge", target, progress=lambda d, t: seen.append(d)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == size
    assert peak < 20 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert len(seen) > 50
    assert seen[-1] == size
    assert target.stat().st_size == size
    assert read_tail(target, 8) == b"the end!"
    assert not [p for p in listdir(tmp_path) if p.endswith(".part")]


def drop_the_first_download(
    client: Any, after: int, before_drop: Callable[[], Awaitable[Any]] | None = None
) -> list[dict[str, Any]]:
    """Make the client's first ``get_object`` body fail as a reset connection once ``after``
    bytes are read (having awaited ``before_drop()``, if given); returns the calls' arguments."""
    real_get = client.get_object
    calls: list[dict[str, Any]] = []

    async def get_object(**kwargs: Any) -> Any:
        calls.append(kwargs)
        response = await real_get(**kwargs)
        if len(calls) == 1:
            body = response["Body"]
            real_read = body.read
            sent = 0

            async def read(amt: int | None = None) -> bytes:
                nonlocal sent
                if sent >= after:
                    if before_drop is not None:
                        await before_drop()
                    raise botocore.exceptions.ResponseStreamingError(error="connection reset")
                chunk: bytes = await real_read(amt)
                sent += len(chunk)
                return chunk

            body.read = read
        return response

    client.get_object = get_object
    return calls


async def test_download_resumes_after_a_dropped_connection(
    s3: S3, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB)
    await s3.put_object(bucket, "obj", data)
    calls = drop_the_first_download(await s3._client(), MiB)
    target = tmp_path / "obj.bin"
    assert await s3.download_file(bucket, "obj", target, chunk_size=256 * 1024) == len(data)
    assert target.read_bytes() == data
    assert len(calls) == 2
    assert calls[1]["Range"].startswith("bytes=") and calls[1]["Range"] != "bytes=0-"
    assert calls[1]["IfMatch"]
    assert s3.dispatcher.stats()["s3"].retried == 1


async def test_a_download_does_not_resume_into_a_changed_object(
    s3: S3, bucket: str, tmp_path: Path
) -> None:
    await s3.put_object(bucket, "obj", os.urandom(3 * MiB))
    client = await s3._client()

    async def replace() -> None:
        await client.put_object(Bucket=bucket, Key="obj", Body=os.urandom(3 * MiB))

    calls = drop_the_first_download(client, MiB, before_drop=replace)
    with pytest.raises(APIError) as caught:
        await s3.download_file(bucket, "obj", tmp_path / "obj.bin", chunk_size=256 * 1024)
    # S3 (and moto) answer the resumed read with 412; where a store ignores If-Match, the client
    # finds the new ETag itself.
    assert caught.value.code == "PreconditionFailed"
    assert caught.value.attempts == 2
    assert len(calls) == 2
    assert listdir(tmp_path) == []


async def test_a_resumed_download_checks_the_etag_where_the_store_ignores_if_match(
    s3: S3, bucket: str, tmp_path: Path
) -> None:
    await s3.put_object(bucket, "obj", os.urandom(3 * MiB))
    client = await s3._client()

    async def replace() -> None:
        await client.put_object(Bucket=bucket, Key="obj", Body=os.urandom(3 * MiB))

    calls = drop_the_first_download(client, MiB, before_drop=replace)
    dropping = client.get_object

    async def ignoring_if_match(**kwargs: Any) -> Any:
        kwargs.pop("IfMatch", None)  # as s3rver does
        return await dropping(**kwargs)

    client.get_object = ignoring_if_match
    with pytest.raises(ResponseValidationError, match="changed while it was downloading") as caught:
        await s3.download_file(bucket, "obj", tmp_path / "obj.bin", chunk_size=256 * 1024)
    assert caught.value.code == "PreconditionFailed"
    assert caught.value.attempts == 2  # not retried: the object will not change back
    assert len(calls) == 2
    resumed_at = int(calls[1]["Range"].removeprefix("bytes=").removesuffix("-"))
    assert resumed_at >= MiB
    assert listdir(tmp_path) == []


async def test_a_resumed_download_starts_over_where_the_store_ignores_range(
    s3: S3, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB)
    await s3.put_object(bucket, "obj", data)
    client = await s3._client()
    calls = drop_the_first_download(client, MiB)
    dropping = client.get_object

    async def ignoring_range(**kwargs: Any) -> Any:
        kwargs.pop("Range", None)  # the whole object again, 200 without Content-Range
        return await dropping(**kwargs)

    client.get_object = ignoring_range
    target = tmp_path / "obj.bin"
    assert await s3.download_file(bucket, "obj", target, chunk_size=256 * 1024) == len(data)
    assert target.read_bytes() == data  # not the first MiB twice
    assert len(calls) == 2 and "Range" not in calls[1]


async def test_empty_object_and_size_limit(
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
) -> None:
    s3 = make_s3(s3_endpoint, max_response_bytes=100)
    async with s3:
        await s3.put_object(bucket, "empty", b"")
        assert await s3.get_object(bucket, "empty") == b""
        assert await s3.download_file(bucket, "empty", tmp_path / "empty") == 0
        assert listdir(tmp_path) == ["empty"]
        await s3.put_object(bucket, "large", b"x" * 101)
        with pytest.raises(ResponseValidationError, match="stream_object or download_file"):
            await s3.get_object(bucket, "large")
        assert len(b"".join([c async for c in s3.stream_object(bucket, "large")])) == 101


async def test_failed_download_leaves_nothing(s3: S3, bucket: str, tmp_path: Path) -> None:
    target = tmp_path / "absent.bin"
    with pytest.raises(NotFoundError):
        await s3.download_file(bucket, "absent", target)
    assert listdir(tmp_path) == []


# -- the dispatcher's rules apply ---------------------------------------------------------------


async def test_concurrency_never_exceeds_the_limit(
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    s3 = make_s3(s3_endpoint, max_concurrent_requests=3)
    async with s3:
        name = f"conc-{uuid.uuid4().hex[:8]}"
        await s3.create_bucket(name)
        client = await s3._client()
        puts = Wrap(client, "put_object", delay=0.02)
        await asyncio.gather(*(s3.put_object(name, f"k{i}", b"v") for i in range(12)))
        assert len(puts.calls) == 12
        assert puts.max_in_flight == 3
        parts = Wrap(client, "upload_part", delay=0.02)
        write_file(tmp_path / "f.bin", 26 * MiB)
        result = await s3.upload_file(name, "f", tmp_path / "f.bin", part_size=5 * MiB)
        assert result.parts == 6
        assert parts.max_in_flight == 3
        narrow = Wrap(client, "upload_part", delay=0.02)
        await s3.upload_file(name, "g", tmp_path / "f.bin", part_size=5 * MiB, max_concurrency=2)
        assert narrow.max_in_flight == 2


async def test_two_endpoints_have_their_own_lanes(s3_endpoint: str) -> None:
    dispatcher = Dispatcher()
    first = make_s3(s3_endpoint, dispatcher=dispatcher, max_concurrent_requests=1)
    second = make_s3(s3_endpoint, dispatcher=dispatcher, name="archive", max_concurrent_requests=4)
    async with first, second:
        await first.list_buckets()
        await second.list_buckets()
        stats = dispatcher.stats()
        assert stats["s3"].max_concurrent == 1
        assert stats["archive"].max_concurrent == 4
        assert await first._client() is not await second._client()


async def test_slow_down_is_retried(s3: S3, bucket: str) -> None:
    Wrap(
        await s3._client(),
        "put_object",
        fail=lambda n, kw: (
            client_error("SlowDown", 503, "Please reduce your request rate.") if n == 1 else None
        ),
    )
    await s3.put_object(bucket, "k", b"v")
    assert s3.dispatcher.stats()["s3"].retried == 1
    assert await s3.get_object(bucket, "k") == b"v"


async def test_retries_run_out_with_the_s3_code(s3: S3, bucket: str) -> None:
    raw = Wrap(await s3._client(), "head_object", fail=lambda n, kw: client_error("SlowDown", 503))
    with pytest.raises(RateLimitError) as caught:
        await s3.head_object(bucket, "k")
    assert caught.value.code == "SlowDown"
    assert caught.value.attempts == 3
    assert len(raw.calls) == 3


async def test_timeout_per_attempt(s3: S3, bucket: str) -> None:
    raw = Wrap(await s3._client(), "head_object", delay=5)
    with pytest.raises(APITimeoutError):
        await s3.head_object(bucket, "k", timeout=0.05)
    assert len(raw.calls) == 3


async def test_connection_refused_is_a_retried_connection_error() -> None:
    with socket_port() as port:
        pass  # closed again: nothing listens there
    s3 = make_s3(
        f"http://127.0.0.1:{port}", retry=RetryConfig(max_retries=1, initial_delay=0, max_delay=0)
    )
    async with s3:
        with pytest.raises(APIConnectionError) as caught:
            await s3.list_buckets()
    assert caught.value.attempts == 2
    assert SECRET_KEY not in str(caught.value)


async def test_request_id_header_is_sent(s3: S3, bucket: str) -> None:
    client = await s3._client()
    seen: list[str | None] = []

    def capture(request: Any, **_: Any) -> None:
        seen.append(request.headers.get("X-Request-ID"))

    client.meta.events.register("before-send.s3", capture)
    with request_context("req_s3_header"):
        await s3.put_object(bucket, "k", b"v")
    assert seen == [b"req_s3_header"]


async def test_closed_client_refuses_calls(s3_endpoint: str) -> None:
    s3 = make_s3(s3_endpoint)
    await s3.list_buckets()
    await s3.aclose()
    await s3.aclose()
    with pytest.raises(ClientClosedError):
        await s3.list_buckets()


async def test_misspelt_options_are_type_errors_before_sending(s3: S3, bucket: str) -> None:
    raw = Wrap(await s3._client(), "put_object")
    calls: list[Callable[[], Any]] = [
        lambda: s3.put_object(bucket, "k", b"v", prioity=0),  # type: ignore[call-arg]
        lambda: s3.get_object(bucket, "k", chunk_size=1),  # type: ignore[call-arg]
        lambda: s3.head_object(bucket, "k", extra_headers={}),  # type: ignore[call-arg]
        lambda: s3.upload_file(bucket, "k", "/no/such/file", deadlien=1),  # type: ignore[call-arg]
        lambda: s3.list_buckets(timeot=1),  # type: ignore[call-arg]
    ]
    for call in calls:
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            await call()
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        s3.stream_object(bucket, "k", extra_body={})  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        s3.list_objects(bucket, page_sise=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        S3(endpoint_url="http://127.0.0.1:9", api_key="k")  # type: ignore[call-arg]
    assert raw.calls == []
    assert len(s3.dispatcher.tracker) == 1  # the bucket fixture's create_bucket


async def test_with_options_and_per_call_max_retries(s3: S3, bucket: str) -> None:
    raw = Wrap(await s3._client(), "head_object", fail=lambda n, kw: client_error("SlowDown", 503))
    with pytest.raises(RateLimitError) as caught:
        await s3.head_object(bucket, "k", max_retries=0)
    assert caught.value.attempts == 1
    patient = s3.with_options(max_retries=1, priority=0)
    with pytest.raises(RateLimitError) as caught:
        await patient.head_object(bucket, "k")
    assert caught.value.attempts == 2
    assert len(raw.calls) == 3
    assert await patient._client() is await s3._client()  # one aiobotocore client
    await patient.aclose()  # owns nothing
    await s3.put_object(bucket, "k", b"v")
    await s3.aclose()
    with pytest.raises(ClientClosedError):
        await patient.list_buckets()


def test_a_client_belongs_to_one_event_loop(s3_endpoint: str) -> None:
    s3 = make_s3(s3_endpoint, dispatcher=None)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop.run_until_complete(s3.list_buckets()), list)
        with pytest.raises(ConfigurationError, match="event loop"):
            asyncio.run(s3.list_buckets())
        loop.run_until_complete(s3.aclose())
    finally:
        loop.close()


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "cls", "retried"),
    [
        ("NoSuchKey", 404, NotFoundError, False),
        ("NoSuchBucket", 404, NotFoundError, False),
        ("404", 404, NotFoundError, False),
        ("SlowDown", 503, RateLimitError, True),
        ("ServiceUnavailable", 503, InternalServerError, True),
        ("InternalError", 500, InternalServerError, True),
        ("RequestTimeout", 400, BadRequestError, True),
        ("AccessDenied", 403, PermissionDeniedError, False),
        ("InvalidAccessKeyId", 403, AuthenticationError, False),
        ("SignatureDoesNotMatch", 403, AuthenticationError, False),
        ("BucketAlreadyExists", 409, ConflictError, False),
        ("InvalidArgument", 400, BadRequestError, False),
    ],
)
def test_error_mapping(code: str, status: int, cls: type[Exception], retried: bool) -> None:
    error = map_error(
        client_error(code, status, "the message", **{"retry-after": "2"}),
        backend="s3",
        request_id="req_1",
    )
    assert type(error) is cls
    assert error.code == code  # type: ignore[attr-defined]
    assert error.status_code == status  # type: ignore[attr-defined]
    assert error.body == "the message"  # type: ignore[attr-defined]
    assert error.server_request_id == "srv-123"  # type: ignore[attr-defined]
    assert error.retry_after == 2.0  # type: ignore[attr-defined]
    assert is_retryable(error) is retried


def test_error_mapping_of_transport_failures() -> None:
    refused = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert type(map_error(refused)) is APIConnectionError
    slow = botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(map_error(slow), APITimeoutError)
    assert isinstance(map_error(botocore.exceptions.NoCredentialsError()), ConfigurationError)
    other = ValueError("not ours")
    assert map_error(other) is other


async def test_unknown_key_is_an_authentication_error_without_the_key(
    s3_auth_endpoint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncllm")
    s3 = make_s3(s3_auth_endpoint)
    async with s3:
        with request_context() as rid, pytest.raises(AuthenticationError) as caught:
            await s3.put_object("some-bucket", "k", b"v")
        error = caught.value
        assert error.code == "InvalidAccessKeyId"
        assert error.status_code == 403
        assert error.attempts == 1
        record = s3.dispatcher.tracker.get(rid)
        assert record is not None
        assert record.last_error is not None
        assert "InvalidAccessKeyId" in record.last_error
        shown = [
            str(error),
            repr(error),
            str(error.body),
            "".join(traceback.format_exception(error)),
            repr(record),
            caplog.text,
            repr(s3),
        ]
        for text in shown:
            assert ACCESS_KEY not in text
            assert SECRET_KEY not in text


def test_credentials_are_redacted_from_messages() -> None:
    redact = s3_module._Redactor(SecretStr(ACCESS_KEY), SecretStr(SECRET_KEY))
    error = map_error(
        client_error("SignatureDoesNotMatch", 403, f"key {ACCESS_KEY} secret {SECRET_KEY}"),
        redact=redact,
    )
    assert ACCESS_KEY not in str(error)
    assert SECRET_KEY not in str(error)
    assert "***" in str(error)


class socket_port:
    """A free loopback port, reserved while the block runs."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

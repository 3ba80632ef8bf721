"""asyncllm.S3 against s3rver (Node.js, from the npm registry): a second S3 implementation besides
moto, started once per session on a loopback port (``tests/interop/s3rver/``).

The tests of ``tests/test_s3.py`` that talk to a server run here unchanged: they are collected
from that module and take this module's ``s3_endpoint``. Where s3rver departs from S3's API, the
test says so: an ``xfail(strict=True)`` naming what s3rver does (so a fixed s3rver shows up as an
unexpected pass), or a test of its own showing what our client does about it.

s3rver 3.7.1, as these tests found it:
- it checks that a request's key exists, not its SigV4 signature;
- creating a bucket that we own answers ``BucketAlreadyExists`` (someone else's), where S3
  answers ``BucketAlreadyOwnedByYou`` (or 200 in us-east-1);
- a multipart object's ETag is the MD5 of its data, not ``<md5 of the parts' md5s>-<parts>``;
- it has no AbortMultipartUpload (405), ListParts (405) or ListMultipartUploads (501);
- it lists keys in the order of its data folder's walk, not of their bytes: ``k/a`` before
  ``k.txt``, ``k-1`` before ``k``, and a paged listing skips keys;
- it ignores ``If-Match``, so a resumed download of a changed object gets the new bytes;
- DeleteObjects deletes keys concurrently, and two keys in one "folder" race to remove the
  emptied folder on disk: the request answers 500 InternalError though every key was deleted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from asyncllm import (
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RetryConfig,
)
from asyncllm.backends.s3 import S3
from tests import test_s3 as shared
from tests.interop import in_ci
from tests.interop.s3rver import install as installer
from tests.interop.s3rver.install import InstallError
from tests.interop.s3rver.server import S3rver, start
from tests.test_s3 import ACCESS_KEY, SECRET_KEY, MiB, Wrap, client_error, make_s3, write_file

# The fixtures of tests/test_s3.py that its tests take, besides the endpoints defined below.
_aws_env = shared._aws_env
s3 = shared.s3
bucket = shared.bucket


def start_or_skip(directory: Path, **keys: str) -> S3rver:
    """Start s3rver; if it cannot be installed, skip locally and fail under ``CI=true``."""
    try:
        return start(directory, **keys)
    except InstallError as exc:
        if in_ci():
            pytest.fail(f"CI=true, but {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3rver]:
    """s3rver with the tests' key pair, for the whole session."""
    running = start_or_skip(
        tmp_path_factory.mktemp("s3rver"), access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def s3rver_without_our_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """s3rver knowing only its own key pair (S3RVER), so that the tests' key is unknown."""
    running = start_or_skip(tmp_path_factory.mktemp("s3rver-auth"))
    yield running.endpoint
    running.stop()


@pytest.fixture
def s3_endpoint(s3rver: S3rver) -> str:
    return s3rver.endpoint


@pytest.fixture
def s3_auth_endpoint(s3rver_without_our_key: str) -> str:
    return s3rver_without_our_key


def deviates(test: Callable[..., Awaitable[None]], mark: pytest.MarkDecorator) -> Any:
    """The shared ``test`` with ``mark``, leaving the original unmarked."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        await test(*args, **kwargs)

    return mark(run)


# -- the tests of tests/test_s3.py that s3rver passes as S3 does ----------------------------------
# (The others check the client alone, whichever server answers: configuration, error mapping,
# injected faults, lanes.)

test_credentials_from_the_aws_chain = shared.test_credentials_from_the_aws_chain
test_put_get_head_delete = shared.test_put_get_head_delete
test_default_bucket = shared.test_default_bucket
test_stream_object_holds_its_slot = shared.test_stream_object_holds_its_slot
test_list_objects_pages_and_prefix = shared.test_list_objects_pages_and_prefix
test_delete_objects_splits_batches_of_1000 = shared.test_delete_objects_splits_batches_of_1000
test_copy_object_within_and_across_buckets = shared.test_copy_object_within_and_across_buckets
test_create_and_list_buckets = shared.test_create_and_list_buckets
# s3rver does not check SigV4 signatures, so this shows only that the URLs reach the object.
test_presigned_urls_work_without_credentials = shared.test_presigned_urls_work_without_credentials
test_multipart_upload_retries_a_failed_part = shared.test_multipart_upload_retries_a_failed_part
test_small_file_upload_is_one_request = shared.test_small_file_upload_is_one_request
test_download_of_100_mb_stays_small_in_memory = shared.test_download_of_100_mb_stays_small_in_memory
test_download_resumes_after_a_dropped_connection = (
    shared.test_download_resumes_after_a_dropped_connection
)
# s3rver ignores If-Match: the client itself sees the ETag change (S3 would answer 412).
test_a_download_does_not_resume_into_a_changed_object = (
    shared.test_a_download_does_not_resume_into_a_changed_object
)
test_empty_object_and_size_limit = shared.test_empty_object_and_size_limit
test_failed_download_leaves_nothing = shared.test_failed_download_leaves_nothing
test_concurrency_never_exceeds_the_limit = shared.test_concurrency_never_exceeds_the_limit
test_unknown_key_is_an_authentication_error_without_the_key = (
    shared.test_unknown_key_is_an_authentication_error_without_the_key
)


# -- where s3rver departs from S3 -----------------------------------------------------------------

test_creating_a_bucket_we_own_is_fine_with_exist_ok = deviates(
    shared.test_creating_a_bucket_we_own_is_fine_with_exist_ok,
    pytest.mark.xfail(
        strict=True,
        raises=ConflictError,
        reason="s3rver answers BucketAlreadyExists for a bucket we own (S3: BucketAlreadyOwnedByYou)",
    ),
)
test_multipart_etag_is_the_md5_of_the_parts_md5s = deviates(
    shared.test_multipart_etag_is_the_md5_of_the_parts_md5s,
    pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason="s3rver gives a multipart object the MD5 of its data as ETag, without '-<parts>'",
    ),
)
test_list_objects_in_s3_key_order_across_pages = deviates(
    shared.test_list_objects_in_s3_key_order_across_pages,
    pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason="s3rver lists in the order it walks its folders ('k/a' before 'k.txt')",
    ),
)
# It checks that no upload is left by listing the uploads, which s3rver cannot do; so does
# test_cancelled_multipart_upload_leaves_no_parts, which is not run here (its task would be left
# hanging). The two tests after it show what the client does when the abort is refused.
test_multipart_upload_that_fails_is_aborted = deviates(
    shared.test_multipart_upload_that_fails_is_aborted,
    pytest.mark.xfail(
        strict=True,
        raises=botocore.exceptions.ClientError,
        reason="s3rver has no ListMultipartUploads (501 NotImplemented)",
    ),
)


async def test_a_refused_abort_is_logged_and_the_parts_error_raised(
    s3: S3, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """s3rver refuses AbortMultipartUpload (405 MethodNotAllowed): the upload still fails with
    the part's own error, and the abort that did not happen is a warning, not an exception."""
    write_file(tmp_path / "f.bin", 11 * MiB)
    client = await s3._client()
    Wrap(
        client,
        "upload_part",
        fail=lambda n, kw: client_error("AccessDenied", 403) if kw["PartNumber"] == 3 else None,
    )
    aborts = Wrap(client, "abort_multipart_upload")
    with (
        caplog.at_level(logging.WARNING, logger="asyncllm"),
        pytest.raises(PermissionDeniedError) as caught,
    ):
        await s3.upload_file(bucket, "f.bin", tmp_path / "f.bin", part_size=5 * MiB)
    assert caught.value.code == "AccessDenied"
    assert len(aborts.calls) == 1
    assert "could not abort multipart upload" in caplog.text
    with pytest.raises(NotFoundError):
        await s3.head_object(bucket, "f.bin")
    assert s3.dispatcher.stats()["s3"].in_flight == 0


async def test_a_cancelled_upload_still_asks_to_abort(
    s3: S3, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same when the upload is cancelled: the cancellation wins, the abort is tried."""
    write_file(tmp_path / "f.bin", 16 * MiB)
    client = await s3._client()
    first_done = asyncio.Event()
    real = client.upload_part

    async def upload_part(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] != 1:
            await asyncio.Event().wait()  # the other parts hang until cancelled
        result = await real(**kwargs)
        first_done.set()
        return result

    client.upload_part = upload_part
    aborts = Wrap(client, "abort_multipart_upload")
    with caplog.at_level(logging.WARNING, logger="asyncllm"):
        task = asyncio.ensure_future(
            s3.upload_file(bucket, "f.bin", tmp_path / "f.bin", part_size=5 * MiB)
        )
        await asyncio.wait_for(first_done.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(aborts.calls) == 1
    assert "could not abort multipart upload" in caplog.text
    stats = s3.dispatcher.stats()["s3"]
    assert stats.in_flight == 0
    assert stats.cancelled >= 1


def keys_in_folders(count: int) -> list[str]:
    """``count`` keys, in pairs sharing a "folder", which is where s3rver's DeleteObjects races."""
    folders = [f"race-{uuid.uuid4().hex[:8]}" for _ in range(count // 2)]
    return [f"{folder}/{i}" for folder in folders for i in (0, 1)]


@pytest.mark.xfail(
    strict=True,
    raises=InternalServerError,
    reason="s3rver's DeleteObjects races to remove a folder it emptied and answers 500",
)
async def test_delete_objects_of_keys_sharing_folders_answers_200(
    s3_endpoint: str, bucket: str
) -> None:
    # A request with two keys in one folder lost the race 17 times in 20 here; ten requests of
    # twenty such folders each make a pass all but impossible.
    s3 = make_s3(s3_endpoint, retry=RetryConfig(max_retries=0))
    async with s3:
        for _ in range(10):
            keys = keys_in_folders(40)
            for key in keys:
                await s3.put_object(bucket, key, b"x")
            result = await s3.delete_objects(bucket, keys)
            assert list(result.deleted) == keys


async def test_delete_objects_in_folders_succeeds_on_the_retry(
    s3_endpoint: str, bucket: str
) -> None:
    """What our client does about that race: InternalError is retried, and by the retry every
    key is gone, so the retry answers 200. (The delay lets s3rver finish the deletions it was
    still making when it answered 500; a retry among them could meet the race again.)"""
    s3 = make_s3(s3_endpoint, retry=RetryConfig(max_retries=2, initial_delay=0.2, max_delay=0.2))
    async with s3:
        keys = keys_in_folders(40)
        for key in keys:
            await s3.put_object(bucket, key, b"x")
        result = await s3.delete_objects(bucket, keys)
        assert list(result.deleted) == keys
        assert result.errors == ()
        assert [o async for o in s3.list_objects(bucket)] == []
        assert s3.dispatcher.stats()["s3"].retried >= 1  # twenty folders: the race was met


# -- the server itself ----------------------------------------------------------------------------


def test_the_server_stops_and_leaves_no_process(tmp_path: Path) -> None:
    running = start_or_skip(tmp_path)
    pid = running.process.pid
    assert running.endpoint.startswith("http://127.0.0.1:")
    assert f"listening {running.endpoint.rsplit(':', 1)[1]}" in running.log
    assert running.stop() == 0  # it exits on its own when its standard input closes
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- the installer --------------------------------------------------------------------------------

FAKE_NPM = """#!/bin/sh
echo "$@" >> "$FAKE_NPM_LOG"
if [ -n "$FAKE_NPM_FAIL" ]; then echo "npm ERR! $FAKE_NPM_FAIL" >&2; exit 1; fi
mkdir -p node_modules/s3rver
printf '{"version": "%s"}' "$FAKE_NPM_VERSION" > node_modules/s3rver/package.json
"""


@pytest.fixture
def npm_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``npm`` first on PATH that logs its arguments to the returned file and "installs" the
    s3rver version in ``$FAKE_NPM_VERSION`` (the pinned one unless changed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(0o755)
    log = tmp_path / "npm.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    monkeypatch.setenv("FAKE_NPM_VERSION", installer.pinned_version())
    monkeypatch.delenv("FAKE_NPM_FAIL", raising=False)
    return log


def npm_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_install_runs_npm_ci_on_the_pins_once_and_then_reuses_it(
    tmp_path: Path, npm_log: Path
) -> None:
    home = tmp_path / "home"
    assert installer.install(home) == home
    assert npm_calls(npm_log) == ["ci --no-audit --no-fund --ignore-scripts"]
    for name in installer.PINNED:
        assert (home / name).read_bytes() == (installer.SOURCE / name).read_bytes()
    assert installer.install(home) == home
    assert len(npm_calls(npm_log)) == 1  # reused
    (home / installer.MARKER).write_text("the hash of other pins")
    installer.install(home)
    assert len(npm_calls(npm_log)) == 2


def test_a_failed_npm_ci_is_an_install_error_with_its_output(
    tmp_path: Path, npm_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NPM_FAIL", "E404 Not Found - GET s3rver")
    with pytest.raises(InstallError, match="E404 Not Found"):
        installer.install(tmp_path / "home")
    assert not (tmp_path / "home" / installer.MARKER).exists()


def test_another_s3rver_version_is_an_install_error(
    tmp_path: Path, npm_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NPM_VERSION", "3.0.0")
    with pytest.raises(InstallError, match=r"s3rver 3\.0\.0, not "):
        installer.install(tmp_path / "home")


@pytest.mark.parametrize("ci", ["", "true"])
def test_s3rver_that_cannot_be_installed_skips_locally_and_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    def refuse(directory: Path, **keys: str) -> S3rver:
        raise InstallError("npm ci for s3rver failed: E404")

    monkeypatch.setattr(sys.modules[__name__], "start", refuse)
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="E404"):
        start_or_skip(tmp_path)


@pytest.mark.parametrize(
    ("major", "current", "expected"),
    [
        (20, "", "--openssl-legacy-provider"),
        (20, "--max-old-space-size=256", "--max-old-space-size=256 --openssl-legacy-provider"),
        (20, "--openssl-legacy-provider", "--openssl-legacy-provider"),
        (17, "", "--openssl-legacy-provider"),
        (16, "", ""),  # Node 16 has OpenSSL 1.1, with DES, and refuses the flag
    ],
)
def test_node_options(major: int, current: str, expected: str) -> None:
    assert installer.node_options(major, current) == expected

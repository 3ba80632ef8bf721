"""Vendor batch jobs in one shape, and the helper that runs a list of chat requests as one.

``run_batch_job`` submits the requests as the client's vendor batch (half price, results within a
day), writes the vendor's job id to a state file *before* it polls, polls with backoff until the
job ends, and yields each request's result matched to it by id. A crash or Ctrl-C while polling
never loses the paid job: run it again with the same state file and it resumes polling the job it
recorded instead of submitting a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from .._exceptions import APIError, ConfigurationError
from .._models import ChatResponse
from .._options import BODY_KEYS
from .._structured import OutputFormat, finish, output_format
from .._validate import check_positive

logger = logging.getLogger("asyncllm")

STATE_VERSION = 1


class BatchCounts(BaseModel):
    """How many requests of a job have ended well, ended badly, or are still to run."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    processing: int = 0


class BatchJob(BaseModel):
    """A vendor's batch job, in one shape: ``id`` and ``status`` are the vendor's own
    (OpenAI's ``in_progress``, Anthropic's ``ended``, Gemini's ``BATCH_STATE_RUNNING``);
    ``done`` says whether it will change no more. ``output_file_id`` and ``error_file_id``
    (OpenAI), ``results_url`` (Anthropic) say where its results are. ``raw`` is the vendor's
    object as it came."""

    model_config = ConfigDict(extra="forbid")

    id: str
    status: str
    done: bool
    counts: BatchCounts = BatchCounts()
    created_at: int | str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_url: str | None = None
    request_id: str
    server_request_id: str | None = None
    raw: Any = None

    def __str__(self) -> str:
        """One line of progress: ``batch_1: in_progress, 3 of 10 done (1 failed)``, so that
        ``run_batch_job(..., on_progress=print)`` shows a batch's progress as it polls."""
        counts = self.counts
        ended = counts.succeeded + counts.failed
        return f"{self.id}: {self.status}, {ended} of {counts.total} done ({counts.failed} failed)"


class BatchRequest:
    """One chat request of a batch: ``id`` (unique in the batch; it matches the result to the
    request), the ``messages``, and the chat parameters the client's ``chat`` takes (``model``,
    ``max_tokens``, ``tools``, ``response_format``...). Checked by the client when the batch is
    submitted, before anything is sent."""

    __slots__ = ("id", "messages", "params", "response_format")

    def __init__(
        self, id: str, messages: Any, *, response_format: Any = None, **params: Any
    ) -> None:
        if not isinstance(id, str) or not id:
            raise ConfigurationError("a batch request's id must be a non-empty str")
        given = params.keys() & BODY_KEYS
        if given:
            raise ConfigurationError(
                f"call options ({', '.join(sorted(given))}) apply to the batch's calls, "
                "not to one of its requests"
            )
        self.id = id
        self.messages = messages
        self.params = params
        self.response_format = response_format

    def __repr__(self) -> str:
        return f"BatchRequest(id={self.id!r})"

    def output_format(self) -> OutputFormat | None:
        return output_format(self.response_format)


class BatchJobResult(BaseModel):
    """The result of one request of a batch: its ``id`` and ``request``, and either its
    ``response`` or its ``error`` (the typed error the same call would have raised alone, such
    as a ``BadRequestError``; an ``APIError`` for a request the job never ran, expired or
    cancelled)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    request: Any
    response: ChatResponse[Any] | None = None
    error: APIError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BatchAPI(Protocol):
    """What ``run_batch_job`` needs of a client's ``batches``: each vendor's wire says how."""

    async def submit_chat(self, requests: list[BatchRequest]) -> BatchJob: ...

    async def retrieve(self, batch_id: str) -> BatchJob: ...

    def chat_results(self, job: BatchJob) -> AsyncIterator[tuple[str, Any]]: ...


def fingerprint(backend: str, requests: list[BatchRequest]) -> str:
    """Names a batch by its backend and its requests' ids, so that a state file cannot resume
    another batch's job."""
    digest = hashlib.sha256(backend.encode())
    for request in requests:
        digest.update(b"\0" + request.id.encode())
    return digest.hexdigest()


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"batch state file {str(path)!r} is not JSON: {exc}") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ConfigurationError(f"batch state file {str(path)!r} is not one asyncllm wrote")
    return state


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write the state whole or not at all: to a temporary file, flushed to disk, then renamed
    over the old one, so that a crash at any moment leaves either state, never half of one."""
    partial = path.with_name(path.name + ".tmp")
    with partial.open("w") as handle:
        json.dump({"version": STATE_VERSION, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def _may_have_been_applied(exc: BaseException) -> bool:
    """Whether a failed submission may have created the job anyway: an API error that says so
    (a timeout, a 5xx), or a cancellation or interrupt that came mid-way. Any other exception
    (bad arguments) was raised before sending."""
    if isinstance(exc, APIError):
        return exc.may_have_been_applied
    return not isinstance(exc, Exception)


def _log_progress(job: BatchJob) -> None:
    logger.info("batch %s", job)


async def run_batch_job(
    client: Any,
    requests: Iterable[BatchRequest],
    *,
    state_file: str | os.PathLike[str],
    poll_interval: float = 10.0,
    max_poll_interval: float = 300.0,
    on_progress: Callable[[BatchJob], Any] | None = None,
    keep_state: bool = False,
) -> AsyncIterator[BatchJobResult]:
    """Run ``requests`` as one vendor batch on ``client`` (a client with ``batches``: OpenAI,
    Claude, Gemini) and yield each one's ``BatchJobResult`` as the results are read.

    The job id goes to ``state_file`` before polling starts; if the file already names a job of
    these same requests (a run that crashed or was cancelled), polling resumes on that job and
    nothing is submitted. Polls start ``poll_interval`` seconds apart and grow by half each time
    up to ``max_poll_interval``, on the client's dispatcher's ``sleep`` (a ``FakeClock`` in
    tests). ``on_progress`` gets the job after each poll (default: an INFO log line of
    ``str(job)``; ``on_progress=print`` shows it on the terminal). The state
    file is removed once every result has been yielded, unless ``keep_state``.

    A submission that failed where the job may have been created anyway (a timeout, a 5xx)
    leaves a marker in the state file, and the next run refuses to submit again until you have
    looked: raise, not pay twice.
    """
    batch: list[BatchRequest] = list(requests)
    if not batch or not all(isinstance(r, BatchRequest) for r in batch):
        raise ConfigurationError("requests must be a non-empty list of asyncllm.BatchRequest")
    ids = [r.id for r in batch]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("batch request ids must be unique")
    check_positive("poll_interval", poll_interval)
    check_positive("max_poll_interval", max_poll_interval)
    api: BatchAPI | None = getattr(client, "batches", None)
    if api is None:
        raise ConfigurationError(f"{type(client).__name__} has no batch API")
    path = Path(state_file)
    name = fingerprint(client.backend, batch)
    state = await asyncio.to_thread(read_state, path)
    if state is not None and state.get("batch") != name:
        raise ConfigurationError(
            f"batch state file {str(path)!r} belongs to another batch (other requests or "
            "backend): give this batch a state file of its own"
        )
    if state is not None and state.get("job_id") is None:
        raise ConfigurationError(
            f"batch state file {str(path)!r} records a submission that failed where the job "
            "may have been created anyway: look for it on the vendor's console or list of "
            "batches, then delete the state file (or write the job id in it) to go on"
        )
    if state is None:
        await asyncio.to_thread(write_state, path, {"batch": name, "job_id": None})
        try:
            job = await api.submit_chat(batch)
        except BaseException as exc:
            if not _may_have_been_applied(exc):
                await asyncio.to_thread(path.unlink, True)
            raise
        state = {"batch": name, "job_id": job.id, "backend": client.backend}
        await asyncio.to_thread(write_state, path, state)
    job_id = str(state["job_id"])
    sleep = client.dispatcher.sleep
    delay = poll_interval
    progress = on_progress or _log_progress
    while True:
        job = await api.retrieve(job_id)
        progress(job)
        if job.done:
            break
        await sleep(delay)
        delay = min(delay * 1.5, max_poll_interval)
    by_id = {r.id: r for r in batch}
    seen: set[str] = set()
    async for custom_id, outcome in api.chat_results(job):
        request = by_id.get(custom_id)
        if request is None or custom_id in seen:
            continue  # not one of ours, or said twice
        seen.add(custom_id)
        yield _result(client, request, outcome)
    for request in batch:
        if request.id not in seen:
            error = APIError(
                f"batch {job.id} ended ({job.status}) without a result for {request.id!r}",
                backend=client.name,
            )
            yield BatchJobResult(id=request.id, request=request, error=error)
    if not keep_state:
        await asyncio.to_thread(path.unlink, True)


def _result(client: Any, request: BatchRequest, outcome: Any) -> BatchJobResult:
    if isinstance(outcome, APIError):
        return BatchJobResult(id=request.id, request=request, error=outcome)
    fmt = request.output_format()
    try:
        response = finish(outcome, fmt, client.name) if fmt is not None else outcome
    except APIError as exc:
        return BatchJobResult(id=request.id, request=request, error=exc)
    return BatchJobResult(id=request.id, request=request, response=response)

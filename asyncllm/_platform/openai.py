"""OpenAI's platform APIs on the OpenAI wire: Files, Batches, fine-tuning, audio and moderation.

Only the wire format lives here: paths, form fields, and how each answer is read. The shared
pieces (uploads, pagination, downloads, the creating-call rule) are in ``_upload`` and ``_files``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict
from typing_extensions import Unpack

from .._exceptions import ConfigurationError
from .._http import _json
from .._http._backend import Meta
from .._http._transport import iter_lines
from .._options import BodyOptions, HttpOptions
from .._validate import check_int, check_number, check_str
from .._wire.openai import OpenAIChat
from ..streaming import Stream
from ._batch import BatchCounts, BatchJob, BatchRequest
from ._files import (
    Deleted,
    FileObject,
    SubClient,
    check_id,
    check_limit,
    content_stream,
    deletion,
    listing,
    save,
    upload_options,
)
from ._upload import FileSource, Upload

T = TypeVar("T", bound=BaseModel)


def file_object(payload: Any, meta: Meta) -> FileObject:
    """OpenAI's file object: ``bytes`` is its size, ``created_at`` and ``expires_at`` Unix times."""
    return FileObject(
        id=payload["id"],
        filename=payload.get("filename"),
        size=payload.get("bytes"),
        created_at=payload.get("created_at"),
        purpose=payload.get("purpose"),
        status=payload.get("status"),
        downloadable=True,
        expires_at=payload.get("expires_at"),
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        raw=payload,
    )


def list_page(payload: Any) -> tuple[list[Any], str | None]:
    """A cursor page, ``{"data", "has_more", "last_id"}``: its items and the next ``after``."""
    data = payload["data"]
    if not isinstance(data, list):
        raise TypeError("data is not a list")
    more = payload.get("has_more") and data
    last = payload.get("last_id") or (data[-1].get("id") if more else None)
    return data, (str(last) if more and last else None)


def _cursor_listing(
    client: OpenAIChat,
    operation: str,
    path: str,
    item: Callable[[Any, Meta], T],
    params: Mapping[str, str | None],
    options: Mapping[str, Any],
) -> AsyncIterator[T]:
    """An OpenAI cursor listing: ``list_page`` pages, the cursor sent back as ``after``."""
    return listing(
        client, operation, path, options, page=list_page, item=item, cursor="after", params=params
    )


class Files(SubClient[OpenAIChat]):
    """``client.files``: upload, list, retrieve, delete and download files (``/files``).

    An upload is streamed (from a path in pieces, from an async iterator as it yields), never read
    whole into memory. It creates a file, so it is retried only when it cannot have reached the
    server; an upload from an async iterator is never retried (it cannot be replayed).
    """

    __slots__ = ()

    async def create(
        self,
        file: FileSource,
        *,
        purpose: str,
        filename: str | None = None,
        content_type: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> FileObject:
        """Upload ``file`` (a path, bytes or an async iterator of bytes) for ``purpose``
        (``"batch"``, ``"fine-tune"``, ``"assistants"``, ``"user_data"``...)."""
        if not isinstance(purpose, str) or not purpose:
            raise ConfigurationError("purpose must be a non-empty str")
        upload = Upload(file, filename=filename, content_type=content_type)
        return await upload.sending(
            self._client._request(
                "files.create",
                "POST",
                "/files",
                file_object,
                upload_options(options, upload),
                data=lambda: upload.form("file", {"purpose": purpose}),
                creates=True,
            )
        )

    async def retrieve(self, file_id: str, **options: Unpack[HttpOptions]) -> FileObject:
        """The file's metadata; ``NotFoundError`` if there is no such file."""
        path = f"/files/{check_id('file_id', file_id)}"
        return await self._client._request("files.retrieve", "GET", path, file_object, options)

    async def delete(self, file_id: str, **options: Unpack[HttpOptions]) -> Deleted:
        """Delete the file (retried: deleting twice deletes once)."""
        path = f"/files/{check_id('file_id', file_id)}"
        parse = deletion(lambda payload: (payload["id"], bool(payload["deleted"])))
        return await self._client._request("files.delete", "DELETE", path, parse, options)

    async def content(
        self, file: str | FileObject, **options: Unpack[HttpOptions]
    ) -> Stream[bytes]:
        """The file's content as it arrives (``async with await client.files.content(id) as
        chunks``). Awaited as on every vendor, where the file may have to be looked up first;
        OpenAI serves any file's content, so nothing is sent until the stream is read."""
        return self._content(file, options)

    def _content(self, file: str | FileObject, options: Mapping[str, Any]) -> Stream[bytes]:
        file_id = file.id if isinstance(file, FileObject) else file
        path = f"/files/{check_id('file_id', file_id)}/content"
        return content_stream(self._client, "files.content", path, options)

    async def download(
        self, file: str | FileObject, path: str | os.PathLike[str], **options: Unpack[HttpOptions]
    ) -> int:
        """Write the file's content to ``path`` as it arrives; the bytes written."""
        return await save(self._content(file, options), path)

    def list(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        order: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> AsyncIterator[FileObject]:
        """Every file (``async for``), fetched a page of ``limit`` at a time."""
        if purpose is not None and not isinstance(purpose, str):
            raise ConfigurationError("purpose must be a str")
        if order not in (None, "asc", "desc"):
            raise ConfigurationError("order must be 'asc' or 'desc'")
        params = {"purpose": purpose, "limit": check_limit(limit), "order": order}
        return _cursor_listing(self._client, "files.list", "/files", file_object, params, options)


# -- batches ------------------------------------------------------------------------------------

BATCH_DONE = frozenset({"completed", "failed", "expired", "cancelled"})
CHAT_ENDPOINT = "/v1/chat/completions"


def batch_job(payload: Any, meta: Meta) -> BatchJob:
    """OpenAI's batch object: done once ``completed``, ``failed``, ``expired`` or ``cancelled``."""
    if payload.get("object") != "batch":
        raise ValueError(f"expected a batch, got object {payload.get('object')!r}")
    counts = payload.get("request_counts") or {}
    total, completed, failed = (int(counts.get(k) or 0) for k in ("total", "completed", "failed"))
    status = str(payload["status"])
    return BatchJob(
        id=payload["id"],
        status=status,
        done=status in BATCH_DONE,
        counts=BatchCounts(
            total=total,
            succeeded=completed,
            failed=failed,
            processing=max(0, total - completed - failed),
        ),
        created_at=payload.get("created_at"),
        output_file_id=payload.get("output_file_id"),
        error_file_id=payload.get("error_file_id"),
        request_id=meta.request_id,
        server_request_id=meta.server_request_id,
        raw=payload,
    )


class Batches(SubClient[OpenAIChat]):
    """``client.batches``: OpenAI's Batch API (``/batches``): half-price jobs that run a JSONL
    file of requests within ``completion_window``. Create (not retried once it may have reached
    the server: it starts a paid job), retrieve, cancel and list; OpenAI deletes no batch.
    ``asyncllm.run_batch_job`` runs a list of chat requests as one, end to end."""

    __slots__ = ()

    async def create(
        self,
        *,
        input_file_id: str,
        endpoint: str = CHAT_ENDPOINT,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        **options: Unpack[BodyOptions],
    ) -> BatchJob:
        """Start a batch over an uploaded JSONL file (``purpose="batch"``)."""
        check_id("input_file_id", input_file_id)
        check_str("endpoint", endpoint)
        check_str("completion_window", completion_window)
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata is not None:
            if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
            ):
                raise ConfigurationError("metadata must be a mapping of str to str")
            body["metadata"] = dict(metadata)
        return await self._client._request(
            "batches.create", "POST", "/batches", batch_job, options, body=body, creates=True
        )

    async def retrieve(self, batch_id: str, **options: Unpack[HttpOptions]) -> BatchJob:
        """The batch as it is now."""
        path = f"/batches/{check_id('batch_id', batch_id)}"
        return await self._client._request("batches.retrieve", "GET", path, batch_job, options)

    async def cancel(self, batch_id: str, **options: Unpack[HttpOptions]) -> BatchJob:
        """Ask the batch to stop (``cancelling``, then ``cancelled``); what ran is kept."""
        path = f"/batches/{check_id('batch_id', batch_id)}/cancel"
        return await self._client._request("batches.cancel", "POST", path, batch_job, options)

    def list(
        self, *, limit: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[BatchJob]:
        """Every batch, newest first (``async for``), a page of ``limit`` at a time."""
        params = {"limit": check_limit(limit)}
        return _cursor_listing(self._client, "batches.list", "/batches", batch_job, params, options)

    # -- what run_batch_job needs ------------------------------------------------------------------

    async def submit_chat(self, requests: Sequence[BatchRequest]) -> BatchJob:
        """Upload the requests as a JSONL file and start a chat batch over it; every body is
        built and checked before anything is sent."""
        client = self._client
        lines = []
        for request in requests:
            fmt = request.output_format()
            body = client._chat_body(request.messages, request.params, False, fmt)
            line = {"custom_id": request.id, "method": "POST", "url": CHAT_ENDPOINT, "body": body}
            lines.append(_json.dumps(line))
        content = b"\n".join(lines) + b"\n"
        made = await Files(client).create(content, purpose="batch", filename="batch.jsonl")
        return await self.create(input_file_id=made.id)

    async def chat_results(self, job: BatchJob) -> AsyncIterator[tuple[str, Any]]:
        """Each line of the job's output and error files: its ``custom_id`` and its
        ``ChatResponse``, or the typed error the same call would have raised."""
        client = self._client
        files = Files(client)

        def read_line(raw: bytes, meta: Meta) -> tuple[str, Any]:
            return batch_line(client, _json.loads(raw), job)

        for file_id in (job.output_file_id, job.error_file_id):
            if file_id is None:
                continue
            meta = Meta(job.request_id, None, {}, 200)
            async with files._content(file_id, {}) as stream:
                async for raw in iter_lines(stream, client.max_line_bytes):
                    if raw.strip():
                        yield client._parse(read_line, raw, meta)


def batch_line(client: OpenAIChat, line: Any, job: BatchJob) -> tuple[str, Any]:
    """One output or error line: ``{"custom_id", "response": {"status_code", "request_id",
    "body"}, "error"}``."""
    custom_id = str(line["custom_id"])
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    meta = Meta(job.request_id, response.get("request_id"), {}, status or 0)
    if status == 200 and line.get("error") is None:
        return custom_id, client._parse(client._parse_chat, body, meta)
    payload = body if body is not None else {"error": line.get("error")}
    info = client._error_info(payload)
    error = client._error(
        status,
        info,
        job.request_id,
        _json.excerpt(payload),
        server_request_id=meta.server_request_id,
        fallback=f"batch request {custom_id} failed",
    )
    error.backend = client.name
    return custom_id, error


# -- audio --------------------------------------------------------------------------------------

TEXT_FORMATS = frozenset({"text", "srt", "vtt"})


class Transcription(BaseModel):
    """What a transcription or translation answers: ``text``, and with
    ``response_format="verbose_json"`` the ``language``, ``duration`` (seconds), ``segments``
    and ``words`` the server gives. With ``text``, ``srt`` or ``vtt`` the ``text`` is the
    server's answer as it came."""

    model_config = ConfigDict(extra="forbid")

    text: str
    language: str | None = None
    duration: float | None = None
    segments: list[dict[str, Any]] | None = None
    words: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    request_id: str
    server_request_id: str | None = None
    raw: Any = None


def _transcription(response_format: str | None) -> Any:
    def parse(payload: Any, meta: Meta) -> Transcription:
        if response_format in TEXT_FORMATS:
            return Transcription(
                text=payload.decode("utf-8"),
                request_id=meta.request_id,
                server_request_id=meta.server_request_id,
                raw=payload.decode("utf-8"),
            )
        data = _json.loads(payload)
        text = data["text"]
        if not isinstance(text, str):
            raise TypeError("text is not a string")
        return Transcription(
            text=text,
            language=data.get("language"),
            duration=data.get("duration"),
            segments=data.get("segments"),
            words=data.get("words"),
            usage=data.get("usage"),
            request_id=meta.request_id,
            server_request_id=meta.server_request_id,
            raw=data,
        )

    return parse


class _AudioUpload(SubClient[OpenAIChat]):
    """One of the audio endpoints that take an uploaded file (multipart, streamed)."""

    __slots__ = ()
    path: ClassVar[str]
    operation: ClassVar[str]

    async def _send(
        self,
        file: FileSource,
        fields: dict[str, Any],
        response_format: str | None,
        filename: str | None,
        options: Mapping[str, Any],
    ) -> Transcription:
        upload = Upload(file, filename=filename)
        check_str("response_format", response_format)
        form: dict[str, str] = {}
        for name, value in fields.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ConfigurationError(f"{name} must be a str or a number")
            form[name] = str(value)
        if response_format is not None:
            form["response_format"] = response_format
        return await upload.sending(
            self._client._request(
                self.operation,
                "POST",
                self.path,
                _transcription(response_format),
                upload_options(options, upload),
                raw_body=True,
                data=lambda: upload.form("file", form),
            )
        )


class Transcriptions(_AudioUpload):
    """``client.audio.transcriptions``: speech to text in its own language
    (``/audio/transcriptions``). The audio is streamed up, never read whole into memory; a call
    from a path or bytes is retried like any call (it creates nothing), one from an async
    iterator never (it cannot be replayed)."""

    __slots__ = ()
    path = "/audio/transcriptions"
    operation = "audio.transcriptions"

    async def create(
        self,
        file: FileSource,
        *,
        model: str | None = None,
        language: str | None = None,
        prompt: str | None = None,
        response_format: str | None = None,
        temperature: float | None = None,
        filename: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> Transcription:
        """Transcribe ``file`` (a path, bytes or an async iterator of bytes; ``filename`` tells
        the server its format when it is not a path). ``response_format``: ``json`` (default),
        ``verbose_json``, ``text``, ``srt`` or ``vtt``."""
        check_number("temperature", temperature, 0, 1)
        fields = {
            "model": self._client._model(model),
            "language": language,
            "prompt": prompt,
            "temperature": temperature,
        }
        return await self._send(file, fields, response_format, filename, options)


class Translations(_AudioUpload):
    """``client.audio.translations``: speech in any language to English text
    (``/audio/translations``), streamed up as transcriptions are."""

    __slots__ = ()
    path = "/audio/translations"
    operation = "audio.translations"

    async def create(
        self,
        file: FileSource,
        *,
        model: str | None = None,
        prompt: str | None = None,
        response_format: str | None = None,
        temperature: float | None = None,
        filename: str | None = None,
        **options: Unpack[HttpOptions],
    ) -> Transcription:
        """Translate ``file`` into English text; arguments as for transcriptions."""
        check_number("temperature", temperature, 0, 1)
        fields = {"model": self._client._model(model), "prompt": prompt, "temperature": temperature}
        return await self._send(file, fields, response_format, filename, options)


class Speech(SubClient[OpenAIChat]):
    """``client.audio.speech``: text to speech (``/audio/speech``), the audio streamed down."""

    __slots__ = ()

    def create(
        self,
        input: str,
        *,
        voice: str,
        model: str | None = None,
        response_format: str | None = None,
        speed: float | None = None,
        instructions: str | None = None,
        **options: Unpack[BodyOptions],
    ) -> Stream[bytes]:
        """The spoken ``input`` as audio bytes, as they arrive (``async with`` ... ``async for``;
        ``download`` writes them to a path). ``response_format``: ``mp3`` (default), ``opus``,
        ``aac``, ``flac``, ``wav`` or ``pcm``. Retried only before the first bytes arrive."""
        if not isinstance(input, str) or not input:
            raise ConfigurationError("input must be a non-empty str")
        if not isinstance(voice, str) or not voice:
            raise ConfigurationError("voice must be a non-empty str")
        check_str("response_format", response_format)
        check_str("instructions", instructions)
        check_number("speed", speed, 0.25, 4.0)
        body: dict[str, Any] = {"model": self._client._model(model), "input": input, "voice": voice}
        for name, value in (
            ("response_format", response_format),
            ("speed", speed),
            ("instructions", instructions),
        ):
            if value is not None:
                body[name] = value
        return content_stream(
            self._client, "audio.speech", "/audio/speech", options, method="POST", body=body
        )

    async def download(
        self, input: str, path: str | os.PathLike[str], *, voice: str, **kwargs: Any
    ) -> int:
        """Write the spoken ``input`` to ``path`` as it arrives; the bytes written."""
        return await save(self.create(input, voice=voice, **kwargs), path)


class Audio(SubClient[OpenAIChat]):
    """``client.audio``: ``transcriptions`` and ``translations`` (OpenAI, Groq, vLLM)."""

    __slots__ = ()

    @property
    def transcriptions(self) -> Transcriptions:
        return Transcriptions(self._client)

    @property
    def translations(self) -> Translations:
        return Translations(self._client)


class OpenAIAudio(Audio):
    """``client.audio`` on OpenAI: ``transcriptions``, ``translations`` and ``speech``."""

    __slots__ = ()

    @property
    def speech(self) -> Speech:
        return Speech(self._client)


# -- moderation ---------------------------------------------------------------------------------


class ModerationResult(BaseModel):
    """One input's verdict: ``flagged``, and per category whether it applies and its score."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]] | None = None


class Moderation(BaseModel):
    """What ``client.moderations.create`` answers: one result per input, in input order."""

    id: str | None = None
    model: str | None = None
    results: list[ModerationResult]
    request_id: str
    server_request_id: str | None = None
    raw: Any = None

    @property
    def flagged(self) -> bool:
        return any(r.flagged for r in self.results)


class Moderations(SubClient[OpenAIChat]):
    """``client.moderations``: OpenAI's moderation classifier (``/moderations``)."""

    __slots__ = ()

    async def create(
        self,
        input: str | Sequence[Any],
        *,
        model: str | None = None,
        **options: Unpack[BodyOptions],
    ) -> Moderation:
        """Classify ``input``: a text, a list of texts, or a list of multimodal parts
        (``{"type": "text", ...}``, ``{"type": "image_url", ...}``); ``model`` defaults to the
        server's (``omni-moderation-latest``)."""
        if isinstance(input, str):
            if not input:
                raise ConfigurationError("input must not be empty")
            given: Any = input
        elif isinstance(input, Sequence) and not isinstance(input, bytes) and input:
            if not all(isinstance(i, (str, Mapping)) for i in input):
                raise ConfigurationError("input must be a str, or a list of str or of parts")
            given = [i if isinstance(i, str) else dict(i) for i in input]
        else:
            raise ConfigurationError("input must be a str, or a non-empty list of str or parts")
        body: dict[str, Any] = {"input": given}
        if model is not None:
            check_str("model", model)
            body["model"] = model

        def parse(payload: Any, meta: Meta) -> Moderation:
            return Moderation(
                id=payload.get("id"),
                model=payload.get("model"),
                results=payload["results"],
                request_id=meta.request_id,
                server_request_id=meta.server_request_id,
                raw=payload,
            )

        return await self._client._request(
            "moderations", "POST", "/moderations", parse, options, body=body
        )


# -- fine-tuning --------------------------------------------------------------------------------


class FineTuningJob(BaseModel):
    """A fine-tuning job: ``status`` is ``validating_files``, ``queued``, ``running``,
    ``succeeded``, ``failed`` or ``cancelled``; ``fine_tuned_model`` names the result once it
    succeeded. ``raw`` is the job as it came."""

    id: str
    model: str
    status: str
    training_file: str | None = None
    validation_file: str | None = None
    fine_tuned_model: str | None = None
    created_at: int | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    result_files: list[str] = []
    request_id: str
    server_request_id: str | None = None
    raw: Any = None

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class FineTuningEvent(BaseModel):
    """One event of a job's life (``level``: ``info``, ``warn``, ``error``)."""

    model_config = ConfigDict(extra="allow")

    id: str
    created_at: int | None = None
    level: str | None = None
    message: str
    type: str | None = None
    data: Any = None


class FineTuningCheckpoint(BaseModel):
    """A checkpoint a job saved: a model you can use (``fine_tuned_model_checkpoint``), at
    ``step_number``, with its ``metrics``."""

    model_config = ConfigDict(extra="allow")

    id: str
    created_at: int | None = None
    fine_tuned_model_checkpoint: str
    step_number: int
    metrics: dict[str, Any] = {}
    fine_tuning_job_id: str | None = None


def fine_tuning_job(payload: Any, meta: Meta) -> FineTuningJob:
    if payload.get("object") != "fine_tuning.job":
        raise ValueError(f"expected a fine_tuning.job, got object {payload.get('object')!r}")
    return FineTuningJob.model_validate(
        {
            **{k: payload.get(k) for k in FineTuningJob.model_fields if k in payload},
            "result_files": payload.get("result_files") or [],
            "request_id": meta.request_id,
            "server_request_id": meta.server_request_id,
            "raw": payload,
        }
    )


class Checkpoints(SubClient[OpenAIChat]):
    """``client.fine_tuning.jobs.checkpoints``: the checkpoints a job saved."""

    __slots__ = ()

    def list(
        self, job_id: str, *, limit: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[FineTuningCheckpoint]:
        """Every checkpoint of the job, newest first (``async for``)."""
        path = f"/fine_tuning/jobs/{check_id('job_id', job_id)}/checkpoints"
        return _cursor_listing(
            self._client,
            "fine_tuning.checkpoints",
            path,
            _plain(FineTuningCheckpoint),
            {"limit": check_limit(limit)},
            options,
        )


class Jobs(SubClient[OpenAIChat]):
    """``client.fine_tuning.jobs``: create (not retried once it may have reached the server: it
    starts a paid job), list, retrieve, cancel, events and checkpoints."""

    __slots__ = ()

    @property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self._client)

    async def create(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        method: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        **options: Unpack[BodyOptions],
    ) -> FineTuningJob:
        """Start fine-tuning ``model`` on an uploaded JSONL file (``purpose="fine-tune"``);
        ``method`` is OpenAI's (``{"type": "supervised", "supervised": {"hyperparameters":
        {...}}}``, ``dpo``, ``reinforcement``)."""
        if not isinstance(model, str) or not model:
            raise ConfigurationError("model must be a non-empty str")
        body: dict[str, Any] = {
            "model": model,
            "training_file": check_id("training_file", training_file),
        }
        if validation_file is not None:
            body["validation_file"] = check_id("validation_file", validation_file)
        if suffix is not None:
            if not isinstance(suffix, str) or not 1 <= len(suffix) <= 64:
                raise ConfigurationError("suffix must be a str of 1 to 64 characters")
            body["suffix"] = suffix
        if seed is not None:
            check_int("seed", seed)
            body["seed"] = seed
        if method is not None:
            if not isinstance(method, Mapping) or not isinstance(method.get("type"), str):
                raise ConfigurationError("method must be a mapping with a 'type'")
            body["method"] = dict(method)
        if metadata is not None:
            if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
            ):
                raise ConfigurationError("metadata must be a mapping of str to str")
            body["metadata"] = dict(metadata)
        return await self._client._request(
            "fine_tuning.create",
            "POST",
            "/fine_tuning/jobs",
            fine_tuning_job,
            options,
            body=body,
            creates=True,
        )

    async def retrieve(self, job_id: str, **options: Unpack[HttpOptions]) -> FineTuningJob:
        """The job as it is now."""
        path = f"/fine_tuning/jobs/{check_id('job_id', job_id)}"
        return await self._client._request(
            "fine_tuning.retrieve", "GET", path, fine_tuning_job, options
        )

    async def cancel(self, job_id: str, **options: Unpack[HttpOptions]) -> FineTuningJob:
        """Stop the job (``cancelled``)."""
        path = f"/fine_tuning/jobs/{check_id('job_id', job_id)}/cancel"
        return await self._client._request(
            "fine_tuning.cancel", "POST", path, fine_tuning_job, options
        )

    def list(
        self, *, limit: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[FineTuningJob]:
        """Every job, newest first (``async for``)."""
        params = {"limit": check_limit(limit)}
        return _cursor_listing(
            self._client, "fine_tuning.list", "/fine_tuning/jobs", fine_tuning_job, params, options
        )

    def list_events(
        self, job_id: str, *, limit: int | None = None, **options: Unpack[HttpOptions]
    ) -> AsyncIterator[FineTuningEvent]:
        """The job's events, newest first (``async for``)."""
        path = f"/fine_tuning/jobs/{check_id('job_id', job_id)}/events"
        return _cursor_listing(
            self._client,
            "fine_tuning.events",
            path,
            _plain(FineTuningEvent),
            {"limit": check_limit(limit)},
            options,
        )


def _plain(kind: type[T]) -> Callable[[Any, Meta], T]:
    """An item parser for items that are plain objects of ``kind`` (no request IDs)."""
    return lambda payload, meta: kind.model_validate(payload)


class FineTuning(SubClient[OpenAIChat]):
    """``client.fine_tuning``: OpenAI's fine-tuning API; the calls are on ``jobs``."""

    __slots__ = ()

    @property
    def jobs(self) -> Jobs:
        return Jobs(self._client)

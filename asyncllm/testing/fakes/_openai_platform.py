"""OpenAI's platform routes under ``/v1``, mounted by the OpenAI fake: Files, Batches, audio
(transcriptions and translations answer with what the fake "hears": the upload's name and size;
speech streams one piece per word) and moderations (texts with "kill", "hate" or "bomb" are
flagged), fine-tuning (a job moves one step of its life per retrieve: ``validating_files``,
``queued``, ``running``, ``succeeded``, with events and checkpoints). Groq and vLLM mount the transcription and translation routes (``setup_audio``).

Files: uploads (multipart, streamed to a spooled file), list with ``after``/``limit``/``order``/
``purpose``, retrieve, delete, content. Batches: a batch reads its JSONL input file (each line
``{"custom_id", "method", "url", "body"}``) and moves one step of its life on each retrieve
(``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``), as a real batch moves
over hours; on completion it writes an output file (a chat completion per good line, answered by
the shared conversation rule) and an error file (a 400 per line whose body has no ``messages``, a 404 per line naming a model the
fake does not serve).
``server.state["openai.batches"]`` holds the batches, for tests to inspect or finish.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common, openai
from ._files import FileStore, StoredFile, cursor_page, read_form, send_file, store

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses")
LIFE = ("validating", "in_progress", "finalizing", "completed")


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    body = openai.error_body(status, message)
    body["error"]["param"] = param
    return web.json_response(body, status=status)


def file_json(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": stored.size,
        "created_at": stored.created_at,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def page(items: list[dict[str, Any]], request: web.Request, default: int) -> web.Response:
    """A cursor page of ``items`` (already in order) after ``?after=`` with ``?limit=``."""
    try:
        limit = int(request.query.get("limit", default))
    except ValueError:
        return _error(400, "limit must be an integer", "limit")
    found = cursor_page(items, request.query.get("after"), limit)
    return web.json_response({"object": "list", **found})


def _answer(body: Any, custom_id: str) -> tuple[int, Any]:
    """What the fake model answers one batch line with: (status, body)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return 400, openai.error_body(400, "'messages' is a required property")
    if body.get("model") not in openai.MODELS:
        error = openai.error_body(404, f"The model '{body.get('model')}' does not exist")
        error["error"].update(type="invalid_request_error", code="model_not_found")
        return 404, error
    text, calls = openai.plan_reply(messages, body.get("tools"))
    prompt = sum(_common.count_tokens(openai._text(m.get("content"))) for m in messages)
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return 200, {
        "id": f"chatcmpl-{custom_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake-chat"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": openai.usage(prompt, _common.count_tokens(text)),
    }


class Batch:
    """One batch and its life."""

    def __init__(self, batch_id: str, body: dict[str, Any], lines: list[Any]) -> None:
        self.id = batch_id
        self.body = body
        self.lines = lines
        self.step = 0
        self.cancelled = False
        self.output_file_id: str | None = None
        self.error_file_id: str | None = None
        self.created_at = int(time.time())
        self.counts = {"total": len(lines), "completed": 0, "failed": 0}

    @property
    def status(self) -> str:
        return "cancelled" if self.cancelled else LIFE[self.step]

    def advance(self, files: FileStore) -> None:
        if self.cancelled or self.step == len(LIFE) - 1:
            return
        self.step += 1
        if LIFE[self.step] == "completed":
            self.finish(files)

    def finish(self, files: FileStore) -> None:
        self.step = len(LIFE) - 1
        out: list[str] = []
        errors: list[str] = []
        for n, line in enumerate(self.lines):
            custom_id = str(line.get("custom_id"))
            status, body = _answer(line.get("body"), custom_id)
            record = {
                "id": f"batch_req_{self.id}_{n}",
                "custom_id": custom_id,
                "response": {"status_code": status, "request_id": f"req_{n}", "body": body},
                "error": None,
            }
            (out if status == 200 else errors).append(json.dumps(record))
        self.counts.update(completed=len(out), failed=len(errors))
        if out:
            content = ("\n".join(out) + "\n").encode()
            name = f"{self.id}_output.jsonl"
            self.output_file_id = files.add_bytes(content, filename=name, purpose="batch_output").id
        if errors:
            content = ("\n".join(errors) + "\n").encode()
            name = f"{self.id}_error.jsonl"
            self.error_file_id = files.add_bytes(content, filename=name, purpose="batch_output").id

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.body["endpoint"],
            "errors": None,
            "input_file_id": self.body["input_file_id"],
            "completion_window": self.body["completion_window"],
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "request_counts": dict(self.counts),
            "metadata": self.body.get("metadata"),
        }


# -- audio and moderation ------------------------------------------------------------------------

AUDIO_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer")
SPEECH_FORMATS = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# Words the fake moderation model flags, and the category each flags.
FLAGGED_WORDS = {"kill": "violence", "hate": "hate", "bomb": "illicit/violent"}
CATEGORIES = ("harassment", "hate", "illicit", "illicit/violent", "self-harm", "sexual", "violence")


def transcript(filename: str, size: int, translated: bool) -> str:
    """What the fake model hears in an upload: its name and size (it cannot listen)."""
    verb = "translation" if translated else "transcript"
    return f"{verb} of {filename} ({size} bytes)"


def audio_routes(prefix: str, *, speech: bool) -> list[tuple[str, str, Any, bool]]:
    """Transcriptions and translations (multipart, the upload read in pieces and counted), and
    with ``speech`` text to speech (the audio streamed in pieces) and moderations:
    (method, path, handler, read_body)."""

    def hears(translated: bool) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            if not request.content_type.startswith("multipart/"):
                return _error(400, "the request must be multipart/form-data")
            fields, upload = await read_form(request, "file")
            if upload is None:
                return _error(400, "'file' is a required property", "file")
            data, size, filename, _ = upload
            data.close()
            if not fields.get("model"):
                return _error(400, "'model' is a required property", "model")
            fmt = fields.get("response_format", "json")
            if fmt not in AUDIO_FORMATS:
                return _error(
                    400, f"'{fmt}' is not one of {list(AUDIO_FORMATS)}", "response_format"
                )
            text = transcript(filename, size, translated)
            if fmt == "text":
                return web.Response(text=text, content_type="text/plain")
            if fmt in ("srt", "vtt"):
                cue = (
                    "00:00:00,000 --> 00:00:01,000"
                    if fmt == "srt"
                    else "00:00:00.000 --> 00:00:01.000"
                )
                head = "1\n" if fmt == "srt" else "WEBVTT\n\n"
                return web.Response(text=f"{head}{cue}\n{text}\n", content_type="text/plain")
            answer: dict[str, Any] = {"text": text}
            if fmt == "verbose_json":
                answer.update(
                    task="translate" if translated else "transcribe",
                    language="english" if translated else fields.get("language", "english"),
                    duration=round(size / 16000, 3),
                    segments=[{"id": 0, "start": 0.0, "end": round(size / 16000, 3), "text": text}],
                )
            return web.json_response(answer)

        return handler

    async def speak(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("input"), str):
            return _error(400, "'input' is a required property", "input")
        if body.get("voice") not in VOICES:
            return _error(400, f"'{body.get('voice')}' is not one of {list(VOICES)}", "voice")
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_FORMATS:
            return _error(400, f"'{fmt}' is not a supported format", "response_format")
        response = web.StreamResponse(headers={"Content-Type": SPEECH_FORMATS[fmt]})
        await response.prepare(request)
        for word in body["input"].split():  # one "frame" of audio per word, as it is made
            await response.write(f"<{fmt}:{word}>".encode())
        await response.write_eof()
        return response

    async def moderate(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        given = body.get("input") if isinstance(body, dict) else None
        if isinstance(given, str):
            given = [given]
        if not isinstance(given, list) or not given:
            return _error(400, "'input' is a required property", "input")
        results = []
        for item in given:
            text = item if isinstance(item, str) else str(item.get("text", ""))
            hit = {FLAGGED_WORDS[w] for w in text.lower().split() if w in FLAGGED_WORDS}
            results.append(
                {
                    "flagged": bool(hit),
                    "categories": {c: c in hit for c in CATEGORIES},
                    "category_scores": {c: 0.9 if c in hit else 0.001 for c in CATEGORIES},
                    "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
                }
            )
        return web.json_response(
            {
                "id": f"modr-{next(_moderation_ids)}",
                "model": body.get("model") or "omni-moderation-latest",
                "results": results,
            }
        )

    routes: list[tuple[str, str, Any, bool]] = [
        ("POST", f"{prefix}/audio/transcriptions", hears(False), False),
        ("POST", f"{prefix}/audio/translations", hears(True), False),
    ]
    if speech:
        routes += [
            ("POST", f"{prefix}/audio/speech", speak, True),
            ("POST", f"{prefix}/moderations", moderate, True),
        ]
    return routes


_moderation_ids = itertools.count(1)


# -- fine-tuning ---------------------------------------------------------------------------------

TUNING_LIFE = ("validating_files", "queued", "running", "succeeded")


class TuningJob:
    """A fine-tuning job that moves one step of its life per retrieve, logging an event per
    step and saving a checkpoint while it runs and when it ends."""

    def __init__(self, job_id: str, body: dict[str, Any]) -> None:
        self.id = job_id
        self.body = body
        self.step = 0
        self.status = TUNING_LIFE[0]
        self.created_at = int(time.time())
        self.finished_at: int | None = None
        self.events: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.log("Created fine-tuning job")

    def log(self, message: str, level: str = "info") -> None:
        self.events.append(
            {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{self.id}-{len(self.events)}",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "type": "message",
                "data": {},
            }
        )

    @property
    def model_name(self) -> str:
        suffix = self.body.get("suffix") or "fake"
        return f"ft:{self.body['model']}:asyncllm:{suffix}:{self.id[-6:]}"

    def save(self, step: int) -> None:
        self.checkpoints.append(
            {
                "object": "fine_tuning.job.checkpoint",
                "id": f"ftckpt-{self.id}-{step}",
                "created_at": int(time.time()),
                "fine_tuned_model_checkpoint": f"{self.model_name}:ckpt-step-{step}",
                "step_number": step,
                "metrics": {"step": step, "train_loss": round(1.0 / step, 4)},
                "fine_tuning_job_id": self.id,
            }
        )

    def advance(self) -> None:
        if self.status not in TUNING_LIFE[:-1]:
            return
        self.step += 1
        self.status = TUNING_LIFE[self.step]
        if self.status == "queued":
            self.log("Files validated, moving job to queued state")
        elif self.status == "running":
            self.log("Fine-tuning job started")
            self.save(10)
        else:
            self.save(20)
            self.finished_at = int(time.time())
            self.log(f"New fine-tuned model created: {self.model_name}")
            self.log("The job has successfully completed")

    def cancel(self) -> None:
        if self.status in ("succeeded", "failed", "cancelled"):
            return
        self.status = "cancelled"
        self.finished_at = int(time.time())
        self.log("Fine-tuning job cancelled")

    def json(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.body["model"],
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "fine_tuned_model": self.model_name if self.status == "succeeded" else None,
            "organization_id": "org-fake",
            "result_files": [],
            "status": self.status,
            "validation_file": self.body.get("validation_file"),
            "training_file": self.body["training_file"],
            "trained_tokens": 1000 if self.status == "succeeded" else None,
            "error": None,
            "seed": self.body.get("seed", 42),
            "metadata": self.body.get("metadata"),
            "method": self.body.get("method") or {"type": "supervised"},
        }


def tuning_routes(server: FakeServer, files: FileStore, prefix: str) -> list[tuple[str, str, Any]]:
    jobs: dict[str, TuningJob] = server.state.setdefault("openai.fine_tuning", {})
    ids = itertools.count(1)

    async def create(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "Missing required parameter: 'model'.", "model")
        for name in ("training_file", "validation_file"):
            file_id = body.get(name)
            if file_id is None and name == "validation_file":
                continue
            stored = files.files.get(file_id) if isinstance(file_id, str) else None
            if stored is None:
                return _error(400, f"invalid {name}: {file_id}", name)
            if stored.purpose != "fine-tune":
                return _error(400, f"File {file_id} is not for fine-tuning", name)
        job = TuningJob(f"ftjob-{next(ids):06d}", body)
        jobs[job.id] = job
        return web.json_response(job.json())

    job_of = _common.entry(
        jobs, "job_id", lambda name: _error(404, f"Could not find fine tune job: {name}")
    )

    @_common.finding(job_of)
    async def retrieve(request: web.Request, job: TuningJob) -> web.StreamResponse:
        answer = job.json()
        job.advance()  # the next look finds it one step further
        return web.json_response(answer)

    @_common.finding(job_of)
    async def cancel(request: web.Request, job: TuningJob) -> web.StreamResponse:
        if job.status in ("succeeded", "failed", "cancelled"):
            return _error(400, f"Job has already completed: {job.id}")
        job.cancel()
        return web.json_response(job.json())

    async def list_jobs(request: web.Request) -> web.StreamResponse:
        return page([j.json() for j in reversed(jobs.values())], request, 20)

    @_common.finding(job_of)
    async def events(request: web.Request, job: TuningJob) -> web.StreamResponse:
        return page(job.events[::-1], request, 20)

    @_common.finding(job_of)
    async def checkpoints(request: web.Request, job: TuningJob) -> web.StreamResponse:
        return page(job.checkpoints[::-1], request, 10)

    base = f"{prefix}/fine_tuning/jobs"
    return [
        ("POST", base, create),
        ("GET", base, list_jobs),
        ("GET", base + "/{job_id}", retrieve),
        ("POST", base + "/{job_id}/cancel", cancel),
        ("GET", base + "/{job_id}/events", events),
        ("GET", base + "/{job_id}/checkpoints", checkpoints),
    ]


def setup_audio(server: FakeServer, prefix: str, *, speech: bool = False) -> None:
    """Mount the audio routes (another OpenAI-shaped server's transcriptions and translations)."""
    for method, path, handler, read_body in audio_routes(prefix, speech=speech):
        server.add_route(method, path, handler, error_body=openai.error_body, read_body=read_body)


def setup(server: FakeServer, prefix: str = "/v1") -> None:
    files = store(server, "openai", "file-")
    batches: dict[str, Batch] = server.state.setdefault("openai.batches", {})
    batch_ids = itertools.count(1)

    found = _common.entry(
        files.files, "file_id", lambda name: _error(404, f"No such File object: {name}", "id")
    )

    async def create_file(request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            return _error(400, "the request must be multipart/form-data")
        fields, upload = await read_form(request, "file")
        purpose = fields.get("purpose")
        if upload is None:
            return _error(400, "'file' is a required property", "file")
        if purpose not in PURPOSES:
            return _error(400, f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", "purpose")
        data, size, filename, mime = upload
        stored = files.add(data, size, filename=filename, purpose=purpose, mime_type=mime)
        return web.json_response(file_json(stored))

    async def list_files(request: web.Request) -> web.StreamResponse:
        chosen = [
            file_json(f)
            for f in files.files.values()
            if request.query.get("purpose") in (None, f.purpose)
        ]
        if request.query.get("order", "desc") == "desc":
            chosen.reverse()
        return page(chosen, request, 10000)

    @_common.finding(found)
    async def retrieve_file(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        return web.json_response(file_json(stored))

    @_common.finding(found)
    async def delete_file(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        files.remove(stored.id)
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    @_common.finding(found)
    async def file_content(request: web.Request, stored: StoredFile) -> web.StreamResponse:
        return await send_file(request, stored)

    async def create_batch(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return _error(400, f"Missing required parameter: '{name}'.", name)
        if body["endpoint"] not in ENDPOINTS:
            return _error(400, f"Invalid endpoint: {body['endpoint']}", "endpoint")
        if body["completion_window"] != "24h":
            return _error(400, "completion_window must be '24h'", "completion_window")
        stored = files.files.get(body["input_file_id"])
        if stored is None:
            return _error(404, f"No such File object: {body['input_file_id']}", "input_file_id")
        if stored.purpose != "batch":
            return _error(400, "the input file must have purpose 'batch'", "input_file_id")
        lines = []
        for raw in stored.read().decode().splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return _error(400, "the input file holds a line that is not JSON")
            if not isinstance(line, dict) or line.get("url") != body["endpoint"]:
                return _error(400, "every line's url must be the batch's endpoint")
            lines.append(line)
        custom_ids = [line.get("custom_id") for line in lines]
        if len(set(custom_ids)) != len(custom_ids):
            return _error(400, "custom_id values must be unique within a batch")
        batch = Batch(f"batch_{next(batch_ids):06d}", body, lines)
        batches[batch.id] = batch
        return web.json_response(batch.json())

    batch_of = _common.entry(
        batches, "batch_id", lambda name: _error(404, f"No batch found with id '{name}'.")
    )

    @_common.finding(batch_of)
    async def retrieve_batch(request: web.Request, batch: Batch) -> web.StreamResponse:
        answer = batch.json()
        batch.advance(files)  # the next look finds it one step further
        return web.json_response(answer)

    @_common.finding(batch_of)
    async def cancel_batch(request: web.Request, batch: Batch) -> web.StreamResponse:
        if batch.status == "completed":
            return _error(400, "Cannot cancel a batch with status 'completed'.")
        batch.cancelled = True
        return web.json_response(batch.json())

    async def list_batches(request: web.Request) -> web.StreamResponse:
        return page([b.json() for b in reversed(batches.values())], request, 20)

    def add(method: str, path: str, handler: Any, **kwargs: Any) -> None:
        server.add_route(method, prefix + path, handler, error_body=openai.error_body, **kwargs)

    add("POST", "/files", create_file, read_body=False)
    add("GET", "/files", list_files)
    add("GET", "/files/{file_id}", retrieve_file)
    add("DELETE", "/files/{file_id}", delete_file)
    add("GET", "/files/{file_id}/content", file_content)
    add("POST", "/batches", create_batch)
    add("GET", "/batches", list_batches)
    add("GET", "/batches/{batch_id}", retrieve_batch)
    add("POST", "/batches/{batch_id}/cancel", cancel_batch)
    setup_audio(server, prefix, speech=True)
    for method, path, handler in tuning_routes(server, files, prefix):
        server.add_route(method, path, handler, error_body=openai.error_body)

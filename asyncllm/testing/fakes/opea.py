"""The OPEA protocol: megaservice gateway routes and microservices, all on one server.

Gateways (``/v1/chatqna``, ``/v1/codegen``, ``/v1/docsum``, ``/v1/faqgen``) stream by default;
ChatQnA, DocSum and FaqGen send every piece as ``data: b'...'`` (``repr`` of its UTF-8 bytes, as
OPEA's stream aligners do), CodeGen passes the LLM's OpenAI-style JSON chunks through. DocSum
takes JSON or a multipart form, FaqGen only a form. The microservices (LLM, embedding,
retrieval, reranking, guardrails, dataprep) answer as OPEA's FastAPI services do, errors as
``{"detail": ...}``. ``/v1/health_check`` serves every service. The LLM service takes only
OPEA's ``response_format`` types, "text" and "json_object" (any other is FastAPI's 422), and
answers a "json_object" with a JSON object that follows no schema.

Replies follow ``_common``: "echo: <last user text>" (for documents, the text and the files' text).

ChatQnA and CodeGen fail as OPEA's orchestrator does (checked against opea-comps 1.5): a body it
cannot read (no ``messages``, a role other than system, user and assistant, a number that is no
number or out of range) gets a bare 500 (``text/plain`` "Internal Server Error"), and a ChatQnA
stream begins with ``data: b''`` (the LLM's first chunk, the role with empty content).
``server.state["opea_llm_failures"] = n`` makes the LLM behind the next ``n`` ChatQnA or CodeGen
calls fail: a call asked for whole gets the bare 500; a ChatQnA stream is a 200 holding only
``data: [DONE]``, a CodeGen stream a 200 with an empty body, as OPEA sends them.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import time
import urllib.parse
from typing import Any

from aiohttp import web

from .. import FakeServer, Handler
from . import _common
from . import openai as openai_fake

BLOCK_WORD = "unsafe"
DEFAULT_DOCS = (
    "OPEA is the Open Platform for Enterprise AI.",
    "ChatQnA answers questions from documents.",
    "Rerankers order documents by relevance.",
)


def error_body(status: int, message: str) -> Any:
    return {"detail": message}


def _validation_error(loc: list[Any], msg: str, kind: str = "missing") -> web.Response:
    """FastAPI's 422 for a body that does not fit the declared model."""
    return web.json_response(
        {"detail": [{"type": kind, "loc": ["body", *loc], "msg": msg, "input": None}]},
        status=422,
    )


def _internal_error() -> web.Response:
    """What Starlette sends when a handler raises: plain text, not JSON."""
    return web.Response(status=500, text="Internal Server Error")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


# Fields of OPEA's ChatCompletionRequest that must be positive integers, and those that must be
# numbers >= 0; the ones in _NOT_NULL may be left out but not sent as null. Pydantic's lax mode
# takes numeric strings and booleans too.
_POSITIVE_INTS = ("max_tokens", "n", "k", "top_n", "fetch_k", "top_k", "seed")
_NON_NEGATIVE = ("temperature", "top_p", "repetition_penalty", "lambda_mult", "score_threshold")
_NOT_NULL = frozenset({"k", "top_n", "fetch_k", "lambda_mult", "score_threshold"})


def _lax_number(value: Any, integer: bool) -> float | None:
    if isinstance(value, str):
        try:
            return int(value.strip()) if integer else float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (bool, int, float)):
        return None if integer and value != int(value) else float(value)
    return None


def _unreadable(body: Any) -> bool:
    """Whether OPEA's gateway fails on this body: ``ChatCompletionRequest`` rejects it, or its
    prompt builder meets a role it does not know."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), (str, list)):
        return True
    roles = ("system", "user", "assistant")
    if isinstance(body["messages"], list) and not all(
        isinstance(m, dict) and m.get("role") in roles for m in body["messages"]
    ):
        return True
    for keys, integer, least in ((_POSITIVE_INTS, True, 1), (_NON_NEGATIVE, False, 0)):
        for key in keys:
            if key not in body or (body[key] is None and key not in _NOT_NULL):
                continue
            value = _lax_number(body[key], integer)
            if value is None or value < least:
                return True
    return False


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text(message.get("content"))
    return ""


def bytes_line(piece: str) -> bytes:
    """One ``data: b'...'`` event, exactly as OPEA writes it."""
    return f"data: {piece.encode('utf-8')!r}\n\n".encode()


# What a gateway's StreamingResponse says it sends.
EVENT_STREAM = "text/event-stream; charset=utf-8"


async def _stream(request: web.Request, lines: list[bytes]) -> web.StreamResponse:
    return await _common.stream(request, [*lines, _common.DONE], content_type=EVENT_STREAM)


def _chat_completion(model: str, text: str) -> dict[str, Any]:
    """OPEA's gateway answer: a ChatCompletionResponse with an all-zero UsageInfo."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "metadata": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0},
    }


def _openai_chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-codegen",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return _common.sse(chunk)


def _is_streaming(value: Any) -> bool:
    """OPEA reads ``data.get("stream", True)``; form values are strings that pydantic coerces."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "f", "n")
    return True if value is None else bool(value)


async def parse_form(request: web.Request) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(fields, files) of a multipart body; the server has already read the body, so this
    parses the bytes instead of the (spent) request stream."""
    raw = await request.read()
    ctype = request.headers.get("Content-Type", "")
    if "application/x-www-form-urlencoded" in ctype:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs), []
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + raw
    )
    fields: dict[str, str] = {}
    files: list[dict[str, Any]] = []
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files.append(
                {
                    "field": name,
                    "filename": filename,
                    "content_type": part.get_content_type(),
                    "data": data,
                }
            )
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def setup(server: FakeServer) -> None:
    openai_handlers = {path: handler for _, path, handler in openai_fake.routes("/v1")}
    openai_chat = openai_handlers["/v1/chat/completions"]
    openai_embeddings = openai_handlers["/v1/embeddings"]
    docs: list[str] = server.state.setdefault("opea_docs", list(DEFAULT_DOCS))
    ingested: list[dict[str, Any]] = server.state.setdefault("opea_ingested", [])

    # -- gateways ----------------------------------------------------------------------------

    def llm_fails() -> bool:
        """Whether the LLM behind this gateway call fails (``state["opea_llm_failures"]``)."""
        left = int(server.state.get("opea_llm_failures", 0))
        if left > 0:
            server.state["opea_llm_failures"] = left - 1
        return left > 0

    async def chatqna(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if _unreadable(body):
            return _internal_error()  # the handler raises; the runtime answers a bare 500
        reply = _common.reply_text(_last_user_text(body["messages"]))
        streaming = _is_streaming(body.get("stream"))
        if llm_fails():
            return await _stream(request, []) if streaming else _internal_error()
        if not streaming:
            return web.json_response(_chat_completion("chatqna", reply))
        lines = [bytes_line(p) for p in ["", *_common.pieces(reply)]]
        return await _stream(request, lines)

    async def codegen(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if _unreadable(body):
            return _internal_error()
        reply = _common.reply_text(_last_user_text(body["messages"]))
        model = str(body.get("model") or "codegen")
        streaming = _is_streaming(body.get("stream"))
        if llm_fails():
            if streaming:  # CodeGen passes its LLM's stream on: nothing, not even [DONE]
                return await _common.stream(request, [], content_type=EVENT_STREAM)
            return _internal_error()
        if not streaming:
            return web.json_response(_chat_completion("codegen", reply))
        lines = [_openai_chunk(model, {"role": "assistant", "content": ""}, None)]
        lines += [_openai_chunk(model, {"content": p}, None) for p in _common.pieces(reply)]
        lines.append(_openai_chunk(model, {}, "stop"))
        return await _stream(request, lines)

    async def document_route(
        request: web.Request, name: str, json_allowed: bool
    ) -> web.StreamResponse:
        ctype = request.headers.get("Content-Type", "")
        if "application/json" in ctype and json_allowed:
            body = request["json"]
            if not isinstance(body, dict) or "messages" not in body or "type" not in body:
                return _internal_error()  # DocSum reads data["type"]: a KeyError becomes a 500
            text = _last_user_text(body["messages"])
            stream = body.get("stream")
        elif "multipart/form-data" in ctype or "x-www-form-urlencoded" in ctype:
            fields, files = await parse_form(request)
            if "messages" not in fields:
                return _internal_error()
            texts = [f["data"].decode("utf-8", "replace") for f in files if f["field"] == "files"]
            text = fields["messages"] + "\n".join(texts)
            stream = fields.get("stream")
            server.state[f"opea_{name}_form"] = {"fields": fields, "files": files}
        else:
            return _internal_error()
        reply = _common.reply_text(text)
        if not _is_streaming(stream):
            return web.json_response(_chat_completion(name, reply))
        return await _stream(request, [bytes_line(p) for p in _common.pieces(reply)])

    async def docsum(request: web.Request) -> web.StreamResponse:
        return await document_route(request, "docsum", json_allowed=True)

    async def faqgen(request: web.Request) -> web.StreamResponse:
        return await document_route(request, "faqgen", json_allowed=False)

    # -- microservices ---------------------------------------------------------------------

    async def llm(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or "messages" not in body:
            return _validation_error(["messages"], "Field required")
        messages = body["messages"]
        fmt = body.get("response_format")
        if fmt is not None:
            # OPEA's ResponseFormat: {"type": "text" | "json_object"}, nothing else kept.
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind not in ("text", "json_object"):
                return _validation_error(
                    ["response_format", "type"],
                    "Input should be 'text' or 'json_object'",
                    "literal_error" if isinstance(fmt, dict) and "type" in fmt else "missing",
                )
            body["response_format"] = {"type": kind}
        if isinstance(messages, str):
            body["messages"] = [{"role": "user", "content": messages}]
        body.setdefault("model", "opea-default-llm")
        return await openai_chat(request)

    async def embeddings(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or "input" not in body:
            return _validation_error(["input"], "Field required")
        body.setdefault("model", "opea-default-embedding")
        return await openai_embeddings(request)

    async def retrieval(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return _validation_error(["text"], "Field required")
        embedding = body.get("embedding")
        if not isinstance(embedding, list) or not embedding:
            return _validation_error(["embedding"], "Field required")
        k = body.get("k", 4)
        if not isinstance(k, int) or k <= 0:
            return _validation_error(["k"], "Input should be greater than 0", "greater_than")

        def score(doc: str) -> float:
            vec = _common.vector(doc, len(embedding))
            return sum(a * float(b) for a, b in zip(vec, embedding, strict=True))

        ranked = sorted(docs, key=score, reverse=True)[:k]
        return web.json_response(
            {
                "id": "searched-1",
                "retrieved_docs": [
                    {"id": f"doc-{docs.index(d)}", "text": d, "downstream_black_list": []}
                    for d in ranked
                ],
                "initial_query": body["text"],
                "top_n": 1,
            }
        )

    async def reranking(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("input"), str):
            return _validation_error(["input"], "Field required")
        retrieved = body.get("retrieved_docs")
        if not isinstance(retrieved, list):
            return _validation_error(["retrieved_docs"], "Field required")
        texts = [d if isinstance(d, str) else str(d.get("text", "")) for d in retrieved]
        top_n = body.get("top_n", 1)
        query_words = set(body["input"].lower().split())

        def score(text: str) -> float:
            words = set(text.lower().split())
            return len(words & query_words) / (len(words) or 1)

        ranked = sorted(texts, key=score, reverse=True)[:top_n]
        return web.json_response(
            {"reranked_docs": [{"text": t, "score": round(score(t), 6)} for t in ranked]}
        )

    async def guardrails(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return _validation_error(["text"], "Field required")
        text = body["text"]
        if BLOCK_WORD in text.lower():
            return web.json_response(
                {
                    "id": "guard-1",
                    "text": "Violated policies: toxicity, please check your input.",
                    "downstream_black_list": [".*"],
                }
            )
        answer: dict[str, Any] = {"id": "guard-1", "text": text, "downstream_black_list": []}
        if isinstance(body.get("prompt"), str):
            answer["prompt"] = body["prompt"]
        return web.json_response(answer)

    async def ingest(request: web.Request) -> web.StreamResponse:
        if "multipart/form-data" not in request.headers.get("Content-Type", ""):
            return _validation_error(["files"], "Expected a multipart form", "value_error")
        fields, files = await parse_form(request)
        links = json.loads(fields["link_list"]) if fields.get("link_list") else []
        if not files and not links:
            return web.json_response(
                {"detail": "Must provide either a file or a string list."}, status=400
            )
        for f in files:
            docs.append(f["data"].decode("utf-8", "replace"))
        docs.extend(f"content of {link}" for link in links)
        ingested.append({"fields": fields, "files": files, "links": links})
        return web.json_response({"status": 200, "message": "Data preparation succeeded"})

    async def health(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "Service Title": "opea_service@fake",
                "Service Description": "OPEA Microservice Infrastructure",
                "Version": "1.5",
            }
        )

    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/v1/chatqna", chatqna),
        ("POST", "/v1/codegen", codegen),
        ("POST", "/v1/docsum", docsum),
        ("POST", "/v1/faqgen", faqgen),
        ("POST", "/v1/chat/completions", llm),
        ("POST", "/v1/embeddings", embeddings),
        ("POST", "/v1/retrieval", retrieval),
        ("POST", "/v1/reranking", reranking),
        ("POST", "/v1/guardrails", guardrails),
        ("POST", "/v1/dataprep/ingest", ingest),
        ("GET", "/v1/health_check", health),
    ]
    for method, path, handler in routes:
        server.add_route(method, path, handler, error_body=error_body)

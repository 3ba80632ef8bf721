"""The Ollama protocol under ``/api``: chat and generate (JSON, or NDJSON streams by default),
embed (and the older ``/api/embeddings``), and model management (tags, show, ps, version, pull,
delete, copy).

Besides the shared rules of ``_common``: models live in ``server.state["ollama_models"]``
(``fake-chat`` and ``fake-embed`` at start) and any other name is a 404, as on a real server; a
prompt containing ``FAILMID`` streams a piece and then an ``{"error": ...}`` line (a 500 when not
streaming); pulling a name that starts with ``missing`` fails the same way after the manifest step;
``format`` makes the reply a JSON value of that schema; ``think`` adds ``thinking`` text (streamed
a word piece a line); ``options.num_predict`` cuts thinking and reply, a word piece a token, with
``done_reason`` "length".
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common

VERSION = "0.12.6"
CONTEXT_TOKENS = 512
FAILMID = "FAILMID"
MODEL_FAILURE = f"an error was encountered while running the model: {FAILMID}"

error_body = _common.error_only_body
_error = _common.error_only


def _name(model: str) -> str:
    return model if ":" in model.rpartition("/")[2] else f"{model}:latest"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _entry(name: str, family: str = "llama") -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-10-03T23:34:03.409490317-07:00",
        "size": 1_000_000 + len(name),
        "digest": _digest(name),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": "1.0B",
            "quantization_level": "Q4_K_M",
        },
    }


def _stats(prompt: int, completion: int) -> dict[str, Any]:
    load, prompt_ns, eval_ns = 1_000_000, prompt * 100_000, completion * 200_000
    return {
        "total_duration": load + prompt_ns + eval_ns,
        "load_duration": load,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": prompt_ns,
        "eval_count": completion,
        "eval_duration": eval_ns,
    }


def _formatted(fmt: Any) -> str:
    """The reply asked for with ``format``: a JSON value of its schema."""
    return json.dumps(_common.sample_for(fmt) if isinstance(fmt, dict) else {})


def _num_predict(body: dict[str, Any]) -> int | None:
    """The token limit ``options.num_predict`` sets, or None (none given, or one below 1: -1
    is no limit, -2 fills the context, and the fake takes 0 as no limit too)."""
    options = body.get("options")
    limit = options.get("num_predict") if isinstance(options, dict) else None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1 else None


def _images_ok(images: Any) -> bool:
    """Images as Ollama decodes them: a list of base64 strings (no URLs, no data: prefix)."""
    return images is None or (
        isinstance(images, list) and all(_common.base64_problem(i) is None for i in images)
    )


def plan_reply(
    messages: list[dict[str, Any]], tools: Any, fmt: Any
) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool_calls) the fake model answers with, in Ollama form."""
    last = messages[-1]
    if last.get("role") == "tool":
        name = last.get("tool_name") or next(
            (
                c["function"]["name"]
                for m in reversed(messages)
                for c in m.get("tool_calls") or ()
                if isinstance(c, dict) and isinstance(c.get("function"), dict)
            ),
            "tool",
        )
        return _common.tool_result_text(name, str(last.get("content", ""))), []
    if tools:
        fn = tools[0].get("function", {}) if isinstance(tools[0], dict) else {}
        args = _common.tool_arguments(fn.get("parameters"))
        return "", [{"function": {"name": fn.get("name", "tool"), "arguments": args}}]
    if fmt is not None:
        return _formatted(fmt), []
    user = next((m for m in reversed(messages) if m.get("role") == "user"), last)
    return _common.reply_text(str(user.get("content", ""))), []


def _check_messages(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return "messages must be an array"
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            return "invalid message role"
        if not isinstance(m.get("content", ""), str):
            return "invalid message content: must be a string"
        if not _images_ok(m.get("images")):
            return "invalid message images: must be base64 strings"
    return None


async def _ndjson(request: web.Request, lines: list[dict[str, Any]]) -> web.StreamResponse:
    chunks = (json.dumps(line).encode() + b"\n" for line in lines)
    return await _common.stream(request, chunks, content_type="application/x-ndjson")


def setup(server: FakeServer) -> None:
    models: dict[str, dict[str, Any]] = {
        _name("fake-chat"): _entry(_name("fake-chat")),
        _name("fake-embed"): _entry(_name("fake-embed"), "bert"),
    }
    loaded: dict[str, str] = {}
    server.state["ollama_models"] = models

    def find(body: Any, key: str = "model") -> str | web.Response:
        """The full name of the model ``body[key]`` names, or the error to send."""
        if not isinstance(body, dict) or not isinstance(body.get(key), str) or not body[key]:
            return _error(400, f"{key} is required")
        name = _name(body[key])
        if name not in models:
            return _error(404, f"model '{body[key]}' not found")
        return name

    def load(name: str, keep_alive: Any) -> str:
        """Load the model, or unload it when ``keep_alive`` is 0; says which it did."""
        if keep_alive in (0, "0"):
            loaded.pop(name, None)
            return "unload"
        loaded[name] = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
        return "load"

    async def chat(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        name = find(body)
        if isinstance(name, web.Response):
            return name
        messages = body.get("messages") or []
        problem = _check_messages(messages)
        if problem:
            return _error(400, problem)
        reason = load(name, body.get("keep_alive"))
        if not messages:  # an empty chat loads (or unloads) the model
            empty = {"role": "assistant", "content": ""}
            return web.json_response(
                {"model": body["model"], "created_at": _now(), "message": empty,
                 "done": True, "done_reason": reason}
            )  # fmt: skip
        text, calls = plan_reply(messages, body.get("tools"), body.get("format"))

        def logprobs(tokens: list[str]) -> list[dict[str, Any]]:
            return _common.token_logprobs(tokens, body.get("top_logprobs"))

        prompt = sum(_common.count_tokens(str(m.get("content", ""))) for m in messages)
        thinking = f"thinking about: {text}" if body.get("think") else ""
        # The model thinks, then answers, a word piece a token, up to options.num_predict.
        thought = _common.pieces(thinking) if thinking else []
        said = _common.pieces(text) if text else []
        limit = _num_predict(body)
        reason = "stop"
        if limit is not None and not calls and len(thought) + len(said) > limit:
            thought, said = thought[:limit], said[: max(0, limit - len(thought))]
            thinking, text, reason = "".join(thought), "".join(said), "length"
        stats = _stats(prompt, len(thought) + len(said) or len(calls))
        base = {"model": body["model"], "created_at": _now()}
        failing = FAILMID in str(messages[-1].get("content", ""))
        if body.get("stream", True) is False:
            if failing:
                return _error(500, MODEL_FAILURE)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            answer = {**base, "message": message, "done": True, "done_reason": reason, **stats}
            if body.get("logprobs"):
                answer["logprobs"] = logprobs(said)
            return web.json_response(answer)
        lines: list[dict[str, Any]] = [
            {**base, "message": {"role": "assistant", "content": "", "thinking": piece},
             "done": False}
            for piece in thought
        ]  # fmt: skip
        for piece in said:
            lines.append(
                {**base, "message": {"role": "assistant", "content": piece}, "done": False}
            )
            if body.get("logprobs"):
                lines[-1]["logprobs"] = logprobs([piece])
            if failing:
                lines.append({"error": MODEL_FAILURE})
                return await _ndjson(request, lines)
        if calls:
            lines.append(
                {**base, "message": {"role": "assistant", "content": "", "tool_calls": calls},
                 "done": False}
            )  # fmt: skip
        lines.append(
            {**base, "message": {"role": "assistant", "content": ""}, "done": True,
             "done_reason": reason, **stats}
        )  # fmt: skip
        return await _ndjson(request, lines)

    async def generate(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        name = find(body)
        if isinstance(name, web.Response):
            return name
        if not _images_ok(body.get("images")):
            return _error(400, "invalid images: must be base64 strings")
        reason = load(name, body.get("keep_alive"))
        prompt = body.get("prompt") or ""
        base = {"model": body["model"], "created_at": _now()}
        if not prompt:
            return web.json_response({**base, "response": "", "done": True, "done_reason": reason})
        fmt = body.get("format")
        text = _formatted(fmt) if fmt is not None else _common.reply_text(prompt)
        count = _common.count_tokens(prompt) + _common.count_tokens(body.get("system") or "")
        stats = _stats(count, _common.count_tokens(text))
        thinking = f"thinking about: {text}" if body.get("think") else None
        failing = FAILMID in prompt
        if body.get("stream", True) is False:
            if failing:
                return _error(500, MODEL_FAILURE)
            result = {**base, "response": text, "done": True, "done_reason": "stop", **stats}
            if thinking:
                result["thinking"] = thinking
            return web.json_response(result)
        lines: list[dict[str, Any]] = []
        if thinking:
            lines.append({**base, "response": "", "thinking": thinking, "done": False})
        for piece in _common.pieces(text):
            lines.append({**base, "response": piece, "done": False})
            if failing:
                lines.append({"error": MODEL_FAILURE})
                return await _ndjson(request, lines)
        lines.append({**base, "response": "", "done": True, "done_reason": "stop", **stats})
        return await _ndjson(request, lines)

    async def embed(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        name = find(body)
        if isinstance(name, web.Response):
            return name
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return _error(400, "invalid input type")
        dim = body.get("dimensions") or 8
        if not isinstance(dim, int) or dim < 1:
            return _error(400, "dimensions must be a positive integer")
        if body.get("truncate", True) is False and any(
            _common.count_tokens(t) > CONTEXT_TOKENS for t in inputs
        ):
            return _error(400, "the input length exceeds the context length")
        load(name, body.get("keep_alive"))
        tokens = sum(min(CONTEXT_TOKENS, _common.count_tokens(t)) for t in inputs)
        return web.json_response(
            {
                "model": body["model"],
                "embeddings": [_common.vector(t, dim) for t in inputs],
                "total_duration": 1_000_000 + tokens * 10_000,
                "load_duration": 1_000_000,
                "prompt_eval_count": tokens,
            }
        )

    async def embeddings(request: web.Request) -> web.StreamResponse:
        """The older, deprecated ``/api/embeddings``: one ``prompt``, one ``embedding``."""
        body = request["json"]
        name = find(body)
        if isinstance(name, web.Response):
            return name
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            return _error(400, "invalid prompt type")
        load(name, body.get("keep_alive"))
        return web.json_response({"embedding": _common.vector(prompt) if prompt else []})

    async def tags(request: web.Request) -> web.StreamResponse:
        return web.json_response({"models": list(models.values())})

    async def ps(request: web.Request) -> web.StreamResponse:
        running = [
            {
                **{k: v for k, v in models[n].items() if k != "modified_at"},
                "expires_at": expires,
                "size_vram": models[n]["size"],
                "context_length": 4096,
            }
            for n, expires in loaded.items()
            if n in models
        ]
        return web.json_response({"models": running})

    async def show(request: web.Request) -> web.StreamResponse:
        name = find(request["json"])
        if isinstance(name, web.Response):
            return name
        entry = models[name]
        family = entry["details"]["family"]
        return web.json_response(
            {
                "parameters": "temperature 0.7\nnum_ctx 4096",
                "license": "fake licence",
                "modified_at": entry["modified_at"],
                "details": entry["details"],
                "template": "{{ .Prompt }}",
                "capabilities": ["embedding"] if family == "bert" else ["completion", "tools"],
                "model_info": {"general.architecture": family, f"{family}.context_length": 4096},
            }
        )

    async def version(request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": VERSION})

    async def pull(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("model"), str)
            or not body["model"]
        ):
            return _error(400, "model is required")
        name = _name(body["model"])
        missing = body["model"].startswith("missing")
        failure = "pull model manifest: file does not exist"
        if body.get("stream", True) is False:
            if missing:
                return _error(500, failure)
            models[name] = _entry(name)
            return web.json_response({"status": "success"})
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if missing:
            return await _ndjson(request, [*lines, {"error": failure}])
        for layer, total in ((f"{name}/weights", 4000), (f"{name}/params", 100)):
            digest = "sha256:" + _digest(layer)
            status = f"pulling {digest[7:19]}"
            lines.append({"status": status, "digest": digest, "total": total})
            lines.extend(
                {"status": status, "digest": digest, "total": total, "completed": done}
                for done in (total // 4, total // 2, total)
            )
        lines += [
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        models[name] = _entry(name)
        return await _ndjson(request, lines)

    async def delete(request: web.Request) -> web.StreamResponse:
        name = find(request["json"])
        if isinstance(name, web.Response):
            return name
        del models[name]
        loaded.pop(name, None)
        return web.Response(status=200)

    async def copy(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        name = find(body, "source")
        if isinstance(name, web.Response):
            return name
        destination = body.get("destination")
        if not isinstance(destination, str) or not destination:
            return _error(400, "destination is required")
        models[_name(destination)] = {
            **models[name],
            "name": _name(destination),
            "model": _name(destination),
        }
        return web.Response(status=200)

    for method, path, handler in (
        ("POST", "/api/chat", chat),
        ("POST", "/api/generate", generate),
        ("POST", "/api/embed", embed),
        ("POST", "/api/embeddings", embeddings),
        ("GET", "/api/tags", tags),
        ("GET", "/api/ps", ps),
        ("POST", "/api/show", show),
        ("GET", "/api/version", version),
        ("POST", "/api/pull", pull),
        ("DELETE", "/api/delete", delete),
        ("POST", "/api/copy", copy),
    ):
        server.add_route(method, path, handler, error_body=error_body)

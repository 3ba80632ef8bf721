"""vLLM's server: the OpenAI protocol under ``/v1`` plus ``/v1/completions`` and vLLM's own root
routes (``/tokenize``, ``/detokenize``, ``/health``, ``/version``, ``/rerank``, ``/v1/rerank``,
``/score``, ``/v1/score``).

Chat answers by the shared conversation rule, as vLLM writes it: ``structured_outputs`` (checked
as vLLM checks it: exactly one constraint) makes the answer follow it: ``json`` a JSON value of
the schema, ``json_object`` a JSON object, ``choice`` the first choice, ``regex`` the echo if it
matches, else the shortest text the fake can build that does (``_common.matching``; the echo
when it cannot), ``grammar`` the echo (the fake reads no grammars). ``response_format`` is read
into it, as vLLM does. A reasoning request (``chat_template_kwargs`` ``enable_thinking`` or
``thinking`` true, or ``reasoning_effort``) adds ``reasoning`` text, ``"thinking about: <last
user text>"`` (unless ``include_reasoning`` is false). ``max_completion_tokens`` (or
``max_tokens``) cuts reasoning and answer, a word piece a token, with ``finish_reason``
"length". Fields vLLM does not know, the ``guided_*`` it removed in 0.12 among them, are ignored
as vLLM ignores them: the fake only notes them in ``server.state["vllm"]["ignored"]`` (one
sorted list per request), where vLLM logs a warning.

Completions answer ``"echo: <prompt>"`` (the shared rule). Tokens are the word pieces of
``_common.pieces``, numbered in order of first sight, so detokenize inverts tokenize. Rerank and
score rate a pair by the share of the query's words found in the document.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from aiohttp import web

from .. import FakeServer
from . import _common, _responses, openai

VERSION = "0.0.0-fake"
MAX_MODEL_LEN = 4096
FIRST_TOKEN_ID = 1000

_ids = itertools.count(1)


def error_body(status: int, message: str) -> Any:
    """vLLM's ErrorResponse: ``{"error": {"message", "type", "param", "code"}}``."""
    kinds = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "InternalServerError"),
            "param": None,
            "code": status,
        }
    }


def _bad_request(message: str) -> web.Response:
    return web.json_response(error_body(400, message), status=400)


def _strings(value: Any, *, single: bool = True) -> list[str] | None:
    if single and isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


# The fields of vLLM's ChatCompletionRequest; any other is ignored, with a warning in its log.
CHAT_FIELDS = frozenset(
    {
        "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
        "max_tokens", "max_completion_tokens", "n", "presence_penalty", "response_format",
        "seed", "stop", "stream", "stream_options", "temperature", "top_p", "tools",
        "tool_choice", "reasoning_effort", "include_reasoning", "parallel_tool_calls", "user",
        "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty",
        "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens",
        "skip_special_tokens", "spaces_between_special_tokens", "truncate_prompt_tokens",
        "prompt_logprobs", "allowed_token_ids", "bad_words", "echo", "add_generation_prompt",
        "continue_final_message", "add_special_tokens", "documents", "chat_template",
        "chat_template_kwargs", "mm_processor_kwargs", "structured_outputs", "priority",
        "request_id", "logits_processors", "return_tokens_as_token_ids", "return_token_ids",
        "cache_salt", "kv_transfer_params", "vllm_xargs",
    }
)  # fmt: skip
# StructuredOutputsParams' constraints, of which a request gives exactly one.
CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
DEFAULT_MODEL = "fake-chat"


def _thinking(body: dict[str, Any]) -> bool:
    """Whether the request asks a reasoning model to reason, and keeps its reasoning."""
    kwargs = body.get("chat_template_kwargs") or {}
    asked = (
        kwargs.get("enable_thinking") is True
        or kwargs.get("thinking") is True
        or body.get("reasoning_effort") is not None
    )
    return asked and body.get("include_reasoning", True) is not False


def setup(server: FakeServer) -> None:
    for method, path, handler in openai.routes("/v1"):  # chat is vLLM's own, below
        if path != "/v1/chat/completions":
            server.add_route(method, path, handler, error_body=openai.error_body)
    _responses.setup(server, "/v1", _responses.VLLM)
    from . import _openai_platform

    _openai_platform.setup_audio(server, "/v1")
    vocab: dict[str, int] = {}
    pieces_by_id: dict[int, str] = {}
    ignored: list[list[str]] = []
    server.state["vllm"] = {"vocab": vocab, "ignored": ignored}

    def constraint(body: dict[str, Any]) -> tuple[str, Any] | web.Response | None:
        """The structured-output constraint a chat request asks for, or vLLM's 400."""
        outputs = body.get("structured_outputs")
        if outputs is not None and not isinstance(outputs, dict):
            return _bad_request("structured_outputs must be an object")
        outputs = dict(outputs or {})
        if outputs:
            kinds = [k for k in CONSTRAINTS if outputs.get(k) is not None]
            if len(kinds) != 1:
                verb = "can only use" if kinds else "must use"
                which = "multiple are" if kinds else "none are"
                return _bad_request(
                    f"You {verb} one kind of structured outputs constraint but {which} "
                    f"specified: {outputs}"
                )
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            outputs["json_object"] = True
        elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                return _bad_request("response_format json_schema needs json_schema.schema")
            outputs["json"] = spec["schema"]
        kind = next((k for k in CONSTRAINTS if outputs.get(k) is not None), None)
        if kind is None:
            return None
        value = outputs[kind]
        if kind == "json" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return _bad_request("structured_outputs json is not a valid JSON schema")
        if kind == "json" and not isinstance(value, dict):
            return _bad_request("structured_outputs json must be a JSON schema")
        if kind == "choice" and _strings(value, single=False) is None:
            return _bad_request("structured_outputs choice must be a non-empty list of strings")
        if kind in ("regex", "grammar", "structural_tag") and not isinstance(value, str):
            return _bad_request(f"structured_outputs {kind} must be a string")
        return kind, value

    def answer_text(kind: str, value: Any, echo: str) -> str:
        if kind == "json":
            return json.dumps(_common.sample_for(value))
        if kind == "json_object":
            return json.dumps({"answer": "test"})
        if kind == "choice":
            return str(value[0])
        if kind == "regex":
            built = _common.matching(value, echo)
            return echo if built is None else built
        return echo  # grammar, structural_tag: the fake reads neither

    async def chat(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict):
            return _bad_request("body must be an object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _bad_request("'messages' must be a non-empty array")
        unknown = sorted(set(body) - CHAT_FIELDS)
        if unknown:
            ignored.append(unknown)
        if body.get("stream_options") and not body.get("stream"):
            return _bad_request("Stream options can only be defined when `stream=True`.")
        kwargs = body.get("chat_template_kwargs")
        if kwargs is not None and not isinstance(kwargs, dict):
            return _bad_request("chat_template_kwargs must be an object")
        limit = body.get("max_completion_tokens")
        limit = body.get("max_tokens") if limit is None else limit
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return _bad_request(f"max_tokens must be at least 1, got {limit}.")
        wanted = constraint(body)
        if isinstance(wanted, web.Response):
            return wanted
        if (refused := openai.tools_refusal(body, openai.COMPATIBLE)) is not None:
            return refused  # function tools only (strict taken: it guides the call's JSON)
        tools = None if body.get("tool_choice") == "none" else body.get("tools")
        schema = None
        if wanted is not None and wanted[0] in ("json", "json_object"):
            schema = wanted[1] if wanted[0] == "json" else {}
        text, calls = openai.plan_reply(messages, tools, schema)
        user = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
        echo = _common.reply_text(openai._text(user.get("content")))
        if wanted is not None and schema is None and not calls:
            text = answer_text(*wanted, echo)
        reasoning = (
            f"thinking about: {openai._text(user.get('content'))}" if _thinking(body) else ""
        )
        # Reasoning first, then the answer, a word piece a token, up to the limit.
        thought = _common.pieces(reasoning) if reasoning else []
        said = _common.pieces(text) if text else []
        finish = "tool_calls" if calls else "stop"
        if limit is not None and not calls and len(thought) + len(said) > limit:
            thought, said = thought[:limit], said[: max(0, limit - len(thought))]
            reasoning, text, finish = "".join(thought), "".join(said), "length"
        prompt = sum(_common.count_tokens(openai._text(m.get("content"))) for m in messages)
        counts = openai.usage(prompt, len(thought) + len(said) + len(calls))
        cid = f"chatcmpl-{next(_ids)}"
        headers = {"x-request-id": f"srv-{cid}"}
        model = body.get("model") if isinstance(body.get("model"), str) else DEFAULT_MODEL
        base = {"id": cid, "created": int(time.time()), "model": model}
        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text if text or not (calls or reasoning) else None,
                "refusal": None,
                "tool_calls": calls,
                "reasoning": reasoning or None,
            }
            choices = [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish,
                 "stop_reason": None}
                for i in range(int(body.get("n") or 1))
            ]  # fmt: skip
            answer = {**base, "object": "chat.completion", "choices": choices, "usage": counts}
            return web.json_response(answer, headers=headers)

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return _common.sse({**base, "object": "chat.completion.chunk", "choices": choices,
                                **extra})  # fmt: skip

        n = int(body.get("n") or 1)

        def delta(content: dict[str, Any], finish: str | None = None) -> list[bytes]:
            """The piece for every choice, an event each (vLLM sends one choice an event)."""
            return [chunk([{"index": i, "delta": content, "logprobs": None,
                            "finish_reason": finish}]) for i in range(n)]  # fmt: skip

        chunks = delta({"role": "assistant", "content": ""})
        for piece in thought:
            chunks += delta({"reasoning": piece})
        for piece in said:
            chunks += delta({"content": piece})
        for i, call in enumerate(calls):  # each call's arguments in two halves
            args = call["function"]["arguments"]
            half = len(args) // 2
            first = {"name": call["function"]["name"], "arguments": args[:half]}
            chunks += delta({"tool_calls": [{"index": i, **call, "function": first}]})
            chunks += delta({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
        chunks += delta({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(chunk([], usage=counts))
        chunks.append(_common.DONE)
        return await _common.stream(request, chunks, headers=headers)

    def encode(text: str) -> list[int]:
        if not text:
            return []
        ids = []
        for piece in _common.pieces(text):
            if piece not in vocab:
                vocab[piece] = FIRST_TOKEN_ID + len(vocab)
                pieces_by_id[vocab[piece]] = piece
            ids.append(vocab[piece])
        return ids

    async def completions(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _bad_request("'model' is required")
        prompts = _strings(body.get("prompt"))
        if prompts is None:
            return _bad_request("'prompt' must be a string or a non-empty array of strings")
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            return _bad_request("'n' must be a positive integer")
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for prompt in prompts:
            text = _common.reply_text(prompt)
            if body.get("echo"):
                text = prompt + text
            prompt_tokens += _common.count_tokens(prompt)
            for _ in range(n):
                completion_tokens += _common.count_tokens(text)
                choices.append(
                    {
                        "index": len(choices),
                        "text": text,
                        "logprobs": None,
                        "finish_reason": "stop",
                        "stop_reason": None,
                    }
                )
        cid = f"cmpl-{next(_ids)}"
        return web.json_response(
            {
                "id": cid,
                "object": "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": choices,
                "usage": openai.usage(prompt_tokens, completion_tokens),
            },
            headers={"x-request-id": f"srv-{cid}"},
        )

    async def tokenize(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict):
            return _bad_request("body must be an object")
        if isinstance(body.get("prompt"), str):
            text = body["prompt"]
        elif isinstance(body.get("messages"), list) and body["messages"]:
            text = " ".join(
                openai._text(m.get("content")) for m in body["messages"] if isinstance(m, dict)
            )
        else:
            return _bad_request("'prompt' (a string) or 'messages' is required")
        tokens = encode(text)
        out: dict[str, Any] = {
            "count": len(tokens),
            "max_model_len": MAX_MODEL_LEN,
            "tokens": tokens,
            "token_strs": [pieces_by_id[t] for t in tokens]
            if body.get("return_token_strs")
            else None,
        }
        return web.json_response(out)

    async def detokenize(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            return _bad_request("'tokens' must be an array of integers")
        unknown = [t for t in tokens if t not in pieces_by_id]
        if unknown:
            return _bad_request(f"token ids out of vocabulary: {unknown[:5]}")
        return web.json_response({"prompt": "".join(pieces_by_id[t] for t in tokens)})

    async def health(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def version(request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": VERSION})

    def model_of(body: dict[str, Any]) -> str:
        model = body.get("model")
        return model if isinstance(model, str) else "fake-rerank"

    async def rerank(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _bad_request("'query' must be a string")
        documents = _strings(body.get("documents"), single=False)
        if documents is None:
            return _bad_request("'documents' must be a non-empty array of strings")
        top_n = body.get("top_n") or 0
        if not isinstance(top_n, int) or top_n < 0:
            return _bad_request("'top_n' must be a non-negative integer")
        query = body["query"]
        ranked = sorted(
            enumerate(documents), key=lambda item: (-_common.relevance(query, item[1]), item[0])
        )
        results = [
            {"index": i, "document": {"text": d}, "relevance_score": _common.relevance(query, d)}
            for i, d in ranked
        ]
        if top_n:
            results = results[:top_n]
        tokens = sum(_common.count_tokens(query) + _common.count_tokens(d) for d in documents)
        return web.json_response(
            {
                "id": f"rerank-{next(_ids)}",
                "model": model_of(body),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "results": results,
            }
        )

    async def score(request: web.Request) -> web.StreamResponse:
        body = request["json"]
        if not isinstance(body, dict):
            return _bad_request("body must be an object")
        first = _strings(body.get("text_1"))
        second = _strings(body.get("text_2"))
        if first is None or second is None:
            return _bad_request("'text_1' and 'text_2' must be strings or arrays of strings")
        if len(first) > 1 and len(first) != len(second):
            return _bad_request("text_1 and text_2 must have the same length")
        if len(first) == 1:
            first = first * len(second)
        data = [
            {"index": i, "object": "score", "score": _common.relevance(a, b)}
            for i, (a, b) in enumerate(zip(first, second, strict=True))
        ]
        tokens = sum(
            _common.count_tokens(a) + _common.count_tokens(b)
            for a, b in zip(first, second, strict=True)
        )
        return web.json_response(
            {
                "id": f"score-{next(_ids)}",
                "object": "list",
                "created": int(time.time()),
                "model": model_of(body),
                "data": data,
                "usage": openai.usage(tokens),
            }
        )

    routes = [
        ("POST", "/v1/chat/completions", chat),
        ("POST", "/v1/completions", completions),
        ("POST", "/tokenize", tokenize),
        ("POST", "/detokenize", detokenize),
        ("GET", "/health", health),
        ("GET", "/version", version),
        ("POST", "/rerank", rerank),
        ("POST", "/v1/rerank", rerank),
        ("POST", "/score", score),
        ("POST", "/v1/score", score),
    ]
    for method, path, handler in routes:
        server.add_route(method, path, handler, error_body=error_body)

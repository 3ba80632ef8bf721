"""vLLM: the OpenAI-compatible server under ``/v1`` plus vLLM's own routes at the server root.

Chat, streaming, embeddings and models are the OpenAI wire format. vLLM adds sampling extras
(``guided_json``, ``guided_regex``, ``guided_choice``, ``top_k``, ``min_p``,
``repetition_penalty``) as top-level body fields, ``/v1/completions``, and at the root (not under
``/v1``): ``/tokenize``, ``/detokenize``, ``/health``, ``/version``, ``/rerank`` and ``/score``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .._engine._dispatcher import Priority
from .._exceptions import ConfigurationError, ResponseValidationError
from .._http import _json
from .._http._backend import (
    Meta,
    _check_base_url,
    check_int,
    check_model,
    check_number,
    check_stop,
    merge_extra,
)
from .._models import ChatChunk, ChatResponse, Usage, normalize_messages
from .._wire.openai import OpenAICompatible
from ..streaming import Stream

VLLM_BASE_URL = "http://localhost:8000/v1"


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = 0
    text: str
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class CompletionResponse(BaseModel):
    """A text completion; ``text`` is the first choice's."""

    text: str
    choices: list[CompletionChoice]
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    request_id: str
    server_request_id: str | None = None
    raw: Any = None


class TokenizeResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str | None = None


class RerankResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    """Results best first; ``index`` points into the documents sent."""

    id: str | None = None
    model: str | None = None
    results: list[RerankResult]
    usage: Usage | None = None
    request_id: str
    raw: Any = None


class ScoreData(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    score: float


class ScoreResponse(BaseModel):
    """``scores[i]`` is the score of pair ``i`` (sorted by the server's ``index``)."""

    scores: list[float]
    data: list[ScoreData]
    model: str | None = None
    usage: Usage | None = None
    request_id: str
    raw: Any = None


class _WireCompletions(BaseModel):
    id: str | None = None
    model: str | None = None
    choices: list[CompletionChoice] = Field(min_length=1)
    usage: Usage | None = None


class _WireRerank(BaseModel):
    id: str | None = None
    model: str | None = None
    results: list[RerankResult]
    usage: Usage | None = None


class _WireScore(BaseModel):
    model: str | None = None
    data: list[ScoreData]
    usage: Usage | None = None


class _WireDetokenize(BaseModel):
    prompt: str


class _WireVersion(BaseModel):
    version: str


def _strings(name: str, value: Any, *, single: bool = True) -> str | list[str]:
    if single and isinstance(value, str):
        return value
    if (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and value
        and all(isinstance(v, str) for v in value)
    ):
        return list(value)
    kind = "a string or " if single else ""
    raise ConfigurationError(f"{name} must be {kind}a non-empty list of strings")


def _sampling_extras(
    *,
    guided_json: Any,
    guided_regex: str | None,
    guided_choice: Sequence[str] | None,
    top_k: int | None,
    min_p: float | None,
    repetition_penalty: float | None,
) -> dict[str, Any]:
    """vLLM's sampling fields, checked, as top-level body fields (only those given)."""
    guided = [g for g in (guided_json, guided_regex, guided_choice) if g is not None]
    if len(guided) > 1:
        raise ConfigurationError("give at most one of guided_json, guided_regex, guided_choice")
    extras: dict[str, Any] = {}
    if guided_json is not None:
        if isinstance(guided_json, type) and issubclass(guided_json, BaseModel):
            extras["guided_json"] = guided_json.model_json_schema()
        elif isinstance(guided_json, Mapping):
            extras["guided_json"] = dict(guided_json)
        elif isinstance(guided_json, str):
            try:
                _json.loads(guided_json)
            except (TypeError, ValueError) as exc:  # TypeError: a lone surrogate (pydantic-core)
                raise ConfigurationError("guided_json string must be a JSON schema") from exc
            extras["guided_json"] = guided_json
        else:
            raise ConfigurationError(
                "guided_json must be a JSON schema (dict or str) or a pydantic model class"
            )
    if guided_regex is not None:
        if not isinstance(guided_regex, str) or not guided_regex:
            raise ConfigurationError("guided_regex must be a non-empty string")
        extras["guided_regex"] = guided_regex
    if guided_choice is not None:
        extras["guided_choice"] = _strings("guided_choice", guided_choice, single=False)
    check_int("top_k", top_k, -1)
    check_number("min_p", min_p, 0, 1)
    check_number("repetition_penalty", repetition_penalty, 0)
    if repetition_penalty is not None and repetition_penalty <= 0:
        raise ConfigurationError("repetition_penalty must be > 0")
    for name, value in (
        ("top_k", top_k),
        ("min_p", min_p),
        ("repetition_penalty", repetition_penalty),
    ):
        if value is not None:
            extras[name] = value
    return extras


class VLLM(OpenAICompatible):
    """``VLLM(api_key=None, base_url=None, *, root_url=None)``: base from ``VLLM_BASE_URL``
    (default ``http://localhost:8000/v1``), optional key from ``VLLM_API_KEY``. vLLM's own routes
    go to ``root_url``: by default ``base_url`` without its trailing ``/v1``.
    """

    backend: ClassVar[str] = "vllm"
    default_base_url: ClassVar[str | None] = VLLM_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("VLLM_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("VLLM_API_KEY",)
    completions_path: ClassVar[str] = "/completions"

    def __init__(
        self,
        api_key: Any = None,
        base_url: str | None = None,
        *,
        root_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(api_key=api_key, base_url=base_url, **kwargs)
        if root_url is not None:
            self.root_url = _check_base_url(root_url)
        elif self.base_url.endswith("/v1"):
            self.root_url = self.base_url[: -len("/v1")]
        else:
            self.root_url = self.base_url

    def _root(self, path: str) -> str:
        return self.root_url + path

    # -- OpenAI routes with vLLM's sampling extras --------------------------------------------

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any] | BaseModel],
        *,
        model: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        user: str | None = None,
        n: int | None = None,
        guided_json: Any = None,
        guided_regex: str | None = None,
        guided_choice: Sequence[str] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ChatResponse:
        """A chat completion; ``guided_*`` constrain the output (one at most), ``top_k``,
        ``min_p`` and ``repetition_penalty`` tune sampling."""
        extras = _sampling_extras(
            guided_json=guided_json,
            guided_regex=guided_regex,
            guided_choice=guided_choice,
            top_k=top_k,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
        )
        return await super().chat(
            messages,
            model=model,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            user=user,
            n=n,
            extra_body=merge_extra(extras, extra_body),  # extra_body wins
            extra_headers=extra_headers,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, Any] | BaseModel],
        *,
        model: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        user: str | None = None,
        n: int | None = None,
        guided_json: Any = None,
        guided_regex: str | None = None,
        guided_choice: Sequence[str] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream[ChatChunk]:
        """Chunks as they arrive (SSE), with the same sampling extras as ``chat``."""
        extras = _sampling_extras(
            guided_json=guided_json,
            guided_regex=guided_regex,
            guided_choice=guided_choice,
            top_k=top_k,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
        )
        return super().stream_chat(
            messages,
            model=model,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            seed=seed,
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            user=user,
            n=n,
            extra_body=merge_extra(extras, extra_body),  # extra_body wins
            extra_headers=extra_headers,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    async def completions(
        self,
        prompt: str | Sequence[str],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        n: int | None = None,
        echo: bool | None = None,
        guided_json: Any = None,
        guided_regex: str | None = None,
        guided_choice: Sequence[str] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> CompletionResponse:
        """A raw-prompt completion (``/v1/completions``): for base models and prompts you have
        already formatted with the chat template."""
        check_number("temperature", temperature, 0, 2)
        check_number("top_p", top_p, 0, 1)
        check_int("max_tokens", max_tokens, 1)
        check_int("seed", seed)
        check_int("n", n, 1)
        if echo is not None and not isinstance(echo, bool):
            raise ConfigurationError("echo must be a bool")
        body: dict[str, Any] = {"model": self._model(model), "prompt": _strings("prompt", prompt)}
        optional = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": check_stop(stop),
            "seed": seed,
            "n": n,
            "echo": echo,
        }
        body.update((k, v) for k, v in optional.items() if v is not None)
        body.update(
            _sampling_extras(
                guided_json=guided_json,
                guided_regex=guided_regex,
                guided_choice=guided_choice,
                top_k=top_k,
                min_p=min_p,
                repetition_penalty=repetition_penalty,
            )
        )
        merge_extra(body, extra_body)

        def parse(payload: Any, meta: Meta) -> CompletionResponse:
            wire = _WireCompletions.model_validate(payload)
            choices = sorted(wire.choices, key=lambda c: c.index)
            return CompletionResponse(
                text=choices[0].text,
                choices=choices,
                finish_reason=choices[0].finish_reason,
                usage=wire.usage,
                model=wire.model,
                request_id=meta.request_id,
                server_request_id=meta.server_request_id,
                raw=payload,
            )

        return await self._request(
            "completions",
            "POST",
            self.completions_path,
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
            extra_headers=extra_headers,
        )

    # -- vLLM's own routes, at the server root -----------------------------------------------------

    async def tokenize(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, Any] | BaseModel] | None = None,
        model: str | None = None,
        add_special_tokens: bool | None = None,
        add_generation_prompt: bool | None = None,
        return_token_strs: bool | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> TokenizeResponse:
        """Token ids of a ``prompt`` or of chat ``messages`` (rendered with the server's chat
        template): to count tokens or check a prompt against ``max_model_len``."""
        if (prompt is None) == (messages is None):
            raise ConfigurationError("give exactly one of prompt or messages")
        for name, flag in (
            ("add_special_tokens", add_special_tokens),
            ("add_generation_prompt", add_generation_prompt),
            ("return_token_strs", return_token_strs),
        ):
            if flag is not None and not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be a bool")
        body: dict[str, Any] = {}
        if model is not None:
            body["model"] = check_model(model)
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ConfigurationError("prompt must be a string")
            body["prompt"] = prompt
        else:
            body["messages"] = normalize_messages(messages)
            if add_generation_prompt is not None:
                body["add_generation_prompt"] = add_generation_prompt
        if add_special_tokens is not None:
            body["add_special_tokens"] = add_special_tokens
        if return_token_strs is not None:
            body["return_token_strs"] = return_token_strs
        return await self._request(
            "tokenize",
            "POST",
            self._root("/tokenize"),
            lambda payload, meta: TokenizeResponse.model_validate(payload),
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    async def detokenize(
        self,
        tokens: Sequence[int],
        *,
        model: str | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> str:
        """The text of token ids, as the server's tokenizer decodes them."""
        if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
            raise ConfigurationError("tokens must be a list of ints")
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
            raise ConfigurationError("tokens must be a list of non-negative ints")
        body: dict[str, Any] = {"tokens": list(tokens)}
        if model is not None:
            body["model"] = check_model(model)
        return await self._request(
            "detokenize",
            "POST",
            self._root("/detokenize"),
            lambda payload, meta: _WireDetokenize.model_validate(payload).prompt,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    async def health(
        self,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> bool:
        """True when the server answers ``/health`` with 200, False when it answers that the
        engine is down; never retried. Connection and auth failures raise."""
        return await self._probe(
            "health", self._root("/health"), priority=priority, timeout=timeout, deadline=deadline
        )

    async def version(
        self,
        *,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> str:
        """The vLLM version the server runs (say, to gate features)."""
        return await self._request(
            "version",
            "GET",
            self._root("/version"),
            lambda payload, meta: _WireVersion.model_validate(payload).version,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str | None = None,
        top_n: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> RerankResponse:
        """Documents ordered by relevance to ``query`` (a cross-encoder/reranker model);
        ``top_n`` keeps the best n."""
        if not isinstance(query, str):
            raise ConfigurationError("query must be a string")
        docs = _strings("documents", documents, single=False)
        check_int("top_n", top_n, 1)
        body: dict[str, Any] = {"query": query, "documents": docs}
        if model is not None:
            body["model"] = check_model(model)
        if top_n is not None:
            body["top_n"] = top_n
        merge_extra(body, extra_body)
        count = len(docs)

        def parse(payload: Any, meta: Meta) -> RerankResponse:
            wire = _WireRerank.model_validate(payload)
            if any(not 0 <= r.index < count for r in wire.results):
                raise ResponseValidationError(
                    f"rerank result index outside 0..{count - 1}",
                    backend=self.name,
                    request_id=meta.request_id,
                )
            return RerankResponse(
                id=wire.id,
                model=wire.model,
                results=sorted(wire.results, key=lambda r: -r.relevance_score),
                usage=wire.usage,
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._request(
            "rerank",
            "POST",
            self._root("/rerank"),
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

    async def score(
        self,
        text_1: str | Sequence[str],
        text_2: str | Sequence[str],
        *,
        model: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ScoreResponse:
        """Similarity scores of text pairs: one against one, one against many, or pairwise
        (two lists of the same length)."""
        first = _strings("text_1", text_1)
        second = _strings("text_2", text_2)
        n1 = len(first) if isinstance(first, list) else 1
        pairs = len(second) if isinstance(second, list) else 1
        if n1 > 1 and n1 != pairs:
            raise ConfigurationError("a text_1 list longer than 1 needs a text_2 of equal length")
        body: dict[str, Any] = {"text_1": first, "text_2": second}
        if model is not None:
            body["model"] = check_model(model)
        merge_extra(body, extra_body)

        def parse(payload: Any, meta: Meta) -> ScoreResponse:
            wire = _WireScore.model_validate(payload)
            data = sorted(wire.data, key=lambda d: d.index)
            if [d.index for d in data] != list(range(pairs)):
                raise ResponseValidationError(
                    f"expected {pairs} scores indexed 0..{pairs - 1}",
                    backend=self.name,
                    request_id=meta.request_id,
                )
            if not all(math.isfinite(d.score) for d in data):
                raise ResponseValidationError(
                    "score is not a finite number", backend=self.name, request_id=meta.request_id
                )
            return ScoreResponse(
                scores=[d.score for d in data],
                data=data,
                model=wire.model,
                usage=wire.usage,
                request_id=meta.request_id,
                raw=payload,
            )

        return await self._request(
            "score",
            "POST",
            self._root("/score"),
            parse,
            body=body,
            priority=priority,
            timeout=timeout,
            deadline=deadline,
        )

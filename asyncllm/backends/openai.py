"""OpenAI: Bearer auth, optional organization and project headers, ``x-request-id`` kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from typing_extensions import Unpack

from .._engine._context import check_header_value
from .._engine._ratelimit import OPENAI_HEADERS, RateDialect
from .._exceptions import ConfigurationError
from .._models import Tool
from .._options import ClientOptions
from .._wire.openai import OpenAICompatible
from .._wire.responses_support import ServesResponses

if TYPE_CHECKING:
    from .._platform.openai import Batches, Files, FineTuning, Moderations, OpenAIAudio

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAI(ServesResponses, OpenAICompatible):
    """``OpenAI(api_key=..., base_url=...)``: key from ``OPENAI_API_KEY``, base from
    ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``). Any OpenAI-compatible server works.
    ``organization`` and ``project`` are sent as OpenAI's headers of those names.

    ``chat(response_format=Model)`` sends the model as a strict JSON schema (what strict mode
    cannot express, such as ``dict[str, int]``, is a ConfigurationError before sending) and gives
    the validated answer in ``parsed``, or the model's refusal in ``refusal``. Chat completions
    return no reasoning text; ``reasoning_effort`` sets how much a reasoning model thinks.

    ``responses`` is the Responses API, all of it (create, stream, retrieve, cancel, delete,
    input items, input token counting; store, background, previous_response_id).

    ``tools`` takes, beside functions (``strict`` sent), OpenAI's ``custom`` tools (their calls
    come back with ``type="custom"`` and the free-text input in ``arguments``) and
    ``{"type": "web_search", ...}``, which chat completions take as ``web_search_options``
    (the rest of the dict), for the search models.
    ``max_tokens`` goes out as ``max_completion_tokens`` (OpenAI's reasoning models refuse
    ``max_tokens``, which OpenAI has deprecated); every ``ModernParams`` is taken. Content parts
    may be images (``image_url``: a data: or http(s) URL) and files (``file``: ``file_data`` or
    ``file_id``).
    """

    backend: ClassVar[str] = "openai"
    default_base_url: ClassVar[str | None] = OPENAI_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("OPENAI_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    api_key_required: ClassVar[bool] = True
    builtin_tools: ClassVar[frozenset[str]] = frozenset({"custom", "web_search"})
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    rate_dialect: ClassVar[RateDialect | None] = OPENAI_HEADERS
    media_parts: ClassVar[frozenset[str]] = frozenset({"image_url", "file"})

    def __init__(
        self,
        *,
        organization: str | None = None,
        project: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.organization = organization
        self.project = project
        super().__init__(**options)

    def _auth_headers(self) -> dict[str, str]:
        headers = super()._auth_headers()
        if self.organization:
            headers["OpenAI-Organization"] = check_header_value("organization", self.organization)
        if self.project:
            headers["OpenAI-Project"] = check_header_value("project", self.project)
        return headers

    # The platform APIs below load on first use (``asyncllm._platform.openai`` and its pydantic
    # models), so that a client used only for chat does not pay for them at import.

    @property
    def files(self) -> Files:
        """Upload, list, retrieve, delete and download files (``/files``)."""
        from .._platform.openai import Files

        return Files(self)

    @property
    def batches(self) -> Batches:
        """OpenAI's Batch API (``/batches``); ``asyncllm.run_batch_job`` runs one end to end."""
        from .._platform.openai import Batches

        return Batches(self)

    @property
    def audio(self) -> OpenAIAudio:
        """Transcriptions and translations (audio streamed up), and speech (streamed down)."""
        from .._platform.openai import OpenAIAudio

        return OpenAIAudio(self)

    @property
    def moderations(self) -> Moderations:
        """The moderation classifier (``/moderations``)."""
        from .._platform.openai import Moderations

        return Moderations(self)

    @property
    def fine_tuning(self) -> FineTuning:
        """Fine-tuning jobs: create, list, retrieve, cancel, events, checkpoints."""
        from .._platform.openai import FineTuning

        return FineTuning(self)

    def _builtin_tool(self, tool: Tool, body: dict[str, Any]) -> dict[str, Any] | None:
        """Chat completions have no web search tool entry: its settings go in
        ``web_search_options``."""
        if tool.kind != "web_search":
            return super()._builtin_tool(tool, body)
        if "web_search_options" in body:
            raise ConfigurationError("give one web_search tool")
        body["web_search_options"] = {k: v for k, v in (tool.builtin or {}).items() if k != "type"}
        return None

"""OpenAI: Bearer auth, optional organization and project headers, ``x-request-id`` kept."""

from __future__ import annotations

from typing import Any, ClassVar

from .._engine._context import check_header_value
from .._exceptions import ConfigurationError
from .._wire.openai import OpenAICompatible

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAI(OpenAICompatible):
    """``OpenAI(api_key=None, base_url=None)``: key from ``OPENAI_API_KEY``, base from
    ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``). Any OpenAI-compatible server works.
    """

    backend: ClassVar[str] = "openai"
    default_base_url: ClassVar[str | None] = OPENAI_BASE_URL
    base_url_env: ClassVar[tuple[str, ...]] = ("OPENAI_BASE_URL",)
    api_key_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)

    def __init__(
        self,
        api_key: Any = None,
        base_url: str | None = None,
        *,
        organization: str | None = None,
        project: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.organization = organization
        self.project = project
        super().__init__(api_key=api_key, base_url=base_url, **kwargs)
        if self.api_key is None and self.base_url == OPENAI_BASE_URL:
            raise ConfigurationError("no API key: pass api_key= or set OPENAI_API_KEY")

    def _auth_headers(self) -> dict[str, str]:
        headers = super()._auth_headers()
        if self.organization:
            headers["OpenAI-Organization"] = check_header_value("organization", self.organization)
        if self.project:
            headers["OpenAI-Project"] = check_header_value("project", self.project)
        return headers

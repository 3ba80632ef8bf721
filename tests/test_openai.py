from __future__ import annotations

from typing import Any

import asyncllm
from asyncllm.testing import FakeServer

from .chat_contract import ChatContract


class TestOpenAIContract(ChatContract):
    protocol = "openai"

    def make_client(self, server: FakeServer, **kwargs: Any) -> Any:
        return asyncllm.OpenAI(api_key="sk-test", base_url=server.url("/v1"), **kwargs)
